// Creating a stream through the control service (engine/control_service.hpp) against a real
// registry, content store and thread-pool file reader: the ingest of bucket files, the body, key,
// bucket and version checks naming their field, the 409/429/422/507 limits, and buckets changed
// while the service runs.
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/clock.hpp"
#include "engine/content_store.hpp"
#include "engine/control_service.hpp"
#include "tests/engine/control_service_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

TEST_F(ControlServiceTest, CreateThenDescribe) {
  auto r = call("POST", "/streams/fw-1",
                create_body({file_json(0, "fw.bin"), file_json(7, "app.bin")}, "firmware 1.2"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  Json created(r.body);
  ASSERT_TRUE(created.ok) << r.body;
  EXPECT_TRUE(created.at("/success").get_bool().value_unsafe());
  EXPECT_EQ(created.str("/data/id"), "fw-1");
  EXPECT_EQ(created.str("/data/streamId"), "fw-1");
  EXPECT_EQ(created.str("/data/streamArn"), "arn:chunkd:stream/fw-1");
  EXPECT_EQ(created.num("/data/streamVersion"), 1u);
  EXPECT_EQ(created.str("/data/description"), "firmware 1.2");
  EXPECT_EQ(created.str("/data/created_at"), rfc3339_utc(clock_.unix_ms()));
  EXPECT_FALSE(created.has("/data/warnings"));

  r = call("GET", "/streams/fw-1");
  ASSERT_EQ(r.status, 200) << r.body;
  Json d(r.body);
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.num("/data/streamVersion"), 1u);
  EXPECT_EQ(d.str("/data/roleArn"), kRole);
  EXPECT_EQ(d.str("/data/tags/0/Key"), "team");
  EXPECT_EQ(d.str("/data/tags/0/Value"), "ota");
  ASSERT_EQ(d.size("/data/files"), 2u);
  EXPECT_EQ(d.num("/data/files/0/fileId"), 0u);
  EXPECT_EQ(d.num("/data/files/0/sizeBytes"), fw_.size());
  EXPECT_EQ(d.str("/data/files/0/digest"), digest_of(fw_));
  EXPECT_EQ(d.str("/data/files/0/s3Location/key"), "fw.bin");
  EXPECT_EQ(d.num("/data/files/1/fileId"), 7u);
  EXPECT_EQ(d.str("/data/files/1/digest"), digest_of(app_));

  // The catalog holds the manifest the data plane checks extents against.
  auto s = catalog_->find("fw-1");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->files[0].extent_bytes, 64u * 1024);
  EXPECT_EQ(s->files[0].manifest.size(), 4u);
  EXPECT_EQ(s->files[0].manifest[0], XXH3_64bits(fw_.data(), 64 * 1024));
  EXPECT_EQ(blob_files(), 2u);
}

TEST_F(ControlServiceTest, StreamIsImmutableWhenTheSourceChanges) {
  ASSERT_EQ(call("POST", "/streams/s", create_body({file_json(0, "app.bin")})).status, 201);
  put("app.bin", "something else entirely");
  auto d = Json(call("GET", "/streams/s").body);
  EXPECT_EQ(d.str("/data/files/0/digest"), digest_of(app_));
  std::ifstream in(blob_path(dir_ + "/data", digest_of(app_)), std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), app_);
}

TEST_F(ControlServiceTest, BodyAndIdValidation) {
  auto r = call("POST", "/streams/x", "not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).str("/error/code"), "VALIDATION_ERROR");
  r = call("POST", "/streams/x", R"({"files":[],"roleArn":"short"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_FALSE(Json(r.body).detail_fields().empty());
  r = call("POST", "/streams/bad.id", create_body({file_json(0, "fw.bin")}));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).str("/error/code"), "VALIDATION_ERROR");
  r = call("GET", "/streams/" + std::string(129, 'a'));
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(catalog_->size() == 0);
}

TEST_F(ControlServiceTest, UnknownBucketNamesTheField) {
  auto r = call("POST", "/streams/x",
                create_body({file_json(0, "fw.bin"), file_json(1, "fw.bin", "nope")}));
  ASSERT_EQ(r.status, 400);
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "VALIDATION_ERROR");
  EXPECT_EQ(j.detail_fields(), std::vector<std::string>{"files[1].s3Location.bucket"});
}

TEST_F(ControlServiceTest, BadKeysNameTheField) {
  fs::create_symlink(dir_ + "/outside.txt", dir_ + "/fw/link-out");
  fs::create_symlink("../outside.txt", dir_ + "/fw/rel-out");
  const std::vector<std::string> keys = {"missing.bin",
                                         "../outside.txt",
                                         "sub/../../outside.txt",
                                         "/etc/passwd",
                                         "link-out",
                                         "rel-out",
                                         "sub",
                                         "fw.bin/x",
                                         "a//b",
                                         std::string(1100, 'k')};
  for (const auto& key : keys) {
    auto r = call("POST", "/streams/x", create_body({file_json(0, "fw.bin"), file_json(1, key)}));
    ASSERT_EQ(r.status, 400) << key << ": " << r.body;
    Json j(r.body);
    EXPECT_EQ(j.str("/error/code"), "VALIDATION_ERROR") << key;
    EXPECT_EQ(j.detail_fields(), std::vector<std::string>{"files[1].s3Location.key"})
        << key << ": " << r.body;
  }
  EXPECT_EQ(catalog_->size(), 0u);
  EXPECT_EQ(blob_files(), 0u);  // nothing was ingested: the files are opened first
  EXPECT_EQ(control_->operations_in_progress(), 0u);
}

TEST_F(ControlServiceTest, UnreadableFileNamesTheKey) {
  ASSERT_EQ(::chmod((dir_ + "/fw/app.bin").c_str(), 0), 0);
  // Root reads every file: drop to an unprivileged effective uid (process-wide, so the thread
  // pool that opens the file has it too) while the request runs.
  const bool root = ::geteuid() == 0;
  if (root) ASSERT_EQ(::seteuid(65534), 0);
  auto r = call("POST", "/streams/x", create_body({file_json(0, "app.bin")}));
  if (root) ASSERT_EQ(::seteuid(0), 0);
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"files[0].s3Location.key"});
  EXPECT_NE(r.body.find("permission denied"), std::string::npos) << r.body;
}

TEST_F(ControlServiceTest, PinnedVersionMustMatchTheDigest) {
  auto r = call("POST", "/streams/x",
                create_body({file_json(0, "fw.bin", "firmware", digest_of(fw_)),
                             file_json(1, "app.bin", "firmware", std::string(32, '0'))}));
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"files[1].s3Location.version"});
  EXPECT_FALSE(catalog_->find("x"));
  // The ingested blobs are left for GC, which runs once nothing is pinned.
  run_until([&] { return blob_files() == 0; });

  r = call("POST", "/streams/x", create_body({file_json(0, "fw.bin", "firmware", digest_of(fw_))}));
  EXPECT_EQ(r.status, 201) << r.body;
}

TEST_F(ControlServiceTest, DuplicateCreateIs409) {
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "app.bin")})).status, 201);
  auto r = call("POST", "/streams/a", create_body({file_json(0, "app.bin")}));
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(Json(r.body).str("/error/code"), "ALREADY_EXISTS");
}

TEST_F(ControlServiceTest, ConcurrentChangesOfOneIdAre409) {
  // The first create is still opening its files when the second arrives.
  auto first = send(request("POST", "/streams/a", create_body({file_json(0, "fw.bin")})));
  auto second = send(request("POST", "/streams/a", create_body({file_json(0, "app.bin")})));
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ((*second)->status, 409);
  // Not committed yet (its progress) or already (the stream): found either way.
  auto describe = call("GET", "/streams/a");
  EXPECT_EQ(describe.status, 200) << describe.body;
  Json described(describe.body);
  if (described.has("/data/status")) {
    EXPECT_EQ(described.str("/data/status"), "CREATING") << describe.body;
    EXPECT_EQ(described.num("/data/progress/files"), 1u) << describe.body;
    EXPECT_EQ(described.num("/data/progress/file"), 0u) << describe.body;
    EXPECT_FALSE(described.has("/data/streamVersion")) << describe.body;
  }
  EXPECT_EQ(wait(first).status, 201);

  auto update =
      send(request("PUT", "/streams/a", R"({"files":[)" + file_json(0, "app.bin") + "]}"));
  auto update2 = send(request("PUT", "/streams/a", R"({"description":"x"})"));
  auto del = send(request("DELETE", "/streams/a"));
  ASSERT_TRUE(update2->has_value());
  ASSERT_TRUE(del->has_value());
  EXPECT_EQ((*update2)->status, 409);
  EXPECT_EQ((*del)->status, 409);
  EXPECT_EQ(wait(update).status, 200);
  EXPECT_EQ(call("DELETE", "/streams/a").status, 200);
}

TEST_F(ControlServiceTest, TooManyIngestsIs429) {
  restart(Options{.max_concurrent_ingests = 1});
  auto first = send(request("POST", "/streams/a", create_body({file_json(0, "fw.bin")})));
  auto second = call("POST", "/streams/b", create_body({file_json(0, "app.bin")}));
  EXPECT_EQ(second.status, 429);
  EXPECT_EQ(Json(second.body).str("/error/code"), "RATE_LIMITED");
  ASSERT_NE(find_header(second, "Retry-After"), nullptr);
  // An update without files does not ingest and is not limited.
  EXPECT_EQ(wait(first).status, 201);
  auto again = send(request("PUT", "/streams/a", R"({"files":[)" + file_json(0, "app.bin") + "]}"));
  auto meta = call("PUT", "/streams/b", R"({"description":"x"})");
  EXPECT_EQ(meta.status, 404);  // b was never created, but the limit did not stop it
  EXPECT_EQ(wait(again).status, 200);
  EXPECT_EQ(call("POST", "/streams/b", create_body({file_json(0, "app.bin")})).status, 201);
}

TEST_F(ControlServiceTest, MaxStreamsIs422) {
  restart(Options{.max_streams = 2});
  EXPECT_EQ(call("POST", "/streams/a", create_body({file_json(0, "app.bin")})).status, 201);
  auto pending = send(request("POST", "/streams/b", create_body({file_json(0, "app.bin")})));
  auto r = call("POST", "/streams/c", create_body({file_json(0, "app.bin")}));
  EXPECT_EQ(r.status, 422);  // b in progress counts
  EXPECT_EQ(Json(r.body).str("/error/code"), "LIMIT_EXCEEDED");
  EXPECT_EQ(wait(pending).status, 201);
  EXPECT_EQ(call("DELETE", "/streams/a").status, 200);
  EXPECT_EQ(call("POST", "/streams/c", create_body({file_json(0, "app.bin")})).status, 201);
}

TEST_F(ControlServiceTest, FileOverMaxFileMibIs422WithBothSizes) {
  Options options;
  options.max_file_bytes = 100000;  // fw_ is 200015 bytes
  restart(options);
  auto r =
      call("POST", "/streams/big", create_body({file_json(0, "app.bin"), file_json(1, "fw.bin")}));
  EXPECT_EQ(r.status, 422) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "LIMIT_EXCEEDED");
  EXPECT_EQ(j.detail_fields(), std::vector<std::string>{"files[1].s3Location.key"});
  const std::string problem = j.str("/error/details/0/problem");
  EXPECT_NE(problem.find(std::to_string(fw_.size()) + " bytes"), std::string::npos) << problem;
  EXPECT_NE(problem.find("allows 100000 bytes"), std::string::npos) << problem;
  EXPECT_EQ(call("GET", "/streams/big").status, 404);
}

TEST_F(ControlServiceTest, NoSpaceIs507StorageFullUnlessTheContentIsStored) {
  Options options;
  restart(options);
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "fw.bin")})).status, 201);
  options.free_bytes->store(1000);
  put("new.bin", std::string(5000, 'n'));
  auto r = call("POST", "/streams/b", create_body({file_json(0, "new.bin")}));
  EXPECT_EQ(r.status, 507) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "STORAGE_FULL");
  EXPECT_NE(j.str("/error/message").find("needs 5000 bytes"), std::string::npos) << r.body;
  EXPECT_NE(j.str("/error/message").find("1000 bytes available"), std::string::npos) << r.body;
  // fw.bin's content is stored already: a second stream of it needs no space.
  put("fw-copy.bin", fw_);
  r = call("POST", "/streams/c", create_body({file_json(0, "fw-copy.bin")}));
  EXPECT_EQ(r.status, 201) << r.body;
}

// Buckets added are usable at once, removed ones are refused by name, streams made from a removed
// bucket stay; a directory that cannot be opened changes nothing.
TEST_F(ControlServiceTest, SetBucketsAddsAndRemovesBuckets) {
  fs::create_directories(dir_ + "/apps");
  std::ofstream(dir_ + "/apps/a.bin") << "app two";
  ASSERT_EQ(call("POST", "/streams/s1", create_body({file_json(0, "fw.bin")})).status, 201);
  EXPECT_EQ(call("POST", "/streams/s2", create_body({file_json(0, "a.bin", "apps")})).status, 400);

  auto set = control_->set_buckets({{"firmware", dir_ + "/fw"}, {"apps", dir_ + "/apps"}});
  ASSERT_TRUE(set) << set.error().message();
  EXPECT_EQ(call("POST", "/streams/s2", create_body({file_json(0, "a.bin", "apps")})).status, 201);

  set = control_->set_buckets({{"apps", dir_ + "/apps"}});
  ASSERT_TRUE(set) << set.error().message();
  auto r = call("POST", "/streams/s3", create_body({file_json(0, "fw.bin")}));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"files[0].s3Location.bucket"});
  EXPECT_NE(r.body.find("firmware"), std::string::npos) << r.body;
  EXPECT_EQ(call("GET", "/streams/s1").status, 200) << "a stream already made stays";

  // All or nothing: "bad" cannot be opened, so firmware is not added back either.
  set = control_->set_buckets(
      {{"apps", dir_ + "/apps"}, {"firmware", dir_ + "/fw"}, {"bad", dir_ + "/missing"}});
  ASSERT_FALSE(set);
  EXPECT_NE(set.error().message().find("buckets.bad"), std::string::npos) << set.error().message();
  EXPECT_EQ(call("POST", "/streams/s4", create_body({file_json(0, "fw.bin")})).status, 400);
  EXPECT_EQ(call("POST", "/streams/s5", create_body({file_json(0, "a.bin", "apps")})).status, 201);

  // A bucket moved to another directory serves from the new one.
  std::ofstream(dir_ + "/apps/fw.bin") << "moved";
  set = control_->set_buckets({{"firmware", dir_ + "/apps"}});
  ASSERT_TRUE(set) << set.error().message();
  r = call("POST", "/streams/s6", create_body({file_json(0, "fw.bin")}));
  ASSERT_EQ(r.status, 201) << r.body;
  r = call("GET", "/streams/s6");
  EXPECT_EQ(Json(r.body).num("/data/files/0/sizeBytes"), 5u) << r.body;
}

// A bucket removed while an ingest opens files beneath it: the ingest finishes with the directory
// it started with.
TEST_F(ControlServiceTest, SetBucketsDuringAnIngest) {
  auto slot = send(request("POST", "/streams/s1", create_body({file_json(0, "fw.bin")})));
  ASSERT_TRUE(control_->set_buckets({}));
  auto r = wait(slot);
  EXPECT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(call("POST", "/streams/s2", create_body({file_json(0, "fw.bin")})).status, 400);
}

}  // namespace
}  // namespace chunkd::engine

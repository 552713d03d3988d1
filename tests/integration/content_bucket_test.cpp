// The shared content bucket (storage.content_bucket, engine/content_bucket.hpp) end to end: the
// real chunkd, a real S3 implementation (moto's server, signatures checked) and a real broker.
// Instance A ingests a file and writes it to the bucket before answering 201; instance B, with an
// EMPTY data_dir and A's registry, serves a device byte-exact by filling the blob from the bucket;
// the same content created through another instance is not uploaded again; a bucket that refuses
// the upload fails the create with 503 and leaves nothing. Skipped without moto_server.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "tests/integration/api.hpp"
#include "tests/support/net.hpp"
#include "tests/support/s3_server.hpp"

namespace chunkd::test {
namespace {

namespace fs = std::filesystem;
using protocol::Format;

constexpr const char* kRemote = "cluster-content";

DownloadResult download(Device& dev, const std::string& stream) {
  DownloadOptions opts;
  opts.block_size = 131072;
  opts.mode = DownloadMode::Bitmap;
  opts.bitmap_blocks_per_request = protocol::kMaxRequestPayloadBytes / opts.block_size;
  return dev.download(stream, Format::Cbor, 0, opts);
}

std::uint64_t metric(Stack& stack, const std::string& line_prefix) {
  auto r = stack.request("GET", "/metrics");
  std::size_t at = r.body.find("\n" + line_prefix + " ");
  if (at == std::string::npos) return 0;
  const char* value = r.body.c_str() + at + line_prefix.size() + 2;
  return std::strtoull(value, nullptr, 10);
}

bool only_dot_entries(const std::string& dir) {
  std::error_code ec;
  return fs::is_empty(dir, ec) && !ec;
}

class ContentBucket : public ::testing::Test {
 protected:
  static TestS3Server* s3;
  static std::string* setup_error;

  static void SetUpTestSuite() {
    if (!TestS3Server::missing().empty()) return;
    s3 = new TestS3Server();
    if (!s3->start() || !s3->make_bucket(kRemote)) {
      setup_error = new std::string(s3->error() + "\n" + s3->log());
    }
  }
  static void TearDownTestSuite() {
    delete s3;
    s3 = nullptr;
    delete setup_error;
    setup_error = nullptr;
  }

  void SetUp() override {
    if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_EQ(setup_error, nullptr) << *setup_error;
    std::string error;
    dir_ = make_temp_dir("content-creds", error);
    ASSERT_FALSE(dir_.empty()) << error;
    credentials_ = dir_ + "/s3-credentials";
    write_file(credentials_, "[default]\naws_access_key_id = " + s3->key_id() +
                                 "\naws_secret_access_key = " + s3->secret() +
                                 "\n[wrong]\naws_access_key_id = " + s3->key_id() +
                                 "\naws_secret_access_key = not-the-secret\n");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Bucket "fw" (a local directory) plus the s3 bucket "shared" as storage.content_bucket.
  void configure(Stack& stack, const std::string& profile = "default",
                 const std::string& more_toml = "") {
    stack.bucket_dir();
    stack.daemon().set("storage", "content_bucket", "\"shared\"");
    stack.daemon().set_extra_toml(more_toml + "[buckets.shared]\ntype = \"s3\"\nendpoint = " +
                                  TestDaemon::quote(s3->endpoint()) +
                                  "\nregion = \"us-east-1\"\nbucket = \"" + kRemote +
                                  "\"\ncredentials_file = " + TestDaemon::quote(credentials_) +
                                  "\nprofile = \"" + profile + "\"\nretries = 1\n");
  }

  static std::string digest_of(Stack& stack, const std::string& id) {
    auto r = stack.request("GET", "/streams/" + id);
    Json j(r.body);
    return j.str("/data/files/0/digest").value_or("");
  }

  std::string dir_;
  std::string credentials_;
};
TestS3Server* ContentBucket::s3 = nullptr;
std::string* ContentBucket::setup_error = nullptr;

TEST_F(ContentBucket, AnInstanceWithAnEmptyDataDirServesFromTheBucket) {
  const std::string data = test_bytes((3u << 20) + 123, 41);
  Stack a;
  configure(a);
  ASSERT_TRUE(a.start());
  ASSERT_TRUE(a.create_file_stream("shared1", data));
  const std::string digest = digest_of(a, "shared1");
  ASSERT_EQ(digest.size(), 32u);
  // In the bucket before the 201: blob and manifest.
  auto blob = s3->get(kRemote, "blobs/" + digest);
  ASSERT_TRUE(blob) << s3->error();
  EXPECT_TRUE(*blob == data) << "the bucket's blob differs (" << blob->size() << " bytes)";
  auto manifest = s3->get(kRemote, "manifests/" + digest);
  ASSERT_TRUE(manifest) << s3->error();
  EXPECT_EQ(manifest->rfind("chunkd-manifest 1\nsize 3145851\n", 0), 0u) << *manifest;
  EXPECT_EQ(metric(a, "chunkd_content_bucket_uploads_total{result=\"uploaded\"}"), 1u);
  EXPECT_EQ(a.daemon().stop(), 0) << a.daemon().log();

  // B: nothing in its data_dir but A's registry (as a shared registry would show it).
  Stack b;
  configure(b);
  b.daemon().set("storage", "content_bucket_fills", "1");
  fs::create_directories(b.daemon().data_dir());
  fs::copy_file(a.daemon().data_dir() + "/registry.sqlite3",
                b.daemon().data_dir() + "/registry.sqlite3");
  ASSERT_TRUE(b.start());
  EXPECT_NE(b.daemon().log().find("will be filled from content bucket \"shared\""),
            std::string::npos)
      << b.daemon().log(4000);
  EXPECT_NE(b.daemon().log().find("content_bucket_uploads 4, content_bucket_fills 1"),
            std::string::npos)
      << b.daemon().log(4000);
  EXPECT_FALSE(fs::exists(b.daemon().data_dir() + "/blobs/" + digest.substr(0, 2) + "/" + digest));

  auto dev = b.device("content-dev-1", "shared1");
  ASSERT_TRUE(dev);
  auto result = download(*dev, "shared1");
  ASSERT_TRUE(result.ok) << result.error << b.daemon().log(8000);
  ASSERT_EQ(result.bytes.size(), data.size());
  EXPECT_TRUE(bytes_to_string(result.bytes) == data) << "content differs";
  EXPECT_EQ(metric(b, "chunkd_content_bucket_fills_total{result=\"ok\"}"), 1u);
  EXPECT_EQ(metric(b, "chunkd_content_bucket_filled_bytes_total"), data.size());
  // While the blob filled, the device was told to retry (RequestThrottled), never failed.
  EXPECT_GE(metric(b, "chunkd_requests_total{verb=\"get\",outcome=\"RequestThrottled\"}"), 1u);
  EXPECT_EQ(metric(b, "chunkd_requests_total{verb=\"get\",outcome=\"InternalError\"}"), 0u);
  EXPECT_TRUE(fs::exists(b.daemon().data_dir() + "/blobs/" + digest.substr(0, 2) + "/" + digest));
  EXPECT_TRUE(only_dot_entries(b.daemon().data_dir() + "/tmp"));

  // A second device is served from B's store: no second fill.
  auto dev2 = b.device("content-dev-2", "shared1");
  ASSERT_TRUE(dev2);
  auto again = download(*dev2, "shared1");
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_TRUE(bytes_to_string(again.bytes) == data);
  EXPECT_EQ(metric(b, "chunkd_content_bucket_fills_total{result=\"ok\"}"), 1u);

  // The same content created through B as well is found in the bucket, not written again.
  ASSERT_TRUE(b.create_file_stream("shared1-again", data));
  EXPECT_EQ(digest_of(b, "shared1-again"), digest);
  EXPECT_EQ(metric(b, "chunkd_content_bucket_uploads_total{result=\"present\"}"), 1u);
  EXPECT_EQ(metric(b, "chunkd_content_bucket_uploads_total{result=\"uploaded\"}"), 0u);
  EXPECT_EQ(s3->versions(kRemote, "blobs/" + digest), 1) << s3->error();
  EXPECT_EQ(s3->versions(kRemote, "manifests/" + digest), 1) << s3->error();
  EXPECT_EQ(b.daemon().stop(), 0) << b.daemon().log();
}

TEST_F(ContentBucket, AFileFetchedFromAnS3SourceIsWrittenThereToo) {
  const std::string data = test_bytes(700000, 43);
  ASSERT_TRUE(s3->make_bucket("cluster-sources")) << s3->error();
  ASSERT_TRUE(s3->put("cluster-sources", "fw.bin", data)) << s3->error();
  Stack stack;
  configure(stack, "default",
            "[buckets.sources]\ntype = \"s3\"\nendpoint = " + TestDaemon::quote(s3->endpoint()) +
                "\nregion = \"us-east-1\"\nbucket = \"cluster-sources\"\ncredentials_file = " +
                TestDaemon::quote(credentials_) + "\n");
  ASSERT_TRUE(stack.start());
  auto r = stack.create("from-s3", {{0, "sources", "fw.bin", std::nullopt}});
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log(8000);
  const std::string digest = digest_of(stack, "from-s3");
  auto blob = s3->get(kRemote, "blobs/" + digest);
  ASSERT_TRUE(blob) << s3->error();
  EXPECT_TRUE(*blob == data) << "the bucket's blob differs (" << blob->size() << " bytes)";
  EXPECT_EQ(metric(stack, "chunkd_content_bucket_uploads_total{result=\"uploaded\"}"), 1u);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST_F(ContentBucket, ARefusedUploadFailsTheCreateAndLeavesNothing) {
  const std::string data = test_bytes(300000, 42);
  Stack stack;
  configure(stack, "wrong");
  ASSERT_TRUE(stack.start());
  const std::string key = stack.put("refused.bin", data);
  auto r = stack.create("refused", {{0, "fw", key, std::nullopt}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("content bucket \\\"shared\\\""), std::string::npos) << r.body;
  EXPECT_EQ(stack.request("GET", "/streams/refused").status, 404);
  EXPECT_EQ(metric(stack, "chunkd_content_bucket_uploads_total{result=\"access_denied\"}"), 1u);
  // The ingested blob is collected (no stream references it), the temp files are gone.
  const std::string blobs = stack.daemon().data_dir() + "/blobs";
  bool collected = false;
  for (int i = 0; i < 100 && !collected; ++i) {
    collected = true;
    for (const auto& e : fs::recursive_directory_iterator(blobs)) {
      if (e.is_regular_file()) collected = false;
    }
    if (!collected) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(collected) << "a blob is left in " << blobs;
  EXPECT_TRUE(only_dot_entries(stack.daemon().data_dir() + "/tmp"));
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

// A stream's life after its create, through the control service (engine/control_service.hpp)
// against a real registry, content store and thread-pool file reader: update, allowedThings,
// delete, list pages, a stream that failed verification, long-id warnings and a restart.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/catalog.hpp"
#include "engine/content_store.hpp"
#include "engine/control_service.hpp"
#include "tests/engine/control_service_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

TEST_F(ControlServiceTest, UpdateBumpsVersionAndReplacesOnlyGivenFields) {
  ASSERT_EQ(call("POST", "/streams/s", create_body({file_json(0, "fw.bin")}, "one")).status, 201);
  clock_.advance_ms(5000);
  auto r = call("PUT", "/streams/s", R"({"description":"two"})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json u(r.body);
  EXPECT_EQ(u.num("/data/streamVersion"), 2u);
  EXPECT_EQ(u.str("/data/description"), "two");
  Json d(call("GET", "/streams/s").body);
  EXPECT_EQ(d.num("/data/streamVersion"), 2u);
  EXPECT_EQ(d.str("/data/roleArn"), kRole);
  EXPECT_EQ(d.str("/data/files/0/digest"), digest_of(fw_));
  EXPECT_EQ(d.str("/data/tags/0/Key"), "team");
  EXPECT_NE(d.str("/data/created_at"), d.str("/data/updated_at"));

  // New files: re-ingested, version 3; the old blob is collected.
  put("fw.bin", "firmware 2");
  r = call("PUT", "/streams/s", R"({"files":[)" + file_json(3, "fw.bin") + "]}");
  ASSERT_EQ(r.status, 200) << r.body;
  Json d3(call("GET", "/streams/s").body);
  EXPECT_EQ(d3.num("/data/streamVersion"), 3u);
  EXPECT_EQ(d3.str("/data/description"), "two");
  ASSERT_EQ(d3.size("/data/files"), 1u);
  EXPECT_EQ(d3.num("/data/files/0/fileId"), 3u);
  EXPECT_EQ(d3.str("/data/files/0/digest"), digest_of("firmware 2"));
  run_until([&] { return blob_files() == 1; });
  EXPECT_TRUE(fs::exists(blob_path(dir_ + "/data", digest_of("firmware 2"))));

  EXPECT_EQ(call("PUT", "/streams/none", R"({"description":"x"})").status, 404);
  EXPECT_EQ(call("PUT", "/streams/s", "{}").status, 400);
  r = call("PUT", "/streams/s", R"({"files":[)" + file_json(0, "missing") + "]}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"files[0].s3Location.key"});
  EXPECT_EQ(Json(call("GET", "/streams/s").body).num("/data/streamVersion"), 3u);
}

// allowedThings: set at create, shown by create, describe and list, reaching the catalog the data
// plane reads; an update of it alone changes the rule but not the version (the content devices
// download is the same), null removes it, and it survives a restart.
TEST_F(ControlServiceTest, AllowedThingsAreStoredShownReplacedAndRemoved) {
  std::string body = create_body({file_json(0, "fw.bin")});
  body.insert(body.size() - 1, R"(,"allowedThings":["sensor-*","gw-0?"])");
  auto r = call("POST", "/streams/g", body);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Json(r.body).size("/data/allowedThings"), 2u);
  ASSERT_EQ(call("POST", "/streams/open", create_body({file_json(0, "app.bin")})).status, 201);
  auto catalog_list = [&](std::string_view id) { return catalog_->find(id)->allowed_things; };
  EXPECT_EQ(catalog_list("g"), (std::vector<std::string>{"sensor-*", "gw-0?"}));
  EXPECT_EQ(catalog_list("open"), std::nullopt);

  Json d(call("GET", "/streams/g").body);
  EXPECT_EQ(d.str("/data/allowedThings/0"), "sensor-*");
  EXPECT_EQ(d.str("/data/allowedThings/1"), "gw-0?");
  EXPECT_FALSE(Json(call("GET", "/streams/open").body).has("/data/allowedThings"));
  Json listed(call("GET", "/streams").body);
  EXPECT_EQ(listed.str("/data/streams/0/streamId"), "g");
  EXPECT_EQ(listed.size("/data/streams/0/allowedThings"), 2u);
  EXPECT_FALSE(listed.has("/data/streams/1/allowedThings"));

  clock_.advance_ms(1000);
  r = call("PUT", "/streams/g", R"({"allowedThings":["gw-*"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json u(r.body);
  EXPECT_EQ(u.num("/data/streamVersion"), 1u) << "who may read is not a new version";
  EXPECT_EQ(u.str("/data/allowedThings/0"), "gw-*");
  EXPECT_NE(u.str("/data/updated_at"), u.str("/data/created_at"));
  EXPECT_EQ(catalog_list("g"), std::vector<std::string>{"gw-*"});

  r = call("PUT", "/streams/g", R"({"description":"two","allowedThings":["a","b"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r.body).num("/data/streamVersion"), 2u) << "with another field: a new version";
  r = call("PUT", "/streams/g", R"({"description":"three"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(catalog_list("g"), (std::vector<std::string>{"a", "b"})) << "untouched when absent";

  r = call("PUT", "/streams/g", R"({"allowedThings":["bad thing"]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"allowedThings[0]"});
  EXPECT_EQ(catalog_list("g"), (std::vector<std::string>{"a", "b"}));

  restart();
  EXPECT_EQ(catalog_list("g"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(catalog_list("open"), std::nullopt);
  r = call("PUT", "/streams/g", R"({"allowedThings":null})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Json(r.body).has("/data/allowedThings"));
  EXPECT_EQ(catalog_list("g"), std::nullopt);
  restart();
  EXPECT_EQ(catalog_list("g"), std::nullopt);
  EXPECT_EQ(Json(call("GET", "/streams/g").body).num("/data/streamVersion"), 3u);
}

TEST_F(ControlServiceTest, DeleteThenDescribeIs404) {
  ASSERT_EQ(call("POST", "/streams/s", create_body({file_json(0, "fw.bin")})).status, 201);
  auto r = call("DELETE", "/streams/s");
  ASSERT_EQ(r.status, 200);
  Json j(r.body);
  EXPECT_EQ(j.str("/data/id"), "s");
  r = call("GET", "/streams/s");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Json(r.body).str("/error/code"), "NOT_FOUND");
  EXPECT_EQ(call("DELETE", "/streams/s").status, 404);
  run_until([&] { return blob_files() == 0; });
}

TEST_F(ControlServiceTest, ListPaginatesBothWays) {
  for (const char* id : {"c", "a", "e", "b", "d"}) {
    ASSERT_EQ(
        call("POST", std::string("/streams/") + id, create_body({file_json(0, "app.bin")})).status,
        201);
  }
  auto ids = [](const Json& j) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < j.size("/data/streams"); ++i) {
      out.push_back(j.str("/data/streams/" + std::to_string(i) + "/streamId"));
    }
    return out;
  };
  std::vector<std::string> seen;
  std::string token;
  for (int page = 0; page < 3; ++page) {
    std::string query = "maxResults=2";
    if (!token.empty()) query += "&nextToken=" + token;
    auto r = call("GET", "/streams", "", query);
    ASSERT_EQ(r.status, 200) << r.body;
    Json j(r.body);
    for (auto& id : ids(j)) seen.push_back(id);
    EXPECT_EQ(j.str("/data/streams/0/streamArn").rfind("arn:chunkd:stream/", 0), 0u);
    EXPECT_EQ(j.num("/data/streams/0/streamVersion"), 1u);
    token = j.has("/data/nextToken") ? j.str("/data/nextToken") : "";
    EXPECT_EQ(token.empty(), page == 2) << page;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d", "e"}));

  seen.clear();
  token.clear();
  for (int page = 0; page < 2; ++page) {
    std::string query = "maxResults=3&isAscendingOrder=false";
    if (!token.empty()) query += "&nextToken=" + token;
    Json j(call("GET", "/streams", "", query).body);
    for (auto& id : ids(j)) seen.push_back(id);
    token = j.has("/data/nextToken") ? j.str("/data/nextToken") : "";
  }
  EXPECT_TRUE(token.empty());
  EXPECT_EQ(seen, (std::vector<std::string>{"e", "d", "c", "b", "a"}));

  // Exactly a page full: no nextToken.
  Json all(call("GET", "/streams", "", "maxResults=5").body);
  EXPECT_EQ(ids(all).size(), 5u);
  EXPECT_FALSE(all.has("/data/nextToken"));
  Json dflt(call("GET", "/streams").body);
  EXPECT_EQ(ids(dflt).size(), 5u);

  EXPECT_EQ(call("GET", "/streams", "", "maxResults=0").status, 400);
  EXPECT_EQ(call("GET", "/streams", "", "maxResults=251").status, 400);
  EXPECT_EQ(call("GET", "/streams", "", "nextToken=garbage!").status, 400);
}

TEST_F(ControlServiceTest, DescribeAndMetricsShowAStreamThatFailedVerification) {
  ASSERT_EQ(call("POST", "/streams/fw", create_body({file_json(0, "fw.bin")})).status, 201);
  Json ok(call("GET", "/streams/fw").body);
  EXPECT_EQ(ok.str("/data/health"), "ok");
  EXPECT_FALSE(ok.has("/data/healthDetail"));
  StreamSnapshot s = catalog_->find("fw");
  health_->failed(*s, s->files[0], 2, CacheError::ManifestMismatch);
  Json bad(call("GET", "/streams/fw").body);
  EXPECT_EQ(bad.str("/data/health"), "corrupt");
  EXPECT_EQ(bad.num("/data/healthDetail/fileId"), 0u);
  EXPECT_EQ(bad.num("/data/healthDetail/extent"), 2u);
  EXPECT_EQ(bad.str("/data/healthDetail/cause"), "manifest_mismatch");
  std::string page = call("GET", "/metrics").body;
  EXPECT_NE(page.find("chunkd_streams_unhealthy 1\n"), std::string::npos) << page;
  EXPECT_NE(page.find("chunkd_block_failures_total{cause=\"manifest_mismatch\"} 1\n"),
            std::string::npos)
      << page;
  // Re-ingesting makes a new, healthy version.
  ASSERT_EQ(call("PUT", "/streams/fw", R"({"files":[)" + file_json(0, "app.bin") + "]}").status,
            200);
  EXPECT_EQ(Json(call("GET", "/streams/fw").body).str("/data/health"), "ok");
  EXPECT_NE(call("GET", "/metrics").body.find("chunkd_streams_unhealthy 0\n"), std::string::npos);
}

TEST_F(ControlServiceTest, LongIdsCarryAWarning) {
  std::string id(45, 'x');
  auto r = call("POST", "/streams/" + id, create_body({file_json(0, "app.bin")}));
  ASSERT_EQ(r.status, 201);
  Json j(r.body);
  ASSERT_EQ(j.size("/data/warnings"), 1u);
  EXPECT_NE(j.str("/data/warnings/0").find("45-byte"), std::string::npos);
  r = call("PUT", "/streams/" + id, R"({"description":"x"})");
  EXPECT_EQ(Json(r.body).size("/data/warnings"), 1u);
  r = call("POST", "/streams/" + std::string(44, 'y'), create_body({file_json(0, "app.bin")}));
  EXPECT_FALSE(Json(r.body).has("/data/warnings"));
}

TEST_F(ControlServiceTest, RestartReloadsTheRegistry) {
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "fw.bin")})).status, 201);
  ASSERT_EQ(call("POST", "/streams/b", create_body({file_json(0, "app.bin")})).status, 201);
  ASSERT_EQ(call("PUT", "/streams/b", R"({"description":"bee"})").status, 200);
  ASSERT_EQ(call("DELETE", "/streams/a").status, 200);
  std::string before = call("GET", "/streams/b").body;
  restart();
  EXPECT_EQ(catalog_->size(), 1u);
  EXPECT_EQ(call("GET", "/streams/a").status, 404);
  auto r = call("GET", "/streams/b");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, before);
  Json j(r.body);
  EXPECT_EQ(j.num("/data/streamVersion"), 2u);
  EXPECT_EQ(j.str("/data/description"), "bee");
  // The store agrees: the blob of b is there.
  EXPECT_TRUE(fs::exists(blob_path(dir_ + "/data", digest_of(app_))));
  EXPECT_EQ(catalog_->find("b")->files[0].manifest.size(), 1u);
}

}  // namespace
}  // namespace chunkd::engine

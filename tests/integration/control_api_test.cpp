// The real chunkd binary's control API, driven over HTTP as an operator would (SPEC.md §2,
// docs/control-api.md), with a private Mosquitto behind it: the metrics families after a
// download, and the stream routes: create, describe (sizes and digests, as devices see them too),
// list pages in both orders, update and delete.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <regex>
#include <string>
#include <vector>

#include "tests/integration/api.hpp"
#include "tests/integration/control_api_fixture.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;

const std::regex kRfc3339Utc(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$)");
const std::regex kDigest(R"(^[0-9a-f]{32}$)");

// The content digest: canonical (big-endian) XXH3-128 in lowercase hex, what chunkload verifies.
std::string xxh3_128_hex(const std::string& bytes) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(bytes.data(), bytes.size()));
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : canonical.digest) {
    out.push_back(hex[c >> 4]);
    out.push_back(hex[c & 15]);
  }
  return out;
}

TEST(ControlApi, MetricsHaveTheDocumentedFamilies) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string bytes = test_bytes(20000, 3);
  ASSERT_TRUE(stack.create_file_stream("m", bytes));
  ASSERT_TRUE(downloads_as(stack, "meter", "m", bytes));
  stack.request("GET", "/nope");
  auto r = stack.request("GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  ASSERT_NE(r.header("content-type"), nullptr);
  EXPECT_NE(r.header("content-type")->find("text/plain"), std::string::npos);
  for (const char* family :
       {"chunkd_http_requests_total", "chunkd_streams", "chunkd_requests_total",
        "chunkd_blocks_sent_total", "chunkd_bytes_sent_total", "chunkd_throttled_total",
        "chunkd_cache_hits_total", "chunkd_cache_misses_total", "chunkd_ingest_bytes_total",
        "chunkd_mqtt_messages_published_total", "chunkd_mqtt_socket_writes_total",
        "chunkd_mqtt_reconnects_total"}) {
    EXPECT_NE(r.body.find(std::string("# TYPE ") + family + " "), std::string::npos)
        << family << "\n"
        << r.body;
  }
  EXPECT_NE(r.body.find("chunkd_streams 1"), std::string::npos) << r.body;
  // The download's replies left through the pool's own path, several to a write at most.
  auto value_of = [&](const std::string& series) {
    const auto at = r.body.find("\n" + series + " ");
    return at == std::string::npos ? -1.0 : std::stod(r.body.substr(at + series.size() + 2));
  };
  const double published = value_of("chunkd_mqtt_messages_published_total");
  const double writes = value_of("chunkd_mqtt_socket_writes_total");
  EXPECT_GT(published, 0) << r.body;
  EXPECT_GT(writes, 0) << r.body;
  EXPECT_LE(writes, published) << r.body;
  EXPECT_EQ(value_of("chunkd_mqtt_reconnects_total"), 0) << r.body;
  EXPECT_NE(r.body.find(R"(chunkd_http_requests_total{route="create",status="201"} 1)"),
            std::string::npos)
      << r.body;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, CreateAnswers201WithTheEnvelope) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  stack.put("a.bin", test_bytes(1000, 1));
  auto r =
      stack.request("POST", "/streams/fw-1",
                    create_body({{0, "fw", "a.bin", std::nullopt}}, "first firmware",
                                R"([{"Key":"team","Value":"ota"},{"Key":"channel","Value":""}])"));
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log();
  ASSERT_NE(r.header("content-type"), nullptr);
  EXPECT_NE(r.header("content-type")->find("application/json"), std::string::npos);
  Json j(r.body);
  ASSERT_TRUE(j.ok()) << r.body;
  EXPECT_EQ(j.boolean("/success"), true);
  EXPECT_EQ(j.str("/data/id"), "fw-1");
  EXPECT_EQ(j.str("/data/streamId"), "fw-1");
  EXPECT_EQ(j.str("/data/streamArn"), "arn:chunkd:stream/fw-1");
  EXPECT_EQ(j.u64("/data/streamVersion"), 1u);
  EXPECT_EQ(j.str("/data/description"), "first firmware");
  auto created = j.str("/data/created_at");
  ASSERT_TRUE(created.has_value()) << r.body;
  EXPECT_TRUE(std::regex_match(*created, kRfc3339Utc)) << *created;
  EXPECT_FALSE(j.has("/data/warnings")) << r.body;

  // The same id again: 409 ALREADY_EXISTS, and the stream is unchanged.
  auto again = stack.request("POST", "/streams/fw-1",
                             create_body({{0, "fw", "a.bin", std::nullopt}}, "other"));
  EXPECT_TRUE(is_error(again, 409, "ALREADY_EXISTS"));
  Json d(stack.request("GET", "/streams/fw-1").body);
  EXPECT_EQ(d.str("/data/description"), "first firmware");
  EXPECT_EQ(d.u64("/data/streamVersion"), 1u);

  // Over 44 characters: accepted with a warning.
  std::string long_id(60, 'x');
  auto w =
      stack.request("POST", "/streams/" + long_id, create_body({{0, "fw", "a.bin", std::nullopt}}));
  ASSERT_EQ(w.status, 201) << w.body;
  Json jw(w.body);
  EXPECT_EQ(jw.array_size("/data/warnings"), 1u) << w.body;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, DescribeReportsFilesSizesAndDigests) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string a = test_bytes(1000, 1);
  const std::string b = test_bytes(300000, 2);
  stack.put("dir/a.bin", a);
  stack.put("b.bin", b);
  auto c = stack.request(
      "POST", "/streams/two",
      create_body({{3, "fw", "dir/a.bin", std::nullopt}, {7, "fw", "b.bin", std::nullopt}},
                  "two files", R"([{"Key":"team","Value":"ota"}])"));
  ASSERT_EQ(c.status, 201) << c.body;

  auto r = stack.request("GET", "/streams/two");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  ASSERT_TRUE(j.ok()) << r.body;
  EXPECT_EQ(j.boolean("/success"), true);
  EXPECT_EQ(j.str("/data/id"), "two");
  EXPECT_EQ(j.str("/data/streamId"), "two");
  EXPECT_EQ(j.str("/data/streamArn"), "arn:chunkd:stream/two");
  EXPECT_EQ(j.u64("/data/streamVersion"), 1u);
  EXPECT_EQ(j.str("/data/description"), "two files");
  EXPECT_EQ(j.str("/data/roleArn"), kRoleArn);
  EXPECT_EQ(j.str("/data/tags/0/Key"), "team");
  EXPECT_EQ(j.str("/data/tags/0/Value"), "ota");
  ASSERT_TRUE(j.str("/data/created_at").has_value());
  ASSERT_TRUE(j.str("/data/updated_at").has_value());
  EXPECT_TRUE(std::regex_match(*j.str("/data/updated_at"), kRfc3339Utc));
  ASSERT_EQ(j.array_size("/data/files"), 2u) << r.body;
  EXPECT_EQ(j.u64("/data/files/0/fileId"), 3u);
  EXPECT_EQ(j.str("/data/files/0/s3Location/bucket"), "fw");
  EXPECT_EQ(j.str("/data/files/0/s3Location/key"), "dir/a.bin");
  EXPECT_EQ(j.u64("/data/files/0/sizeBytes"), a.size());
  EXPECT_EQ(j.u64("/data/files/1/fileId"), 7u);
  EXPECT_EQ(j.u64("/data/files/1/sizeBytes"), b.size());
  auto digest_a = j.str("/data/files/0/digest");
  auto digest_b = j.str("/data/files/1/digest");
  ASSERT_TRUE(digest_a && digest_b) << r.body;
  EXPECT_TRUE(std::regex_match(*digest_a, kDigest)) << *digest_a;
  EXPECT_TRUE(std::regex_match(*digest_b, kDigest)) << *digest_b;
  EXPECT_NE(*digest_a, *digest_b);
  EXPECT_EQ(*digest_a, xxh3_128_hex(a));
  EXPECT_EQ(*digest_b, xxh3_128_hex(b));

  // Same content under another key: same digest. Pinning it: accepted; a wrong pin: rejected.
  stack.put("copy-of-a.bin", a);
  auto pinned = stack.request("POST", "/streams/pinned",
                              create_body({{0, "fw", "copy-of-a.bin", *digest_a}}));
  ASSERT_EQ(pinned.status, 201) << pinned.body;
  Json jp(stack.request("GET", "/streams/pinned").body);
  EXPECT_EQ(jp.str("/data/files/0/digest"), *digest_a);
  auto mismatch = stack.request("POST", "/streams/pinned-wrong",
                                create_body({{0, "fw", "copy-of-a.bin", *digest_b}}));
  EXPECT_TRUE(is_error(mismatch, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(mismatch, "files[0].s3Location.version")) << mismatch.body;
  EXPECT_TRUE(is_error(stack.request("GET", "/streams/pinned-wrong"), 404, "NOT_FOUND"));

  // The devices see the same sizes, in both formats.
  auto dev = stack.device("thing-1", "two");
  ASSERT_TRUE(dev);
  for (auto fmt : {Format::Json, Format::Cbor}) {
    auto d = dev->describe("two", fmt, "tok");
    ASSERT_TRUE(d);
    ASSERT_EQ(d->kind, protocol::ReplyKind::Description) << d->rejected.code << d->decode_error;
    EXPECT_EQ(d->description.version, 1u);
    EXPECT_EQ(d->description.description, "two files");
    ASSERT_EQ(d->description.files.size(), 2u);
    EXPECT_EQ(d->description.files[0].file_id, 3u);
    EXPECT_EQ(d->description.files[0].size_bytes, a.size());
    EXPECT_EQ(d->description.files[1].file_id, 7u);
    EXPECT_EQ(d->description.files[1].size_bytes, b.size());
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, ListPaginatesInBothOrders) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  stack.put("a.bin", test_bytes(100, 1));
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    std::string id = "s-" + std::to_string(i);
    ids.push_back(id);
  }
  // Create out of order: the list is ordered by id anyway.
  for (int i : {3, 0, 6, 1, 5, 2, 4}) {
    auto r =
        stack.request("POST", "/streams/" + ids[static_cast<std::size_t>(i)],
                      create_body({{0, "fw", "a.bin", std::nullopt}}, "d" + std::to_string(i)));
    ASSERT_EQ(r.status, 201) << r.body;
  }
  for (bool ascending : {true, false}) {
    SCOPED_TRACE(ascending ? "ascending" : "descending");
    std::vector<std::string> seen;
    std::vector<std::size_t> page_sizes;
    std::string token;
    for (int page = 0; page < 10; ++page) {
      std::string target = "/streams?maxResults=3&isAscendingOrder=";
      target += ascending ? "true" : "false";
      if (!token.empty()) target += "&nextToken=" + token;
      auto r = stack.request("GET", target);
      ASSERT_EQ(r.status, 200) << r.body;
      Json j(r.body);
      ASSERT_EQ(j.boolean("/success"), true) << r.body;
      auto page_ids = list_ids(r);
      page_sizes.push_back(page_ids.size());
      seen.insert(seen.end(), page_ids.begin(), page_ids.end());
      // Every entry carries the summary fields.
      for (std::size_t k = 0; k < page_ids.size(); ++k) {
        std::string p = "/data/streams/" + std::to_string(k);
        EXPECT_EQ(j.str(p + "/streamId"), page_ids[k]);
        EXPECT_EQ(j.str(p + "/streamArn"), "arn:chunkd:stream/" + page_ids[k]);
        EXPECT_EQ(j.u64(p + "/streamVersion"), 1u);
        EXPECT_TRUE(j.str(p + "/description").has_value());
        EXPECT_TRUE(j.str(p + "/created_at").has_value());
      }
      auto next = j.str("/data/nextToken");
      if (!next) break;
      ASSERT_FALSE(next->empty());
      token = *next;
    }
    EXPECT_EQ(page_sizes, (std::vector<std::size_t>{3, 3, 1}));
    std::vector<std::string> want = ids;
    if (!ascending) std::reverse(want.begin(), want.end());
    EXPECT_EQ(seen, want);
  }
  // Default page holds all; bad parameters are validation errors naming the parameter.
  EXPECT_EQ(list_ids(stack.request("GET", "/streams")).size(), 7u);
  auto bad = stack.request("GET", "/streams?maxResults=0");
  EXPECT_TRUE(is_error(bad, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(bad, "maxResults")) << bad.body;
  auto bad2 = stack.request("GET", "/streams?maxResults=500&nextToken=abc");
  EXPECT_TRUE(is_error(bad2, 400, "VALIDATION_ERROR"));
  EXPECT_EQ(detail_fields(bad2), (std::vector<std::string>{"maxResults", "nextToken"}))
      << bad2.body;
  auto bad3 = stack.request("GET", "/streams?isAscendingOrder=maybe");
  EXPECT_TRUE(is_error(bad3, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(bad3, "isAscendingOrder")) << bad3.body;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, UpdateBumpsTheVersionAndDeleteRemoves) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string v1 = test_bytes(5000, 1);
  const std::string v2 = test_bytes(9000, 2);
  stack.put("v1.bin", v1);
  stack.put("v2.bin", v2);
  ASSERT_EQ(stack.create("up", {{0, "fw", "v1.bin", std::nullopt}}, "one").status, 201);

  auto u = stack.request("PUT", "/streams/up", R"({"description":"two"})");
  ASSERT_EQ(u.status, 200) << u.body;
  Json ju(u.body);
  EXPECT_EQ(ju.boolean("/success"), true);
  EXPECT_EQ(ju.str("/data/id"), "up");
  EXPECT_EQ(ju.u64("/data/streamVersion"), 2u);
  EXPECT_EQ(ju.str("/data/description"), "two");

  auto u2 = stack.request("PUT", "/streams/up",
                          "{\"files\":" + files_json({{0, "fw", "v2.bin", std::nullopt}}) + "}");
  ASSERT_EQ(u2.status, 200) << u2.body;
  Json d(stack.request("GET", "/streams/up").body);
  EXPECT_EQ(d.u64("/data/streamVersion"), 3u);
  EXPECT_EQ(d.str("/data/description"), "two");
  EXPECT_EQ(d.u64("/data/files/0/sizeBytes"), v2.size());
  EXPECT_EQ(d.str("/data/files/0/s3Location/key"), "v2.bin");
  EXPECT_TRUE(downloads_as(stack, "updater", "up", v2));

  auto empty = stack.request("PUT", "/streams/up", "{}");
  EXPECT_TRUE(is_error(empty, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(empty, "body")) << empty.body;
  auto tags = stack.request("PUT", "/streams/up", R"({"tags":[{"Key":"a","Value":"b"}]})");
  EXPECT_TRUE(is_error(tags, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(tags, "tags")) << tags.body;
  EXPECT_TRUE(
      is_error(stack.request("PUT", "/streams/nope", R"({"description":"x"})"), 404, "NOT_FOUND"));
  Json unchanged(stack.request("GET", "/streams/up").body);
  EXPECT_EQ(unchanged.u64("/data/streamVersion"), 3u);

  auto del = stack.request("DELETE", "/streams/up");
  ASSERT_EQ(del.status, 200) << del.body;
  Json jd(del.body);
  EXPECT_EQ(jd.boolean("/success"), true);
  EXPECT_EQ(jd.str("/data/id"), "up");
  EXPECT_TRUE(is_error(stack.request("GET", "/streams/up"), 404, "NOT_FOUND"));
  EXPECT_TRUE(is_error(stack.request("DELETE", "/streams/up"), 404, "NOT_FOUND"));
  EXPECT_TRUE(list_ids(stack.request("GET", "/streams")).empty());
  // The id can be used again, from version 1.
  auto again = stack.create("up", {{0, "fw", "v1.bin", std::nullopt}});
  ASSERT_EQ(again.status, 201) << again.body;
  EXPECT_EQ(Json(again.body).u64("/data/streamVersion"), 1u);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

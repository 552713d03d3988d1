// The control API of the real chunkd binary, driven over HTTP as an operator would (SPEC.md §2,
// docs/control-api.md), with a private Mosquitto behind it.
#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <regex>
#include <set>
#include <thread>

#include "tests/integration/api.hpp"

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

// The error envelope: success false, the code, a message; the status matches the code.
::testing::AssertionResult is_error(const HttpClientResponse& r, int status,
                                    std::string_view code) {
  if (r.status != status) {
    return ::testing::AssertionFailure()
           << "status " << r.status << " (want " << status << "): " << r.body << r.error;
  }
  Json j(r.body);
  if (!j.ok()) return ::testing::AssertionFailure() << "not JSON: " << r.body;
  if (j.boolean("/success") != false) return ::testing::AssertionFailure() << r.body;
  if (j.str("/error/code") != std::string(code)) {
    return ::testing::AssertionFailure() << "code (want " << code << "): " << r.body;
  }
  auto message = j.str("/error/message");
  if (!message || message->empty())
    return ::testing::AssertionFailure() << "no message: " << r.body;
  return ::testing::AssertionSuccess();
}

// True when the error details name `field`.
bool names_field(const HttpClientResponse& r, std::string_view field) {
  Json j(r.body);
  auto details = j.at("/error/details");
  simdjson::dom::array a;
  if (!details || details->get(a) != simdjson::SUCCESS) return false;
  for (auto d : a) {
    std::string_view f;
    if (d["field"].get(f) == simdjson::SUCCESS && f == field) return true;
  }
  return false;
}

std::vector<std::string> detail_fields(const HttpClientResponse& r) {
  std::vector<std::string> out;
  Json j(r.body);
  auto details = j.at("/error/details");
  simdjson::dom::array a;
  if (!details || details->get(a) != simdjson::SUCCESS) return out;
  for (auto d : a) {
    std::string_view f;
    if (d["field"].get(f) == simdjson::SUCCESS) out.emplace_back(f);
  }
  return out;
}

// Downloads file 0 of `stream` as device `thing` and compares it with `expected`.
::testing::AssertionResult downloads_as(Stack& stack, const std::string& thing,
                                        const std::string& stream, const std::string& expected,
                                        Format format = Format::Cbor) {
  auto dev = stack.device(thing, stream);
  if (!dev) return ::testing::AssertionFailure() << "no device";
  DownloadOptions opts;
  opts.block_size = 4096;
  auto r = dev->download(stream, format, 0, opts);
  if (!r.ok) return ::testing::AssertionFailure() << stream << ": " << r.error;
  if (bytes_to_string(r.bytes) != expected) {
    return ::testing::AssertionFailure()
           << stream << ": downloaded bytes differ (" << r.bytes.size() << " vs " << expected.size()
           << " bytes)";
  }
  return ::testing::AssertionSuccess();
}

std::vector<std::string> list_ids(const HttpClientResponse& r) {
  std::vector<std::string> ids;
  Json j(r.body);
  auto streams = j.at("/data/streams");
  simdjson::dom::array a;
  if (!streams || streams->get(a) != simdjson::SUCCESS) return ids;
  for (auto s : a) {
    std::string_view id;
    if (s["id"].get(id) == simdjson::SUCCESS) ids.emplace_back(id);
  }
  return ids;
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

TEST(ControlApi, UnknownPathsAndMethodsUseTheEnvelope) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  EXPECT_TRUE(is_error(stack.request("GET", "/nope"), 404, "NOT_FOUND"));
  EXPECT_TRUE(is_error(stack.request("GET", "/streams/a/b"), 404, "NOT_FOUND"));
  EXPECT_TRUE(is_error(stack.request("GET", "/streams/missing"), 404, "NOT_FOUND"));
  auto patch = stack.request("PATCH", "/streams/x", "{}");
  EXPECT_TRUE(is_error(patch, 405, "METHOD_NOT_ALLOWED"));
  ASSERT_NE(patch.header("allow"), nullptr);
  EXPECT_NE(patch.header("allow")->find("PUT"), std::string::npos);
  auto del = stack.request("DELETE", "/streams");
  EXPECT_TRUE(is_error(del, 405, "METHOD_NOT_ALLOWED"));
  ASSERT_NE(del.header("allow"), nullptr);
  EXPECT_EQ(*del.header("allow"), "GET, HEAD");
  auto post_health = stack.request("POST", "/healthz", "{}");
  EXPECT_EQ(post_health.status, 405);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, ValidationErrorsListEveryProblem) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  stack.put("a.bin", test_bytes(10, 1));
  // The example of docs/control-api.md.
  auto r = stack.request("POST", "/streams/fw-v2", R"({"descripton":"fw","files":[
    {"fileId":0,"s3Location":{"bucket":"fw","key":"a.bin"}},
    {"fileId":0,"s3Location":{"bucket":"fw","key":""}}],"roleArn":"arn:short"})");
  ASSERT_TRUE(is_error(r, 400, "VALIDATION_ERROR"));
  EXPECT_EQ(detail_fields(r), (std::vector<std::string>{"descripton", "files[1].fileId",
                                                        "files[1].s3Location.key", "roleArn"}))
      << r.body;

  auto bad_id =
      stack.request("POST", "/streams/bad.id", create_body({{0, "fw", "a.bin", std::nullopt}}));
  EXPECT_TRUE(is_error(bad_id, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(bad_id, "streamId")) << bad_id.body;
  auto long_id = stack.request("POST", "/streams/" + std::string(129, 'a'),
                               create_body({{0, "fw", "a.bin", std::nullopt}}));
  EXPECT_TRUE(is_error(long_id, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(long_id, "streamId")) << long_id.body;

  EXPECT_TRUE(is_error(stack.request("POST", "/streams/x", "not json"), 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(is_error(stack.request("POST", "/streams/x", "[]"), 400, "VALIDATION_ERROR"));
  auto no_files = stack.request("POST", "/streams/x", "{\"roleArn\":\"" + kRoleArn + "\"}");
  EXPECT_TRUE(is_error(no_files, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(no_files, "files")) << no_files.body;
  auto big_id =
      stack.request("POST", "/streams/x",
                    create_body({{256, "fw", "a.bin", std::nullopt}}, std::string(2029, 'd')));
  EXPECT_TRUE(is_error(big_id, 400, "VALIDATION_ERROR"));
  EXPECT_EQ(detail_fields(big_id), (std::vector<std::string>{"description", "files[0].fileId"}))
      << big_id.body;
  auto ctrl = stack.request("POST", "/streams/x",
                            create_body({{0, "fw", "a.bin", std::nullopt}}, "line\nbreak"));
  EXPECT_TRUE(is_error(ctrl, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(ctrl, "description")) << ctrl.body;
  // Nothing was created by any of them.
  EXPECT_TRUE(list_ids(stack.request("GET", "/streams")).empty());
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, KeysNeverLeaveTheBucket) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  std::string outside_dir = stack.daemon().dir() + "/outside";
  write_file(outside_dir + "/secret.bin", test_bytes(100, 9));
  // A file next to the bucket directory, reachable as "../x" from inside it.
  write_file(stack.bucket_dir() + "/../x", test_bytes(100, 8));
  stack.put("inside.bin", test_bytes(100, 7));
  stack.put("sub/inside.bin", test_bytes(100, 6));
  std::filesystem::create_symlink(outside_dir + "/secret.bin", stack.bucket_dir() + "/link.bin");
  std::filesystem::create_directory_symlink(outside_dir, stack.bucket_dir() + "/linkdir");
  std::filesystem::create_directories(stack.bucket_dir() + "/adir");
  ASSERT_TRUE(stack.start());

  struct Case {
    std::string key;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"../x", "parent directory"},
      {"sub/../../x", "parent directory through a subdirectory"},
      {"../outside/secret.bin", "sibling directory"},
      {stack.bucket_dir() + "/inside.bin", "absolute path (even into the bucket)"},
      {"/etc/hostname", "absolute path"},
      {"link.bin", "symlink to a file outside"},
      {"linkdir/secret.bin", "symlinked directory outside"},
      {"missing.bin", "no such file"},
      {"adir", "a directory"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.why + ": " + c.key);
    auto r = stack.create("esc", {{0, "fw", c.key, std::nullopt}});
    EXPECT_TRUE(is_error(r, 400, "VALIDATION_ERROR"));
    EXPECT_TRUE(names_field(r, "files[0].s3Location.key")) << r.body;
    EXPECT_TRUE(is_error(stack.request("GET", "/streams/esc"), 404, "NOT_FOUND"));
  }
  // The second file is the bad one: the detail names it.
  auto second =
      stack.create("esc", {{0, "fw", "inside.bin", std::nullopt}, {1, "fw", "../x", std::nullopt}});
  EXPECT_TRUE(is_error(second, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(second, "files[1].s3Location.key")) << second.body;
  // An unmapped bucket.
  auto unmapped = stack.create("esc", {{0, "nope", "inside.bin", std::nullopt}});
  EXPECT_TRUE(is_error(unmapped, 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(names_field(unmapped, "files[0].s3Location.bucket")) << unmapped.body;
  // Keys that stay inside are fine.
  EXPECT_EQ(stack.create("ok1", {{0, "fw", "sub/inside.bin", std::nullopt}}).status, 201);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, TokenGuardsStreamRoutesOnly) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  stack.daemon().set_token("  s3cret-token-42  ");
  stack.put("a.bin", test_bytes(10, 1));
  ASSERT_TRUE(stack.start());
  auto http = stack.daemon().http();
  const std::string body = create_body({{0, "fw", "a.bin", std::nullopt}});
  auto none = http.request("GET", "/streams");
  EXPECT_TRUE(is_error(none, 401, "UNAUTHORIZED"));
  ASSERT_NE(none.header("www-authenticate"), nullptr);
  auto wrong = http.request("POST", "/streams/a", body, {{"Authorization", "Bearer nope"}});
  EXPECT_TRUE(is_error(wrong, 401, "UNAUTHORIZED"));
  auto prefix = http.request("GET", "/streams/a", {}, {{"Authorization", "Bearer s3cret-token-4"}});
  EXPECT_TRUE(is_error(prefix, 401, "UNAUTHORIZED"));
  auto basic = http.request("GET", "/streams", {}, {{"Authorization", "Basic s3cret-token-42"}});
  EXPECT_TRUE(is_error(basic, 401, "UNAUTHORIZED"));
  EXPECT_TRUE(is_error(http.request("DELETE", "/streams/a"), 401, "UNAUTHORIZED"));
  // Nothing was created without the token.
  auto list = http.request("GET", "/streams", {}, {{"Authorization", "Bearer s3cret-token-42"}});
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_TRUE(list_ids(list).empty());
  // The token is the file's first line, trimmed.
  auto ok = http.request(
      "POST", "/streams/a", body,
      {{"Authorization", "Bearer s3cret-token-42"}, {"Content-Type", "application/json"}});
  EXPECT_EQ(ok.status, 201) << ok.body;
  EXPECT_EQ(http.request("GET", "/healthz").status, 200);
  auto metrics = http.request("GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("chunkd_"), std::string::npos);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, TokenAndBudgetAreCheckedBeforeTheBody) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  stack.daemon().set_token("s3cret-token-42");
  stack.daemon().set("control", "max_buffered_mib", "1");
  ASSERT_TRUE(stack.start());
  // No token: 401 on the headers alone, even with Expect (no 100 first).
  auto anonymous = stack.daemon().http();
  ASSERT_TRUE(
      anonymous.send_raw("POST /streams/a HTTP/1.1\r\nContent-Length: 500000\r\n"
                         "Expect: 100-continue\r\n\r\n"));
  EXPECT_TRUE(is_error(anonymous.read_response(), 401, "UNAUTHORIZED"));
  EXPECT_TRUE(anonymous.wait_closed());
  // A body half-sent holds 600000 of the 1 MiB budget: the next one does not fit.
  const std::string head =
      "POST /streams/a HTTP/1.1\r\nAuthorization: Bearer s3cret-token-42\r\n"
      "Content-Length: 600000\r\n\r\n";
  auto holder = stack.daemon().http();
  ASSERT_TRUE(holder.send_raw(head + "{"));
  auto observer = stack.daemon().http();
  bool held = false;
  for (int i = 0; i < 2000 && !held; ++i) {  // until the holder's headers are in
    held = observer.request("GET", "/metrics").body.find("chunkd_http_buffered_bytes 600000") !=
           std::string::npos;
    if (!held) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(held);
  auto refused = stack.daemon().http();
  ASSERT_TRUE(refused.send_raw(head));
  EXPECT_TRUE(is_error(refused.read_response(), 503, "SERVICE_UNAVAILABLE"));
  auto metrics = observer.request("GET", "/metrics");
  EXPECT_NE(metrics.body.find("chunkd_http_refused_total{reason=\"budget\"} 1"), std::string::npos);
  holder.close();
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, BodyOverOneMebibyteIs413) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  std::string body(1024 * 1024 + 1, ' ');
  body[0] = '{';
  body[body.size() - 1] = '}';
  auto r = stack.request("POST", "/streams/big", body);
  EXPECT_TRUE(is_error(r, 413, "PAYLOAD_TOO_LARGE"));
  // Exactly 1 MiB is read and validated (it is a bad body, not a too large one).
  std::string fits(1024 * 1024, ' ');
  fits[0] = '{';
  fits[fits.size() - 1] = '}';
  stack.reset_http();
  auto f = stack.request("POST", "/streams/big", fits);
  EXPECT_TRUE(is_error(f, 400, "VALIDATION_ERROR"));
  // The daemon still serves.
  stack.reset_http();
  EXPECT_EQ(stack.request("GET", "/streams").status, 200);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
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

TEST(ControlApi, StreamLimitIs422) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  stack.daemon().set("storage", "max_streams", "2");
  stack.put("a.bin", test_bytes(100, 1));
  ASSERT_TRUE(stack.start());
  const std::vector<FileRef> files = {{0, "fw", "a.bin", std::nullopt}};
  ASSERT_EQ(stack.create("one", files).status, 201);
  ASSERT_EQ(stack.create("two", files).status, 201);
  EXPECT_TRUE(is_error(stack.create("three", files), 422, "LIMIT_EXCEEDED"));
  EXPECT_TRUE(is_error(stack.request("GET", "/streams/three"), 404, "NOT_FOUND"));
  // Updates are not creates; a delete makes room.
  EXPECT_EQ(stack.request("PUT", "/streams/two", R"({"description":"x"})").status, 200);
  ASSERT_EQ(stack.request("DELETE", "/streams/one").status, 200);
  EXPECT_EQ(stack.create("three", files).status, 201);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(ControlApi, StreamsSurviveACleanRestart) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string a = test_bytes(70000, 1);
  const std::string b = test_bytes(1234, 2);
  const std::string b2 = test_bytes(4321, 3);
  ASSERT_TRUE(stack.create_file_stream("keep", a));
  ASSERT_TRUE(stack.create_file_stream("upd", b));
  ASSERT_TRUE(stack.create_file_stream("gone", b));
  stack.put("upd2.bin", b2);
  ASSERT_EQ(stack
                .request("PUT", "/streams/upd",
                         "{\"files\":" + files_json({{0, "fw", "upd2.bin", std::nullopt}}) + "}")
                .status,
            200);
  ASSERT_EQ(stack.request("DELETE", "/streams/gone").status, 200);
  const std::string before_keep = stack.request("GET", "/streams/keep").body;
  const std::string before_upd = stack.request("GET", "/streams/upd").body;
  ASSERT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();

  // The sources change or vanish while the daemon is down: the streams keep their bytes.
  ASSERT_TRUE(std::filesystem::remove(stack.bucket_dir() + "/keep.bin"));
  stack.put("upd2.bin", test_bytes(4321, 99));
  stack.reset_http();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  EXPECT_EQ(stack.request("GET", "/streams/keep").body, before_keep);
  EXPECT_EQ(stack.request("GET", "/streams/upd").body, before_upd);
  EXPECT_TRUE(is_error(stack.request("GET", "/streams/gone"), 404, "NOT_FOUND"));
  EXPECT_EQ(list_ids(stack.request("GET", "/streams")), (std::vector<std::string>{"keep", "upd"}));
  EXPECT_TRUE(downloads_as(stack, "after-restart-1", "keep", a, Format::Json));
  EXPECT_TRUE(downloads_as(stack, "after-restart-2", "upd", b2, Format::Cbor));
  // Versions continue from where they were.
  auto u = stack.request("PUT", "/streams/upd", R"({"description":"again"})");
  ASSERT_EQ(u.status, 200) << u.body;
  EXPECT_EQ(Json(u.body).u64("/data/streamVersion"), 3u);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// A burst of creates, kill -9 in the middle, restart: every acknowledged create is there and
// downloads byte for byte; a create that was not acknowledged is either whole or absent.
TEST(ControlApi, KillNineDuringABurstOfCreatesLosesNothingAcknowledged) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  constexpr int kStreams = 400;
  std::vector<std::string> contents;
  for (int i = 0; i < kStreams; ++i) {
    contents.push_back(test_bytes(20000 + static_cast<std::size_t>(i) * 997,
                                  1000 + static_cast<std::uint64_t>(i)));
    stack.put("burst-" + std::to_string(i) + ".bin", contents.back());
  }
  stack.daemon().set("control", "max_concurrent_ingests", "4");
  ASSERT_TRUE(stack.start());

  // Three clients create streams back to back, so several creates are in flight at the kill.
  constexpr int kClients = 3;
  std::atomic<int> acknowledged{0};
  std::vector<int> status(kStreams, -1);  // element i written by client i % kClients only
  std::atomic<bool> stop{false};
  std::vector<std::thread> burst;
  for (int client = 0; client < kClients; ++client) {
    burst.emplace_back([&, client] {
      HttpClient http = stack.daemon().http();
      for (int i = client; i < kStreams && !stop.load(); i += kClients) {
        std::string id = "burst-" + std::to_string(i);
        auto r = http.request("POST", "/streams/" + id,
                              create_body({{0, "fw", id + ".bin", std::nullopt}}),
                              {{"Content-Type", "application/json"}});
        status[static_cast<std::size_t>(i)] = r.status;
        if (r.status == 0) break;  // the daemon is gone
        if (r.status == 201) acknowledged.fetch_add(1);
      }
    });
  }
  // Let a good number of creates through, then kill -9 with creates in flight.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (acknowledged.load() < 25 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stack.daemon().kill9();
  stop = true;
  for (auto& t : burst) t.join();
  const int acked = acknowledged.load();
  ASSERT_GE(acked, 25) << stack.daemon().log();

  stack.reset_http();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  std::set<std::string> listed;
  for (const auto& id : list_ids(stack.request("GET", "/streams?maxResults=250"))) {
    listed.insert(id);
  }
  int checked = 0;
  for (int i = 0; i < kStreams; ++i) {
    const int s = status[static_cast<std::size_t>(i)];
    const std::string id = "burst-" + std::to_string(i);
    SCOPED_TRACE(id + " got status " + std::to_string(s));
    auto d = stack.request("GET", "/streams/" + id);
    if (s == 201) {
      ASSERT_EQ(d.status, 200) << "acknowledged create lost: " << d.body;
    } else if (s == -1 || (s >= 400 && s < 500)) {
      EXPECT_EQ(d.status, 404) << "never sent or refused, yet present: " << d.body;
      continue;
    } else if (d.status == 404) {
      EXPECT_EQ(listed.count(id), 0u);
      continue;  // not acknowledged and absent: fine
    }
    ASSERT_EQ(d.status, 200) << d.body;
    EXPECT_EQ(listed.count(id), 1u);
    Json j(d.body);
    EXPECT_EQ(j.u64("/data/files/0/sizeBytes"), contents[static_cast<std::size_t>(i)].size());
    // Download a sample of the acknowledged ones, and every unacknowledged one that is there.
    if (s != 201 || i % 5 == 0) {
      EXPECT_TRUE(downloads_as(stack, "burst-dev-" + std::to_string(i), id,
                               contents[static_cast<std::size_t>(i)]));
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
  // Nothing else appeared.
  for (const auto& id : listed) {
    EXPECT_EQ(id.rfind("burst-", 0), 0u) << id;
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

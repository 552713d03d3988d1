// What the real chunkd binary's control API refuses, driven over HTTP with a private Mosquitto
// behind it (SPEC.md §2, docs/control-api.md): unknown paths and methods, validation errors that
// name every field, keys that would leave the bucket, the bearer token (checked before the body, as
// is the buffer budget), bodies over 1 MiB and the stream limit; always in the error envelope.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/api.hpp"
#include "tests/integration/control_api_fixture.hpp"

namespace chunkd::test {
namespace {

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

}  // namespace
}  // namespace chunkd::test

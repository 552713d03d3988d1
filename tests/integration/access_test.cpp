// Per-stream device access end to end (SPEC.md §1.4 Unauthorized, docs/control-api.md "Device
// access"): the real chunkd binary, a private Mosquitto and paho devices. A thing matching the
// stream's allowedThings downloads; another gets Unauthorized with its clientToken for describe
// and get; describe and list over HTTP show the patterns; an update changes the rule while the
// daemon runs; the rule survives a restart; refusals are counted in /metrics.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;
using protocol::GetStreamArgs;
using protocol::ReplyKind;

// The value of one series in a Prometheus page, 0 when absent.
double counter(const std::string& metrics, const std::string& series) {
  const auto at = metrics.find("\n" + series + " ");
  return at == std::string::npos ? 0.0 : std::stod(metrics.substr(at + series.size() + 2));
}

// Describe and a one-block get, both answered for `dev` on `stream`: the codes it got.
struct Outcome {
  std::string describe;
  std::string get;
  std::optional<std::string> describe_token;
  std::optional<std::string> get_token;
};

Outcome try_read(Device& dev, const std::string& stream, Format format) {
  Outcome out;
  auto d = dev.describe(stream, format, "d-tok");
  if (d) {
    out.describe = d->kind == ReplyKind::Description ? "ok" : d->rejected.code;
    out.describe_token =
        d->kind == ReplyKind::Description ? d->description.client_token : d->rejected.client_token;
  }
  GetStreamArgs a;
  a.client_token = "g-tok";
  a.block_size = 1024;
  a.count = 1;
  auto g = dev.get_once(stream, format, a);
  if (g) {
    out.get = g->kind == ReplyKind::Data ? "ok" : g->rejected.code;
    out.get_token = g->kind == ReplyKind::Data ? g->data.client_token : g->rejected.client_token;
  }
  return out;
}

TEST(DeviceAccess, OnlyAllowedThingsReadAndTheRuleChangesLive) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string content = test_bytes(50000, 31);
  const std::string key = stack.put("gated.bin", content);
  std::string body = create_body({{0, "fw", key, std::nullopt}}, "gated stream");
  body.insert(body.size() - 1, R"(,"allowedThings":["sensor-*","gw-0?"])");
  auto r = stack.request("POST", "/streams/gated", body);
  ASSERT_EQ(r.status, 201) << r.body;
  ASSERT_TRUE(stack.create_file_stream("open", test_bytes(3000, 32)));

  // HTTP describe and list show the patterns; an open stream has none.
  Json described(stack.request("GET", "/streams/gated").body);
  EXPECT_EQ(described.array_size("/data/allowedThings"), 2u);
  EXPECT_EQ(described.str("/data/allowedThings/0"), "sensor-*");
  EXPECT_EQ(described.str("/data/allowedThings/1"), "gw-0?");
  Json listed(stack.request("GET", "/streams").body);
  EXPECT_EQ(listed.str("/data/streams/0/streamId"), "gated");
  EXPECT_EQ(listed.str("/data/streams/0/allowedThings/1"), "gw-0?");
  EXPECT_FALSE(listed.has("/data/streams/1/allowedThings"));

  auto sensor = stack.device("sensor-7", "gated");
  auto intruder = stack.device("gw-17", "gated");
  ASSERT_TRUE(sensor && intruder);
  ASSERT_TRUE(intruder->watch("open"));

  DownloadOptions opts;
  opts.block_size = 4096;
  auto got = sensor->download("gated", Format::Cbor, 0, opts);
  ASSERT_TRUE(got.ok) << got.error << stack.daemon().log(4000);
  EXPECT_TRUE(bytes_to_string(got.bytes) == content);

  for (Format format : {Format::Json, Format::Cbor}) {
    SCOPED_TRACE(std::string(protocol::to_string(format)));
    const Outcome refused = try_read(*intruder, "gated", format);
    EXPECT_EQ(refused.describe, "Unauthorized");
    EXPECT_EQ(refused.describe_token, "d-tok");
    EXPECT_EQ(refused.get, "Unauthorized");
    EXPECT_EQ(refused.get_token, "g-tok");
  }
  EXPECT_EQ(try_read(*intruder, "open", Format::Json).get, "ok") << "other streams stay open";
  const std::string metrics = stack.request("GET", "/metrics").body;
  EXPECT_EQ(counter(metrics, R"(chunkd_requests_total{verb="get",outcome="Unauthorized"})"), 2.0);
  EXPECT_EQ(counter(metrics, R"(chunkd_requests_total{verb="describe",outcome="Unauthorized"})"),
            2.0);

  // The operator swaps the rule, with the daemon running: the roles swap at once.
  r = stack.request("PUT", "/streams/gated", R"({"allowedThings":["gw-1?"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r.body).u64("/data/streamVersion"), 1u);
  EXPECT_EQ(try_read(*intruder, "gated", Format::Cbor).get, "ok");
  EXPECT_EQ(try_read(*sensor, "gated", Format::Cbor).get, "Unauthorized");

  // The rule survives a restart; then null opens the stream to every thing.
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  stack.reset_http();
  EXPECT_EQ(Json(stack.request("GET", "/streams/gated").body).str("/data/allowedThings/0"),
            "gw-1?");
  EXPECT_EQ(try_read(*sensor, "gated", Format::Json).describe, "Unauthorized");
  r = stack.request("PUT", "/streams/gated", R"({"allowedThings":null})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Json(r.body).has("/data/allowedThings"));
  const Outcome reopened = try_read(*sensor, "gated", Format::Json);
  EXPECT_EQ(reopened.describe, "ok");
  EXPECT_EQ(reopened.get, "ok");
  EXPECT_EQ(reopened.get_token, "g-tok");
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(DeviceAccess, InvalidPatternsAreValidationErrorsNamingTheEntry) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string key = stack.put("x.bin", "x");
  std::string body = create_body({{0, "fw", key, std::nullopt}});
  body.insert(body.size() - 1, R"(,"allowedThings":["ok-*","no/slash",""])");
  auto r = stack.request("POST", "/streams/bad", body);
  EXPECT_EQ(r.status, 400) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "VALIDATION_ERROR");
  EXPECT_EQ(j.str("/error/details/0/field"), "allowedThings[1]");
  EXPECT_EQ(j.str("/error/details/1/field"), "allowedThings[2]");
  EXPECT_EQ(stack.request("GET", "/streams/bad").status, 404);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

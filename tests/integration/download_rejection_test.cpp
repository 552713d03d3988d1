// Every rejection a device can provoke from the real chunkd binary through a private Mosquitto
// (SPEC.md §1), end to end: invalid topics, malformed payloads, the bounds of every field, client
// tokens echoed with both key sets, old versions and deleted streams; and the delivery settings
// that change what is rejected (relax_version_check, the per-thing queue and throttle).
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;
using protocol::GetStreamArgs;
using protocol::ReplyKind;

class Rejections : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(stack.start_broker());
    content = test_bytes(10000, 11);  // 40 blocks of 256, 3 of 4096
    stack.put("r.bin", content);
    configure();
    ASSERT_TRUE(stack.start());
    auto r = stack.create("rj", {{0, "fw", "r.bin", std::nullopt}});
    ASSERT_EQ(r.status, 201) << r.body;
    dev = stack.device("rejected-thing", "rj");
    ASSERT_TRUE(dev);
    ASSERT_TRUE(dev->watch("nope"));
  }
  virtual void configure() {}

  // Publishes `payload` to `topic` and returns the first rejected reply (any stream, format).
  std::optional<Reply> rejected_for(const std::string& topic, std::string_view payload) {
    dev->mqtt().clear();
    if (!dev->send_raw(topic, as_bytes(payload))) return std::nullopt;
    return dev->wait_for(ReplyKind::Rejected, 20000);
  }
  std::optional<Reply> rejected_for(Format format, const GetStreamArgs& args,
                                    const std::string& stream = "rj") {
    dev->mqtt().clear();
    if (!dev->send_get(stream, format, args)) return std::nullopt;
    return dev->wait_for(ReplyKind::Rejected, 20000);
  }
  static GetStreamArgs args(std::uint32_t l = 256) {
    GetStreamArgs a;
    a.file_id = 0;
    a.block_size = l;
    return a;
  }

  Stack stack;
  std::string content;
  std::unique_ptr<Device> dev;
};

#define EXPECT_REJECTED(reply, want_code, want_topic)                                       \
  do {                                                                                      \
    auto&& r_ = (reply);                                                                    \
    ASSERT_TRUE(r_.has_value()) << "no rejected reply; log:\n" << stack.daemon().log(4000); \
    EXPECT_EQ(r_->decode_error, "");                                                        \
    EXPECT_EQ(r_->rejected.code, want_code) << r_->rejected.message;                        \
    EXPECT_EQ(r_->topic, want_topic);                                                       \
  } while (0)

TEST_F(Rejections, InvalidTopicAnswersOnRejectedJson) {
  const std::string rejected_json = dev->reply_topic("rj", ReplyKind::Rejected, Format::Json);
  EXPECT_REJECTED(rejected_for(dev->raw_topic("rj", "get", "xml"), "{\"f\":0,\"l\":256}"),
                  "InvalidTopic", rejected_json);
  EXPECT_REJECTED(rejected_for(dev->raw_topic("rj", "describe", "yaml"), "{}"), "InvalidTopic",
                  rejected_json);
  // An unknown verb never reaches chunkd: it subscribes to get/+ and describe/+ only.
  // The daemon keeps serving.
  auto ok = dev->get_once("rj", Format::Json, args());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->kind, ReplyKind::Data);
}

TEST_F(Rejections, MalformedPayloads) {
  const std::string rj_json = dev->reply_topic("rj", ReplyKind::Rejected, Format::Json);
  const std::string rj_cbor = dev->reply_topic("rj", ReplyKind::Rejected, Format::Cbor);
  const std::string get_json = dev->request_topic("rj", protocol::Verb::Get, Format::Json);
  const std::string get_cbor = dev->request_topic("rj", protocol::Verb::Get, Format::Cbor);
  EXPECT_REJECTED(rejected_for(get_json, "not json"), "InvalidJson", rj_json);
  EXPECT_REJECTED(rejected_for(get_json, "[1,2]"), "InvalidJson", rj_json);
  EXPECT_REJECTED(rejected_for(get_cbor, std::string("\xff\x00", 2)), "InvalidCbor", rj_cbor);
  EXPECT_REJECTED(rejected_for(get_cbor, "\x83\x01\x02\x03"), "InvalidCbor", rj_cbor);  // array
  EXPECT_REJECTED(rejected_for(get_json, R"({"f":0})"), "InvalidRequest", rj_json);
  EXPECT_REJECTED(rejected_for(get_json, R"({"l":256})"), "InvalidRequest", rj_json);
  EXPECT_REJECTED(rejected_for(get_json, R"({"f":0,"l":256,"o":-1})"), "InvalidRequest", rj_json);
  EXPECT_REJECTED(rejected_for(get_json, R"({"f":0,"l":256.5})"), "InvalidRequest", rj_json);
  auto long_token = args();
  long_token.client_token = std::string(65, 't');
  EXPECT_REJECTED(rejected_for(Format::Cbor, long_token), "InvalidRequest", rj_cbor);
  // An empty describe payload counts as {}.
  dev->mqtt().clear();
  dev->send_raw(dev->request_topic("rj", protocol::Verb::Describe, Format::Json), {});
  auto d = dev->wait_for(ReplyKind::Description);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->description.version, 1u);
}

TEST_F(Rejections, BoundsOfEveryField) {
  const std::string rj_json = dev->reply_topic("rj", ReplyKind::Rejected, Format::Json);
  const std::string rj_cbor = dev->reply_topic("rj", ReplyKind::Rejected, Format::Cbor);
  for (Format f : {Format::Json, Format::Cbor}) {
    SCOPED_TRACE(std::string(protocol::to_string(f)));
    const std::string& topic = f == Format::Json ? rj_json : rj_cbor;
    EXPECT_REJECTED(rejected_for(f, args(255)), "BlockSizeOutOfBounds", topic);
    EXPECT_REJECTED(rejected_for(f, args(131073)), "BlockSizeOutOfBounds", topic);
    auto far = args();
    far.offset = 98305;
    EXPECT_REJECTED(rejected_for(f, far), "OffsetOutOfBounds", topic);
    auto past_end = args();
    past_end.offset = 40;  // the file has 40 blocks of 256
    EXPECT_REJECTED(rejected_for(f, past_end), "OffsetOutOfBounds", topic);
    auto many = args();
    many.count = 98305;
    EXPECT_REJECTED(rejected_for(f, many), "BlockCountLimitExceeded", topic);
    auto big_bitmap = args();
    big_bitmap.bitmap = std::vector<std::uint8_t>(12288, 0xff);
    EXPECT_REJECTED(rejected_for(f, big_bitmap), "BlockBitmapLimitExceeded", topic);
    auto bitmap_past_end = args();
    bitmap_past_end.bitmap = std::vector<std::uint8_t>{0, 0, 0, 0, 0, 0xff};  // blocks 40..47
    EXPECT_REJECTED(rejected_for(f, bitmap_past_end), "OffsetOutOfBounds", topic);
    auto file = args();
    file.file_id = 9;
    EXPECT_REJECTED(rejected_for(f, file), "ResourceNotFound", topic);
    EXPECT_REJECTED(rejected_for(f, args(), "nope"), "ResourceNotFound",
                    dev->reply_topic("nope", ReplyKind::Rejected, f));
    auto version = args();
    version.version = 2;
    EXPECT_REJECTED(rejected_for(f, version), "VersionMismatch", topic);
    // Describe of a stream that does not exist.
    dev->mqtt().clear();
    dev->send_describe("nope", f);
    auto d = dev->wait_for(ReplyKind::Rejected);
    EXPECT_REJECTED(d, "ResourceNotFound", dev->reply_topic("nope", ReplyKind::Rejected, f));
  }
  // The largest bitmap allowed is fine (blocks past the end are dropped silently).
  auto max_bitmap = args();
  max_bitmap.bitmap = std::vector<std::uint8_t>(12287, 0xff);
  max_bitmap.count = 3;
  auto ok = dev->get_once("rj", Format::Cbor, max_bitmap);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->kind, ReplyKind::Data) << ok->rejected.code;
}

TEST_F(Rejections, ClientTokensAreEchoedWithBothKeySets) {
  // Rejected, JSON: both short and long keys.
  auto bad = args(100);
  bad.client_token = "token-\xc3\xa9/\"x";
  auto r = rejected_for(Format::Json, bad);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rejected.code, "BlockSizeOutOfBounds");
  EXPECT_EQ(r->rejected.client_token, bad.client_token);
  Json j(to_string(r->raw));
  ASSERT_TRUE(j.ok()) << to_string(r->raw);
  EXPECT_EQ(j.str("/clientToken"), bad.client_token);
  EXPECT_EQ(j.str("/c"), bad.client_token);
  EXPECT_EQ(j.str("/code"), "BlockSizeOutOfBounds");
  EXPECT_EQ(j.str("/o"), "BlockSizeOutOfBounds");
  EXPECT_TRUE(j.str("/message").has_value());
  EXPECT_EQ(j.str("/message"), j.str("/m"));
  // Without a token: no token keys.
  auto r2 = rejected_for(Format::Json, args(100));
  ASSERT_TRUE(r2);
  Json j2(to_string(r2->raw));
  EXPECT_FALSE(j2.has("/clientToken"));
  EXPECT_FALSE(j2.has("/c"));
  // Data and description replies echo it too, in both formats.
  for (Format f : {Format::Json, Format::Cbor}) {
    auto a = args();
    a.client_token = "abc-123";
    a.count = 2;
    dev->mqtt().clear();
    ASSERT_TRUE(dev->send_get("rj", f, a));
    for (int k = 0; k < 2; ++k) {
      auto data = dev->wait_for(ReplyKind::Data);
      ASSERT_TRUE(data);
      EXPECT_EQ(data->decode_error, "");
      EXPECT_EQ(data->data.client_token, "abc-123");
      EXPECT_EQ(data->data.block_index, static_cast<std::uint32_t>(k));
      EXPECT_EQ(to_string(data->data.payload),
                content.substr(static_cast<std::size_t>(k) * 256, 256));
    }
    auto d = dev->describe("rj", f, "desc-9");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->description.client_token, "desc-9");
  }
}

TEST_F(Rejections, UpdatedStreamRejectsTheOldVersionAndDeletedStreamIsNotFound) {
  stack.put("r2.bin", test_bytes(3000, 12));
  auto u = stack.request("PUT", "/streams/rj",
                         "{\"files\":" + files_json({{0, "fw", "r2.bin", std::nullopt}}) + "}");
  ASSERT_EQ(u.status, 200) << u.body;
  const std::string rj_cbor = dev->reply_topic("rj", ReplyKind::Rejected, Format::Cbor);
  auto old = args();
  old.version = 1;
  EXPECT_REJECTED(rejected_for(Format::Cbor, old), "VersionMismatch", rj_cbor);
  auto current = args();
  current.version = 2;
  auto ok = dev->get_once("rj", Format::Cbor, current);
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->kind, ReplyKind::Data) << ok->rejected.code;
  EXPECT_EQ(to_string(ok->data.payload), test_bytes(3000, 12).substr(0, 256));
  // The new content downloads whole.
  DownloadOptions opts;
  opts.block_size = 1024;
  auto result = dev->download("rj", Format::Json, 0, opts);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.version, 2u);
  EXPECT_EQ(bytes_to_string(result.bytes), test_bytes(3000, 12));

  ASSERT_EQ(stack.request("DELETE", "/streams/rj").status, 200);
  EXPECT_REJECTED(rejected_for(Format::Cbor, args()), "ResourceNotFound", rj_cbor);
  dev->mqtt().clear();
  dev->send_describe("rj", Format::Json);
  EXPECT_REJECTED(dev->wait_for(ReplyKind::Rejected), "ResourceNotFound",
                  dev->reply_topic("rj", ReplyKind::Rejected, Format::Json));
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

class RelaxedVersion : public Rejections {
  void configure() override { stack.daemon().set("delivery", "relax_version_check", "true"); }
};

TEST_F(RelaxedVersion, AnyVersionIsServed) {
  ASSERT_EQ(stack.request("PUT", "/streams/rj", R"({"description":"v2"})").status, 200);
  for (std::uint64_t s : {1u, 2u, 99u}) {
    auto a = args();
    a.version = s;
    auto r = dev->get_once("rj", Format::Json, a);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, ReplyKind::Data) << "s=" << s << ": " << r->rejected.code;
  }
  // A device library that always sends s=1 downloads the whole file.
  DownloadOptions opts;
  opts.block_size = 256;
  opts.version = 1;
  auto result = dev->download("rj", Format::Json, 0, opts);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(bytes_to_string(result.bytes), content);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

class Throttled : public Rejections {
  void configure() override {
    stack.daemon().set("delivery", "per_thing_queue_requests", "1");
    // One block a second: the first request keeps the thing busy for the whole test.
    stack.daemon().set("delivery", "per_thing_blocks_per_s", "1");
  }
};

TEST_F(Throttled, AThingOverItsQueueIsThrottled) {
  const std::string rj_json = dev->reply_topic("rj", ReplyKind::Rejected, Format::Json);
  dev->mqtt().clear();
  auto a = args();
  a.count = 40;
  a.client_token = "burst";
  for (std::uint32_t i = 0; i < 10; ++i) {
    a.count = 40 - i;  // distinct requests: an identical one still queued would be merged
    ASSERT_TRUE(dev->send_get("rj", Format::Json, a));
  }
  int throttled = 0;
  while (throttled < 8) {
    auto r = dev->wait_for(ReplyKind::Rejected, 30000);
    ASSERT_TRUE(r) << "only " << throttled << " RequestThrottled replies";
    EXPECT_EQ(r->rejected.code, "RequestThrottled");
    EXPECT_EQ(r->rejected.client_token, "burst");
    EXPECT_EQ(r->topic, rj_json);
    ++throttled;
  }
  // Another thing is not affected by this one's queue.
  auto other = stack.device("other-thing", "rj");
  ASSERT_TRUE(other);
  auto first = other->get_once("rj", Format::Cbor, args());
  ASSERT_TRUE(first);
  EXPECT_EQ(first->kind, ReplyKind::Data) << first->rejected.code;
  auto metrics = stack.request("GET", "/metrics");
  EXPECT_NE(metrics.body.find("chunkd_throttled_total"), std::string::npos);
  // Stopping with work queued still exits 0.
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

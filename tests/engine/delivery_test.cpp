// Serving devices (engine/delivery.hpp) from real blobs through the thread-pool file reader into
// a FakeTransport: whole files downloaded in windows and in bitmap mode, JSON and CBOR, the
// largest blocks, describe, the relaxed version check, client tokens and a custom topic prefix.
#include "engine/delivery.hpp"

#include <cstring>
#include <string>

#include "protocol/device.hpp"
#include "protocol/topic.hpp"
#include "tests/engine/delivery_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

TEST_F(DeliveryTest, WholeFileInWindowsJson) {
  make();
  auto out = download(Format::Json, 3000, 10, false);  // 3000-byte blocks straddle extents
  EXPECT_EQ(out, content_);
  EXPECT_EQ(metrics_.counter_value("chunkd_blocks_sent_total", R"(format="json")"), 103u);
  EXPECT_EQ(requests("get", "ok"), 11u);
  EXPECT_EQ(metrics_.histogram("chunkd_publish_latency_seconds", "", {}).count(), 11u);
}

TEST_F(DeliveryTest, WholeFileInWindowsCbor) {
  make();
  auto out = download(Format::Cbor, 4096, 32, false);
  EXPECT_EQ(out, content_);
  EXPECT_EQ(metrics_.counter_value("chunkd_blocks_sent_total", R"(format="cbor")"), 76u);
  EXPECT_GT(metrics_.counter_value("chunkd_bytes_sent_total", R"(format="cbor")"), kFileBytes);
}

// A CBOR reply is its header followed by the block's bytes where they lie in the cache: one part
// per extent the block covers, never copied into an encode buffer.
TEST_F(DeliveryTest, CborBlocksGoOutAsHeaderAndExtentSlices) {
  make();
  auto out = download(Format::Cbor, 3000, 10, false);  // 3000-byte blocks straddle extents
  EXPECT_EQ(out, content_);
  std::size_t straddling = 0;
  for (const auto& m : transport_.messages) {
    if (m.topic.find("/data/") == std::string::npos) continue;
    EXPECT_GE(m.parts, 2u);
    EXPECT_LE(m.parts, 3u);
    if (m.parts == 3) ++straddling;
  }
  // Each of the four 64 KiB extent boundaries falls inside a block (no multiple of 3000).
  EXPECT_EQ(straddling, kFileBytes / kExtent);
}

TEST_F(DeliveryTest, WholeFileInBitmapModeJson) {
  make();
  EXPECT_EQ(download(Format::Json, 1024, 30, true), content_);
}

TEST_F(DeliveryTest, WholeFileInBitmapModeCbor) {
  make();
  EXPECT_EQ(download(Format::Cbor, 8192, 30, true), content_);  // 16 of 30 fit in 128 KiB
}

TEST_F(DeliveryTest, LargestBlocksAndDefaultCount) {
  make();
  GetStreamArgs a;
  a.file_id = 0;
  a.block_size = 131072;  // n absent: 131072 / l = 1 block
  a.offset = 2;
  send_get("dev", Format::Cbor, a);
  ASSERT_TRUE(wait_messages(1));
  ASSERT_EQ(transport_.messages.size(), 1u);
  auto d = protocol::decode_data_reply(Format::Cbor, transport_.messages[0].payload);
  ASSERT_TRUE(d) << d.error();
  EXPECT_EQ(d->block_index, 2u);
  EXPECT_EQ(d->length, kFileBytes - 2 * 131072);
  EXPECT_EQ(0, std::memcmp(d->payload.data(), content_.data() + 2 * 131072, d->length));
}

TEST_F(DeliveryTest, DescribeJsonAndCbor) {
  make();
  for (Format f : {Format::Json, Format::Cbor}) {
    auto payload = protocol::encode_describe_request(f, "tok-1");
    delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Describe, f), payload);
    ASSERT_TRUE(wait_messages(seen_ + 1));
    const auto& m = transport_.messages.back();
    seen_ = transport_.messages.size();
    EXPECT_EQ(m.topic, reply_topic("dev", "fw", protocol::ReplyKind::Description, f));
    auto d = protocol::decode_description(f, m.payload);
    ASSERT_TRUE(d) << d.error();
    EXPECT_EQ(d->client_token, "tok-1");
    EXPECT_EQ(d->version, 3u);
    EXPECT_EQ(d->description, "firmware \"v3\"");
    ASSERT_EQ(d->files.size(), 2u);
    EXPECT_EQ(d->files[0].file_id, 0u);
    EXPECT_EQ(d->files[0].size_bytes, kFileBytes);
    EXPECT_EQ(d->files[1].file_id, 7u);
    EXPECT_EQ(d->files[1].size_bytes, 1000u);
  }
  // An empty payload counts as {}.
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Describe, Format::Json), {});
  ASSERT_TRUE(wait_messages(seen_ + 1));
  auto d = protocol::decode_description(Format::Json, transport_.messages.back().payload);
  ASSERT_TRUE(d) << d.error();
  EXPECT_FALSE(d->client_token);
  EXPECT_EQ(requests("describe", "ok"), 3u);
}

TEST_F(DeliveryTest, DescribeUnknownStream) {
  make();
  auto payload = protocol::encode_describe_request(Format::Cbor, "t");
  delivery_->on_message(request_topic("dev", "nope", protocol::Verb::Describe, Format::Cbor),
                        payload);
  expect_rejected("ResourceNotFound", Format::Cbor, "dev", "nope", "t");
  EXPECT_EQ(requests("describe", "ResourceNotFound"), 1u);
}

TEST_F(DeliveryTest, VersionCheckCanBeRelaxed) {
  DeliveryOptions o;
  o.relax_version_check = true;
  make(o);
  GetStreamArgs a;
  a.version = 1;  // a device library always sends 1
  a.file_id = 7;
  a.block_size = 512;
  send_get("dev", Format::Json, a);
  ASSERT_TRUE(wait_messages(2));
  ASSERT_EQ(transport_.messages.size(), 2u);
  auto d = protocol::decode_data_reply(Format::Json, transport_.messages[1].payload);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->length, 1000u - 512u);
  EXPECT_EQ(0, std::memcmp(d->payload.data(), small_.data() + 512, d->length));
}

TEST_F(DeliveryTest, ClientTokenIsEchoedInEveryBlock) {
  make();
  GetStreamArgs a;
  a.client_token = std::string(64, 'x');
  a.file_id = 7;
  a.block_size = 256;
  send_get("dev", Format::Cbor, a);
  ASSERT_TRUE(wait_messages(4));
  for (const auto& m : transport_.messages) {
    auto d = protocol::decode_data_reply(Format::Cbor, m.payload);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->client_token, a.client_token);
  }
  GetStreamArgs b = a;
  b.client_token.reset();
  send_get("dev", Format::Json, b);
  ASSERT_TRUE(wait_messages(8));
  auto d = protocol::decode_data_reply(Format::Json, transport_.messages.back().payload);
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->client_token);
}

TEST_F(DeliveryTest, CustomPrefix) {
  DeliveryOptions o;
  o.topic_prefix = "chunkd/things";
  make(o);
  protocol::TopicCodec codec("chunkd/things");
  std::string t;
  codec.request_topic(t, "dev", "fw", protocol::Verb::Describe, Format::Json);
  delivery_->on_message(t, {});
  ASSERT_TRUE(wait_messages(1));
  codec.reply_topic(t, "dev", "fw", protocol::ReplyKind::Description, Format::Json);
  EXPECT_EQ(transport_.messages[0].topic, t);
}

}  // namespace
}  // namespace chunkd::engine

// How requests flow through delivery (engine/delivery.hpp) into a FakeTransport: the per-thing
// queue bound and throttling, replies queued in order, stop (new requests refused, started
// downloads finished), and Transport::finished after each request's last reply.
#include <uv.h>

#include <cstddef>
#include <string>
#include <vector>

#include "engine/delivery.hpp"
#include "protocol/device.hpp"
#include "tests/engine/delivery_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

TEST_F(DeliveryTest, OverTheQueueBoundIsThrottledAtOnce) {
  DeliveryOptions o;
  o.scheduler.per_thing_queue_requests = 1;
  make(o);
  GetStreamArgs a;
  a.client_token = "q";
  a.file_id = 7;
  a.block_size = 256;
  send_get("dev", Format::Json, a);
  send_get("dev", Format::Cbor, a);  // the first is still queued: no loop turn ran yet
  ASSERT_EQ(transport_.messages.size(), 1u) << "the throttled reply does not wait for the queue";
  auto r = protocol::decode_rejected(Format::Cbor, transport_.messages[0].payload);
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->code, "RequestThrottled");
  EXPECT_EQ(r->client_token, "q");
  EXPECT_EQ(transport_.messages[0].topic,
            reply_topic("dev", "fw", protocol::ReplyKind::Rejected, Format::Cbor));
  // Describe over the bound too.
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Describe, Format::Json), {});
  ASSERT_EQ(transport_.messages.size(), 2u);
  ASSERT_TRUE(wait_messages(6));  // 4 blocks of the first request
  EXPECT_EQ(transport_.messages.size(), 6u);
  EXPECT_EQ(metrics_.counter_value("chunkd_throttled_total"), 2u);
  EXPECT_EQ(requests("get", "RequestThrottled"), 1u);
  EXPECT_EQ(requests("describe", "RequestThrottled"), 1u);
}

TEST_F(DeliveryTest, RejectionsQueueBehindTheThingsBlocks) {
  make();
  GetStreamArgs a;
  a.file_id = 7;
  a.block_size = 256;
  send_get("dev", Format::Json, a);
  send_raw(request_topic("dev", "fw", protocol::Verb::Get, Format::Json), "nope");
  ASSERT_TRUE(wait_messages(5));
  ASSERT_EQ(transport_.messages.size(), 5u);
  EXPECT_EQ(transport_.messages[4].topic,
            reply_topic("dev", "fw", protocol::ReplyKind::Rejected, Format::Json));
}

TEST_F(DeliveryTest, StopRefusesNewRequests) {
  make();
  bool stopped = false;
  delivery_->stop(1000, [&] { stopped = true; });
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return stopped; }));
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Describe, Format::Json), {});
  for (int i = 0; i < 20; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_TRUE(transport_.messages.empty());
  EXPECT_EQ(metrics_.counter_value("chunkd_requests_dropped_total"), 1u);
  EXPECT_EQ(delivery_->queued_requests(), 0u);
  delivery_.reset();
}

TEST_F(DeliveryTest, StopLetsAStartedDownloadFinish) {
  make();
  transport_.accept_before_backpressure = 1;
  GetStreamArgs a;
  a.file_id = 0;
  a.block_size = 4096;
  a.count = 10;
  send_get("dev", Format::Json, a);
  send_get("other", Format::Json, a);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return transport_.backpressure; }));
  bool stopped = false;
  delivery_->stop(60'000, [&] { stopped = true; });
  transport_.signal_writable();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return stopped; }));
  std::size_t dev = 0;
  for (const auto& m : transport_.messages) dev += m.key == "dev" ? 1u : 0u;
  EXPECT_EQ(dev, 10u) << "started before stop: finished";
  EXPECT_EQ(transport_.messages.size(), 10u) << "not started: dropped";
  EXPECT_EQ(requests("get", "ok"), 1u);
  EXPECT_EQ(requests("get", "dropped"), 1u);
  delivery_.reset();
}

// Transport::finished (transport.hpp): a request is finished once its last reply was handed over
// (blocks, a description, a queued rejection), or at once when dropped as not ours.
TEST_F(DeliveryTest, EachRequestIsFinishedAfterItsLastReply) {
  using F = FakeTransport::Finished;
  make();
  GetStreamArgs a;
  a.file_id = 7;
  a.block_size = 256;  // 4 blocks
  auto get = protocol::encode_get_request(Format::Json, a);
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Get, Format::Json), get, 11);
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Describe, Format::Json), {}, 12);
  auto bad = bytes_of("nope");
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Get, Format::Json), bad, 13);
  delivery_->on_message("$aws/things/dev/streams/fw/data/json", bad, 14);  // not ours: dropped
  EXPECT_EQ(transport_.finished_tags, (std::vector<F>{{14, 0}})) << "nothing sent yet";
  ASSERT_TRUE(wait_messages(6));
  EXPECT_EQ(transport_.finished_tags, (std::vector<F>{{14, 0}, {11, 4}, {12, 5}, {13, 6}}));
}

TEST_F(DeliveryTest, AMergedRequestIsFinishedWithTheJobItJoined) {
  using F = FakeTransport::Finished;
  make();
  GetStreamArgs a;
  a.file_id = 7;
  a.block_size = 256;
  auto get = protocol::encode_get_request(Format::Json, a);
  const std::string topic = request_topic("dev", "fw", protocol::Verb::Get, Format::Json);
  delivery_->on_message(topic, get, 21);
  delivery_->on_message(topic, get, 22);  // identical and not started: merged
  EXPECT_TRUE(transport_.finished_tags.empty());
  ASSERT_TRUE(wait_messages(4));
  EXPECT_EQ(transport_.messages.size(), 4u);
  EXPECT_EQ(transport_.finished_tags, (std::vector<F>{{21, 4}, {22, 4}}));
}

TEST_F(DeliveryTest, AThrottledRequestIsFinishedAtOnceAndAStoppedOneNever) {
  using F = FakeTransport::Finished;
  DeliveryOptions o;
  o.scheduler.per_thing_queue_requests = 1;
  make(o);
  GetStreamArgs a;
  a.file_id = 7;
  a.block_size = 256;
  auto json = protocol::encode_get_request(Format::Json, a);
  auto cbor = protocol::encode_get_request(Format::Cbor, a);
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Get, Format::Json), json, 31);
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Get, Format::Cbor), cbor, 32);
  EXPECT_EQ(transport_.finished_tags, (std::vector<F>{{32, 1}})) << "throttled: answered at once";
  ASSERT_TRUE(wait_messages(5));
  EXPECT_EQ(transport_.finished_tags, (std::vector<F>{{32, 1}, {31, 5}}));
  bool stopped = false;
  delivery_->stop(1000, [&] { stopped = true; });
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return stopped; }));
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Describe, Format::Json), {}, 33);
  EXPECT_EQ(transport_.finished_tags.size(), 2u) << "a stopping instance leaves it to the broker";
  delivery_.reset();
}

}  // namespace
}  // namespace chunkd::engine

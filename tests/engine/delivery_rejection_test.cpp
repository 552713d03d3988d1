// What delivery (engine/delivery.hpp) refuses, against real blobs and a FakeTransport: bad topics
// and payloads, every bounds rejection, blobs changed on disk (ETagMismatch, logged once and
// marking the stream's health) and streams gated by allowedThings.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "engine/content_store.hpp"
#include "engine/delivery.hpp"
#include "engine/stream_health.hpp"
#include "protocol/device.hpp"
#include "tests/engine/delivery_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

TEST_F(DeliveryTest, InvalidTopicIsAnsweredOnRejectedJson) {
  make();
  send_raw("$aws/things/dev/streams/fw/get/xml", "{}");
  expect_rejected("InvalidTopic", Format::Json);
  send_raw("$aws/things/dev/streams/fw/fetch/cbor", "{}");
  expect_rejected("InvalidTopic", Format::Json);
  EXPECT_EQ(requests("unknown", "InvalidTopic"), 2u);
}

TEST_F(DeliveryTest, UnaddressableTopicsAreDroppedAndCounted) {
  make();
  send_raw("$aws/things/bad thing/streams/fw/get/json", "{}");
  send_raw("$aws/things/dev/streams/fw/data/json", "{}");  // our own reply topic
  send_raw("elsewhere/dev/streams/fw/get/json", "{}");
  for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_TRUE(transport_.messages.empty());
  EXPECT_EQ(metrics_.counter_value("chunkd_requests_dropped_total"), 3u);
}

TEST_F(DeliveryTest, MalformedPayloads) {
  make();
  const std::string get_json = request_topic("dev", "fw", protocol::Verb::Get, Format::Json);
  const std::string get_cbor = request_topic("dev", "fw", protocol::Verb::Get, Format::Cbor);
  send_raw(get_json, "not json");
  expect_rejected("InvalidJson", Format::Json);
  send_raw(get_json, "[1,2]");
  expect_rejected("InvalidJson", Format::Json);
  send_raw(get_cbor, "\xff\xff\x01");
  expect_rejected("InvalidCbor", Format::Cbor);
  send_raw(get_json, R"({"c":"abc","l":1024})");  // no f
  expect_rejected("InvalidRequest", Format::Json, "dev", "fw", "abc");
  send_raw(get_json, R"({"f":0,"l":1024,"o":-1})");
  expect_rejected("InvalidRequest", Format::Json);
  EXPECT_EQ(requests("get", "InvalidJson"), 2u);
  EXPECT_EQ(requests("get", "InvalidCbor"), 1u);
  EXPECT_EQ(requests("get", "InvalidRequest"), 2u);
}

TEST_F(DeliveryTest, EveryBoundsRejection) {
  make();
  GetStreamArgs a;
  a.client_token = "tk";
  a.file_id = 0;
  a.block_size = 1024;

  GetStreamArgs unknown_stream = a;
  send_get("dev", Format::Json, unknown_stream, "nope");
  expect_rejected("ResourceNotFound", Format::Json, "dev", "nope", "tk");

  GetStreamArgs unknown_file = a;
  unknown_file.file_id = 9;
  send_get("dev", Format::Cbor, unknown_file);
  expect_rejected("ResourceNotFound", Format::Cbor, "dev", "fw", "tk");

  GetStreamArgs old_version = a;
  old_version.version = 2;
  send_get("dev", Format::Json, old_version);
  expect_rejected("VersionMismatch", Format::Json, "dev", "fw", "tk");

  GetStreamArgs tiny_blocks = a;
  tiny_blocks.block_size = 100;
  send_get("dev", Format::Json, tiny_blocks);
  expect_rejected("BlockSizeOutOfBounds", Format::Json, "dev", "fw", "tk");

  GetStreamArgs past_end = a;
  past_end.offset = 1000;  // the file has 301 blocks of 1 KiB
  send_get("dev", Format::Cbor, past_end);
  expect_rejected("OffsetOutOfBounds", Format::Cbor, "dev", "fw", "tk");

  GetStreamArgs huge_offset = a;
  huge_offset.offset = 98305;
  send_get("dev", Format::Json, huge_offset);
  expect_rejected("OffsetOutOfBounds", Format::Json, "dev", "fw", "tk");

  GetStreamArgs too_many = a;
  too_many.count = 98305;
  send_get("dev", Format::Json, too_many);
  expect_rejected("BlockCountLimitExceeded", Format::Json, "dev", "fw", "tk");

  GetStreamArgs big_bitmap = a;
  big_bitmap.bitmap = std::vector<std::uint8_t>(12288, 0xff);
  send_get("dev", Format::Cbor, big_bitmap);
  expect_rejected("BlockBitmapLimitExceeded", Format::Cbor, "dev", "fw", "tk");

  EXPECT_EQ(requests("get", "ResourceNotFound"), 2u);
  EXPECT_EQ(requests("get", "OffsetOutOfBounds"), 2u);
  EXPECT_EQ(metrics_.counter_value("chunkd_blocks_sent_total", R"(format="json")"), 0u);
}

TEST_F(DeliveryTest, EmptyBitmapSelectsNothing) {
  make();
  GetStreamArgs a;
  a.file_id = 7;
  a.block_size = 256;
  a.bitmap = std::vector<std::uint8_t>{0, 0};
  send_get("dev", Format::Json, a);
  expect_rejected("OffsetOutOfBounds", Format::Json);
}

TEST_F(DeliveryTest, ChangedBlobIsETagMismatch) {
  make();
  {
    std::string path = blob_path(dir_.path(), stream_->files[0].digest);
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "!", 1, kExtent + 5), 1);  // extent 1 no longer matches
    ::close(fd);
  }
  GetStreamArgs a;
  a.client_token = "e";
  a.file_id = 0;
  a.block_size = 16384;
  a.offset = 2;  // blocks 2..5: extent 0 fine (2, 3), extent 1 (4, 5) corrupt
  a.count = 4;
  send_get("dev", Format::Json, a);
  ASSERT_TRUE(wait_messages(3));
  ASSERT_EQ(transport_.messages.size(), 3u);
  for (std::uint32_t i = 0; i < 2; ++i) {  // the two good blocks first...
    auto d = protocol::decode_data_reply(Format::Json, transport_.messages[i].payload);
    ASSERT_TRUE(d) << d.error();
    EXPECT_EQ(d->block_index, 2u + i);
  }
  // ...then the rejection, and nothing after it.
  EXPECT_EQ(transport_.messages[2].topic,
            reply_topic("dev", "fw", protocol::ReplyKind::Rejected, Format::Json));
  auto r = protocol::decode_rejected(Format::Json, transport_.messages[2].payload);
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->code, "ETagMismatch");
  EXPECT_EQ(r->client_token, "e");
  EXPECT_GE(metrics_.counter_value("chunkd_cache_manifest_mismatch_total"), 1u);
  EXPECT_EQ(requests("get", "ETagMismatch"), 1u);
}

// Redirects stderr (where io/log writes) to a file while it lives; text() is what was written.
class StderrCapture {
 public:
  StderrCapture() : path_(std::filesystem::temp_directory_path() / "chunkd-stderr-XXXXXX") {
    std::string templ = path_.string();
    int fd = ::mkstemp(templ.data());
    path_ = templ;
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
  }
  ~StderrCapture() {
    restore();
    std::filesystem::remove(path_);
  }
  std::string text() {
    restore();
    std::ifstream in(path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
  }
  std::filesystem::path path_;
  int saved_ = -1;
};

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) n++;
  return n;
}

TEST_F(DeliveryTest, CorruptBlobIsLoggedOnceCountedAndMarksTheStream) {
  StreamHealth health(catalog_, metrics_, clock_);
  make({}, &health);
  {
    std::string path = blob_path(dir_.path(), stream_->files[0].digest);
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "!", 1, kExtent + 5), 1);  // extent 1 no longer matches
    ::close(fd);
  }
  GetStreamArgs a;
  a.file_id = 0;
  a.block_size = 16384;
  a.offset = 4;  // blocks 4, 5: extent 1
  a.count = 2;
  StderrCapture log;
  for (int i = 0; i < 3; ++i) {
    send_get("dev", Format::Json, a);
    expect_rejected("ETagMismatch", Format::Json);
  }
  clock_.advance_ms(StreamHealth::kDefaultLogIntervalMs);
  send_get("dev", Format::Json, a);  // a minute on: one more line, counting the two unlogged
  expect_rejected("ETagMismatch", Format::Json);
  const std::string text = log.text();
  EXPECT_EQ(occurrences(text, "stream fw version 3 file 0 extent 1: manifest_mismatch"), 2u)
      << text;
  EXPECT_EQ(occurrences(text, "2 more failures of this file since the last report"), 1u) << text;
  EXPECT_NE(text.find(stream_->files[0].digest), std::string::npos) << text;

  EXPECT_EQ(metrics_.counter_value("chunkd_block_failures_total", R"(cause="manifest_mismatch")"),
            4u);
  auto failure = health.health(*stream_);
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->state, "corrupt");
  EXPECT_EQ(failure->file_id, 0u);
  EXPECT_EQ(failure->extent, 1u);
  EXPECT_NE(metrics_.render().find("chunkd_streams_unhealthy 1\n"), std::string::npos);
  // A new version of the stream starts healthy.
  auto next = std::make_shared<io::StoredStream>(*stream_);
  next->version = 4;
  catalog_.put(next);
  EXPECT_FALSE(health.health(*next).has_value());
  EXPECT_EQ(health.unhealthy_streams(), 0u);
}

TEST_F(DeliveryTest, ChangedBlobRejectionCarriesTheCode) {
  make();
  {
    std::string path = blob_path(dir_.path(), stream_->files[1].digest);
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 10), 0);  // shorter than recorded
    ::close(fd);
  }
  GetStreamArgs a;
  a.client_token = "e";
  a.file_id = 7;
  a.block_size = 256;
  send_get("dev", Format::Cbor, a);
  expect_rejected("ETagMismatch", Format::Cbor, "dev", "fw", "e");
}

// A stream with allowedThings: a matching thing is served; any other thing gets Unauthorized
// with its token for every request on the stream, before the version or file is looked at and
// before any cache work; unknown streams stay ResourceNotFound; a new snapshot applies at once.
TEST_F(DeliveryTest, AllowedThingsGateEveryRequestOnTheStream) {
  auto gated = std::make_shared<io::StoredStream>(*stream_);
  gated->allowed_things = std::vector<std::string>{"sensor-*", "gw-0?"};
  catalog_.put(gated);
  make();
  GetStreamArgs a;
  a.client_token = "tok";
  a.version = 3;
  a.file_id = 7;
  a.block_size = 256;
  send_get("sensor-12", Format::Cbor, a);
  ASSERT_TRUE(wait_messages(4));
  ASSERT_EQ(transport_.messages.size(), 4u);
  seen_ = 4;
  const std::uint64_t cache_lookups = metrics_.counter_value("chunkd_cache_hits_total") +
                                      metrics_.counter_value("chunkd_cache_misses_total");

  send_get("gw-15", Format::Cbor, a);
  expect_rejected("Unauthorized", Format::Cbor, "gw-15", "fw", "tok");
  GetStreamArgs wrong = a;
  wrong.version = 1;    // would be VersionMismatch
  wrong.file_id = 200;  // would be ResourceNotFound
  send_get("dev", Format::Json, wrong);
  expect_rejected("Unauthorized", Format::Json, "dev", "fw", "tok");
  auto payload = protocol::encode_describe_request(Format::Json, "d-tok");
  delivery_->on_message(request_topic("dev", "fw", protocol::Verb::Describe, Format::Json),
                        payload);
  expect_rejected("Unauthorized", Format::Json, "dev", "fw", "d-tok");
  send_get("dev", Format::Json, a, "nope");
  expect_rejected("ResourceNotFound", Format::Json, "dev", "nope", "tok");
  EXPECT_EQ(requests("get", "Unauthorized"), 2u);
  EXPECT_EQ(requests("describe", "Unauthorized"), 1u);
  EXPECT_EQ(metrics_.counter_value("chunkd_cache_hits_total") +
                metrics_.counter_value("chunkd_cache_misses_total"),
            cache_lookups)
      << "a refused request does no cache work";

  // The operator lets "dev" in: the next request is served, no restart.
  auto opened = std::make_shared<io::StoredStream>(*gated);
  opened->allowed_things->push_back("dev");
  catalog_.put(opened);
  send_get("dev", Format::Json, a);
  ASSERT_TRUE(wait_messages(seen_ + 4));
  EXPECT_EQ(transport_.messages.size(), seen_ + 4);
  EXPECT_EQ(transport_.messages.back().topic,
            reply_topic("dev", "fw", protocol::ReplyKind::Data, Format::Json));
}

}  // namespace
}  // namespace chunkd::engine

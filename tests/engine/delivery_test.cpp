#include "engine/delivery.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/metrics.hpp"
#include "engine/mqtt_transport.hpp"
#include "engine/stream_health.hpp"
#include "protocol/device.hpp"
#include "protocol/request.hpp"
#include "protocol/topic.hpp"
#include "tests/engine/fakes.hpp"

namespace chunkd::engine {
namespace {

using protocol::Format;
using protocol::GetStreamArgs;
using testing::FakeTransport;
using testing::TempDir;

constexpr std::uint32_t kExtent = 64 * 1024;
constexpr std::size_t kFileBytes = 300 * 1024 + 123;  // 5 extents, the last short

std::vector<std::byte> bytes_of(std::string_view s) {
  auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

class DeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    io::FileReaderOptions ro;
    ro.backend = io::FileReaderOptions::Backend::ThreadPool;
    auto setup = io::make_file_reader(&loop_, ro);
    if (setup) reader_ = std::move(setup->reader);
    if (!reader_) reader_ = std::make_unique<testing::FakeReader>(&loop_);

    content_ = testing::pattern_bytes(kFileBytes, 42);
    small_ = testing::pattern_bytes(1000, 43);
    auto stream = std::make_shared<io::StoredStream>();
    stream->id = "fw";
    stream->version = 3;
    stream->description = "firmware \"v3\"";
    stream->files.push_back(testing::make_blob(dir_.path(), content_, kExtent, 0));
    stream->files.push_back(testing::make_blob(dir_.path(), small_, kExtent, 7));
    stream_ = stream;
    catalog_.put(stream);
  }

  void TearDown() override {
    if (delivery_) {
      bool stopped = false;
      delivery_->stop(1000, [&] { stopped = true; });
      EXPECT_TRUE(testing::run_until(&loop_, [&] { return stopped; }));
      delivery_.reset();
    }
    bool closed = false;
    reader_->close([&] { closed = true; });
    EXPECT_TRUE(testing::run_until(&loop_, [&] { return closed; }));
    reader_.reset();
    EXPECT_EQ(testing::drain_and_close(&loop_), 0);
  }

  Delivery& make(DeliveryOptions o = {}, StreamHealth* health = nullptr) {
    o.cache.data_dir = dir_.path();
    o.cache.capacity_bytes = 4u << 20;
    delivery_ = std::make_unique<Delivery>(&loop_, catalog_, *reader_, transport_, metrics_, clock_,
                                           o, health);
    return *delivery_;
  }

  std::string request_topic(std::string_view thing, std::string_view stream, protocol::Verb verb,
                            Format format) {
    std::string t;
    codec_.request_topic(t, thing, stream, verb, format);
    return t;
  }
  std::string reply_topic(std::string_view thing, std::string_view stream, protocol::ReplyKind kind,
                          Format format) {
    std::string t;
    codec_.reply_topic(t, thing, stream, kind, format);
    return t;
  }

  void send_get(std::string_view thing, Format format, const GetStreamArgs& args,
                std::string_view stream = "fw") {
    auto payload = protocol::encode_get_request(format, args);
    delivery_->on_message(request_topic(thing, stream, protocol::Verb::Get, format), payload);
  }

  void send_raw(std::string_view topic, std::string_view payload) {
    auto b = bytes_of(payload);
    delivery_->on_message(topic, b);
  }

  // Runs until `n` messages were published, then a few more turns to catch extras.
  bool wait_messages(std::size_t n) {
    bool ok = testing::run_until(&loop_, [&] { return transport_.messages.size() >= n; });
    for (int i = 0; i < 50; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
    return ok;
  }

  // Expects exactly one new message, a rejection with `code`, on rejected/<fmt>.
  void expect_rejected(std::string_view code, Format format, std::string_view thing = "dev",
                       std::string_view stream = "fw",
                       std::optional<std::string> token = std::nullopt) {
    std::size_t before = seen_;
    ASSERT_TRUE(wait_messages(before + 1)) << "no reply for " << code;
    ASSERT_EQ(transport_.messages.size(), before + 1);
    seen_ = transport_.messages.size();
    const auto& m = transport_.messages.back();
    EXPECT_EQ(m.key, thing);
    EXPECT_EQ(m.topic, reply_topic(thing, stream, protocol::ReplyKind::Rejected, format));
    auto r = protocol::decode_rejected(format, m.payload);
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->code, code);
    EXPECT_EQ(r->client_token, token);
  }

  std::uint64_t requests(std::string_view verb, std::string_view outcome) {
    return metrics_.counter_value(
        "chunkd_requests_total",
        "verb=\"" + std::string(verb) + "\",outcome=\"" + std::string(outcome) + "\"");
  }

  // Downloads all of file 0 in windows of `window` blocks (or with a 30-bit bitmap per window),
  // checking every reply, and returns the reassembled bytes.
  std::vector<std::byte> download(Format format, std::uint32_t block_size, std::uint32_t window,
                                  bool bitmap) {
    const std::uint32_t blocks =
        static_cast<std::uint32_t>((kFileBytes + block_size - 1) / block_size);
    std::vector<std::byte> out(kFileBytes);
    std::vector<bool> got(blocks, false);
    std::uint32_t next = 0;
    int round = 0;
    while (next < blocks) {
      GetStreamArgs a;
      a.client_token = "w" + std::to_string(round++);
      a.version = 3;
      a.file_id = 0;
      a.block_size = block_size;
      a.offset = next;
      std::uint32_t expect = std::min(window, blocks - next);
      if (bitmap) {
        a.bitmap = std::vector<std::uint8_t>(4, 0);
        for (std::uint32_t k = 0; k < 30; ++k) (*a.bitmap)[k >> 3] |= std::uint8_t(1u << (k & 7));
        expect = std::min<std::uint32_t>(30, blocks - next);
        expect = std::min<std::uint32_t>(expect, protocol::kMaxRequestPayloadBytes / block_size);
      } else {
        a.count = window;
      }
      const std::size_t before = transport_.messages.size();
      send_get("dev", format, a);
      EXPECT_TRUE(wait_messages(before + expect));
      EXPECT_EQ(transport_.messages.size(), before + expect);
      for (std::size_t i = before; i < transport_.messages.size(); ++i) {
        const auto& m = transport_.messages[i];
        EXPECT_EQ(m.key, "dev");
        EXPECT_EQ(m.topic, reply_topic("dev", "fw", protocol::ReplyKind::Data, format));
        auto d = protocol::decode_data_reply(format, m.payload);
        if (!d) {
          ADD_FAILURE() << d.error();
          continue;
        }
        EXPECT_EQ(d->client_token, a.client_token);
        EXPECT_EQ(d->file_id, 0u);
        EXPECT_EQ(d->block_index, next + (i - before)) << "blocks arrive in order";
        const std::size_t off = std::size_t{d->block_index} * block_size;
        EXPECT_EQ(d->length, std::min<std::size_t>(block_size, kFileBytes - off));
        EXPECT_EQ(d->length, d->payload.size());
        if (off + d->payload.size() <= out.size()) {
          std::memcpy(out.data() + off, d->payload.data(), d->payload.size());
          got[d->block_index] = true;
        }
      }
      next += expect;
      if (::testing::Test::HasFailure()) break;
    }
    for (std::uint32_t b = 0; b < blocks; ++b) EXPECT_TRUE(got[b]) << "block " << b;
    seen_ = transport_.messages.size();
    return out;
  }

  uv_loop_t loop_{};
  TempDir dir_;
  Metrics metrics_;
  ManualClock clock_;
  Catalog catalog_;
  FakeTransport transport_;
  protocol::TopicCodec codec_;
  std::unique_ptr<io::FileReader> reader_;
  std::unique_ptr<Delivery> delivery_;
  StreamSnapshot stream_;
  std::vector<std::byte> content_;
  std::vector<std::byte> small_;
  std::size_t seen_ = 0;
};

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

TEST(MqttTransportTest, MapsEveryPoolResult) {
  using R = Transport::SendResult;
  EXPECT_EQ(MqttTransport::map(io::PublishResult::Ok), R::Ok);
  EXPECT_EQ(MqttTransport::map(io::PublishResult::Backpressure), R::Backpressure);
  EXPECT_EQ(MqttTransport::map(io::PublishResult::NotConnected), R::NotConnected);
  EXPECT_EQ(MqttTransport::map(io::PublishResult::Error), R::Error);
}

}  // namespace
}  // namespace chunkd::engine

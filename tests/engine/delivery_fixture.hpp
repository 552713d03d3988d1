// The delivery under test (tests/engine/delivery*_test.cpp): DeliveryTest serves a catalog of one
// stream "fw" version 3 (file 0: kFileBytes of 64 KiB extents, the last short; file 7: 1000 bytes)
// from blobs in a temporary data_dir, read by the thread-pool file reader, and answers into a
// FakeTransport; it sends requests as a device would and checks replies and rejections.
#pragma once

#include <gtest/gtest.h>
#include <uv.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/delivery.hpp"
#include "engine/metrics.hpp"
#include "engine/stream_health.hpp"
#include "protocol/device.hpp"
#include "protocol/request.hpp"
#include "protocol/topic.hpp"
#include "tests/engine/fakes.hpp"

namespace chunkd::engine::testing {

using protocol::Format;
using protocol::GetStreamArgs;

inline constexpr std::uint32_t kExtent = 64 * 1024;
inline constexpr std::size_t kFileBytes = 300 * 1024 + 123;  // 5 extents, the last short

inline std::vector<std::byte> bytes_of(std::string_view s) {
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

}  // namespace chunkd::engine::testing

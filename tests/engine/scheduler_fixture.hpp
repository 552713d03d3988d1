// The fixture of the Scheduler tests (scheduler_test.cpp, scheduler_limits_test.cpp,
// scheduler_flow_test.cpp): a real Scheduler, BlockServer and BlockCache over blobs in a temporary
// directory, with the fakes of tests/engine/fakes.hpp for the file reader (reads complete on the
// test's libuv loop, or when the test releases them) and the transport (records every message,
// pushes back on demand), and a manual clock for the rate limits.
#pragma once

#include <gtest/gtest.h>
#include <uv.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/block_server.hpp"
#include "engine/clock.hpp"
#include "engine/delivery_metrics.hpp"
#include "engine/metrics.hpp"
#include "engine/scheduler.hpp"
#include "protocol/device.hpp"
#include "protocol/error_code.hpp"
#include "tests/engine/fakes.hpp"

namespace chunkd::engine {
namespace {

using testing::FakeReader;
using testing::FakeTransport;
using testing::TempDir;

// A data reply's block index (the test jobs ask for JSON replies).
[[maybe_unused]] std::uint32_t block_of(const FakeTransport::Message& m) {
  auto d = protocol::decode_data_reply(protocol::Format::Json, m.payload);
  EXPECT_TRUE(d) << m.topic;
  return d ? d->block_index : UINT32_MAX;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    reader_ = std::make_unique<FakeReader>(&loop_);
    BlockCacheOptions co;
    co.data_dir = dir_.path();
    co.capacity_bytes = 4u << 20;
    cache_ = std::make_unique<BlockCache>(*reader_, metrics_, co);
    server_ = std::make_unique<BlockServer>(*cache_, transport_, delivery_metrics_, clock_, 0);
    stream_ = std::make_shared<io::StoredStream>();
    stream_->id = "s";
    stream_->version = 1;
  }

  void TearDown() override {
    if (scheduler_) {
      scheduler_->check_invariants();
      bool stopped = false;
      scheduler_->stop(0, [&] { stopped = true; });
      EXPECT_TRUE(testing::run_until(&loop_, [&] { return stopped; }));
      scheduler_.reset();
    }
    server_.reset();
    cache_->check_invariants();
    cache_.reset();
    bool closed = false;
    reader_->close([&] { closed = true; });
    EXPECT_TRUE(testing::run_until(&loop_, [&] { return closed; }));
    reader_.reset();
    EXPECT_EQ(testing::drain_and_close(&loop_), 0);
  }

  const io::StoredFile& add_file(std::size_t size, std::uint32_t extent_bytes,
                                 std::uint32_t id = 0) {
    content_[id] = testing::pattern_bytes(size, id + 3);
    stream_->files.push_back(testing::make_blob(dir_.path(), content_[id], extent_bytes, id));
    return stream_->files.back();
  }

  Scheduler& make(SchedulerOptions o = {}) {
    scheduler_ = std::make_unique<Scheduler>(&loop_, *server_, transport_, clock_, metrics_, o);
    return *scheduler_;
  }

  // Things "a" then "b" each ask for `blocks` 1 KiB blocks (each reply is 4 + 1024 bytes here);
  // returns whose replies went out, in order.
  std::string serve_two_things(std::size_t quantum_bytes, std::uint32_t blocks) {
    add_file(64 * 1024, 16384);
    SchedulerOptions o;
    o.quantum_bytes = quantum_bytes;
    auto& s = make(o);
    EXPECT_EQ(s.submit(job("a", 0, 1024, 0, blocks)), Scheduler::Admit::Ok);
    EXPECT_EQ(s.submit(job("b", 0, 1024, 0, blocks)), Scheduler::Admit::Ok);
    EXPECT_TRUE(testing::run_until(&loop_, [&] { return ended() == 2; }));
    std::string order;
    for (const auto& m : transport_.messages) order += m.key;
    return order;
  }

  BlockJob job(const std::string& thing, std::uint32_t file_id, std::uint32_t block_size,
               std::uint32_t first, std::uint32_t count) {
    BlockJob j;
    j.thing = thing;
    j.stream = stream_;
    for (auto& f : stream_->files) {
      if (f.file_id == file_id) j.file = &f;
    }
    j.block_size = block_size;
    for (std::uint32_t i = 0; i < count; ++i) j.blocks.push_back(first + i);
    j.data_topic = thing + "/data";
    j.rejected_topic = thing + "/rejected";
    j.received_ms = clock_.now_ms();
    return j;
  }

  // The payload bytes a block must carry.
  bool block_matches(const FakeTransport::Message& m, std::uint32_t file_id,
                     std::uint32_t block_size) {
    const auto& c = content_[file_id];
    auto d = protocol::decode_data_reply(protocol::Format::Json, m.payload);
    if (!d || d->file_id != file_id) return false;
    std::size_t off = std::size_t{d->block_index} * block_size;
    std::size_t n = std::min<std::size_t>(block_size, c.size() - off);
    return d->length == n && d->payload.size() == n &&
           std::memcmp(d->payload.data(), c.data() + off, n) == 0;
  }

  // GetStream jobs that ended with `outcome` (ok, aborted, dropped or a rejection code), as the
  // block server counts them.
  std::uint64_t ended(std::string_view outcome) {
    return metrics_.counter_value("chunkd_requests_total",
                                  R"(verb="get",outcome=")" + std::string(outcome) + "\"");
  }
  // Jobs that ended, however.
  std::uint64_t ended() {
    std::uint64_t n = ended("ok") + ended("aborted") + ended("dropped");
    for (int c = 0; c < protocol::kErrorCodeCount; ++c) {
      n += ended(protocol::to_string(static_cast<protocol::ErrorCode>(c)));
    }
    return n;
  }

  // A few loop turns with nothing more to do (reads complete on 0 ms timers).
  void settle(int turns = 300) {
    for (int i = 0; i < turns; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  }

  uv_loop_t loop_{};
  TempDir dir_;
  Metrics metrics_;
  ManualClock clock_;
  FakeTransport transport_;
  DeliveryMetrics delivery_metrics_{metrics_};
  std::unique_ptr<FakeReader> reader_;
  std::unique_ptr<BlockCache> cache_;
  std::unique_ptr<BlockServer> server_;
  std::unique_ptr<Scheduler> scheduler_;
  std::shared_ptr<io::StoredStream> stream_;
  std::map<std::uint32_t, std::vector<std::byte>> content_;
};

}  // namespace
}  // namespace chunkd::engine

// The block server: the work half of delivery. Given a thing's head item by the Scheduler, it
// pins the block's extents in the BlockCache (starting or joining reads within the scheduler's
// ReadBounds), encodes the reply (protocol/ encoders), sends it through the Transport, counts
// it (DeliveryMetrics), and returns what happened (ServeResult) for the scheduler to act on.
//
// It owns the only call site of Transport::send in the engine's data plane: data blocks, queued
// messages and the replies sent out of band (send_now) all go through it.
//
// Encoding: CBOR is a short header followed by the block's bytes where they lie in the cache (one
// part per extent it covers, no copy); JSON base64-encodes into a buffer sized once for the
// largest reply, after stitching a block that spans extents into one buffer. No allocation per
// block once warm.
//
// Failures: a failed extent read turns the job into its rejection in place (Served::Failed),
// coded by the one error table (engine/reply_errors.hpp) and, unless transient, reported to the
// StreamHealth (log line, metrics, the stream's health); a transient refusal (no buffer, no
// descriptor) waits for a read in flight (Served::WaitSlot) or, with none, fails the job
// RequestThrottled.
//
// Thread: loop thread only. REQUIRES: cache, transport, metrics and clock outlive it; every
// Handle it pinned is released before the cache is destroyed (items live in the Scheduler).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/clock.hpp"
#include "engine/delivery_metrics.hpp"
#include "engine/stream_health.hpp"
#include "engine/transport.hpp"
#include "engine/work.hpp"

namespace chunkd::engine {

class BlockServer final : public Worker {
 public:
  // `health` may be null (failures are then only counted as rejections).
  BlockServer(BlockCache& cache, Transport& transport, DeliveryMetrics& metrics, const Clock& clock,
              int qos, StreamHealth* health = nullptr);
  ~BlockServer() override;
  BlockServer(const BlockServer&) = delete;
  BlockServer& operator=(const BlockServer&) = delete;

  void on_read_done(ReadDone done) override;
  ServeResult serve(std::string_view thing, WorkItem& item, const ReadBounds& bounds) override;
  void queued(const WorkItem& item, const ReadBounds& bounds) override;
  void dropped(const WorkItem& item) override;

  // Sends a reply now, ahead of the thing's queue (RequestThrottled, or a rejection that could
  // not be queued). A refusal is counted in chunkd_replies_dropped_total.
  void send_now(std::string_view thing, std::string_view topic, std::span<const std::byte> body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkd::engine

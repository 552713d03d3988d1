// The request scheduler: per-thing FIFOs served round-robin, within rate limits and the publish
// backpressure budget, reading blocks through the BlockCache.
//
// What it owns: one FIFO per thing with work, holding GetStream jobs (a block list) and ready
// messages (descriptions, rejections) in arrival order, so everything a thing is sent stays in the
// order its requests came. Bounds: `per_thing_queue_requests` items per thing and
// `global_queue_requests` items in all; submit()/post() over a bound return Admit::Throttled and
// queue nothing (the caller answers RequestThrottled at once, out of band).
//
// Serving (from a uv_idle_t while there is runnable work, at most `blocks_per_turn` items per loop
// turn, so the loop keeps polling sockets in between; no recursion): things with runnable work
// sit in a ring; each turn of a thing sends items (blocks or messages) until they add up to
// `quantum_bytes` (at least one; one block per turn under a global block rate) and moves it to the
// back: fair between things, while a device's blocks still reach it several at a time. A block is
// sent when every extent it covers is in the cache: a missing extent parks the thing until its read
// completes (at most `max_extent_reads` reads started by the scheduler in flight; a thing needing
// one more waits for a slot). Extents of upcoming blocks of queued jobs are prefetched within the
// same read bound (the next extent of a job being served, the first of a job just queued).
//
// Rate limits: token buckets of blocks/s per thing and globally (0 = off), burst max(1, rate),
// refilled from the Clock; a thing out of tokens is parked until its bucket refills, an empty
// global bucket stops serving; a uv_timer_t wakes the scheduler at the earliest refill. Messages
// are not rate limited. Per-thing buckets of idle things are kept until they are full again, so a
// device cannot skip its limit by sending requests one at a time.
//
// Backpressure: nothing is encoded while transport.bytes_in_flight() >=
// max_publish_bytes_in_flight; a publish answered Backpressure keeps its item (the same block is
// retried) and stops serving until transport.on_writable() fires (a 20 ms timer re-checks the
// in-flight bound as a backstop). NotConnected/Error drop the rest of that job (counted; a QoS-0
// reply cannot be recovered).
//
// Failed extent reads end the job: the sink encodes a rejection that replaces the job at the head
// of the thing's queue. Transient refusals (no cache buffer, no descriptor, reader queue full)
// wait for a read to complete, or end the job RequestThrottled when nothing is in flight.
//
// Thread: loop thread only. stop() or destruction closes the uv handles (their memory is freed in
// the close callbacks, so the loop must run afterwards).
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/delivery.hpp"
#include "engine/metrics.hpp"
#include "protocol/topic.hpp"

namespace chunkd::engine {

struct SchedulerOptions {
  std::size_t per_thing_queue_requests = 16;
  std::size_t global_queue_requests = 4096;
  double per_thing_blocks_per_s = 0;  // 0: unlimited
  double global_blocks_per_s = 0;     // 0: unlimited
  std::size_t max_publish_bytes_in_flight = 32u << 20;
  int qos = 0;
  std::size_t max_extent_reads = 32;   // reads started by the scheduler (demand + prefetch)
  std::size_t max_prefetch_reads = 8;  // of which prefetches
  std::size_t blocks_per_turn = 64;    // items served per loop turn
  // Reply bytes served to one thing in a row before the next thing's turn (at least one item).
  std::size_t quantum_bytes = 32u << 10;
};

// One GetStream request, ready to serve.
struct BlockJob {
  std::string thing;      // the publish key
  StreamSnapshot stream;  // keeps `file` alive
  const io::StoredFile* file = nullptr;
  std::uint32_t block_size = 0;
  std::vector<std::uint32_t> blocks;  // ascending block indices, inside the file
  std::string data_topic;             // data/<fmt>
  std::string rejected_topic;         // rejected/<fmt>, for a failure mid-job
  protocol::Format format = protocol::Format::Json;
  std::optional<std::string> client_token;
  std::uint64_t received_ms = 0;  // Clock::now_ms() when the request arrived
};

// How a job left the queue.
enum class JobEnd {
  Completed,      // every block handed to the transport
  Failed,         // an extent read failed; `error` says why; its rejection was queued
  PublishFailed,  // the transport answered NotConnected/Error; the rest was dropped
  Dropped,        // stop() dropped it
};

// What the scheduler needs from delivery: encoding, and being told how jobs ended.
class SchedulerSink {
 public:
  virtual ~SchedulerSink() = default;
  // Encodes block `block_index` of `job`, whose bytes are the concatenation of `pieces` (one per
  // extent the block covers, in order). The reply is the concatenation of the parts returned,
  // which may include `pieces` themselves; it must stay valid until the next call.
  virtual std::span<const std::span<const std::byte>> encode_block(
      const BlockJob& job, std::uint32_t block_index,
      std::span<const std::span<const std::byte>> pieces) = 0;
  // The rejection payload (for job.rejected_topic) of a job whose extent read failed.
  virtual std::vector<std::byte> encode_failure(const BlockJob& job, std::error_code error) = 0;
  virtual void job_ended(const BlockJob& job, JobEnd end, std::error_code error) = 0;
};

class Scheduler {
 public:
  enum class Admit { Ok, Throttled, Stopped };

  Scheduler(uv_loop_t* loop, BlockCache& cache, Transport& transport, SchedulerSink& sink,
            const Clock& clock, Metrics& metrics, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job (non-empty block list, file inside `stream`) behind the thing's earlier items.
  Admit submit(BlockJob job);
  // Queues a ready message (description or rejection) behind the thing's earlier items.
  Admit post(std::string_view thing, std::string topic, std::vector<std::byte> payload);

  // Re-evaluates rate limits and parked things now (after a test moved a ManualClock).
  void wake();

  // Refuses new work; keeps each thing's head item when it is a message or a job already sending,
  // drops the rest (JobEnd::Dropped); once those finished or after `timeout_ms`, drops what is
  // left, closes the handles and calls `done` from a close callback.
  void stop(int timeout_ms, std::function<void()> done);

  std::size_t queued_requests() const;  // jobs + messages, all things
  std::size_t active_things() const;    // things with queued items
  std::size_t reads_in_flight() const;  // extent reads the scheduler waits for or prefetches
  bool paused() const;                  // waiting for on_writable

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkd::engine

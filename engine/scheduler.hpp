// The request scheduler: the policy half of delivery. It decides whose item is served next and
// how much, and hands each item to its Worker (BlockServer in the daemon), which does the work
// (pin extents, encode, send, count) and says how it went (ServeResult). It never encodes, reads
// or sends itself.
//
// What it owns: one FIFO per thing with work (engine/thing_queues.hpp), holding GetStream jobs (a
// block list) and ready messages (descriptions, rejections) in arrival order, so everything a thing
// is sent stays in the order its requests came. Bounds: `per_thing_queue_requests` items per thing
// and `global_queue_requests` items in all; submit()/post() over a bound return Admit::Throttled
// and queue nothing (the caller answers RequestThrottled at once, out of band).
//
// Merged duplicates: a device that re-requests on a time-out would fill its own queue with stale
// copies. A submitted job identical to a job of the same thing that is still queued and not
// started (no block sent yet) replaces it instead of queueing again (Admit::Merged, counted in
// chunkd_requests_merged_total), even when the thing's queue is full. Identical means the same
// stream id and version, file id and content digest, block size, selected blocks (an offset/count
// and a bitmap selecting the same blocks are the same selection) and format; the client token
// may differ (chunkload changes it on every re-request, the OTA agent re-sends the same one): the
// newer request's token and arrival time win, so the reply answers the request the device waits
// for. The queued job keeps its place in the FIFO: it is the reply the device would have got
// first anyway, so merging only removes the later duplicate, and the device is not pushed behind
// its own later requests for re-asking. The merged request ends with the job it joined and is
// counted once there (chunkd_requests_total). A job already sending is never merged: the device
// may have missed its first blocks, so the new request queues behind it as before.
//
// Serving (from a uv_idle_t while there is runnable work, at most `blocks_per_turn` items per loop
// turn, so the loop keeps polling sockets in between; no recursion): things with runnable work
// sit in one ring in turn order (engine/scheduler_order.hpp: a lane per channel); each turn of a
// thing serves items (blocks or messages) until their replies add up to `quantum_bytes` (at least
// one; one block per turn under a global block rate) and moves it to the back: fair between things,
// while a device's blocks still reach it several at a time. A worker answering WaitRead parks the
// thing until every read it waits for was reported (read_done, through Worker::on_read_done);
// WaitSlot parks it until any read completes (a 20 ms timer re-checks as a backstop). Extent reads
// are bounded by ReadBounds (`max_extent_reads`, `max_prefetch_reads`), which the worker applies.
//
// Rate limits: token buckets of blocks/s per thing and globally (0 = off, engine/token_bucket.hpp),
// refilled from the Clock; a thing out of tokens is parked until its bucket refills, an empty
// global bucket stops serving; a uv_timer_t wakes the scheduler at the earliest refill. Messages
// are not rate limited. Per-thing buckets of idle things are kept until they are full again, so a
// device cannot skip its limit by sending requests one at a time.
//
// Backpressure: nothing is handed to the worker while transport.bytes_in_flight() >=
// max_publish_bytes_in_flight (a bound on memory: serving stops for every thing until
// transport.on_writable() fires). A full channel (one broker connection) holds back only the
// things routed to it: an item answered Backpressure stays at the head (the same block is
// retried) and its thing waits at the head of its channel's lane, as does every thing of that
// channel behind it (never offered to the transport), while things on other channels are served
// on. When on_writable() fires, each channel the transport calls writable() again is released:
// its things keep their turns, so they come before things whose turn came later (the 20 ms timer
// re-checks both as a backstop). Holding and releasing cost O(1), not O(things on the channel).
// A thing's channel is asked once when it gets work, not per block. Lost drops the message or the
// rest of the job; Failed means the job became its rejection, which is served in its place at once.
//
// Thread: loop thread only. REQUIRES: `worker` and `transport` outlive the scheduler (it
// unregisters its callbacks from both when destroyed). stop() or destruction closes the uv
// handles (their memory is freed in the close callbacks, so the loop must run afterwards).
// REQUIRES: `options` meets SchedulerOptions' REQUIRES: (engine/delivery_options.hpp: at least
// one item per turn, per thing and in all, one extent read, and fewer prefetches than reads);
// asserted at construction.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/clock.hpp"
#include "engine/delivery_options.hpp"
#include "engine/metrics.hpp"
#include "engine/transport.hpp"
#include "engine/work.hpp"

namespace chunkd::engine {

class Scheduler {
 public:
  enum class Admit { Ok, Merged, Throttled, Stopped };

  Scheduler(uv_loop_t* loop, Worker& worker, Transport& transport, const Clock& clock,
            Metrics& metrics, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job behind the thing's earlier items, or merges it into an identical queued one
  // (Merged, see above). REQUIRES: a non-empty ascending block list inside `job.file`, which
  // `job.stream` keeps alive; block_size > 0. `tag` is the request's (Transport::finished once
  // the job it is in ended); a caller that gets Throttled or Stopped keeps it.
  Admit submit(BlockJob job, Transport::RequestTag tag = Transport::kNoRequestTag);
  // Queues a ready message (description or rejection) behind the thing's earlier items; `tag` as
  // for submit().
  Admit post(std::string_view thing, std::string topic, std::vector<std::byte> payload,
             Transport::RequestTag tag = Transport::kNoRequestTag);

  // Re-evaluates rate limits and parked things now (after a test moved a ManualClock).
  void wake();

  // A reload: takes the live limits of `options` (per_thing/global_queue_requests,
  // per_thing/global_blocks_per_s, quantum_bytes, max_publish_bytes_in_flight); the rest stays as
  // constructed. Queued work stays queued, even over a lowered bound; new bounds apply to the next
  // submit()/post(). Things waiting for tokens are re-evaluated under the new rates at once.
  // REQUIRES: options meets SchedulerOptions' REQUIRES: (asserted).
  void set_limits(const SchedulerOptions& options);

  // Refuses new work; keeps each thing's head item when it is a message or a job already sending,
  // drops the rest (Worker::dropped); once those finished or after `timeout_ms`, drops what is
  // left, closes the handles and calls `done` from a close callback.
  void stop(int timeout_ms, std::function<void()> done);

  std::size_t queued_requests() const;  // jobs + messages, all things
  std::size_t active_things() const;    // things with queued items
  std::size_t reads_in_flight() const;  // demand reads the scheduler's items wait for
  bool paused() const;                  // waiting for on_writable: the in-flight bound
  std::size_t held_back() const;        // things waiting for their full channel
  // Recounts the queues (O(things)) and aborts when the counts above disagree with them.
  void check_invariants() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkd::engine

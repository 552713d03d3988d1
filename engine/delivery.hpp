// The data plane: GetStream and DescribeStream requests in, blocks and descriptions out.
//
// Path of a request, always forward:
//   Transport → Delivery::on_message (engine/delivery.cpp: topic parse + decode in protocol/,
//   stream/file/version checks against the Catalog, block selection)
//   → Scheduler::submit/post (engine/scheduler.cpp: per-thing FIFOs, round-robin, quanta, rate
//   limits, queue bounds, backpressure pause)
//   → Worker::serve on BlockServer (engine/block_server.cpp: pins the block's BlockCache extents,
//   reading a miss with the FileReader, checked against the manifest; encodes it — CBOR: a
//   header, the extent slices following it uncopied; JSON: base64 into a reused buffer; sends it
//   with Transport::send; counts it) → a ServeResult back to the scheduler, which moves on.
// Over any bound a request is answered RequestThrottled at once (BlockServer::send_now), never
// dropped silently. Errors map to rejection codes in one table (engine/reply_errors.hpp); every
// metric is registered once (engine/delivery_metrics.hpp).
//
// Owns the BlockCache, the BlockServer and the Scheduler. Thread: loop thread only. REQUIRES:
// catalog, reader, transport, metrics and clock outlive it; construct after the transport and
// call on_message from its request handler; options.topic_prefix is valid
// (protocol::TopicCodec::valid_prefix), options.scheduler and options.cache meet their REQUIRES:
// (engine/delivery_options.hpp). Each is asserted at construction.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/delivery_options.hpp"
#include "engine/metrics.hpp"
#include "engine/stream_health.hpp"
#include "engine/transport.hpp"
#include "io/file_reader.hpp"

namespace chunkd::engine {

class Delivery {
 public:
  // `health` (may be null) gets every failed block read (engine/stream_health.hpp).
  Delivery(uv_loop_t* loop, const Catalog& catalog, io::FileReader& reader, Transport& transport,
           Metrics& metrics, const Clock& clock, DeliveryOptions options,
           StreamHealth* health = nullptr);
  ~Delivery();
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // Handles one MQTT message (a request topic). Never throws; every outcome is counted. `tag` is
  // finished (Transport::finished) once the request's last reply was handed to the transport, or
  // at once when it is dropped as not ours; not when delivery is stopping (transport.hpp).
  void on_message(std::string_view topic, std::span<const std::byte> payload,
                  Transport::RequestTag tag = Transport::kNoRequestTag);

  // Stops taking requests, finishes jobs already started (bounded by `timeout_ms`), drops the
  // rest, closes handles, then calls `done`.
  void stop(int timeout_ms, std::function<void()> done);

  std::size_t queued_requests() const;

  // A reload: the scheduler's live limits (Scheduler::set_limits); the rest of `options` is not
  // read. REQUIRES: options meets SchedulerOptions' REQUIRES: (asserted).
  void set_limits(const SchedulerOptions& options);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkd::engine

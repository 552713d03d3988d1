// What the loop thread (io/amqp_client.cpp) and the session thread (io/amqp_session.cpp) share:
// the two bounded hand-off queues, under one mutex, and the counters. See io/amqp_client.hpp.
#pragma once

#include <uv.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "io/amqp_client.hpp"
#include "io/amqp_failure.hpp"

namespace chunkd::io {

struct AmqpCommand {
  enum class Kind { Publish, Finish };
  Kind kind = Kind::Publish;
  std::string routing_key;  // Publish
  std::vector<std::byte> body;
  std::uint64_t session = 0;  // Finish
  std::uint64_t tag = 0;
  bool requeue = false;  // Finish: reject with requeue, whatever the confirms say
};

struct AmqpEvent {
  enum class Kind { Delivery, Up, Down, Written, Stopped, Failure };
  Kind kind = Kind::Written;
  AmqpDelivery delivery;      // Delivery
  std::string why;            // Down
  AmqpFailureReport failure;  // Failure
};

struct AmqpClient::Shared {
  AmqpClientOptions options;
  uv_async_t* async = nullptr;  // wakes the loop; closed only after the thread was joined
  int wake_fd = -1;             // eventfd: wakes the session thread

  std::mutex mu;
  std::deque<AmqpCommand> commands;  // loop → session
  // Publishes the session wrote, handed back so the next publish() reuses their buffers (already
  // faulted in) instead of fresh memory; LIFO, so the most recently written (the likeliest in
  // cache) goes first. Their capacities total at most options.max_queued_bytes.
  std::vector<AmqpCommand> spares;
  std::size_t spare_bytes = 0;
  std::deque<AmqpEvent> events;  // session → loop
  bool stop_requested = false;
  int flush_timeout_ms = 0;
  std::string uri;  // the current (or last) session's URI

  std::atomic<std::size_t> queued_bytes{0};  // publish bodies in `commands`
  std::atomic<std::uint64_t> session{0};     // the consuming session's id, 0 when none
  std::atomic<bool> want_writable{false};    // the loop refused a publish: post Written
  std::atomic<bool> jobs_wanted{false};      // consume_jobs(): the jobs_queue consumer's wish
  std::atomic<bool> jobs_consuming{false};   // the broker's consume-ok came, no cancel since
  std::atomic<std::uint64_t> sessions{0}, failovers{0}, connect_failures{0}, deliveries{0},
      publishes{0}, confirms{0}, nacks{0}, acks{0}, requeued{0}, broker_internal_errors{0},
      confirms_pending{0}, dropped_publishes{0};
  std::array<std::atomic<std::uint64_t>, kAmqpFailureCount> failures_by_cause{};

  void post(AmqpEvent event);         // session thread: queue for the loop and wake it
  void command(AmqpCommand command);  // loop thread: queue for the session and wake it
  void wake_session();
  // Loop thread: a written publish to refill (its routing key and body hold capacity), or a new
  // one when none is spare.
  AmqpCommand take_spare();
  // Session thread: hands `written` back as spares, within the bound; what does not fit stays
  // in `written` (the caller frees it outside the lock).
  void give_spares(std::vector<AmqpCommand>& written);
};

// The session thread's body: sessions with fail-over until stop_requested, then posts Stopped.
void run_amqp_sessions(AmqpClient::Shared& shared);

}  // namespace chunkd::io

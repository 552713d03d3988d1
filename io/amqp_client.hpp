// AmqpClient: one AMQP 0-9-1 connection to RabbitMQ (librabbitmq, rabbitmq-c 0.11) that consumes
// a quorum queue and publishes to an exchange with publisher confirms, for the AMQP transport
// (engine/amqp_transport.hpp).
//
// Threading (decided by measurement, see below): rabbitmq-c's calls block — amqp_login and every
// queue/exchange RPC wait for the broker's answer, and amqp_basic_publish writes the whole frame,
// polling with no deadline while the socket is full. Measured on this machine (RabbitMQ 3.10.8):
// a loop of 128 KiB publishes to a node that was SIGSTOPped (as a node under a memory alarm stops
// reading) blocked in one amqp_basic_publish call for 7.5 s, until the node was resumed. It cannot
// be driven from the libuv loop without blocking it, so the connection runs on its OWN THREAD (the
// "session" thread, io/amqp_session.cpp) and talks to the loop through two BOUNDED hand-offs
// guarded by one mutex:
//   loop → session: publishes (bounded by max_queued_bytes: publish() says Backpressure past it,
//     and on_writable fires once the session wrote the queue below half of it) and finish()
//     notes (one per delivery, so bounded by prefetch); an eventfd wakes the session's poll().
//   session → loop: deliveries (bounded by basic.qos prefetch per session), up/down and
//     "written" notes; a uv_async_t wakes the loop, which drains them in one callback.
//
// Session: tries uris in order (fail-over: the next one after a failure, a back-off of
// backoff_min_ms doubling to backoff_max_ms after a whole round failed, reset once a session
// was up), logs in (user from the URI, `password` when set), opens channel 1, confirm.select,
// declares `queue` durable with x-queue-type=quorum and x-delivery-limit=delivery_limit, binds it
// on `exchange` with every binding key, declares and binds `jobs_queue` likewise when it is set
// (whether its consumer is on or not, so its requests wait there), basic.qos(prefetch) (per
// consumer), basic.consume of `queue` (manual acks). Then it
// polls its socket and the eventfd: deliveries go to the loop, publishes go out numbered 1, 2, …
// (the confirm sequence), basic.ack/nack from the broker confirm them. Heartbeats every
// heartbeat_s (rabbitmq-c sends them; a socket silent for 2 heartbeats is a dead session).
//
// Acknowledgement rule: finish(session, tag) acks delivery `tag` once every publish handed over
// BEFORE the finish() call is confirmed by the broker (a nack of any of them rejects it with
// requeue instead: redelivered, answered again). A finish for an older session is ignored (the
// broker requeued that delivery when the session ended). So a request is acknowledged only when
// its replies are safe with the broker; a crash loses nothing, and may duplicate.
//
// Jobs queue: a second consumer, on `jobs_queue`, that consume_jobs(on) starts and cancels (the
// loop sets the wish and wakes the session, which sends basic.consume / basic.cancel without
// waiting: the broker's consume-ok / cancel-ok come back among the other frames). The wish holds
// for every later session too. A cancel stops new deliveries; those already handed over arrive
// and are finished as usual. Its deliveries reach the same DeliveryHandler, with `jobs` set.
//
// Lost session: the loop hears on_state(false, why); queued publishes are dropped (their requests
// are redelivered), and a new session starts (on_state(true)). Closes sent by the broker (channel
// or connection close with code and text) are reported in `why`; a 541 INTERNAL_ERROR is counted
// in stats().broker_internal_errors (a delivery RabbitMQ cannot encode, e.g. a routing key over
// 255 bytes from an MQTT topic, closes the consumer's connection: the queue's delivery limit
// drops it after delivery_limit tries).
//
// Failures: an attempt that does not reach a consuming session is classified (io/amqp_failure.hpp)
// and reported to the FailureHandler once per cause until a session is up again. `permanent` is
// set only when every URI in `uris` failed permanently in a row since the last session (one URI:
// at once): a node that refuses while another may accept is that node's problem, and is retried.
// Retrying goes on in any case; whether to give up is the caller's call (engine/daemon.cpp).
//
// Thread: construct, call and destroy on the loop thread; the handlers run there.
#pragma once

#include <uv.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "io/amqp_failure.hpp"

namespace chunkd::io {

struct AmqpClientOptions {
  std::vector<std::string> uris;  // amqp://[user@]host[:port][/vhost] or amqps://…, in order
  std::string password;           // "" : the URI's (guest by default)
  std::string ca_file;  // amqps://: the CAs the broker's certificate must chain to ("" : system's)
  std::string queue = "chunkd.requests";
  std::string exchange = "amq.topic";
  std::vector<std::string> binding_keys;       // routing keys `queue` is bound with on `exchange`
  std::string jobs_queue;                      // "" : none
  std::vector<std::string> jobs_binding_keys;  // bound on `exchange` to jobs_queue
  std::uint32_t prefetch = 256;
  std::uint32_t delivery_limit = 5;
  std::size_t max_queued_bytes = 16u << 20;  // publishes handed over, not yet written
  std::size_t max_unconfirmed = 4096;        // publishes written, not yet confirmed
  int heartbeat_s = 10;
  int connect_timeout_ms = 5000;  // TCP connect, and each RPC of the set-up
  int backoff_min_ms = 100;
  int backoff_max_ms = 5000;
};

// The most an AMQP short string (a routing key) holds.
inline constexpr std::size_t kAmqpMaxShortString = 255;

struct AmqpDelivery {
  std::uint64_t session = 0;  // for finish()
  std::uint64_t tag = 0;      // delivery tag within the session
  std::string routing_key;
  std::vector<std::byte> body;
  bool redelivered = false;
  bool jobs = false;  // from jobs_queue
};

// Counters, read on any thread (a snapshot of atomics).
struct AmqpStats {
  std::uint64_t sessions = 0;          // sessions set up (the first one included)
  std::uint64_t failovers = 0;         // sessions set up on another URI than the previous one
  std::uint64_t connect_failures = 0;  // attempts that did not reach a consuming session
  std::array<std::uint64_t, kAmqpFailureCount> failures_by_cause{};  // the same, by AmqpFailure
  std::uint64_t deliveries = 0;
  std::uint64_t publishes = 0;  // written to the socket
  std::uint64_t confirms = 0;   // publishes the broker acked (one ack may confirm several)
  std::uint64_t nacks = 0;      // publishes the broker nacked
  std::uint64_t acks = 0;       // deliveries acked
  std::uint64_t requeued = 0;   // deliveries rejected with requeue (a nacked reply, requeue())
  std::uint64_t broker_internal_errors = 0;  // closes with 541 (see above)
  std::uint64_t confirms_pending = 0;        // gauge: written, not yet confirmed
  std::uint64_t dropped_publishes = 0;       // queued when a session ended
  std::uint64_t spare_bytes = 0;  // gauge: written publishes' buffers kept for reuse (see publish)
  bool connected = false;
  bool jobs_consuming = false;  // the broker confirmed the jobs_queue consumer of this session
  std::string uri;              // the current (or last) session's URI
};

class AmqpClient {
 public:
  enum class PublishResult { Ok, Backpressure, NotConnected, Error };
  using DeliveryHandler = std::function<void(AmqpDelivery&& delivery)>;
  // up: a session consumes; !up: it ended (`why` says how) and another is being set up.
  using StateHandler = std::function<void(bool up, std::string_view why)>;
  // A connection attempt failed (see "Failures" above).
  using FailureHandler = std::function<void(const AmqpFailureReport& report)>;

  AmqpClient(uv_loop_t* loop, AmqpClientOptions options, DeliveryHandler on_delivery,
             StateHandler on_state);
  ~AmqpClient();  // stops the session thread (blocking, bounded) if stop() was not called
  AmqpClient(const AmqpClient&) = delete;
  AmqpClient& operator=(const AmqpClient&) = delete;

  // Checks the options (URIs parse, names fit, ca_file holds certificates when a URI is
  // amqps://) and starts the session thread.
  Expected<void> start();
  bool connected() const;
  // Hears failed attempts; without a handler they are logged (warnings, once per cause).
  void on_failure(FailureHandler handler);

  // Hands a publish of the concatenated `parts` with `routing_key` to the session (copied, into
  // the buffer of a publish the session already wrote when one is spare: fresh memory for every
  // 128 KiB reply cost page faults; spares total at most max_queued_bytes).
  // Error: the key is over kAmqpMaxShortString bytes. NotConnected: no session. Backpressure:
  // max_queued_bytes are queued; nothing was taken.
  PublishResult publish(std::string_view routing_key,
                        std::span<const std::span<const std::byte>> parts);
  // The loop is done with delivery (session, tag): ack it per the rule above.
  void finish(std::uint64_t session, std::uint64_t tag);
  // The loop hands delivery (session, tag) back unanswered: rejected with requeue, in order with
  // the finishes, so the broker gives it to another consumer (or this one again).
  void requeue(std::uint64_t session, std::uint64_t tag);
  // Starts (true) or cancels (false) the consumer of jobs_queue, in this session and every later
  // one. Deliveries already handed over still arrive and must be finish()ed as usual. Without a
  // jobs_queue: nothing.
  void consume_jobs(bool on);

  std::size_t queued_bytes() const;
  bool writable() const;  // queued_bytes below half of max_queued_bytes
  // Called (loop thread) when the queue drained below half after a Backpressure refusal.
  void on_writable(std::function<void()> callback);
  AmqpStats stats() const;

  // Writes what is queued and waits for its confirms and acks (bounded by flush_timeout_ms),
  // closes the connection, joins the thread, closes the uv handle, then calls `done`.
  void stop(int flush_timeout_ms, std::function<void()> done);

  struct Shared;  // io/amqp_internal.hpp

 private:
  void settle(std::uint64_t session, std::uint64_t tag, bool requeue);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkd::io

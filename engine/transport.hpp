// The message transport: the one seam between the engine and whatever carries device messages.
// Requests come in as (topic, payload); replies go out as (key, topic, parts, qos), where every
// reply with one key (a thing name) travels one ordered channel. A transport bounds the reply
// bytes it holds per channel and says so (SendResult::Backpressure, then on_writable once a
// channel that refused drained); a full channel holds back only the keys routed to it.
//
// Requests carry an opaque RequestTag. The engine calls finished(tag) once it is done with that
// request: its last reply was handed to send(), or it was refused, dropped as not ours, or
// answered with an error; a request merged into an identical queued one finishes with that one.
// A request dropped because the engine is stopping is NOT finished (a transport that
// acknowledges, AMQP, lets the broker hand it to another instance). A transport that acknowledges
// requests (AmqpTransport) acknowledges a request once everything sent before finished(tag) is
// safe with the broker; MQTT has nothing to acknowledge (kNoRequestTag, finished is a no-op).
//
// Implementations: MqttTransport (engine/mqtt_transport.hpp, over io::MqttPool) and AmqpTransport
// (engine/amqp_transport.hpp, over io::AmqpClient) in the daemon, testing::FakeTransport in the
// engine tests.
//
// Thread: the loop thread only; every handler is called on it. A handler that throws is a bug:
// the exception reaches a noexcept boundary and terminates the process (with its message).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "base/expected.hpp"

namespace chunkd::engine {

struct TransportStats {
  std::uint64_t messages_received = 0;
  std::uint64_t messages_sent = 0;  // replies handed to the connections
  std::uint64_t socket_writes = 0;  // write calls that carried them (batching = sent/writes)
  std::uint64_t reconnects = 0;     // connections re-established
  std::uint64_t refused_backpressure = 0;
  std::uint64_t refused_disconnected = 0;
};

class Transport {
 public:
  enum class SendResult { Ok, Backpressure, NotConnected, Error };
  using RequestTag = std::uint64_t;
  static constexpr RequestTag kNoRequestTag = 0;  // nothing to acknowledge
  using RequestHandler = std::function<void(std::string_view topic,
                                            std::span<const std::byte> payload, RequestTag tag)>;
  using ReadyHandler = std::function<void(bool ready)>;

  virtual ~Transport() = default;

  // Starts connecting. Requests arrive through `on_request`; `on_ready(true)` once requests can
  // arrive and replies leave, `on_ready(false)` when that stops (a lost connection).
  // An error names what is wrong with the transport's settings.
  virtual Expected<void> start(RequestHandler on_request, ReadyHandler on_ready) = 0;
  virtual bool ready() const = 0;

  // Sends the concatenation of `parts` (a reply header, slices of cache extents) to `topic` on
  // the channel of `key`. The transport writes or copies the parts before it returns and keeps no
  // reference. Backpressure: nothing was taken; try again after on_writable.
  virtual SendResult send(std::string_view key, std::string_view topic,
                          std::span<const std::span<const std::byte>> parts, int qos) = 0;
  SendResult send(std::string_view key, std::string_view topic, std::span<const std::byte> payload,
                  int qos) {
    const std::span<const std::byte> parts[] = {payload};
    return send(key, topic, parts, qos);
  }

  // The channel `key`'s replies travel: stable for a key, so its replies stay in order.
  virtual std::size_t channel_of(std::string_view key) const = 0;
  // Whether `channel` has room: false from a Backpressure refusal on it until it drained.
  virtual bool writable(std::size_t channel) const = 0;
  // Reply bytes taken and not yet written, over every channel.
  virtual std::size_t bytes_in_flight() const = 0;
  // Called when a channel that refused drained enough to send again (it may be any of them: ask
  // writable()). An empty function unregisters.
  virtual void on_writable(std::function<void()> callback) = 0;

  virtual TransportStats stats() const = 0;

  // The engine is done with the request `tag` (see above). Every tag a handler got is finished at
  // most once; kNoRequestTag never reaches here.
  virtual void finished(RequestTag tag) { (void)tag; }
  // The engine hands the request `tag` back unanswered, for another consumer to serve (a jobs
  // request reaching an instance that no longer serves jobs). Counts as its finish. Transports
  // without redelivery just finish it: the device asks again.
  virtual void requeue(RequestTag tag) { finished(tag); }

  // Writes what is queued (bounded by `flush_timeout_ms`), disconnects, closes every handle, then
  // calls `done` on the loop thread.
  virtual void stop(int flush_timeout_ms, std::function<void()> done) = 0;
};

}  // namespace chunkd::engine

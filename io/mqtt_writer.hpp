// MqttWriter: chunkd's own QoS 0 PUBLISH writer for one broker connection, beside libmosquitto.
//
// Why it exists: libmosquitto writes one packet per write(), mallocs and copies each one and
// pokes its internal socketpair per call; on loopback that was 60 % of chunkd's CPU per 4 KiB
// block (bench/README.md). This writer encodes the PUBLISH fixed header itself, gathers one loop
// turn's packets in a SendQueue and writes them with one sendmsg() when the pool flushes (just
// before the loop blocks), or at once from the caller's memory when kFlushBytes would wait,
// copying only what the socket did not take.
//
// Owns: the packets not yet written (a SendQueue) and whether the socket last took less than
// offered (blocked). Does not own the socket nor the libmosquitto client: its connection attaches
// them while the socket is open and detaches (dropping what waits) when it closes.
//
// The never-interleave rule. libmosquitto and this writer share one TCP stream, so no packet of
// one may land inside a packet of the other:
//   - the writer sends only while mosquitto_want_write() is false, i.e. libmosquitto holds no
//     packet partly written (asserted before every sendmsg);
//   - its connection lets libmosquitto write (loop_write, loop_misc, publish, subscribe,
//     disconnect) only once waiting() == 0;
//   - libmosquitto also writes from inside loop_read, but only to answer QoS 1/2 traffic, which
//     cannot arrive while the pool subscribes at QoS 0 and has never published at QoS 1/2: the
//     pool uses this writer only then.
//
// Cost: no allocation and no copy per message when the socket takes it; what waits is copied once
// into the queue's fixed chunks. The PUBLISH head (at most 7 bytes) lives on the caller's stack.
//
// Thread: loop thread only.
#pragma once

#include <mosquitto.h>
#include <sys/uio.h>
#include <uv.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "io/send_queue.hpp"

namespace chunkd::io {

// A QoS 0 PUBLISH's fixed header and topic length (MQTT 3.1.1 §3.3, MQTT 5 §3.3): type 3, no
// DUP, no RETAIN. MQTT 5 puts the properties between the topic and the payload: for chunkd none,
// so one property-length byte 0 (`properties` = 1), which the writer sends after the topic.
struct PublishHead {
  std::array<std::byte, 7> bytes{};
  std::size_t size = 0;        // 3..7 bytes of `bytes`
  std::size_t properties = 0;  // bytes of the (empty) property list: 0 (3.1.1) or 1 (MQTT 5)
  std::size_t wire_bytes = 0;  // the whole packet: head + topic + properties + payload
};
// nullopt when the packet exceeds MQTT's largest remaining length (268435455 bytes).
// REQUIRES: topic_bytes <= 65535.
std::optional<PublishHead> encode_publish_head(std::size_t topic_bytes, std::size_t payload_bytes,
                                               bool mqtt5);

class MqttWriter {
 public:
  // Packets wait until the pool flushes, or are written at once once this many bytes would wait.
  static constexpr std::size_t kFlushBytes = 64u << 10;
  // iovecs of one gathered write: the waiting bytes, the PUBLISH head, the topic, the MQTT 5
  // property length, payload parts.
  static constexpr std::size_t kMaxIovecs = 17;
  static constexpr std::size_t kMaxParts = kMaxIovecs - 4;
  // iovecs of one sendmsg of a flush: 4 MiB in 64 KiB chunks.
  static constexpr std::size_t kMaxFlushIovecs = 64;

  // Bytes the socket took now (of what waited and of the new packet), and the errno of a hard
  // socket error (0: none). After an error nothing more may be written: the caller drops the
  // connection (which detaches this writer).
  struct Written {
    std::size_t bytes = 0;
    int error = 0;
  };

  // `socket_writes` counts every sendmsg() call.
  MqttWriter(uv_loop_t* loop, std::uint64_t& socket_writes)
      : loop_(loop), socket_writes_(socket_writes) {}

  // REQUIRES: not attached.
  void attach(mosquitto* mosq, int fd);
  // Forgets the socket and drops what waits.
  void detach();
  bool attached() const { return fd_ >= 0; }

  std::size_t waiting() const { return out_.size(); }
  bool blocked() const { return blocked_; }
  // The socket must report writable before more can go out.
  bool wants_writable() const { return blocked_ && waiting() > 0; }
  void writable() { blocked_ = false; }
  // Loop time (ms) of the last byte written while bytes wait: a socket that takes nothing for
  // long is dead.
  std::uint64_t last_progress_ms() const { return progress_ms_; }

  // Queues `head`, the topic and the payload parts (concatenated), writing at once when
  // kFlushBytes would wait. None of the memory is referenced after the call.
  // REQUIRES: attached(); parts.size() <= kMaxParts; `head` encodes this topic and payload.
  Written publish(const PublishHead& head, std::string_view topic,
                  std::span<const std::span<const std::byte>> parts);
  // Writes what waits until the socket is full, unless it is blocked or libmosquitto holds a
  // packet partly written. REQUIRES: attached().
  Written flush();

 private:
  Written send_some(iovec* iov, std::size_t count, std::size_t offered);
  // Appends `bytes` less its first `skip` bytes (taken from `skip`).
  void append(std::span<const std::byte> bytes, std::size_t& skip);

  uv_loop_t* loop_;
  std::uint64_t& socket_writes_;
  mosquitto* mosq_ = nullptr;
  int fd_ = -1;
  SendQueue out_;
  bool blocked_ = false;
  std::uint64_t progress_ms_ = 0;
};

}  // namespace chunkd::io

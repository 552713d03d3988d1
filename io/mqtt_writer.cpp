#include "io/mqtt_writer.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "base/assert.hpp"

namespace chunkd::io {
namespace {

// MQTT's largest remaining length (four-byte variable integer).
constexpr std::size_t kMaxRemainingLength = 268435455;

// An MQTT 5 PUBLISH's property length when it has no properties.
constexpr std::array<std::byte, 1> kNoProperties{std::byte{0}};

iovec as_iovec(std::span<const std::byte> s) {
  return iovec{const_cast<std::byte*>(s.data()), s.size()};
}

}  // namespace

std::optional<PublishHead> encode_publish_head(std::size_t topic_bytes, std::size_t payload_bytes,
                                               bool mqtt5) {
  CHUNKD_ASSERT(topic_bytes <= 65535);
  const std::size_t properties = mqtt5 ? 1 : 0;
  std::size_t remaining = 2 + topic_bytes + properties + payload_bytes;
  if (remaining > kMaxRemainingLength) return std::nullopt;
  PublishHead h;
  std::size_t n = 0;
  h.bytes[n++] = std::byte{0x30};
  do {
    auto digit = static_cast<std::uint8_t>(remaining % 128);
    remaining /= 128;
    if (remaining > 0) digit |= 0x80;
    h.bytes[n++] = std::byte{digit};
  } while (remaining > 0);
  h.bytes[n++] = static_cast<std::byte>(topic_bytes >> 8);
  h.bytes[n++] = static_cast<std::byte>(topic_bytes & 0xff);
  h.size = n;
  h.properties = properties;
  h.wire_bytes = n + topic_bytes + properties + payload_bytes;
  return h;
}

void MqttWriter::attach(mosquitto* mosq, int fd) {
  CHUNKD_ASSERT(!attached() && mosq != nullptr && fd >= 0);
  CHUNKD_ASSERT(out_.empty());
  mosq_ = mosq;
  fd_ = fd;
  blocked_ = false;
}

void MqttWriter::detach() {
  mosq_ = nullptr;
  fd_ = -1;
  out_.clear();
  blocked_ = false;
}

MqttWriter::Written MqttWriter::publish(const PublishHead& head, std::string_view topic,
                                        std::span<const std::span<const std::byte>> parts) {
  CHUNKD_ASSERT(attached());
  CHUNKD_ASSERT(parts.size() <= kMaxParts);
  if (waiting() == 0) progress_ms_ = uv_now(loop_);
  const std::span<const std::byte> head_bytes(head.bytes.data(), head.size);
  const std::span<const std::byte> topic_bytes(reinterpret_cast<const std::byte*>(topic.data()),
                                               topic.size());
  const std::span<const std::byte> props(kNoProperties.data(), head.properties);
  Written w;
  std::size_t skip = 0;  // bytes of this packet the socket took
  if (waiting() + head.wire_bytes >= kFlushBytes && !blocked_ && !mosquitto_want_write(mosq_)) {
    // Enough to write now: what waits first, then this packet straight from the caller's memory,
    // in one gathered send. If what waits needs more iovecs than are left (it is scattered over
    // many chunks), the packet joins it and the next flush writes both.
    std::array<iovec, kMaxIovecs> iov{};
    std::size_t n = out_.gather(iov.data(), kMaxIovecs - 3 - parts.size());
    std::size_t before = 0;
    for (std::size_t i = 0; i < n; ++i) before += iov[i].iov_len;
    if (before == waiting()) {
      iov[n++] = as_iovec(head_bytes);
      iov[n++] = as_iovec(topic_bytes);
      if (!props.empty()) iov[n++] = as_iovec(props);
      for (auto p : parts) {
        if (!p.empty()) iov[n++] = as_iovec(p);
      }
      w = send_some(iov.data(), n, before + head.wire_bytes);
      if (w.error != 0) return w;
      const std::size_t from_queue = std::min(w.bytes, before);
      out_.consume(from_queue);
      skip = w.bytes - from_queue;
      if (skip == head.wire_bytes) return w;
    }
  }
  // Keep what is left of the packet (all of it unless a write just took some).
  append(head_bytes, skip);
  append(topic_bytes, skip);
  append(props, skip);
  for (auto p : parts) append(p, skip);
  return w;
}

MqttWriter::Written MqttWriter::flush() {
  CHUNKD_ASSERT(attached());
  Written total;
  if (waiting() == 0 || blocked_ || mosquitto_want_write(mosq_)) return total;
  // One sendmsg() carries up to kMaxFlushIovecs chunks; more go in further calls until the
  // socket is full.
  while (waiting() > 0 && !blocked_) {
    std::array<iovec, kMaxFlushIovecs> iov{};
    const std::size_t n = out_.gather(iov.data(), iov.size());
    std::size_t offered = 0;
    for (std::size_t i = 0; i < n; ++i) offered += iov[i].iov_len;
    const Written w = send_some(iov.data(), n, offered);
    if (w.error != 0) {
      total.error = w.error;
      return total;
    }
    out_.consume(w.bytes);
    total.bytes += w.bytes;
  }
  return total;
}

void MqttWriter::append(std::span<const std::byte> bytes, std::size_t& skip) {
  const std::size_t drop = std::min(skip, bytes.size());
  skip -= drop;
  out_.append(bytes.subspan(drop));
}

// One sendmsg of up to `offered` bytes; marks the writer blocked when the socket took fewer.
MqttWriter::Written MqttWriter::send_some(iovec* iov, std::size_t count, std::size_t offered) {
  // The never-interleave rule (mqtt_writer.hpp): libmosquitto has no packet partly written.
  CHUNKD_ASSERT(!mosquitto_want_write(mosq_));
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t n;
  do {
    n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  ++socket_writes_;
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      blocked_ = true;
      return {};
    }
    return {0, errno};
  }
  const auto written = static_cast<std::size_t>(n);
  CHUNKD_ASSERT(written <= offered);
  if (written < offered) blocked_ = true;
  if (written > 0) progress_ms_ = uv_now(loop_);
  return {written, 0};
}

}  // namespace chunkd::io

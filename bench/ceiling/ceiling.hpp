// fleet_ceiling internals: the options, MQTT 3.1.1 packets written by hand, blocking socket
// helpers, and the two modes (raw.cpp, respond.cpp). Not a library: one process, used by
// bench/fleet. See main.cpp for what the tool measures.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/topic.hpp"

namespace chunkd::ceiling {

using Clock = std::chrono::steady_clock;
using Bytes = std::vector<std::byte>;
using Error = std::optional<std::string>;  // nullopt: success

enum class Mode : std::uint8_t {
  Raw,          // own subscribers count what the publisher writes, paced by a per-device window
  Respond,      // answers chunkload's requests in chunkd's place with pre-encoded replies
  Devices,      // a device fleet of raw sockets downloading from chunkd (raw mode's receive cost)
  AmqpRespond,  // Respond's part behind RabbitMQ: requests from a queue, replies over AMQP
};

struct Options {
  Mode mode = Mode::Raw;
  std::string host = "127.0.0.1";
  std::uint16_t port = 1883;
  std::uint32_t publishers = 2;  // publisher connections (chunkd's default pool size)
  protocol::Format format = protocol::Format::Cbor;
  std::uint32_t block_size = 4096;
  std::string topic_prefix = "$aws/things";
  std::string stream = "fleet";
  std::string token = "0.1";  // carried in every data reply; chunkload's are "<slot>.<gen>"
  std::uint32_t timeout_s = 300;
  bool human = false;  // a one-line summary on stderr too
  // Raw mode.
  std::uint32_t devices = 1;
  std::uint32_t connections = 0;  // subscriber connections; 0: one per device
  std::uint64_t file_bytes = 1u << 20;
  std::uint32_t window = 32;  // messages published and not yet received, per device
  std::string thing_prefix;   // default "ceiling-<pid>-"
  // Devices mode (also devices, connections, file_bytes, thing_prefix, stream).
  std::uint32_t in_flight = 1;           // requests outstanding per device
  std::uint32_t blocks_per_request = 0;  // n; 0: 131072 / block size
  // Respond mode.
  std::string file_path;  // the stream's file 0, served byte for byte
  std::uint64_t version = 1;
  bool write_per_message = false;  // one write per PUBLISH instead of gathered writev batches
  // AMQP respond mode (also file_path, version, format, block_size, topic_prefix, token).
  std::string amqp_host;  // empty: --amqp-uri not given
  std::uint16_t amqp_port = 5672;
  std::string queue = "fleet.ceiling";
  std::uint32_t prefetch = 256;  // chunkd's [amqp] prefetch default
};

// Appends `"key":value` pairs to a one-line JSON object.
class JsonLine {
 public:
  void num(const char* key, std::uint64_t v);
  void real(const char* key, double v);
  void str(const char* key, std::string_view v);
  void boolean(const char* key, bool v);
  std::string finish() const { return text_ + "}\n"; }

 private:
  void key(const char* k);
  std::string text_ = "{";
};

// --- MQTT 3.1.1 packets ----------------------------------------------------------------------
inline constexpr std::size_t kMaxControlPacketBytes = 1u << 20;  // bodies we buffer whole

Bytes connect_packet(std::string_view client_id);  // clean session, keep-alive off
Bytes subscribe_packet(std::uint16_t packet_id, std::span<const std::string> filters);  // QoS 0
// Fixed header and topic of a QoS 0 PUBLISH whose payload (`payload_bytes`) follows.
Bytes publish_header(std::string_view topic, std::size_t payload_bytes);
inline constexpr std::byte kDisconnect[2] = {std::byte{0xe0}, std::byte{0x00}};

// Streaming reader of what a broker sends a subscriber: keeps each PUBLISH's topic, skips (never
// buffers) its payload, and calls on_message(topic) once the packet's last byte has been read.
// Other packets are read whole (bounded by kMaxControlPacketBytes) and ignored.
class PublishReader {
 public:
  template <class OnMessage>
  Error feed(std::span<const std::byte> in, OnMessage&& on_message) {
    while (!in.empty()) {
      switch (stage_) {
        case Stage::Type:
          type_ = std::to_integer<std::uint8_t>(in[0]);
          in = in.subspan(1);
          length_ = 0;
          shift_ = 0;
          stage_ = Stage::Length;
          break;
        case Stage::Length: {
          auto b = std::to_integer<std::uint8_t>(in[0]);
          in = in.subspan(1);
          length_ |= static_cast<std::size_t>(b & 0x7f) << shift_;
          shift_ += 7;
          if ((b & 0x80) != 0) {
            if (shift_ > 21) return std::string("bad remaining length from the broker");
            break;
          }
          if (!publish() && length_ > kMaxControlPacketBytes) {
            return std::string("packet too large");
          }
          head_.clear();
          head_need_ = publish() ? std::min<std::size_t>(2, length_) : length_;
          stage_ = Stage::Head;
          if (head_need_ == 0) end_head(on_message);
          break;
        }
        case Stage::Head: {
          std::size_t take = std::min(in.size(), head_need_ - head_.size());
          head_.append(reinterpret_cast<const char*>(in.data()), take);
          in = in.subspan(take);
          if (head_.size() < head_need_) break;
          if (publish() && head_need_ == 2 && length_ > 2) {
            // The topic length is known: keep the topic too (and a packet id for QoS > 0).
            std::size_t id_bytes = ((type_ >> 1) & 3) != 0 ? 2 : 0;
            head_need_ = std::min(length_, 2 + topic_length() + id_bytes);
            if (head_.size() < head_need_) break;
          }
          end_head(on_message);
          break;
        }
        case Stage::Skip: {
          std::size_t take = std::min(in.size(), skip_);
          in = in.subspan(take);
          skip_ -= take;
          if (skip_ == 0) end_packet(on_message);
          break;
        }
      }
    }
    return std::nullopt;
  }

 private:
  enum class Stage : std::uint8_t { Type, Length, Head, Skip };
  bool publish() const { return (type_ >> 4) == 3; }
  std::size_t topic_length() const {
    return static_cast<std::size_t>(static_cast<unsigned char>(head_[0])) << 8 |
           static_cast<unsigned char>(head_[1]);
  }
  template <class OnMessage>
  void end_head(OnMessage& on_message) {
    skip_ = length_ - head_.size();
    if (skip_ == 0) {
      end_packet(on_message);
    } else {
      stage_ = Stage::Skip;
    }
  }
  template <class OnMessage>
  void end_packet(OnMessage& on_message) {
    stage_ = Stage::Type;
    if (publish() && head_.size() >= 2 && 2 + topic_length() <= head_.size()) {
      on_message(std::string_view(head_).substr(2, topic_length()));
    }
  }

  Stage stage_ = Stage::Type;
  std::uint8_t type_ = 0;
  std::size_t length_ = 0;
  unsigned shift_ = 0;
  std::size_t head_need_ = 0;  // bytes of the body kept in head_
  std::string head_;           // PUBLISH: topic length + topic (+ id); other packets: the body
  std::size_t skip_ = 0;       // payload bytes still to skip
};

// --- sockets ---------------------------------------------------------------------------------
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset();
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

std::string errno_text(const char* what);
Error connect_tcp(const Options& o, Fd& out);  // TCP_NODELAY set
Error set_nonblocking(int fd);
// Writes every byte (blocking or not: waits for POLLOUT), until `deadline`.
Error write_all(int fd, std::span<const std::byte> data, Clock::time_point deadline);
// Reads one whole packet, blocking until `deadline`: for CONNACK and SUBACK.
Error read_packet(int fd, Clock::time_point deadline, std::uint8_t& type, Bytes& body);
Error read_connack(int fd, Clock::time_point deadline);
Error read_suback(int fd, Clock::time_point deadline);
// connect_tcp + CONNECT + CONNACK.
Error mqtt_connect(const Options& o, const std::string& client_id, Fd& fd,
                   Clock::time_point deadline);

double cpu_seconds();  // this process, user + system

// The modes: each prints its JSON report line on stdout and returns the exit status.
int run_raw(const Options& o);
int run_respond(const Options& o);
int run_devices(const Options& o);
int run_amqp_respond(const Options& o);

}  // namespace chunkd::ceiling

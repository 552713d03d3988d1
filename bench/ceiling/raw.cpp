// fleet_ceiling --mode raw: the broker's ceiling with receivers of our own.
//
// S subscriber connections (one per device, or --connections C shared by the devices, like
// chunkload's multiplex mode) subscribe at QoS 0 to the devices' data topics. One epoll thread
// reads them with a streaming MQTT parser that looks at each PUBLISH's topic only (to find the
// device) and counts a message once its last byte is read; the payload is neither decoded nor
// verified. One publisher thread writes pre-encoded PUBLISH packets (QoS 0) with writev to P
// publisher connections (device d on connection d % P), round-robin over the devices,
// ceil(file_bytes / block_size) per device, the last block short. The payload is the data reply
// chunkd would publish for that block (protocol::encode_data_reply: same format, block size and
// token length), so every packet has chunkd's size.
//
// Bytes in flight are bounded the way a device fleet bounds chunkd: each device has at most
// --window messages published and not yet received (chunkload: in-flight x blocks per request),
// and the publisher sockets are blocking, so TCP backpressure holds the publisher whenever the
// broker reads slower than it writes. The window also keeps each subscriber's queue in the broker
// under Mosquitto's max_queued_messages (1000), so no QoS 0 message is dropped; a drop would show
// as `missing` and a failed run.
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "bench/ceiling/ceiling.hpp"
#include "protocol/reply.hpp"

namespace chunkd::ceiling {
namespace {

using protocol::Format;

constexpr std::size_t kTopicsPerSubscribe = 256;
constexpr std::uint32_t kConnectGroup = 32;  // connections set up at once
constexpr std::size_t kIovPerWrite = 512;    // <= IOV_MAX (1024), two iovecs per message
constexpr std::size_t kBytesPerWrite = 1u << 20;

// ---------------------------------------------------------------------------------------------
// Shared state.

struct Shared {
  explicit Shared(std::uint32_t devices)
      : received(std::make_unique<std::atomic<std::uint64_t>[]>(devices)) {}
  std::unique_ptr<std::atomic<std::uint64_t>[]> received;  // data messages per device
  std::atomic<std::uint64_t> total_received{0};
  std::atomic<std::uint64_t> wire_bytes_received{0};
  std::atomic<std::uint64_t> unknown_topic{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable progress;  // receivers → publisher: a window opened
  std::optional<Clock::time_point> last_message;
  std::string receiver_error;
  std::string publisher_error;
};

// ---------------------------------------------------------------------------------------------
// Receivers: a streaming parser per connection; the payload is skipped, never buffered.

struct Subscriber {
  Fd fd;
  PublishReader reader;
};

class Receiver {
 public:
  Receiver(const Options& o, Shared& shared) : o_(o), shared_(shared) {
    // Topics all look like "<prefix>/<thing_prefix><i>/streams/...": the device index is the
    // decimal number at a fixed offset.
    device_offset_ = o.topic_prefix.size() + 1 + o.thing_prefix.size();
  }

  Error add(Fd fd) {
    if (auto e = set_nonblocking(fd.get())) return e;
    subs_.push_back(std::make_unique<Subscriber>());
    subs_.back()->fd = std::move(fd);
    return std::nullopt;
  }

  void run(std::uint64_t expected, Clock::time_point deadline) {
    Fd ep(::epoll_create1(EPOLL_CLOEXEC));
    if (ep.get() < 0) return fail(errno_text("epoll_create1"));
    for (auto& s : subs_) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = s.get();
      if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, s->fd.get(), &ev) != 0) {
        return fail(errno_text("epoll_ctl"));
      }
    }
    std::vector<epoll_event> events(256);
    auto buffer = std::make_unique<std::byte[]>(kReadBytes);
    while (!shared_.stop.load(std::memory_order_relaxed)) {
      if (shared_.total_received.load(std::memory_order_relaxed) >= expected) break;
      if (Clock::now() >= deadline) return fail("timed out");
      int n = ::epoll_wait(ep.get(), events.data(), static_cast<int>(events.size()), 100);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(errno_text("epoll_wait"));
      }
      std::uint64_t got = 0;
      for (int i = 0; i < n; ++i) {
        auto* s = static_cast<Subscriber*>(events[static_cast<std::size_t>(i)].data.ptr);
        for (;;) {
          ssize_t r = ::recv(s->fd.get(), buffer.get(), kReadBytes, 0);
          if (r > 0) {
            shared_.wire_bytes_received.fetch_add(static_cast<std::uint64_t>(r),
                                                  std::memory_order_relaxed);
            auto e = s->reader.feed(
                std::span<const std::byte>(buffer.get(), static_cast<std::size_t>(r)),
                [&](std::string_view topic) {
                  // A message counts once its last byte has been read.
                  if (auto d = device_of(topic)) {
                    shared_.received[*d].fetch_add(1, std::memory_order_release);
                    ++got;
                  }
                });
            if (e) return fail(*e);
            if (static_cast<std::size_t>(r) < kReadBytes) break;
            continue;
          }
          if (r == 0) return fail("the broker closed a subscriber connection");
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          return fail(errno_text("recv"));
        }
      }
      if (got > 0) {
        auto total = shared_.total_received.fetch_add(got, std::memory_order_release) + got;
        if (total >= expected) {
          std::lock_guard lock(shared_.mu);
          shared_.last_message = Clock::now();
        }
        shared_.progress.notify_one();
      }
    }
  }

 private:
  static constexpr std::size_t kReadBytes = 256 * 1024;

  void fail(std::string error) {
    {
      std::lock_guard lock(shared_.mu);
      if (shared_.receiver_error.empty()) shared_.receiver_error = std::move(error);
    }
    shared_.stop.store(true);
    shared_.progress.notify_all();
  }

  std::optional<std::uint32_t> device_of(std::string_view topic) {
    if (topic.size() > device_offset_) {
      std::uint32_t d = 0;
      const char* begin = topic.data() + device_offset_;
      auto [ptr, ec] = std::from_chars(begin, topic.data() + topic.size(), d);
      if (ec == std::errc() && ptr != begin && d < o_.devices) return d;
    }
    shared_.unknown_topic.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }

  const Options& o_;
  Shared& shared_;
  std::size_t device_offset_ = 0;
  std::vector<std::unique_ptr<Subscriber>> subs_;
};

// ---------------------------------------------------------------------------------------------
// Publisher.

struct Packets {
  Bytes full_payload;               // the data reply of a whole block
  Bytes last_payload;               // the data reply of the (short) last block
  std::vector<Bytes> full_headers;  // per device: fixed header + topic
  std::vector<Bytes> last_headers;
};

Packets build_packets(const Options& o, std::uint64_t messages) {
  using protocol::encode_data_reply;
  std::mt19937_64 rng(42);
  Bytes block(o.block_size);
  for (auto& b : block) b = static_cast<std::byte>(rng() & 0xff);
  std::uint64_t last_len = o.file_bytes - (messages - 1) * o.block_size;
  std::optional<std::string_view> token;
  if (!o.token.empty()) token = o.token;
  auto encode = [&](std::span<const std::byte> payload, std::uint64_t index) {
    Bytes out(protocol::data_reply_max_bytes(o.format, payload.size(), o.token.size()));
    std::size_t n =
        encode_data_reply(o.format, out, token, 0, static_cast<std::uint32_t>(index), payload);
    out.resize(n);
    return out;
  };
  Packets p;
  // A representative index for the whole blocks (its encoded width varies with the index).
  p.full_payload = encode(block, messages / 2);
  p.last_payload = encode(std::span<const std::byte>(block).first(last_len), messages - 1);
  protocol::TopicCodec codec(o.topic_prefix);
  std::string topic;
  p.full_headers.reserve(o.devices);
  p.last_headers.reserve(o.devices);
  for (std::uint32_t d = 0; d < o.devices; ++d) {
    codec.reply_topic(topic, o.thing_prefix + std::to_string(d), o.stream,
                      protocol::ReplyKind::Data, o.format);
    p.full_headers.push_back(publish_header(topic, p.full_payload.size()));
    p.last_headers.push_back(publish_header(topic, p.last_payload.size()));
  }
  return p;
}

// Gathers iovecs per connection and writes them with writev (blocking).
class Batch {
 public:
  void add(std::span<const std::byte> a, std::span<const std::byte> b) {
    iov_.push_back(iovec{const_cast<std::byte*>(a.data()), a.size()});
    iov_.push_back(iovec{const_cast<std::byte*>(b.data()), b.size()});
    bytes_ += a.size() + b.size();
  }
  bool full() const { return iov_.size() + 2 > kIovPerWrite * 2 || bytes_ >= kBytesPerWrite; }
  Error flush(int fd) {
    std::size_t at = 0;
    while (at < iov_.size()) {
      int count = static_cast<int>(std::min<std::size_t>(iov_.size() - at, 1024));
      ssize_t n = ::writev(fd, iov_.data() + at, count);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return std::string("write: timed out");
        return errno_text("writev");
      }
      auto left = static_cast<std::size_t>(n);
      while (left > 0 && at < iov_.size()) {
        if (left >= iov_[at].iov_len) {
          left -= iov_[at].iov_len;
          ++at;
        } else {
          iov_[at].iov_base = static_cast<std::byte*>(iov_[at].iov_base) + left;
          iov_[at].iov_len -= left;
          left = 0;
        }
      }
      while (at < iov_.size() && iov_[at].iov_len == 0) ++at;
    }
    iov_.clear();
    bytes_ = 0;
    return std::nullopt;
  }
  std::uint64_t bytes() const { return bytes_; }

 private:
  std::vector<iovec> iov_;
  std::uint64_t bytes_ = 0;
};

struct PublishResult {
  std::uint64_t sent = 0;
  std::uint64_t wire_bytes = 0;
  std::uint64_t waits = 0;  // times every device's window was full
};

PublishResult publish(const Options& o, const Packets& p, std::vector<Fd>& conns,
                      std::uint64_t messages, Shared& shared, Clock::time_point deadline) {
  PublishResult r;
  std::vector<std::uint64_t> sent(o.devices, 0);
  std::vector<Batch> batches(conns.size());
  std::uint64_t expected = messages * o.devices;
  auto fail = [&](std::string e) {
    std::lock_guard lock(shared.mu);
    if (shared.publisher_error.empty()) shared.publisher_error = std::move(e);
    shared.stop.store(true);
  };
  auto flush = [&](std::size_t c) -> bool {
    r.wire_bytes += batches[c].bytes();
    if (auto e = batches[c].flush(conns[c].get())) {
      fail(*e);
      return false;
    }
    return true;
  };
  while (r.sent < expected && !shared.stop.load(std::memory_order_relaxed)) {
    bool progress = false;
    for (std::uint32_t d = 0; d < o.devices; ++d) {
      std::uint64_t s = sent[d];
      if (s >= messages) continue;
      std::uint64_t got = shared.received[d].load(std::memory_order_acquire);
      if (s - got >= o.window) continue;
      // Send this device's open window in one go (chunkd's replies to one request also go out
      // back to back), then move on to the next device.
      std::uint64_t n = std::min<std::uint64_t>(messages - s, o.window - (s - got));
      std::size_t c = d % conns.size();
      for (std::uint64_t k = 0; k < n; ++k) {
        bool last = s + k == messages - 1;
        if (last) {
          batches[c].add(p.last_headers[d], p.last_payload);
        } else {
          batches[c].add(p.full_headers[d], p.full_payload);
        }
        if (batches[c].full() && !flush(c)) return r;
      }
      sent[d] = s + n;
      r.sent += n;
      progress = true;
    }
    for (std::size_t c = 0; c < conns.size(); ++c) {
      if (batches[c].bytes() > 0 && !flush(c)) return r;
    }
    if (!progress) {
      if (Clock::now() >= deadline) {
        fail("timed out");
        return r;
      }
      ++r.waits;
      std::unique_lock lock(shared.mu);
      shared.progress.wait_for(lock, std::chrono::milliseconds(5));
    }
  }
  return r;
}

}  // namespace

int run_raw(const Options& o) {
  const std::uint64_t messages = (o.file_bytes + o.block_size - 1) / o.block_size;
  const std::uint64_t expected = messages * o.devices;
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  const std::uint32_t sub_conns = o.connections == 0 ? o.devices : o.connections;
  const std::uint32_t pub_conns = std::min(o.publishers, o.devices);

  Packets packets = build_packets(o, messages);
  Shared shared(o.devices);
  Receiver receiver(o, shared);
  std::string error;
  std::vector<Fd> publishers;
  const std::string id_base = "fleet-ceiling-" + std::to_string(getpid());

  // Set-up, pipelined (MQTT lets a client send SUBSCRIBE right after CONNECT) in groups of
  // kConnectGroup connections: each connection of a group is opened and sent its CONNECT and
  // SUBSCRIBEs, then the group's CONNACKs and SUBACKs are read. (Opening hundreds at once
  // overflows the broker's listen backlog, and the kernel retries the dropped SYNs a second
  // later.) Devices are dealt round-robin to the subscriber connections (device d on d % S).
  const auto t_setup = Clock::now();
  protocol::TopicCodec codec(o.topic_prefix);
  std::vector<Fd> subscribers(sub_conns);
  std::vector<std::size_t> subscribe_packets(sub_conns, 0);
  for (std::uint32_t group = 0; group < sub_conns && error.empty(); group += kConnectGroup) {
    const std::uint32_t group_end = std::min(sub_conns, group + kConnectGroup);
    for (std::uint32_t c = group; c < group_end && error.empty(); ++c) {
      std::string prefix = "subscriber " + std::to_string(c) + ": ";
      if (auto e = connect_tcp(o, subscribers[c])) {
        error = prefix + *e;
        break;
      }
      Bytes out = connect_packet(id_base + "-s" + std::to_string(c));
      std::vector<std::string> topics;
      for (std::uint32_t d = c; d < o.devices; d += sub_conns) {
        std::string t;
        codec.reply_topic(t, o.thing_prefix + std::to_string(d), o.stream,
                          protocol::ReplyKind::Data, o.format);
        topics.push_back(std::move(t));
      }
      std::uint16_t packet_id = 1;
      for (std::size_t at = 0; at < topics.size(); at += kTopicsPerSubscribe, ++packet_id) {
        auto part = std::span<const std::string>(topics).subspan(
            at, std::min(kTopicsPerSubscribe, topics.size() - at));
        Bytes sub = subscribe_packet(packet_id, part);
        out.insert(out.end(), sub.begin(), sub.end());
        ++subscribe_packets[c];
      }
      if (auto e = write_all(subscribers[c].get(), out, deadline)) error = prefix + *e;
    }
    for (std::uint32_t c = group; c < group_end && error.empty(); ++c) {
      std::string prefix = "subscriber " + std::to_string(c) + ": ";
      if (auto e = read_connack(subscribers[c].get(), deadline)) {
        error = prefix + *e;
        break;
      }
      for (std::size_t k = 0; k < subscribe_packets[c] && error.empty(); ++k) {
        if (auto e = read_suback(subscribers[c].get(), deadline)) error = prefix + *e;
      }
      if (error.empty()) {
        if (auto e = receiver.add(std::move(subscribers[c]))) error = *e;
      }
    }
  }
  for (std::uint32_t c = 0; c < pub_conns && error.empty(); ++c) {
    Fd fd;
    if (auto e = mqtt_connect(o, id_base + "-p" + std::to_string(c), fd, deadline)) {
      error = "publisher " + std::to_string(c) + ": " + *e;
      break;
    }
    // Blocking writes; a broker that stops reading for 10 s fails the run instead of hanging it.
    timeval tv{10, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    publishers.push_back(std::move(fd));
  }
  const double setup_seconds = std::chrono::duration<double>(Clock::now() - t_setup).count();

  PublishResult pub;
  double seconds = 0;       // first connect → last message (chunkload's wall_seconds span)
  double data_seconds = 0;  // first publish → last message
  double cpu = 0;
  if (error.empty()) {
    double cpu0 = cpu_seconds();
    auto t0 = Clock::now();
    std::thread rx([&] { receiver.run(expected, deadline); });
    pub = publish(o, packets, publishers, messages, shared, deadline);
    rx.join();
    auto t1 = Clock::now();
    cpu = cpu_seconds() - cpu0;
    std::lock_guard lock(shared.mu);
    const auto end = shared.last_message.value_or(t1);
    data_seconds = std::chrono::duration<double>(end - t0).count();
    seconds = std::chrono::duration<double>(end - t_setup).count();
    if (!shared.publisher_error.empty()) {
      error = "publisher: " + shared.publisher_error;
    } else if (!shared.receiver_error.empty()) {
      error = "receiver: " + shared.receiver_error;
    }
  }
  for (auto& fd : publishers) ::send(fd.get(), kDisconnect, sizeof kDisconnect, MSG_NOSIGNAL);

  const std::uint64_t received = shared.total_received.load();
  // Block payload delivered (exact when complete; a partial run counts whole blocks).
  const std::uint64_t payload_bytes =
      received == expected ? std::uint64_t{o.devices} * o.file_bytes : received * o.block_size;
  const bool complete = error.empty() && received == expected;
  auto per_s = [](double amount, double secs) { return secs > 0 ? amount / secs : 0.0; };
  const double mib = static_cast<double>(payload_bytes) / (1024.0 * 1024.0);
  const double wire_mib =
      static_cast<double>(shared.wire_bytes_received.load()) / (1024.0 * 1024.0);
  const double msgs_per_s = per_s(static_cast<double>(received), seconds);

  JsonLine json;
  json.str("tool", "fleet_ceiling");
  json.str("mode", "raw");
  json.boolean("complete", complete);
  json.str("format", protocol::to_string(o.format));
  json.num("devices", o.devices);
  json.num("subscriber_connections", sub_conns);
  json.num("publisher_connections", pub_conns);
  json.num("block_size_bytes", o.block_size);
  json.num("file_bytes", o.file_bytes);
  json.num("window", o.window);
  json.num("message_bytes", packets.full_headers.empty()
                                ? 0
                                : packets.full_headers[0].size() + packets.full_payload.size());
  json.num("messages", expected);
  json.num("sent", pub.sent);
  json.num("received", received);
  json.num("missing", expected - std::min(expected, received));
  json.num("unknown_topic", shared.unknown_topic.load());
  json.num("payload_bytes", payload_bytes);
  json.num("wire_bytes_sent", pub.wire_bytes);
  json.num("wire_bytes_received", shared.wire_bytes_received.load());
  json.real("setup_seconds", setup_seconds);
  json.real("data_seconds", data_seconds);
  json.real("seconds", seconds);
  json.real("msgs_per_s", msgs_per_s);
  json.real("data_msgs_per_s", per_s(static_cast<double>(received), data_seconds));
  json.real("mib_per_s", per_s(mib, seconds));
  json.real("wire_mib_per_s", per_s(wire_mib, seconds));
  json.num("publisher_waits", pub.waits);
  json.real("cpu_seconds", cpu);
  json.str("error", error);
  std::fputs(json.finish().c_str(), stdout);
  std::fflush(stdout);
  if (o.human) {
    std::fprintf(stderr,
                 "fleet_ceiling: %llu/%llu messages in %.3f s (set-up %.3f s): %.0f msgs/s, "
                 "%.1f MiB/s%s%s\n",
                 static_cast<unsigned long long>(received),
                 static_cast<unsigned long long>(expected), seconds, setup_seconds, msgs_per_s,
                 per_s(mib, seconds), error.empty() ? "" : "; error: ", error.c_str());
  }
  return complete ? 0 : 1;
}

}  // namespace chunkd::ceiling

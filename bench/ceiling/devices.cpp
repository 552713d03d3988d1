// fleet_ceiling --mode devices: a fleet of raw-socket devices downloading from chunkd, with the
// receive cost of --mode raw's subscribers, so that chunkd can be compared with the raw ceiling
// with nothing else changed.
//
// Device i (thing <thing_prefix><i>) is on connection i % S (one per device, or --connections C),
// subscribed at QoS 0 to its data and rejected topics. It walks file 0 of --stream in window
// requests: GetStream {c, f: 0, l, o, n} (chunkload's window mode, tokens "<slot>.<generation>"
// like chunkload's), --in-flight of them outstanding; a request is complete when as many data
// replies as it asked for have arrived for the device (the device counts replies, it does not
// decode or verify them: chunkload does that), and then the next one goes out. Requests are
// batched per connection and written after each round of reads. Any rejection, or a run longer
// than --timeout-s, fails the run.
//
// One thread: one epoll loop for every connection. Prints one JSON line on stdout.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <deque>
#include <memory>

#include "bench/ceiling/ceiling.hpp"
#include "protocol/device.hpp"
#include "protocol/request.hpp"

namespace chunkd::ceiling {
namespace {

constexpr std::uint32_t kConnectGroup = 32;
constexpr std::size_t kTopicsPerSubscribe = 256;
constexpr std::size_t kReadBytes = 256 * 1024;

struct Device {
  std::uint32_t conn = 0;
  std::string get_topic;
  std::uint32_t next_block = 0;  // first block of the next request
  std::uint32_t received = 0;    // data replies so far
  std::uint64_t requests = 0;
  std::deque<std::uint32_t> outstanding;  // replies each open request still waits for, oldest first
};

struct Conn {
  Fd fd;
  PublishReader reader;
  Bytes out;  // requests to write after this round of reads
};

class Fleet {
 public:
  explicit Fleet(const Options& o)
      : o_(o),
        codec_(o.topic_prefix),
        blocks_(static_cast<std::uint32_t>(protocol::block_count(o.file_bytes, o.block_size))),
        per_request_(
            o.blocks_per_request != 0
                ? o.blocks_per_request
                : std::max<std::uint32_t>(1, protocol::kMaxRequestPayloadBytes / o.block_size)),
        in_flight_(std::max<std::uint32_t>(1, o.in_flight)) {
    device_offset_ = o.topic_prefix.size() + 1 + o.thing_prefix.size();
    kind_skip_ = std::string_view("/streams/").size() + o.stream.size() + 1;
  }

  Error setup(Clock::time_point deadline) {
    const std::uint32_t n = o_.connections == 0 ? o_.devices : o_.connections;
    const std::string id_base = "fleet-devices-" + std::to_string(getpid());
    devices_.resize(o_.devices);
    for (std::uint32_t c = 0; c < n; ++c) conns_.push_back(std::make_unique<Conn>());
    std::vector<std::size_t> subscribes(n, 0);
    // Pipelined in groups, as in raw mode (a listen backlog overflow costs a 1 s SYN retry).
    for (std::uint32_t group = 0; group < n; group += kConnectGroup) {
      const std::uint32_t end = std::min(n, group + kConnectGroup);
      for (std::uint32_t c = group; c < end; ++c) {
        if (auto e = connect_tcp(o_, conns_[c]->fd))
          return "connection " + std::to_string(c) + ": " + *e;
        Bytes out = connect_packet(id_base + "-" + std::to_string(c));
        std::vector<std::string> filters;
        for (std::uint32_t d = c; d < o_.devices; d += n) {
          const std::string thing = o_.thing_prefix + std::to_string(d);
          std::string t;
          codec_.reply_topic(t, thing, o_.stream, protocol::ReplyKind::Data, o_.format);
          filters.push_back(t);
          codec_.reply_topic(t, thing, o_.stream, protocol::ReplyKind::Rejected, o_.format);
          filters.push_back(t);
          devices_[d].conn = c;
          codec_.request_topic(devices_[d].get_topic, thing, o_.stream, protocol::Verb::Get,
                               o_.format);
        }
        std::uint16_t id = 1;
        for (std::size_t at = 0; at < filters.size(); at += kTopicsPerSubscribe, ++id) {
          auto part = std::span<const std::string>(filters).subspan(
              at, std::min(kTopicsPerSubscribe, filters.size() - at));
          Bytes sub = subscribe_packet(id, part);
          out.insert(out.end(), sub.begin(), sub.end());
          ++subscribes[c];
        }
        if (auto e = write_all(conns_[c]->fd.get(), out, deadline)) return e;
      }
      for (std::uint32_t c = group; c < end; ++c) {
        if (auto e = read_connack(conns_[c]->fd.get(), deadline)) return e;
        for (std::size_t k = 0; k < subscribes[c]; ++k) {
          if (auto e = read_suback(conns_[c]->fd.get(), deadline)) return e;
        }
        if (auto e = set_nonblocking(conns_[c]->fd.get())) return e;
      }
    }
    return std::nullopt;
  }

  Error run(Clock::time_point deadline) {
    Fd ep(::epoll_create1(EPOLL_CLOEXEC));
    if (ep.get() < 0) return errno_text("epoll_create1");
    for (std::size_t c = 0; c < conns_.size(); ++c) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = c;
      if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, conns_[c]->fd.get(), &ev) != 0) {
        return errno_text("epoll_ctl");
      }
    }
    first_request_ = Clock::now();
    for (std::uint32_t d = 0; d < o_.devices; ++d) {
      for (std::uint32_t k = 0; k < in_flight_; ++k) request(d);
    }
    if (auto e = flush_all(deadline)) return e;
    std::vector<epoll_event> events(256);
    auto buffer = std::make_unique<std::byte[]>(kReadBytes);
    while (done_ < o_.devices) {
      if (Clock::now() >= deadline) return std::string("timed out (--timeout-s)");
      int n = ::epoll_wait(ep.get(), events.data(), static_cast<int>(events.size()), 200);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_text("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        Conn& c = *conns_[events[static_cast<std::size_t>(i)].data.u64];
        for (;;) {
          ssize_t r = ::recv(c.fd.get(), buffer.get(), kReadBytes, 0);
          if (r > 0) {
            wire_bytes_ += static_cast<std::uint64_t>(r);
            auto e =
                c.reader.feed(std::span<const std::byte>(buffer.get(), static_cast<std::size_t>(r)),
                              [this](std::string_view topic) { on_message(topic); });
            if (e) return e;
            if (error_) return error_;
            if (static_cast<std::size_t>(r) < kReadBytes) break;
            continue;
          }
          if (r == 0) return std::string("the broker closed a device connection");
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          return errno_text("recv");
        }
      }
      if (auto e = flush_all(deadline)) return e;
    }
    return std::nullopt;
  }

  void disconnect() {
    for (auto& c : conns_) ::send(c->fd.get(), kDisconnect, sizeof kDisconnect, MSG_NOSIGNAL);
  }

  void report(const Error& error, double setup_seconds, Clock::time_point t_setup,
              double cpu) const {
    auto per_s = [](double amount, double secs) { return secs > 0 ? amount / secs : 0.0; };
    const auto end = last_message_.value_or(Clock::now());
    const double seconds = std::chrono::duration<double>(end - t_setup).count();
    const double data_seconds =
        first_request_ ? std::chrono::duration<double>(end - *first_request_).count() : 0.0;
    const std::uint64_t expected = std::uint64_t{blocks_} * o_.devices;
    const std::uint64_t payload_bytes = received_ == expected
                                            ? std::uint64_t{o_.devices} * o_.file_bytes
                                            : received_ * o_.block_size;
    const double mib = static_cast<double>(payload_bytes) / (1024.0 * 1024.0);
    JsonLine json;
    json.str("tool", "fleet_ceiling");
    json.str("mode", "devices");
    json.boolean("complete", !error && received_ == expected);
    json.str("format", protocol::to_string(o_.format));
    json.num("devices", o_.devices);
    json.num("devices_done", done_);
    json.num("connections", conns_.size());
    json.num("block_size_bytes", o_.block_size);
    json.num("file_bytes", o_.file_bytes);
    json.num("in_flight", in_flight_);
    json.num("blocks_per_request", per_request_);
    json.num("messages", expected);
    json.num("received", received_);
    json.num("requests", requests_);
    json.num("rejections", rejections_);
    json.num("unknown_topic", unknown_topic_);
    json.num("payload_bytes", payload_bytes);
    json.num("wire_bytes_received", wire_bytes_);
    json.real("setup_seconds", setup_seconds);
    json.real("data_seconds", data_seconds);
    json.real("seconds", seconds);  // first connect → last message, like chunkload's wall
    json.real("msgs_per_s", per_s(static_cast<double>(received_), seconds));
    json.real("data_msgs_per_s", per_s(static_cast<double>(received_), data_seconds));
    json.real("mib_per_s", per_s(mib, seconds));
    json.real("data_mib_per_s", per_s(mib, data_seconds));
    json.real("cpu_seconds", cpu);
    json.str("error", error.value_or(""));
    std::fputs(json.finish().c_str(), stdout);
    std::fflush(stdout);
    if (o_.human) {
      std::fprintf(stderr, "fleet_ceiling devices: %llu/%llu messages in %.3f s: %.0f msgs/s%s%s\n",
                   static_cast<unsigned long long>(received_),
                   static_cast<unsigned long long>(expected), seconds,
                   per_s(static_cast<double>(received_), seconds), error ? "; error: " : "",
                   error.value_or("").c_str());
    }
  }

 private:
  void request(std::uint32_t d) {
    Device& dev = devices_[d];
    if (dev.next_block >= blocks_) return;
    const std::uint32_t n = std::min(per_request_, blocks_ - dev.next_block);
    protocol::GetStreamArgs args;
    args.client_token =
        std::to_string(dev.requests % in_flight_) + "." + std::to_string(dev.requests / in_flight_);
    args.file_id = 0;
    args.block_size = o_.block_size;
    args.offset = dev.next_block;
    args.count = n;
    Bytes payload = protocol::encode_get_request(o_.format, args);
    Bytes& out = conns_[dev.conn]->out;
    Bytes header = publish_header(dev.get_topic, payload.size());
    out.insert(out.end(), header.begin(), header.end());
    out.insert(out.end(), payload.begin(), payload.end());
    dev.outstanding.push_back(n);
    dev.next_block += n;
    ++dev.requests;
    ++requests_;
  }

  void on_message(std::string_view topic) {
    std::uint32_t d = 0;
    const char* begin = topic.data() + std::min(device_offset_, topic.size());
    const char* end = topic.data() + topic.size();
    auto [ptr, ec] = std::from_chars(begin, end, d);
    const auto kind_at = static_cast<std::size_t>(ptr - topic.data()) + kind_skip_;
    if (ec != std::errc() || ptr == begin || d >= o_.devices || kind_at >= topic.size()) {
      ++unknown_topic_;
      return;
    }
    if (topic[kind_at] == 'r') {
      ++rejections_;
      if (!error_)
        error_ = "rejected: thing " + std::to_string(d) + " (" + std::string(topic) + ")";
      return;
    }
    Device& dev = devices_[d];
    ++received_;
    last_message_ = Clock::now();
    if (++dev.received == blocks_) ++done_;
    if (!dev.outstanding.empty() && --dev.outstanding.front() == 0) {
      dev.outstanding.pop_front();
      request(d);
    }
  }

  Error flush_all(Clock::time_point deadline) {
    for (auto& c : conns_) {
      if (c->out.empty()) continue;
      if (auto e = write_all(c->fd.get(), c->out, deadline)) return e;
      c->out.clear();
    }
    return std::nullopt;
  }

  const Options& o_;
  protocol::TopicCodec codec_;
  const std::uint32_t blocks_;
  const std::uint32_t per_request_;
  const std::uint32_t in_flight_;
  std::size_t device_offset_ = 0;
  std::size_t kind_skip_ = 0;
  std::vector<Device> devices_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::uint32_t done_ = 0;
  std::uint64_t received_ = 0;
  std::uint64_t requests_ = 0;
  std::uint64_t rejections_ = 0;
  std::uint64_t unknown_topic_ = 0;
  std::uint64_t wire_bytes_ = 0;
  Error error_;
  std::optional<Clock::time_point> first_request_;
  std::optional<Clock::time_point> last_message_;
};

}  // namespace

int run_devices(const Options& o) {
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  const auto t_setup = Clock::now();
  Fleet fleet(o);
  Error error = fleet.setup(deadline);
  const double setup_seconds = std::chrono::duration<double>(Clock::now() - t_setup).count();
  const double cpu0 = cpu_seconds();
  if (!error) error = fleet.run(deadline);
  fleet.disconnect();
  fleet.report(error, setup_seconds, t_setup, cpu_seconds() - cpu0);
  return error ? 1 : 0;
}

}  // namespace chunkd::ceiling

// RawFleet's devices, routing and run loop; the sockets are in raw_conn.cpp.
#include "tools/chunkload/raw_fleet.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace chunkd::chunkload {
namespace {

constexpr std::uint32_t kDevicesPerSubscribe = 32;  // 96 topic filters per SUBSCRIBE
constexpr auto kProgressInterval = std::chrono::milliseconds(250);
constexpr int kMaxEvents = 256;
// Requests waiting for a broker that does not read; past this a device's publish is refused.
constexpr std::size_t kMaxUnwrittenBytes = 64u << 20;

}  // namespace

Expected<BrokerAddress, std::string> parse_tcp_uri(std::string_view uri) {
  std::string_view rest = uri;
  for (std::string_view scheme : {"tcp://", "mqtt://"}) {
    if (rest.substr(0, scheme.size()) == scheme) rest.remove_prefix(scheme.size());
  }
  if (rest.size() == uri.size()) {
    return chunkd::unexpected<std::string>("the raw engine speaks tcp:// and mqtt:// only (got '" +
                                           std::string(uri) + "')");
  }
  BrokerAddress a;
  std::string_view port;
  if (!rest.empty() && rest[0] == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) {
      return chunkd::unexpected<std::string>("--uri: unclosed '[' in '" + std::string(uri) + "'");
    }
    a.host = rest.substr(1, close - 1);
    rest.remove_prefix(close + 1);
    if (!rest.empty() && rest[0] != ':') {
      return chunkd::unexpected<std::string>("--uri: expected ':port' after ']'");
    }
    if (!rest.empty()) port = rest.substr(1);
  } else {
    const auto colon = rest.rfind(':');
    a.host = rest.substr(0, colon);
    if (colon != std::string_view::npos) port = rest.substr(colon + 1);
  }
  if (!port.empty() && port.back() == '/') port.remove_suffix(1);
  std::uint32_t p = 1883;
  if (!port.empty()) {
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535) {
      return chunkd::unexpected<std::string>("--uri: bad port '" + std::string(port) + "'");
    }
  }
  if (a.host.empty()) return chunkd::unexpected<std::string>("--uri: no host");
  a.port = std::to_string(p);
  return a;
}

RawFleet::RawFleet(const Options& options, const DeviceConfig& config)
    : options_(options), config_(config), topics_(options.topic_prefix) {
  const protocol::Format fmt = options.format;
  route_head_ = options.topic_prefix + "/" + options.thing_prefix;
  route_mid_ = "/streams/" + options.stream_id + "/";
  const std::string f(protocol::to_string(fmt));
  route_tails_ = {"data/" + f, "description/" + f, "rejected/" + f};

  devs_.reserve(options.devices);
  for (std::uint32_t i = 0; i < options.devices; ++i) {
    auto d = std::make_unique<Dev>(config, i);
    d->thing = options.thing_prefix + std::to_string(i);
    topics_.request_topic(d->get_topic, d->thing, options.stream_id, protocol::Verb::Get, fmt);
    topics_.request_topic(d->describe_topic, d->thing, options.stream_id, protocol::Verb::Describe,
                          fmt);
    devs_.push_back(std::move(d));
  }
  const std::uint32_t nconn = options.connections == 0 ? options.devices : options.connections;
  conns_.resize(nconn);
  for (std::uint32_t c = 0; c < nconn; ++c) {
    Conn& conn = conns_[c];
    conn.index = c;
    conn.first = static_cast<std::uint32_t>(std::uint64_t{c} * options.devices / nconn);
    const auto end = static_cast<std::uint32_t>(std::uint64_t{c + 1} * options.devices / nconn);
    conn.count = end - conn.first;
    conn.client_id = options.connections == 0 ? devs_[conn.first]->thing
                                              : options.thing_prefix + "conn" + std::to_string(c);
    for (std::uint32_t b = conn.first; b < end; b += kDevicesPerSubscribe) {
      conn.batches.push_back(Batch{b, std::min(kDevicesPerSubscribe, end - b)});
    }
    for (std::uint32_t i = conn.first; i < end; ++i) devs_[i]->conn = c;
  }
}

RawFleet::~RawFleet() {
  close_all();
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (addrs_ != nullptr) ::freeaddrinfo(addrs_);
}

void RawFleet::route(Conn& conn, const mqtt::Publish& msg) {
  // <topic_prefix>/<thing_prefix><index>/streams/<stream>/<kind>/<fmt>
  std::string_view topic = msg.topic;
  if (topic.substr(0, route_head_.size()) != route_head_) {
    ++unroutable_;
    return;
  }
  topic.remove_prefix(route_head_.size());
  std::uint32_t index = 0;
  auto [p, ec] = std::from_chars(topic.data(), topic.data() + topic.size(), index);
  const auto digits = static_cast<std::size_t>(p - topic.data());
  if (ec != std::errc() || digits == 0 || (digits > 1 && topic[0] == '0') || index < conn.first ||
      index - conn.first >= conn.count) {
    ++unroutable_;
    return;
  }
  topic.remove_prefix(digits);
  if (topic.substr(0, route_mid_.size()) != route_mid_) {
    ++unroutable_;
    return;
  }
  topic.remove_prefix(route_mid_.size());
  Dev& dev = *devs_[index];
  if (!dev.subscribed) return;  // the broker sends only after SUBACK
  const TimePoint now = Clock::now();
  if (topic == route_tails_[0]) {
    dev.device.on_data(msg.payload, now, outbox_);
  } else if (topic == route_tails_[1]) {
    dev.device.on_description(msg.payload, now, outbox_);
  } else if (topic == route_tails_[2]) {
    dev.device.on_rejected(msg.payload, now, outbox_);
  } else {
    ++unroutable_;
    return;
  }
  send_outbox(dev, outbox_);
  note_terminal(dev);
}

void RawFleet::subscribed(const Batch& batch, std::span<const std::byte> codes) {
  const TimePoint now = Clock::now();
  const bool whole = codes.size() == std::size_t{batch.count} * 3;
  for (std::uint32_t k = 0; k < batch.count; ++k) {
    bool refused = !whole;
    for (std::size_t t = 3 * k; !refused && t < 3 * k + 3; ++t) {
      refused = std::to_integer<unsigned>(codes[t]) > 2;  // 0x80: the broker refused the filter
    }
    Dev& dev = *devs_[batch.first + k];
    if (refused) {
      dev.device.fail(whole ? "the broker refused a subscription"
                            : "the broker's SUBACK does not match the SUBSCRIBE",
                      now);
    } else {
      dev.subscribed = true;
      if (dev.started) dev.device.start(now, outbox_);
      send_outbox(dev, outbox_);
    }
    note_terminal(dev);
  }
}

void RawFleet::send_outbox(Dev& dev, Outbox& out) {
  if (out.empty()) return;
  Conn& conn = conns_[dev.conn];
  for (Outgoing& o : out) {
    // A broker that stopped reading: refuse, as paho refuses past its buffer; the request times
    // out and is sent again.
    if (conn.state != ConnState::Up || conn.out.size() - conn.out_begin > kMaxUnwrittenBytes) {
      dev.device.on_send_failed();
      continue;
    }
    const std::string& topic = o.verb == protocol::Verb::Get ? dev.get_topic : dev.describe_topic;
    mqtt::append_publish(conn.out, topic, o.payload);
  }
  out.clear();
  mark_dirty(conn);
}

void RawFleet::note_terminal(Dev& dev) {
  if (dev.counted || !dev.device.terminal()) return;
  dev.counted = true;
  if (dev.device.state() == DeviceState::Failed) ++failed_;
  ++conns_[dev.conn].terminal;
  ++terminal_;
}

void RawFleet::fail_conn_devices(Conn& conn, const std::string& reason) {
  const TimePoint now = Clock::now();
  for (std::uint32_t i = conn.first; i < conn.first + conn.count; ++i) {
    devs_[i]->device.fail(reason, now);
    note_terminal(*devs_[i]);
  }
}

void RawFleet::tick(TimePoint now) {
  for (auto& d : devs_) {
    Dev& dev = *d;
    if (dev.counted) continue;
    if (!dev.started) {
      if (now < dev.start_at) continue;
      dev.started = true;
      if (dev.subscribed) dev.device.start(now, outbox_);
    } else if (dev.subscribed) {
      dev.device.on_tick(now, outbox_);
    }
    send_outbox(dev, outbox_);
    note_terminal(dev);
  }
}

Expected<RunResult, std::string> RawFleet::run(const std::atomic<bool>& stop,
                                               ProgressLine& progress) {
  if (auto opened = open_loop(); !opened) return chunkd::unexpected<std::string>(opened.error());
  const auto n = static_cast<std::uint32_t>(devs_.size());
  t0_ = Clock::now();
  const auto ramp = std::chrono::milliseconds(options_.ramp_ms);
  for (std::uint32_t i = 0; i < n; ++i) devs_[i]->start_at = t0_ + ramp * i / n;
  for (Conn& conn : conns_) conn.start_at = devs_[conn.first]->start_at;

  const auto deadline = t0_ + std::chrono::seconds(options_.max_seconds);
  const auto tick_interval = std::clamp<std::chrono::milliseconds>(
      config_.timeout / 4, std::chrono::milliseconds(5), std::chrono::milliseconds(100));
  RunResult result;
  TimePoint last_progress{};
  TimePoint last_tick{};
  std::vector<epoll_event> events(kMaxEvents);
  for (;;) {
    TimePoint now = Clock::now();
    if (stop.load()) {
      result.stopped = "interrupted";
      break;
    }
    if (now >= deadline) {
      result.stopped = "max-seconds";
      break;
    }
    if (now - last_tick >= tick_interval) {
      last_tick = now;
      service_conns(now);
      tick(now);
    }
    flush_dirty(now);
    if (terminal_ == n) break;
    if (now - last_progress >= kProgressInterval) {
      last_progress = now;
      progress.update(terminal_ - failed_, failed_,
                      config_.bytes_stored != nullptr ? config_.bytes_stored->load() : 0, now);
    }
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min(last_tick + tick_interval, deadline) - now);
    const int got = ::epoll_wait(epoll_fd_, events.data(), kMaxEvents,
                                 static_cast<int>(std::max<std::int64_t>(wait.count(), 0)));
    if (got < 0 && errno != EINTR) {
      return chunkd::unexpected<std::string>(std::string("epoll_wait: ") + std::strerror(errno));
    }
    now = Clock::now();
    for (int i = 0; i < got; ++i) {
      const epoll_event& ev = events[static_cast<std::size_t>(i)];
      on_event(conns_[ev.data.u32], ev.events, now);
    }
  }
  progress.clear();
  return collect(Clock::now(), result.stopped);
}

RunResult RawFleet::collect(TimePoint end, const std::string& stopped) {
  RunResult result;
  result.stopped = stopped;
  const std::string reason = stopped == "interrupted" ? "interrupted"
                                                      : "not finished within --max-seconds " +
                                                            std::to_string(options_.max_seconds);
  for (auto& d : devs_) {
    d->device.fail(reason, end);  // no-op for devices done or failed
    note_terminal(*d);
  }
  close_all();
  TimePoint last = t0_;
  for (auto& d : devs_) {
    const DeviceStats& s = d->device.stats();
    if (s.finished && *s.finished > last) last = *s.finished;
    result.devices.push_back(
        DeviceOutcome{d->thing, d->device.state(), d->device.failure(), s, std::nullopt});
  }
  result.wall_seconds = std::chrono::duration<double>(last - t0_).count();
  if (config_.latency != nullptr) result.latency = config_.latency->summarize();
  result.unroutable = unroutable_;
  return result;
}

}  // namespace chunkd::chunkload

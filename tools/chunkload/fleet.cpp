#include "tools/chunkload/fleet.hpp"

#include <algorithm>
#include <charconv>
#include <string_view>

#include "tools/chunkload/fleet_state.hpp"

namespace chunkd::chunkload {
namespace {

constexpr std::uint32_t kDevicesPerSubscribe = 32;  // 96 topic filters per SUBSCRIBE
constexpr auto kProgressInterval = std::chrono::milliseconds(250);

}  // namespace

Fleet::Fleet(const Options& options, const DeviceConfig& config, const OtaConfig* ota)
    : options_(options),
      config_(config),
      ota_(ota),
      filters_per_device_(ota != nullptr ? 1 : 3),
      topics_(options.topic_prefix) {
  const protocol::Format fmt = options.format;
  route_head_ = options.topic_prefix + "/" + options.thing_prefix;
  route_mid_ = "/streams/" + options.stream_id + "/";
  const std::string f(protocol::to_string(fmt));
  route_tails_[0] = "data/" + f;
  route_tails_[1] = "description/" + f;
  route_tails_[2] = "rejected/" + f;

  devs_.reserve(options.devices);
  for (std::uint32_t i = 0; i < options.devices; ++i) {
    auto d = std::make_unique<Dev>(config, i);
    d->thing = options.thing_prefix + std::to_string(i);
    if (ota != nullptr) d->ota = std::make_unique<OtaDevice>(*ota, d->device, d->thing, i);
    topics_.request_topic(d->get_topic, d->thing, options.stream_id, protocol::Verb::Get, fmt);
    topics_.request_topic(d->describe_topic, d->thing, options.stream_id, protocol::Verb::Describe,
                          fmt);
    devs_.push_back(std::move(d));
  }
  const std::uint32_t nconn = options.connections == 0 ? options.devices : options.connections;
  conns_.reserve(nconn);
  for (std::uint32_t c = 0; c < nconn; ++c) {
    auto conn = std::make_unique<Conn>();
    conn->fleet = this;
    const auto first = static_cast<std::uint32_t>(std::uint64_t{c} * options.devices / nconn);
    const auto end = static_cast<std::uint32_t>(std::uint64_t{c + 1} * options.devices / nconn);
    conn->first = first;
    conn->count = end - first;
    conn->client_id = options.connections == 0 ? devs_[first]->thing
                                               : options.thing_prefix + "conn" + std::to_string(c);
    for (std::uint32_t b = first; b < end; b += kDevicesPerSubscribe) {
      conn->batches.push_back(Batch{conn.get(), b, std::min(kDevicesPerSubscribe, end - b)});
    }
    for (std::uint32_t i = first; i < end; ++i) devs_[i]->conn = conn.get();
    conns_.push_back(std::move(conn));
  }
}

Fleet::~Fleet() { destroy_clients(); }

void Fleet::subscribed(Batch& batch, const int* granted) {
  const TimePoint now = Clock::now();
  thread_local Outbox out;
  for (std::uint32_t k = 0; k < batch.count; ++k) {
    bool refused = granted == nullptr;
    const std::size_t per = filters_per_device_;
    for (std::size_t t = per * k; !refused && t < per * k + per; ++t) {
      refused = granted[t] < 0 || granted[t] > 2;  // 0x80: the broker refused the filter
    }
    Dev& dev = *devs_[batch.first + k];
    std::lock_guard lock(dev.mu);
    if (refused) {
      dev.fail("the broker refused a subscription", now);
    } else {
      dev.subscribed = true;
      if (dev.started) dev.start(now, out);
      publish_locked(dev, out);
    }
    note_terminal_locked(dev);
  }
}

void Fleet::route(Conn& conn, std::string_view topic, std::span<const std::byte> payload) {
  // <topic_prefix>/<thing_prefix><index>/streams/<stream>/<kind>/<fmt>
  // (--ota: <topic_prefix>/<thing_prefix><index>/..., whichever topic the OTA device knows)
  const std::string_view full = topic;
  if (topic.substr(0, route_head_.size()) != route_head_) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  topic.remove_prefix(route_head_.size());
  std::uint32_t index = 0;
  auto [p, ec] = std::from_chars(topic.data(), topic.data() + topic.size(), index);
  const auto digits = static_cast<std::size_t>(p - topic.data());
  if (ec != std::errc() || digits == 0 || (digits > 1 && topic[0] == '0') || index < conn.first ||
      index - conn.first >= conn.count) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  topic.remove_prefix(digits);
  if (ota_ != nullptr) {
    route_ota(*devs_[index], full, payload);
    return;
  }
  if (topic.substr(0, route_mid_.size()) != route_mid_) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  topic.remove_prefix(route_mid_.size());
  int kind = -1;
  for (int k = 0; k < 3; ++k) {
    if (topic == route_tails_[static_cast<std::size_t>(k)]) kind = k;
  }
  if (kind < 0) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const TimePoint now = Clock::now();
  thread_local Outbox out;
  Dev& dev = *devs_[index];
  std::lock_guard lock(dev.mu);
  if (!dev.subscribed) return;  // cannot happen: the broker sends only after SUBACK
  if (kind == 0) {
    dev.device.on_data(payload, now, out);
  } else if (kind == 1) {
    dev.device.on_description(payload, now, out);
  } else {
    dev.device.on_rejected(payload, now, out);
  }
  publish_locked(dev, out);
  note_terminal_locked(dev);
}

void Fleet::route_ota(Dev& dev, std::string_view topic, std::span<const std::byte> payload) {
  const TimePoint now = Clock::now();
  thread_local Outbox out;
  std::lock_guard lock(dev.mu);
  if (!dev.ota->on_message(topic, payload, now, out)) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
  }
  publish_locked(dev, out);
  note_terminal_locked(dev);
}

void Fleet::device_subscribed(Dev& dev, bool granted) {
  const TimePoint now = Clock::now();
  thread_local Outbox out;
  std::lock_guard lock(dev.mu);
  if (dev.ota) dev.ota->on_subscribed(granted, now, out);
  publish_locked(dev, out);
  note_terminal_locked(dev);
}

void Fleet::note_terminal_locked(Dev& dev) {
  if (dev.counted || !dev.terminal()) return;
  dev.counted = true;
  if (dev.failed()) failed_.fetch_add(1, std::memory_order_relaxed);
  dev.conn->terminal.fetch_add(1, std::memory_order_acq_rel);
  if (terminal_.fetch_add(1, std::memory_order_acq_rel) + 1 == devs_.size()) {
    std::lock_guard lock(wake_mu_);
    wake_.notify_all();
  }
}

void Fleet::fail_devices(Conn& conn, std::uint32_t from, std::uint32_t count,
                         const std::string& reason) {
  const TimePoint now = Clock::now();
  for (std::uint32_t i = conn.first + from; i < conn.first + from + count; ++i) {
    Dev& dev = *devs_[i];
    std::lock_guard lock(dev.mu);
    dev.fail(reason, now);
    note_terminal_locked(dev);
  }
}

void Fleet::tick(TimePoint now) {
  Outbox out;
  for (auto& conn : conns_) {
    if (!conn->connect_issued && now >= conn->start_at) {
      conn->connect_issued = true;
      connect(*conn);
    }
  }
  for (auto& d : devs_) {
    Dev& dev = *d;
    {
      std::lock_guard lock(dev.mu);
      if (dev.counted) continue;
      if (!dev.started) {
        if (now < dev.start_at) continue;
        dev.started = true;
        if (dev.subscribed) dev.start(now, out);
      } else if (dev.subscribed) {
        dev.on_tick(now, out);
      }
      note_terminal_locked(dev);
    }
    if (!out.empty()) publish_unlocked(dev, out);
  }
  // A connection whose devices have all finished leaves, as a device that is done would.
  for (auto& conn : conns_) {
    if (conn->disconnect_issued || !conn->connect_issued ||
        conn->terminal.load(std::memory_order_acquire) != conn->count) {
      continue;
    }
    conn->disconnect_issued = true;
    disconnect(*conn);
  }
}

Expected<RunResult, std::string> Fleet::run(const std::atomic<bool>& stop, ProgressLine& progress) {
  if (auto created = create_clients(); !created) {
    return chunkd::unexpected<std::string>(created.error());
  }
  const auto n = static_cast<std::uint32_t>(devs_.size());
  t0_ = Clock::now();
  const auto ramp = std::chrono::milliseconds(options_.ramp_ms);
  for (std::uint32_t i = 0; i < n; ++i) {
    devs_[i]->start_at = t0_ + ramp * i / n;
  }
  for (auto& conn : conns_) conn->start_at = devs_[conn->first]->start_at;

  const auto deadline = t0_ + std::chrono::seconds(options_.max_seconds);
  const auto tick_interval = std::clamp<std::chrono::milliseconds>(
      config_.timeout / 4, std::chrono::milliseconds(5), std::chrono::milliseconds(100));
  RunResult result;
  TimePoint last_progress{};
  for (;;) {
    const TimePoint now = Clock::now();
    if (stop.load()) {
      result.stopped = "interrupted";
      break;
    }
    if (now >= deadline) {
      result.stopped = "max-seconds";
      break;
    }
    tick(now);
    if (terminal_.load(std::memory_order_acquire) == n) break;
    if (now - last_progress >= kProgressInterval) {
      last_progress = now;
      const std::uint32_t failed = failed_.load(std::memory_order_relaxed);
      progress.update(terminal_.load(std::memory_order_relaxed) - failed, failed,
                      config_.bytes_stored != nullptr
                          ? config_.bytes_stored->load(std::memory_order_relaxed)
                          : 0,
                      now);
    }
    std::unique_lock lock(wake_mu_);
    wake_.wait_until(lock, std::min(now + tick_interval, deadline),
                     [&] { return terminal_.load(std::memory_order_acquire) == n; });
  }
  progress.clear();

  const TimePoint end = Clock::now();
  const std::string reason =
      result.stopped == "interrupted"
          ? "interrupted"
          : "not finished within --max-seconds " + std::to_string(options_.max_seconds);
  for (auto& d : devs_) {
    std::lock_guard lock(d->mu);
    d->fail(reason, end, result.stopped == "max-seconds");
    note_terminal_locked(*d);
  }
  drain();
  destroy_clients();  // no callback runs after this

  TimePoint last = t0_;
  for (auto& d : devs_) {
    const DeviceStats& s = d->device.stats();
    const std::optional<TimePoint> finished = d->ota ? d->ota->stats().ended : s.finished;
    if (finished && *finished > last) last = *finished;
    DeviceOutcome outcome{d->thing, d->device.state(), d->device.failure(), s, std::nullopt};
    if (d->ota) {
      outcome.state = d->ota->as_intended() ? DeviceState::Done : DeviceState::Failed;
      outcome.failure = d->ota->stats().reason;
      outcome.ota = d->ota->stats();
    }
    result.devices.push_back(std::move(outcome));
  }
  result.wall_seconds = std::chrono::duration<double>(last - t0_).count();
  if (config_.latency != nullptr) result.latency = config_.latency->summarize();
  result.unroutable = unroutable_.load();
  return result;
}

}  // namespace chunkd::chunkload

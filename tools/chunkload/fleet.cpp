#include "tools/chunkload/fleet.hpp"

#include <MQTTAsync.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace chunkd::chunkload {
namespace {

constexpr std::uint32_t kDevicesPerSubscribe = 32;  // 96 topic filters per SUBSCRIBE
constexpr int kKeepAliveSeconds = 30;
constexpr int kConnectTimeoutSeconds = 30;
constexpr auto kProgressInterval = std::chrono::milliseconds(250);

[[noreturn]] void die_in_callback() {
  std::fputs("chunkload: internal error (exception) in an MQTT callback\n", stderr);
  std::abort();
}

std::string describe_failure(const char* what, const MQTTAsync_failureData* response) {
  std::string s = what;
  if (response != nullptr) {
    s += " (code " + std::to_string(response->code);
    if (response->message != nullptr) s += ": " + std::string(response->message);
    s += ")";
  }
  return s;
}

}  // namespace

struct Fleet::Batch {
  Conn* conn = nullptr;
  std::uint32_t first = 0;  // devices [first, first + count)
  std::uint32_t count = 0;
};

struct Fleet::Conn {
  Fleet* fleet = nullptr;
  MQTTAsync client = nullptr;
  std::string client_id;
  std::uint32_t first = 0;  // devices [first, first + count)
  std::uint32_t count = 0;
  TimePoint start_at;
  std::vector<Batch> batches;
  std::atomic<std::uint32_t> terminal{0};  // its devices done or failed
  bool connect_issued = false;             // main thread only
  bool disconnect_issued = false;          // main thread only
};

struct Fleet::Dev {
  Dev(const DeviceConfig& config, std::uint32_t index) : device(config, index) {}
  std::mutex mu;
  Device device;  // guarded by mu
  Conn* conn = nullptr;
  std::string thing;
  std::string get_topic;
  std::string describe_topic;
  TimePoint start_at;
  bool started = false;     // guarded by mu: its ramp time has come
  bool subscribed = false;  // guarded by mu: SUBACK received
  bool counted = false;     // guarded by mu: counted in terminal_
};

// The C callbacks paho calls on its threads (with its global lock held).
struct FleetCallbacks {
  static int on_message(void* context, char* topic_name, int topic_len,
                        MQTTAsync_message* message) {
    try {
      auto* conn = static_cast<Fleet::Conn*>(context);
      const std::size_t len =
          topic_len > 0 ? static_cast<std::size_t>(topic_len) : std::strlen(topic_name);
      std::span<const std::byte> payload(static_cast<const std::byte*>(message->payload),
                                         static_cast<std::size_t>(message->payloadlen));
      conn->fleet->route(*conn, std::string_view(topic_name, len), payload);
    } catch (...) {
      die_in_callback();
    }
    MQTTAsync_freeMessage(&message);
    MQTTAsync_free(topic_name);
    return 1;
  }

  static void on_connected(void* context, MQTTAsync_successData* /*response*/) {
    try {
      auto* conn = static_cast<Fleet::Conn*>(context);
      conn->fleet->subscribe(*conn);
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_connect_failed(void* context, MQTTAsync_failureData* response) {
    try {
      auto* conn = static_cast<Fleet::Conn*>(context);
      conn->fleet->fail_devices(
          *conn, 0, conn->count,
          describe_failure(("connect to " + conn->fleet->options_.uri + " failed").c_str(),
                           response));
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_connection_lost(void* context, char* cause) {
    try {
      auto* conn = static_cast<Fleet::Conn*>(context);
      std::string reason = "connection lost";
      if (cause != nullptr) reason += std::string(" (") + cause + ")";
      conn->fleet->fail_devices(*conn, 0, conn->count, reason);
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_subscribed(void* context, MQTTAsync_successData* response) {
    try {
      auto* batch = static_cast<Fleet::Batch*>(context);
      const int* granted = nullptr;
      if (response != nullptr) {
        // paho: alt.qos for a single filter, alt.qosList for several (always several here).
        granted = std::size_t{batch->count} * 3 == 1 ? &response->alt.qos : response->alt.qosList;
      }
      batch->conn->fleet->subscribed(*batch, granted);
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_subscribe_failed(void* context, MQTTAsync_failureData* response) {
    try {
      auto* batch = static_cast<Fleet::Batch*>(context);
      Fleet::Conn& conn = *batch->conn;
      conn.fleet->fail_devices(conn, batch->first - conn.first, batch->count,
                               describe_failure("subscribe failed", response));
    } catch (...) {
      die_in_callback();
    }
  }
};

Fleet::Fleet(const Options& options, const DeviceConfig& config)
    : options_(options), config_(config), topics_(options.topic_prefix) {
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

void Fleet::destroy_clients() {
  for (auto& conn : conns_) {
    if (conn->client != nullptr) MQTTAsync_destroy(&conn->client);
    conn->client = nullptr;
  }
}

Expected<bool, std::string> Fleet::create_clients() {
  for (auto& conn : conns_) {
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.sendWhileDisconnected = 0;
    // paho counts every queued command against this, connected or not: room for each device's
    // requests (first sends and re-sends) plus describes and subscribes.
    co.maxBufferedMessages = static_cast<int>(std::min<std::uint64_t>(
        1u << 20, std::uint64_t{conn->count} * (2 * std::uint64_t{options_.in_flight} + 4) + 64));
    co.MQTTVersion = MQTTVERSION_3_1_1;
    int rc =
        MQTTAsync_createWithOptions(&conn->client, options_.uri.c_str(), conn->client_id.c_str(),
                                    MQTTCLIENT_PERSISTENCE_NONE, nullptr, &co);
    if (rc != MQTTASYNC_SUCCESS) {
      conn->client = nullptr;
      std::string why = MQTTAsync_strerror(rc);
      return chunkd::unexpected<std::string>("cannot create an MQTT client for " + options_.uri +
                                             ": " + why);
    }
    rc = MQTTAsync_setCallbacks(conn->client, conn.get(), &FleetCallbacks::on_connection_lost,
                                &FleetCallbacks::on_message, nullptr);
    if (rc != MQTTASYNC_SUCCESS) {
      return chunkd::unexpected<std::string>("cannot set MQTT callbacks: " +
                                             std::string(MQTTAsync_strerror(rc)));
    }
  }
  return true;
}

void Fleet::connect(Conn& conn) {
  MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
  co.keepAliveInterval = kKeepAliveSeconds;
  co.cleansession = 1;
  co.connectTimeout =
      static_cast<int>(std::min<std::uint32_t>(kConnectTimeoutSeconds, options_.max_seconds));
  co.MQTTVersion = MQTTVERSION_3_1_1;
  co.automaticReconnect = 0;
  co.onSuccess = &FleetCallbacks::on_connected;
  co.onFailure = &FleetCallbacks::on_connect_failed;
  co.context = &conn;
  const int rc = MQTTAsync_connect(conn.client, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    fail_devices(conn, 0, conn.count,
                 "connect to " + options_.uri + " failed: " + MQTTAsync_strerror(rc));
  }
}

void Fleet::subscribe(Conn& conn) {
  std::vector<std::string> filters;
  std::vector<char*> ptrs;
  std::vector<int> qos;
  for (Batch& batch : conn.batches) {
    filters.clear();
    for (std::uint32_t i = batch.first; i < batch.first + batch.count; ++i) {
      for (protocol::ReplyKind kind : {protocol::ReplyKind::Data, protocol::ReplyKind::Description,
                                       protocol::ReplyKind::Rejected}) {
        std::string t;
        topics_.reply_topic(t, devs_[i]->thing, options_.stream_id, kind, options_.format);
        filters.push_back(std::move(t));
      }
    }
    ptrs.clear();
    for (std::string& f : filters) ptrs.push_back(f.data());
    qos.assign(filters.size(), options_.qos);
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = &FleetCallbacks::on_subscribed;
    ro.onFailure = &FleetCallbacks::on_subscribe_failed;
    ro.context = &batch;
    const int rc = MQTTAsync_subscribeMany(conn.client, static_cast<int>(ptrs.size()), ptrs.data(),
                                           qos.data(), &ro);
    if (rc != MQTTASYNC_SUCCESS) {
      fail_devices(conn, batch.first - conn.first, batch.count,
                   std::string("subscribe failed: ") + MQTTAsync_strerror(rc));
    }
  }
}

void Fleet::subscribed(Batch& batch, const int* granted) {
  const TimePoint now = Clock::now();
  thread_local Outbox out;
  for (std::uint32_t k = 0; k < batch.count; ++k) {
    bool refused = granted == nullptr;
    for (std::size_t t = 3 * std::size_t{k}; !refused && t < 3 * std::size_t{k} + 3; ++t) {
      refused = granted[t] < 0 || granted[t] > 2;  // 0x80: the broker refused the filter
    }
    Dev& dev = *devs_[batch.first + k];
    std::lock_guard lock(dev.mu);
    if (refused) {
      dev.device.fail("the broker refused a reply-topic subscription", now);
    } else {
      dev.subscribed = true;
      if (dev.started) dev.device.start(now, out);
      publish_locked(dev, out);
    }
    note_terminal_locked(dev);
  }
}

void Fleet::route(Conn& conn, std::string_view topic, std::span<const std::byte> payload) {
  // <topic_prefix>/<thing_prefix><index>/streams/<stream>/<kind>/<fmt>
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

namespace {
int send(MQTTAsync client, const std::string& topic, std::vector<std::byte>& payload) {
  MQTTAsync_message msg = MQTTAsync_message_initializer;
  msg.payload = payload.data();
  msg.payloadlen = static_cast<int>(payload.size());
  msg.qos = 0;
  msg.retained = 0;
  return MQTTAsync_sendMessage(client, topic.c_str(), &msg, nullptr);
}
}  // namespace

void Fleet::publish_locked(Dev& dev, Outbox& out) {
  for (Outgoing& o : out) {
    const std::string& topic = o.verb == protocol::Verb::Get ? dev.get_topic : dev.describe_topic;
    if (send(dev.conn->client, topic, o.payload) != MQTTASYNC_SUCCESS) {
      dev.device.on_send_failed();
    }
  }
  out.clear();
}

void Fleet::publish_unlocked(Dev& dev, Outbox& out) {
  std::uint32_t refused = 0;
  for (Outgoing& o : out) {
    const std::string& topic = o.verb == protocol::Verb::Get ? dev.get_topic : dev.describe_topic;
    if (send(dev.conn->client, topic, o.payload) != MQTTASYNC_SUCCESS) ++refused;
  }
  out.clear();
  if (refused > 0) {
    std::lock_guard lock(dev.mu);
    for (std::uint32_t i = 0; i < refused; ++i) dev.device.on_send_failed();
  }
}

void Fleet::note_terminal_locked(Dev& dev) {
  if (dev.counted || !dev.device.terminal()) return;
  dev.counted = true;
  if (dev.device.state() == DeviceState::Failed) failed_.fetch_add(1, std::memory_order_relaxed);
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
    dev.device.fail(reason, now);
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
        if (dev.subscribed) dev.device.start(now, out);
      } else if (dev.subscribed) {
        dev.device.on_tick(now, out);
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
    MQTTAsync_disconnectOptions dopts = MQTTAsync_disconnectOptions_initializer;
    dopts.timeout = 0;
    MQTTAsync_disconnect(conn->client, &dopts);
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
    d->device.fail(reason, end);
    note_terminal_locked(*d);
  }
  destroy_clients();  // no callback runs after this

  TimePoint last = t0_;
  for (auto& d : devs_) {
    const DeviceStats& s = d->device.stats();
    if (s.finished && *s.finished > last) last = *s.finished;
    result.devices.push_back(
        DeviceOutcome{d->thing, d->device.state(), d->device.failure(), d->device.stats()});
  }
  result.wall_seconds = std::chrono::duration<double>(last - t0_).count();
  if (config_.latency != nullptr) result.latency = config_.latency->summarize();
  result.unroutable = unroutable_.load();
  return result;
}

}  // namespace chunkd::chunkload

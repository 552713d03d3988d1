#include "engine/daemon.hpp"

#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/content_store.hpp"
#include "engine/control_service.hpp"
#include "engine/delivery.hpp"
#include "engine/metrics.hpp"
#include "engine/mqtt_transport.hpp"
#include "io/file_reader.hpp"
#include "io/http_server.hpp"
#include "io/log.hpp"
#include "io/registry_store.hpp"
#include "protocol/topic.hpp"

#ifndef CHUNKD_VERSION
#define CHUNKD_VERSION "0.0.0"
#endif

namespace chunkd::engine {
namespace {

constexpr const char* kTag = "chunkd";
constexpr int kDeliveryStopMs = 5000;       // jobs already started may finish within this
constexpr int kMqttFlushMs = 2000;          // queued replies may be written within this
constexpr int kHttpGraceMs = 5000;          // responses in progress may finish within this
constexpr int kShutdownWatchdogMs = 30000;  // a stop taking longer than this is a bug: exit(1)

io::MqttOptions mqtt_options(const Config& c) {
  io::MqttOptions o;
  o.uri = c.mqtt.uri;
  o.client_id = c.mqtt.client_id;
  o.connections = c.mqtt.connections;
  o.username = c.mqtt.username;
  o.password = c.mqtt.password;
  o.ca_file = c.mqtt.ca_file;
  o.cert_file = c.mqtt.cert_file;
  o.key_file = c.mqtt.key_file;
  o.keepalive_s = c.mqtt.keepalive_s;
  o.max_queued_bytes = c.mqtt.max_queued_bytes;
  o.subscribe_qos = c.mqtt.qos;
  protocol::TopicCodec codec(c.mqtt.topic_prefix);
  o.subscriptions = {codec.subscription(protocol::Verb::Get),
                     codec.subscription(protocol::Verb::Describe)};
  return o;
}

DeliveryOptions delivery_options(const Config& c) {
  DeliveryOptions o;
  o.topic_prefix = c.mqtt.topic_prefix;
  o.data_dir = c.storage.data_dir;
  o.cache_capacity_bytes = c.cache.capacity_bytes;
  o.max_open_files = c.delivery.max_open_files;
  o.qos = c.mqtt.qos;
  o.relax_version_check = c.delivery.relax_version_check;
  o.per_thing_queue_requests = c.delivery.per_thing_queue;
  o.global_queue_requests = c.delivery.global_queue;
  o.per_thing_blocks_per_s = c.delivery.per_thing_blocks_per_s;
  o.global_blocks_per_s = c.delivery.global_blocks_per_s;
  o.max_publish_bytes_in_flight = c.delivery.max_bytes_in_flight;
  o.quantum_bytes = c.delivery.quantum_bytes;
  return o;
}

io::HttpLimits http_limits(const Config& c) {
  io::HttpLimits l;
  l.max_body_bytes = c.control.max_body_bytes;
  l.max_connections = c.control.max_connections;
  l.idle_timeout_ms = c.control.idle_timeout_ms;
  l.request_timeout_ms = c.control.request_timeout_ms;
  l.shutdown_grace_ms = kHttpGraceMs;
  return l;
}

const char* signal_name(int signum) {
  switch (signum) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "a signal";
  }
}

// Calls `done` once `expected` calls of the returned function have happened.
std::function<void()> barrier(std::size_t expected, std::function<void()> done) {
  auto left = std::make_shared<std::size_t>(expected);
  auto then = std::make_shared<std::function<void()>>(std::move(done));
  if (expected == 0) {
    (*then)();
    return [] {};
  }
  return [left, then] {
    if (--*left == 0) (*then)();
  };
}

}  // namespace

struct Daemon::Impl {
  explicit Impl(Config c) : config(std::move(c)) {}

  bool start();
  void shutdown();
  void phase_mqtt();
  void phase_storage();
  void phase_handles();
  void transport_ready(bool ready);
  void register_transport_metrics();

  Config config;
  uv_loop_t loop{};
  bool loop_open = false;
  SystemClock clock;
  Metrics metrics;
  Catalog catalog;
  std::unique_ptr<io::FileReader> reader;
  std::unique_ptr<io::RegistryStore> registry;
  std::unique_ptr<ContentStore> store;
  std::unique_ptr<ControlService> control;
  std::unique_ptr<Transport> transport;
  std::unique_ptr<Delivery> delivery;
  std::unique_ptr<io::HttpServer> http;
  uv_signal_t sigint{};
  uv_signal_t sigterm{};
  uv_timer_t watchdog{};
  bool signals_started = false;
  bool stopping = false;
};

bool Daemon::Impl::start() {
  LOG_INFO(kTag, "chunkd %s starting: data_dir %s, %zu buckets", CHUNKD_VERSION,
           config.storage.data_dir.c_str(), config.buckets.size());

  uv_signal_init(&loop, &sigint);
  uv_signal_init(&loop, &sigterm);
  sigint.data = this;
  sigterm.data = this;
  auto on_signal = [](uv_signal_t* handle, int signum) {
    auto* self = static_cast<Impl*>(handle->data);
    if (self->stopping) {
      LOG_WARN(kTag, "received %s: already stopping", signal_name(signum));
      return;
    }
    LOG_INFO(kTag, "received %s: stopping", signal_name(signum));
    self->shutdown();
  };
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  signals_started = true;

  auto reads = io::make_file_reader(&loop, io::FileReaderOptions{});
  if (!reads) {
    LOG_ERROR(kTag, "cannot set up file reads: %s", reads.error().message().c_str());
    return false;
  }
  reader = std::move(reads->reader);
  // The note already says which backend and why, e.g. "file reads: io_uring".
  const std::string& note = reads->note;
  if (note.empty()) {
    LOG_INFO(kTag, "file reads: %s", reader->backend_name());
  } else {
    LOG_INFO(kTag, "%s", note.c_str());
  }

  std::string message;
  auto opened = io::RegistryStore::open(&loop, config.storage.data_dir);
  if (!opened) {
    LOG_ERROR(kTag, "storage.data_dir: %s", opened.error().message().c_str());
    return false;
  }
  registry = std::move(*opened);
  auto streams = registry->load_all();
  if (!streams) {
    LOG_ERROR(kTag, "storage.data_dir: cannot load the registry: %s",
              streams.error().message().c_str());
    return false;
  }
  for (auto& s : *streams) catalog.put(std::make_shared<const io::StoredStream>(std::move(s)));
  LOG_INFO(kTag, "registry: %zu streams", catalog.size());

  ContentStoreOptions store_options;
  store_options.data_dir = config.storage.data_dir;
  store_options.extent_bytes = config.storage.extent_bytes;
  store = std::make_unique<ContentStore>(&loop, *reader, &metrics, clock, store_options,
                                         [this] { return catalog.referenced_digests(); });
  if (store->open(message)) {
    LOG_ERROR(kTag, "storage.data_dir: %s", message.c_str());
    return false;
  }
  // Files a stream references must be in the store; say so loudly if one is missing.
  std::size_t missing = 0;
  for (const auto& digest : catalog.referenced_digests()) {
    if (::access(blob_path(config.storage.data_dir, digest).c_str(), R_OK) != 0) missing++;
  }
  if (missing != 0) {
    LOG_ERROR(kTag, "content store: %zu blobs referenced by streams are missing from %s/blobs",
              missing, config.storage.data_dir.c_str());
  }
  store->collect_garbage();

  ControlOptions control_options;
  control_options.buckets = config.buckets;
  control_options.token = config.control.token;
  control_options.max_streams = config.storage.max_streams;
  control_options.max_concurrent_ingests = config.control.max_concurrent_ingests;
  control = std::make_unique<ControlService>(&loop, catalog, *registry, *store, metrics, clock,
                                             control_options);
  if (control->open(message)) {
    LOG_ERROR(kTag, "%s", message.c_str());
    return false;
  }

  transport = std::make_unique<MqttTransport>(&loop, mqtt_options(config));
  delivery = std::make_unique<Delivery>(&loop, catalog, *reader, *transport, metrics, clock,
                                        delivery_options(config));
  register_transport_metrics();

  http = std::make_unique<io::HttpServer>(
      &loop, http_limits(config),
      [this](io::HttpRequest&& request, io::HttpServer::Responder respond) {
        control->handle(std::move(request), std::move(respond));
      },
      &ControlService::error_body);
  metrics.gauge_fn("chunkd_http_open_connections", "Open HTTP connections.", "",
                   [this] { return http ? static_cast<double>(http->open_connections()) : 0.0; });
  if (auto listening = http->listen(config.control.listen_host, config.control.listen_port);
      !listening) {
    LOG_ERROR(kTag, "control.listen: %s", listening.error().message().c_str());
    return false;
  }
  LOG_INFO(kTag, "control API listening on %s%s%s:%u%s",
           config.control.listen_host.find(':') != std::string::npos ? "[" : "",
           config.control.listen_host.c_str(),
           config.control.listen_host.find(':') != std::string::npos ? "]" : "",
           static_cast<unsigned>(http->port()),
           config.control.token.empty() ? " (no token: every client may change streams)" : "");

  auto started = transport->start(
      [this](std::string_view topic, std::span<const std::byte> payload) {
        if (delivery) delivery->on_message(topic, payload);
      },
      [this](bool ready) { transport_ready(ready); });
  if (!started) {
    LOG_ERROR(kTag, "mqtt.uri: cannot start the MQTT connections to %s: %s",
              config.mqtt.uri.c_str(), started.error().message().c_str());
    return false;
  }
  LOG_INFO(kTag, "mqtt: connecting to %s with %zu connections", config.mqtt.uri.c_str(),
           config.mqtt.connections);
  return true;
}

void Daemon::Impl::transport_ready(bool ready) {
  if (control) control->set_ready(ready);
  if (ready) {
    LOG_INFO(kTag, "mqtt: connected and subscribed to %s", config.mqtt.uri.c_str());
  } else if (!stopping) {
    LOG_WARN(kTag, "mqtt: not ready (connection to %s lost); reconnecting",
             config.mqtt.uri.c_str());
  }
}

void Daemon::Impl::register_transport_metrics() {
  const auto stat = [this](std::uint64_t TransportStats::*field) {
    return
        [this, field] { return transport ? static_cast<double>(transport->stats().*field) : 0.0; };
  };
  metrics.gauge_fn("chunkd_mqtt_ready", "1 while connected and subscribed to the broker.", "",
                   [this] { return transport && transport->ready() ? 1.0 : 0.0; });
  metrics.gauge_fn(
      "chunkd_mqtt_queued_bytes", "Reply bytes queued for the broker sockets.", "",
      [this] { return transport ? static_cast<double>(transport->bytes_in_flight()) : 0.0; });
  metrics.counter_fn("chunkd_mqtt_messages_published_total",
                     "Messages handed to the broker connections.", "",
                     stat(&TransportStats::messages_sent));
  metrics.counter_fn(
      "chunkd_mqtt_socket_writes_total",
      "send() calls writing gathered QoS 0 messages (messages per write shows the batching).", "",
      stat(&TransportStats::socket_writes));
  metrics.counter_fn("chunkd_mqtt_reconnects_total", "Broker connections re-established.", "",
                     stat(&TransportStats::reconnects));
}

// Phase 1: stop taking work (HTTP, control, ingests) and let delivery finish started jobs.
void Daemon::Impl::shutdown() {
  if (stopping) return;
  stopping = true;
  uv_timer_init(&loop, &watchdog);
  uv_timer_start(
      &watchdog,
      [](uv_timer_t*) {
        LOG_ERROR(kTag, "shutdown did not finish within %d ms: exiting", kShutdownWatchdogMs);
        std::_Exit(1);
      },
      kShutdownWatchdogMs, 0);
  uv_unref(reinterpret_cast<uv_handle_t*>(&watchdog));

  std::size_t parts =
      (http ? 1u : 0u) + (control ? 1u : 0u) + (store ? 1u : 0u) + (delivery ? 1u : 0u);
  auto next = barrier(parts, [this] { phase_mqtt(); });
  if (http) http->close(next);
  if (control) control->close(next);
  if (store) store->close(next);
  if (delivery) delivery->stop(kDeliveryStopMs, next);
}

// Phase 2: flush queued replies and disconnect.
void Daemon::Impl::phase_mqtt() {
  if (!transport) {
    phase_storage();
    return;
  }
  transport->stop(kMqttFlushMs, [this] { phase_storage(); });
}

// Phase 3: nothing reads or writes any more: close the reader and the registry.
void Daemon::Impl::phase_storage() {
  std::size_t parts = (reader ? 1u : 0u) + (registry ? 1u : 0u);
  auto next = barrier(parts, [this] { phase_handles(); });
  if (reader) reader->close(next);
  if (registry) registry->close(next);
}

// Phase 4: the daemon's own handles; then the loop has nothing left and run() returns.
void Daemon::Impl::phase_handles() {
  if (signals_started) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
}

Daemon::Daemon(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Daemon::~Daemon() = default;

void Daemon::stop() { impl_->shutdown(); }

int Daemon::run() {
  Impl& d = *impl_;
  io::LogLevel level = io::LogLevel::Info;
  if (io::parse_log_level(d.config.log.level, level)) io::set_log_level(level);
  // A peer closing a socket must not kill the daemon; writes report EPIPE instead.
  ::signal(SIGPIPE, SIG_IGN);

  if (int rc = uv_loop_init(&d.loop); rc != 0) {
    LOG_ERROR(kTag, "cannot create the event loop: %s", uv_strerror(rc));
    return 1;
  }
  d.loop_open = true;
  bool started = d.start();
  if (!started) d.shutdown();
  uv_run(&d.loop, UV_RUN_DEFAULT);

  // Everything is closed: the objects can go (in reverse order of their use of each other).
  d.http.reset();
  d.delivery.reset();
  d.transport.reset();
  d.control.reset();
  d.store.reset();
  d.registry.reset();
  d.reader.reset();

  int rc = uv_loop_close(&d.loop);
  if (rc != 0) {
    LOG_ERROR(kTag, "the event loop still has open handles at exit (%s):", uv_strerror(rc));
    uv_walk(
        &d.loop,
        [](uv_handle_t* handle, void*) {
          LOG_ERROR(kTag, "  open handle: %s", uv_handle_type_name(uv_handle_get_type(handle)));
        },
        nullptr);
    return 1;
  }
  d.loop_open = false;
  if (!started) return 1;
  LOG_INFO(kTag, "stopped");
  return 0;
}

}  // namespace chunkd::engine

#include "engine/daemon.hpp"

#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstdlib>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/daemon_internal.hpp"

#ifndef CHUNKD_VERSION
#define CHUNKD_VERSION "0.0.0"
#endif

namespace chunkd::engine {
namespace {

using daemon_detail::kSignals;
using daemon_detail::kTag;

const char* signal_name(int signum) {
  switch (signum) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    default:
      return "a signal";
  }
}

}  // namespace

bool Daemon::Impl::start() {
  LOG_INFO(kTag, "chunkd %s starting: data_dir %s, %zu buckets", CHUNKD_VERSION,
           config.store.data_dir.c_str(), config.control.service.buckets.size());
  for (const std::string& warning : config.warnings) LOG_WARN(kTag, "config: %s", warning.c_str());
  if (!(open_signals() && open_reader() && open_registry() && open_store())) return false;
  start_registry_sync();
  return open_control() && open_delivery() && open_jobs() && open_http() && start_transport();
}

// SIGINT/SIGTERM stop, SIGHUP reloads the config, SIGUSR1/SIGUSR2 are ignored (not fatal).
bool Daemon::Impl::open_signals() {
  for (std::size_t i = 0; i < std::size(kSignals); ++i) {
    uv_signal_init(&loop, &signals[i]);
    signals[i].data = this;
    uv_signal_start(
        &signals[i],
        [](uv_signal_t* handle, int signum) {
          static_cast<Impl*>(handle->data)->on_signal(signum);
        },
        kSignals[i]);
  }
  signals_started = true;
  return true;
}

void Daemon::Impl::on_signal(int signum) {
  if (signum == SIGHUP) {
    reload();
    return;
  }
  if (signum == SIGUSR1 || signum == SIGUSR2) {
    // Logged at info the first time (an operator may wonder), at debug afterwards.
    CHUNKD_LOG(ignored_signal_logged ? io::LogLevel::Debug : io::LogLevel::Info, kTag,
               "received %s: ignored (SIGHUP reloads the config, SIGTERM stops)",
               signal_name(signum));
    ignored_signal_logged = true;
    return;
  }
  if (stopping) {
    LOG_WARN(kTag, "received %s: already stopping", signal_name(signum));
    return;
  }
  LOG_INFO(kTag, "received %s: stopping", signal_name(signum));
  shutdown();
}

// File reads: io_uring, or the thread pool when the kernel refuses it (the log says which).
bool Daemon::Impl::open_reader() {
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
  return true;
}

// The registry, loaded into the catalog: shared in PostgreSQL with registry.url, else SQLite in
// data_dir.
bool Daemon::Impl::open_registry() {
  const std::string& url = config.cluster.registry.url;
  const char* setting = url.empty() ? "storage.data_dir" : "registry.url";
  auto opened = url.empty() ? io::RegistryStore::open(&loop, config.store.data_dir)
                            : io::RegistryStore::open_shared(&loop, url);
  if (!opened) {
    LOG_ERROR(kTag, "%s: %s", setting, opened.error().message().c_str());
    return false;
  }
  registry = std::move(*opened);
  auto streams = registry->load_all();
  if (!streams) {
    LOG_ERROR(kTag, "%s: cannot load the registry: %s", setting, streams.error().message().c_str());
    return false;
  }
  for (auto& s : *streams) catalog.put(std::make_shared<const io::StoredStream>(std::move(s)));
  LOG_INFO(kTag, "registry%s: %zu streams", url.empty() ? "" : " (shared, PostgreSQL)",
           catalog.size());
  return true;
}

// A shared registry: apply what other instances change to the catalog.
void Daemon::Impl::start_registry_sync() {
  if (!registry->shared()) return;
  registry_sync = std::make_unique<RegistrySync>(catalog, *registry, metrics, [this] {
    if (store && !stopping) store->collect_garbage();
  });
  registry_sync->start();
}

bool Daemon::Impl::open_store() {
  std::string message;
  store = std::make_unique<ContentStore>(&loop, *reader, &metrics, clock, config.store,
                                         [this] { return catalog.referenced_digests(); });
  if (store->open(message)) {
    LOG_ERROR(kTag, "storage.data_dir: %s", message.c_str());
    return false;
  }
  const std::string& shared = config.cluster.content_bucket;
  if (!shared.empty()) {
    // config_cluster.cpp checked that it names an s3 bucket entry.
    ContentBucketOptions options;
    options.name = shared;
    options.remote = config.control.service.s3_buckets.at(shared).remote;
    options.max_uploads = config.cluster.content_uploads;
    options.max_fills = config.cluster.content_fills;
    content = std::make_unique<ContentBucket>(&loop, *store, &metrics, std::move(options));
    LOG_INFO(kTag,
             "content bucket: \"%s\" (%s; content_bucket_uploads %zu, content_bucket_fills %zu)",
             shared.c_str(), config.control.service.s3_buckets.at(shared).describe().c_str(),
             config.cluster.content_uploads, config.cluster.content_fills);
  }
  // Files a stream references must be in the store; say so loudly if one is missing (with a
  // content bucket, a read fills it from there).
  std::size_t missing = 0;
  for (const auto& digest : catalog.referenced_digests()) {
    if (::access(blob_path(config.store.data_dir, digest).c_str(), R_OK) != 0) missing++;
  }
  if (missing != 0 && content) {
    LOG_INFO(kTag,
             "content store: %zu blobs referenced by streams are not in %s/blobs yet; each will be "
             "filled from content bucket \"%s\" when a device first reads it",
             missing, config.store.data_dir.c_str(), shared.c_str());
  } else if (missing != 0) {
    LOG_ERROR(kTag, "content store: %zu blobs referenced by streams are missing from %s/blobs",
              missing, config.store.data_dir.c_str());
  }
  store->collect_garbage();
  return true;
}

bool Daemon::Impl::open_control() {
  health = std::make_unique<StreamHealth>(catalog, metrics, clock);
  control = std::make_unique<ControlService>(&loop, catalog, *registry, *store, metrics, clock,
                                             config.control.service, health.get());
  control->set_content_bucket(content.get());
  if (auto opened = control->open(); !opened) {
    LOG_ERROR(kTag, "%s", opened.error().message().c_str());
    return false;
  }
  return true;
}

// The transport (not connecting yet: MQTT, or AMQP with [amqp]) and the data plane on it.
bool Daemon::Impl::open_delivery() {
  if (config.cluster.amqp.enabled) {
    auto amqp_transport = std::make_unique<AmqpTransport>(&loop, config.cluster.amqp);
    amqp = amqp_transport.get();
    transport = std::move(amqp_transport);
    amqp->register_metrics(metrics);
  } else {
    auto mqtt_transport = std::make_unique<MqttTransport>(&loop, config.mqtt);
    mqtt = mqtt_transport.get();
    transport = std::move(mqtt_transport);
  }
  DeliveryOptions options = config.delivery;
  if (content) {
    options.cache.missing_blob = [this](const std::string& digest, std::uint64_t size) {
      return content && content->fill(digest, size);
    };
  }
  delivery = std::make_unique<Delivery>(&loop, catalog, *reader, *transport, metrics, clock,
                                        std::move(options), health.get());
  register_transport_metrics();
  return true;
}

// The jobs API for OTA agents, on the same transport and registry database. In a cluster the
// holder of the jobs lease serves jobs and consumes the jobs queue (engine/job_runtime.hpp).
bool Daemon::Impl::open_jobs() {
  if (!config.jobs.enabled) return true;
  JobRuntime::Parts parts{&loop, catalog, *transport, metrics, clock, config.jobs};
  const std::string& url = config.cluster.registry.url;
  auto opened = url.empty() ? JobRuntime::open(std::move(parts), config.store.data_dir)
                            : JobRuntime::open_shared(std::move(parts),
                                                      {url, instance_name(), [this](bool on) {
                                                         if (amqp != nullptr)
                                                           amqp->consume_jobs(on);
                                                       }});
  if (!opened) {
    LOG_ERROR(kTag, "jobs: %s", opened.error().c_str());
    return false;
  }
  jobs = std::move(*opened);
  control->set_jobs(jobs.get());
  return true;
}

// How other instances name this one (the holder of the jobs lease): host and control address.
std::string Daemon::Impl::instance_name() const {
  char host[256] = "";
  std::size_t size = sizeof host;
  if (uv_os_gethostname(host, &size) != 0) host[0] = '\0';
  return std::string("chunkd on ") + (host[0] != '\0' ? host : "an unknown host") +
         " (control API " + config.control.listen + ")";
}

bool Daemon::Impl::open_http() {
  const Config::Control& c = config.control;
  http = std::make_unique<io::HttpServer>(
      &loop, c.http,
      [this](io::HttpRequest&& request, io::HttpServer::Responder respond) {
        control->handle(std::move(request), std::move(respond));
      },
      &ControlService::error_body);
  http->set_refused_observer([this](int status) { control->count_refused(status); });
  http->set_authorize([this](const io::HttpRequest& head) { return control->authorize(head); });
  register_http_metrics();
  if (auto listening = http->listen(c.listen_host, c.listen_port); !listening) {
    LOG_ERROR(kTag, "control.listen: %s", listening.error().message().c_str());
    return false;
  }
  const bool v6 = c.listen_host.find(':') != std::string::npos;
  LOG_INFO(kTag, "control API listening on %s%s%s:%u%s", v6 ? "[" : "", c.listen_host.c_str(),
           v6 ? "]" : "", static_cast<unsigned>(http->port()),
           c.service.token.empty() ? " (no token: every client may change streams)" : "");
  return true;
}

void Daemon::Impl::register_http_metrics() {
  auto stat = [this](std::uint64_t io::HttpServerStats::*field) {
    return [this, field] { return http ? static_cast<double>(http->stats().*field) : 0.0; };
  };
  metrics.gauge_fn("chunkd_http_open_connections", "Open HTTP connections.", "",
                   [this] { return http ? static_cast<double>(http->open_connections()) : 0.0; });
  const char* refused = "HTTP connections and request bodies refused with 503, by reason.";
  metrics.counter_fn("chunkd_http_refused_total", refused, "reason=\"slots\"",
                     stat(&io::HttpServerStats::connections_rejected));
  metrics.counter_fn("chunkd_http_refused_total", refused, "reason=\"per_client\"",
                     stat(&io::HttpServerStats::connections_refused_per_client));
  metrics.counter_fn("chunkd_http_refused_total", refused, "reason=\"budget\"",
                     stat(&io::HttpServerStats::bodies_refused_budget));
  metrics.counter_fn("chunkd_http_evicted_total",
                     "Idle HTTP keep-alive connections closed to make room for a new one.", "",
                     stat(&io::HttpServerStats::connections_evicted));
  metrics.gauge_fn("chunkd_http_buffered_bytes",
                   "Request bodies being buffered plus HTTP responses not yet written.", "",
                   stat(&io::HttpServerStats::buffered_bytes));
  metrics.gauge_fn("chunkd_http_unfinished_heads",
                   "HTTP request heads begun and not yet complete (slow clients, slowloris).", "",
                   stat(&io::HttpServerStats::unfinished_heads));
}

bool Daemon::Impl::start_transport() {
  if (mqtt != nullptr) {
    mqtt->on_failure([this](const io::MqttFailureReport& report) { mqtt_failed(report); });
  }
  if (amqp != nullptr) {
    amqp->on_failure([this](const io::AmqpFailureReport& report) { amqp_failed(report); });
  }
  auto started = transport->start(
      [this](std::string_view topic, std::span<const std::byte> payload,
             Transport::RequestTag tag) {
        if (jobs && jobs->on_message(topic, payload, tag)) return;  // it finishes `tag`
        if (delivery) delivery->on_message(topic, payload, tag);
      },
      [this](bool ready) { transport_ready(ready); });
  if (!started) {
    LOG_ERROR(kTag, "%s: cannot start the connections to %s: %s", transport_name(),
              broker().c_str(), started.error().message().c_str());
    return false;
  }
  if (amqp != nullptr) {
    LOG_INFO(kTag, "amqp: connecting to %s (queue %s, prefetch %u)", broker().c_str(),
             config.cluster.amqp.queue.c_str(), config.cluster.amqp.prefetch);
  } else {
    LOG_INFO(kTag, "mqtt: connecting to %s with %zu connections", config.mqtt.uri.c_str(),
             config.mqtt.connections);
  }
  service.status("connecting to the broker " + broker());
  return true;
}

void Daemon::Impl::transport_ready(bool ready) {
  if (control) control->set_ready(ready);
  if (ready) {
    mqtt_ever_ready = true;
    LOG_INFO(kTag, "%s: connected and subscribed to %s", transport_name(), broker().c_str());
    service.ready("serving: control API on " + config.control.listen + ", broker " + broker());
  } else if (!stopping) {
    service.status("broker connection lost; reconnecting to " + broker());
    LOG_WARN(kTag, "%s: not ready (connection to %s lost); reconnecting", transport_name(),
             broker().c_str());
  }
}

// The policy (README, "Broker TLS, login and ACL"): until the broker has accepted chunkd once, a
// failure that retrying cannot fix (TLS verdicts, refused logins) stops chunkd with one error line
// and a non-zero exit; anything else, and everything after that first session, is retried with
// backoff and logged once per cause (the pool reports each cause once until it is ready again).
void Daemon::Impl::mqtt_failed(const io::MqttFailureReport& report) {
  if (stopping) return;
  if (report.permanent && !mqtt_ever_ready) {
    LOG_ERROR(kTag, "mqtt: %s; exiting (not retried at start-up)", report.message.c_str());
    failed = true;
    shutdown();
    return;
  }
  LOG_WARN(kTag, "mqtt: %s; retrying", report.message.c_str());
}

// The same policy with [amqp]: the client calls a failure permanent only once every URI of
// amqp.uris failed permanently (io/amqp_client.hpp), and reports each cause once per outage.
void Daemon::Impl::amqp_failed(const io::AmqpFailureReport& report) {
  if (stopping) return;
  if (report.permanent && !mqtt_ever_ready) {
    LOG_ERROR(kTag, "amqp: %s; exiting (not retried at start-up)", report.message.c_str());
    failed = true;
    shutdown();
    return;
  }
  LOG_WARN(kTag, "amqp: %s; retrying", report.message.c_str());
}

// chunkd_mqtt_*: MQTT's only. With [amqp] the transport's own chunkd_amqp_* stand for them.
void Daemon::Impl::register_transport_metrics() {
  if (!mqtt) return;
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
  for (std::size_t i = 0; i < io::kMqttFailureCount; ++i) {
    const auto cause = static_cast<io::MqttFailure>(i);
    metrics.counter_fn(
        "chunkd_mqtt_connect_failures_total", "Failed broker connection attempts, by cause.",
        std::string("cause=\"") + io::mqtt_failure_name(cause) + "\"", [this, i] {
          return mqtt ? static_cast<double>(mqtt->mqtt_stats().connect_failures[i]) : 0.0;
        });
  }
}

Daemon::Daemon(Config config, std::string config_path)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(config_path))) {}

Daemon::~Daemon() = default;

void Daemon::stop() { impl_->shutdown(); }

int Daemon::run() {
  Impl& d = *impl_;
  io::set_log_level(d.config.log_level);
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
  d.mqtt = nullptr;
  d.amqp = nullptr;
  d.transport.reset();
  d.control.reset();
  d.content.reset();
  d.store.reset();
  d.registry.reset();
  d.registry_sync.reset();
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
  if (!started || d.failed) return 1;
  LOG_INFO(kTag, "stopped");
  return 0;
}

}  // namespace chunkd::engine

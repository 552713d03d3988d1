// Daemon::Impl: the daemon's parts and the steps that open, reload and close them, shared by
// daemon.cpp (start-up, signals, metrics, run) and daemon_stop.cpp (reload and the phased stop).
// Internal to the daemon; nothing else includes it.
#pragma once

#include <signal.h>
#include <uv.h>

#include <iterator>
#include <memory>
#include <string>

#include "engine/amqp_transport.hpp"
#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/config_reload.hpp"
#include "engine/content_bucket.hpp"
#include "engine/content_store.hpp"
#include "engine/control_service.hpp"
#include "engine/daemon.hpp"
#include "engine/delivery.hpp"
#include "engine/job_runtime.hpp"
#include "engine/metrics.hpp"
#include "engine/mqtt_transport.hpp"
#include "engine/registry_sync.hpp"
#include "engine/stream_health.hpp"
#include "io/file_reader.hpp"
#include "io/http_server.hpp"
#include "io/log.hpp"
#include "io/registry_store.hpp"
#include "io/service_notify.hpp"

namespace chunkd::engine {
namespace daemon_detail {

inline constexpr const char* kTag = "chunkd";
// The signals the daemon handles, in the order of Impl::signals.
inline constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};

}  // namespace daemon_detail

struct Daemon::Impl {
  Impl(Config c, std::string path) : config(std::move(c)), config_path(std::move(path)) {}

  // start() runs these in order; each logs what to change when it fails and returns false.
  bool start();
  bool open_signals();
  bool open_reader();
  bool open_registry();
  bool open_store();
  void start_registry_sync();
  bool open_control();
  bool open_delivery();
  bool open_jobs();
  std::string instance_name() const;
  bool open_http();
  bool start_transport();
  void shutdown();
  void phase_mqtt();
  void phase_storage();
  void phase_handles();
  void transport_ready(bool ready);
  void mqtt_failed(const io::MqttFailureReport& report);
  void amqp_failed(const io::AmqpFailureReport& report);
  void register_transport_metrics();
  const char* transport_name() const { return amqp != nullptr ? "amqp" : "mqtt"; }
  std::string broker() const { return amqp != nullptr ? amqp->uris_text() : config.mqtt.uri; }
  void on_signal(int signum);
  // SIGHUP: load_config on the thread pool (it reads files), then apply_reload on the loop.
  void reload();
  void apply_reload(Expected<Config, std::string> loaded);
  bool apply_live(const Config& merged, const ConfigDiff& diff);
  void register_http_metrics();

  Config config;
  std::string config_path;  // "" when constructed without one: SIGHUP is refused
  uv_loop_t loop{};
  bool loop_open = false;
  SystemClock clock;
  Metrics metrics;
  Catalog catalog;
  std::unique_ptr<io::FileReader> reader;
  std::unique_ptr<io::RegistryStore> registry;
  std::unique_ptr<RegistrySync> registry_sync;  // a shared registry: other instances' changes
  std::unique_ptr<ContentStore> store;
  std::unique_ptr<ContentBucket> content;  // storage.content_bucket; null when unset
  std::unique_ptr<StreamHealth> health;    // data-plane failures: delivery reports, control shows
  std::unique_ptr<ControlService> control;
  std::unique_ptr<Transport> transport;
  MqttTransport* mqtt = nullptr;  // `transport`, for what only MQTT has (null with [amqp])
  AmqpTransport* amqp = nullptr;  // `transport` with [amqp] (null without)
  bool mqtt_ever_ready = false;   // the broker (MQTT or AMQP) accepted chunkd once since start-up
  bool failed = false;            // stopping because of an error: exit non-zero
  std::unique_ptr<Delivery> delivery;
  std::unique_ptr<JobRuntime> jobs;  // null when jobs.enabled is false
  std::unique_ptr<io::HttpServer> http;
  io::ServiceNotifier service;  // sd_notify: READY=1, RELOADING=1, STOPPING=1, STATUS=
  uv_signal_t signals[std::size(daemon_detail::kSignals)]{};
  uv_timer_t watchdog{};
  bool signals_started = false;
  bool stopping = false;
  bool ignored_signal_logged = false;
  // A reload in progress: load_config runs on the pool with `reload_work`; another SIGHUP meanwhile
  // sets `reload_again`, and the file is read once more after it.
  uv_work_t reload_work{};
  Expected<Config, std::string> reloaded = unexpected(std::string());
  bool reloading = false;
  bool reload_again = false;
};

}  // namespace chunkd::engine

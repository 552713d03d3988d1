// Daemon::Impl's reload (SIGHUP) and its phased stop (engine/daemon_internal.hpp).
#include <uv.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "engine/daemon_internal.hpp"

namespace chunkd::engine {
namespace {

using daemon_detail::kTag;

constexpr int kDeliveryStopMs = 5000;
constexpr std::uint64_t kJobsFlushMs = 5000;  // jobs changes not yet durable may be written, jobs
                                              // already started may finish within this
constexpr int kMqttFlushMs = 2000;            // queued replies may be written within this
constexpr int kShutdownWatchdogMs = 30000;    // a stop taking longer than this is a bug: exit(1)

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

void Daemon::Impl::reload() {
  if (stopping) {
    LOG_WARN(kTag, "received SIGHUP: stopping, not reloading");
    return;
  }
  if (config_path.empty()) {
    LOG_WARN(kTag, "received SIGHUP: no config file to reload");
    return;
  }
  if (reloading) {
    reload_again = true;  // read once more after the load in progress
    return;
  }
  LOG_INFO(kTag, "received SIGHUP: reloading %s", config_path.c_str());
  reloading = true;
  reload_work.data = this;
  int rc = uv_queue_work(
      &loop, &reload_work,
      [](uv_work_t* req) {
        auto* self = static_cast<Impl*>(req->data);
        self->reloaded = load_config(self->config_path);  // the loop does not touch it meanwhile
      },
      [](uv_work_t* req, int status) {
        auto* self = static_cast<Impl*>(req->data);
        self->reloading = false;
        auto loaded = std::move(self->reloaded);
        self->reloaded = unexpected(std::string());
        if (status != 0) loaded = unexpected(std::string("the load was cancelled"));
        self->apply_reload(std::move(loaded));
        self->service.reloaded(self->transport && self->transport->ready() ? "serving"
                                                                           : "connecting");
        if (std::exchange(self->reload_again, false)) self->reload();
      });
  if (rc != 0) {
    reloading = false;
    LOG_ERROR(kTag, "reload: cannot queue the config load: %s", uv_strerror(rc));
  } else {
    service.reloading("reloading " + config_path);
  }
}

// Applies what can change live, reports what needs a restart; a bad file changes nothing.
void Daemon::Impl::apply_reload(Expected<Config, std::string> loaded) {
  if (stopping) return;
  if (!loaded) {
    LOG_ERROR(kTag, "reload refused, the running config stays: %s", loaded.error().c_str());
    return;
  }
  for (const std::string& warning : loaded->warnings) {
    LOG_WARN(kTag, "config: %s", warning.c_str());
  }
  const ConfigDiff diff = diff_config(config, *loaded);
  Config merged = merge_live(config, *loaded);
  if (auto problem = reload_problem(merged)) {
    LOG_ERROR(kTag, "reload refused, the running config stays: %s", problem->c_str());
    return;
  }
  if (!apply_live(merged, diff)) return;
  config = std::move(merged);
  // Written whatever the (new) level: the operator asked for this answer.
  io::log(io::LogLevel::Info, kTag, "reload: %s", describe(diff).c_str());
}

// The setters, the one that can fail first. False (logged) when nothing was changed.
bool Daemon::Impl::apply_live(const Config& merged, const ConfigDiff& diff) {
  if (control && diff.buckets_changed()) {
    if (auto set = control->set_buckets(merged.control.service.buckets); !set) {
      LOG_ERROR(kTag, "reload refused, the running config stays: %s",
                set.error().message().c_str());
      return false;
    }
  }
  if (control) control->set_s3_buckets(merged.control.service.s3_buckets);
  if (content) {
    // storage.content_bucket itself needs a restart; its entry's settings apply live.
    const auto& s3 = merged.control.service.s3_buckets;
    auto entry = s3.find(merged.cluster.content_bucket);
    if (entry != s3.end()) {
      content->set_remote(entry->second.remote);
    } else {
      LOG_WARN(kTag,
               "reload: [buckets.%s] is gone; the content bucket keeps its settings until "
               "a restart",
               merged.cluster.content_bucket.c_str());
    }
  }
  if (control) control->set_token(merged.control.service.token);
  if (delivery) delivery->set_limits(merged.delivery.scheduler);
  io::set_log_level(merged.log_level);
  if (merged.control.service.token.empty() && !config.control.service.token.empty()) {
    LOG_WARN(kTag, "control: no token any more: every client may change streams");
  }
  return true;
}

// Phase 1: stop taking work (HTTP, control, ingests) and let delivery finish started jobs.
void Daemon::Impl::shutdown() {
  if (stopping) return;
  stopping = true;
  service.stopping("stopping");
  uv_timer_init(&loop, &watchdog);
  uv_timer_start(
      &watchdog,
      [](uv_timer_t*) {
        LOG_ERROR(kTag, "shutdown did not finish within %d ms: exiting", kShutdownWatchdogMs);
        std::_Exit(1);
      },
      kShutdownWatchdogMs, 0);
  uv_unref(reinterpret_cast<uv_handle_t*>(&watchdog));

  std::size_t parts = (http ? 1u : 0u) + (control ? 1u : 0u) + (store ? 1u : 0u) +
                      (delivery ? 1u : 0u) + (jobs ? 1u : 0u) + (content ? 1u : 0u);
  auto next = barrier(parts, [this] { phase_mqtt(); });
  if (control) control->set_jobs(nullptr);
  if (jobs) jobs->close(kJobsFlushMs, next);
  if (http) http->close(next);
  if (control) control->close(next);
  if (store) store->close(next);
  if (content) content->close(next);  // fails uploads (their creates) and fills in progress
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
    for (uv_signal_t& s : signals) uv_close(reinterpret_cast<uv_handle_t*>(&s), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
}
}  // namespace chunkd::engine

// chunkload: a fleet of simulated devices downloading a chunkd stream over MQTT (the device side
// of SPEC.md §1), verifying every file against the digests of the control API and reporting
// throughput and latency; with --ota, devices running the OTA agent's job flow. Usage and output:
// docs/chunkload.md. main() only wires.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>

#include "tools/chunkload/device.hpp"
#include "tools/chunkload/fleet.hpp"
#include "tools/chunkload/latency.hpp"
#include "tools/chunkload/options.hpp"
#include "tools/chunkload/ota_device.hpp"
#include "tools/chunkload/ota_signature.hpp"
#include "tools/chunkload/raw_fleet.hpp"
#include "tools/chunkload/report.hpp"
#include "tools/chunkload/stream_info.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kControlTimeoutMs = 10000;

std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_signal(int /*signo*/) { g_stop.store(true); }

// Each MQTT connection is a socket: raise the soft open-file limit to the hard one, and refuse to
// start (rather than fail devices one by one on EMFILE) when even that is too low.
constexpr std::uint64_t kSpareFds = 64;  // stdio, the control API, epoll, paho's pipes, ...

bool ensure_fd_limit(const chunkd::chunkload::Options& o) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return true;  // cannot tell: let connects say
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  const std::uint64_t sockets = o.connections == 0 ? o.devices : o.connections;
  const std::uint64_t need = sockets + kSpareFds;
  if (lim.rlim_cur == RLIM_INFINITY || need <= lim.rlim_cur) return true;
  const std::uint64_t have = lim.rlim_cur;
  std::fprintf(
      stderr,
      "chunkload: %llu connection(s) need %llu file descriptors, but the open-file limit "
      "is %llu (hard limit %llu);\n  raise it (ulimit -n, as root or in "
      "/etc/security/limits.conf) or share connections: --connections %llu\n",
      static_cast<unsigned long long>(sockets), static_cast<unsigned long long>(need),
      static_cast<unsigned long long>(have), static_cast<unsigned long long>(lim.rlim_max),
      static_cast<unsigned long long>(have > kSpareFds ? std::min(sockets, have - kSpareFds) : 1));
  return false;
}

chunkd::chunkload::OtaConfig ota_config(const chunkd::chunkload::Options& o,
                                        const chunkd::chunkload::SigningKey* key) {
  chunkd::chunkload::OtaConfig c;
  c.topic_prefix = o.topic_prefix;
  c.format = o.format;
  c.data_qos = o.qos;
  c.block_size_bytes = o.block_size_bytes;
  c.key = key;
  c.reboot = std::chrono::milliseconds(o.ota_reboot_ms);
  c.fail_percent = o.fail_percent;
  c.version = std::string("chunkload ") + CHUNKD_VERSION;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace chunkd::chunkload;
  auto parsed = parse_options(argc, argv);
  if (!parsed) {
    std::fprintf(stderr, "chunkload: %s\n(chunkload --help lists the options)\n",
                 parsed.error().c_str());
    return kExitUsage;
  }
  if (parsed->status == ParseStatus::Help) {
    std::fputs(usage_text(), stdout);
    return kExitOk;
  }
  const Options& options = parsed->options;

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  if (!ensure_fd_limit(options)) return kExitFailed;

  LatencyHistogram latency;
  std::atomic<std::uint64_t> bytes_stored{0};
  DeviceConfig config;
  config.format = options.format;
  config.block_size_bytes = options.block_size_bytes;
  config.blocks_per_request = options.blocks_per_request;
  config.in_flight = options.in_flight;
  config.mode = options.mode;
  config.files = options.files;
  config.timeout = std::chrono::milliseconds(options.timeout_ms);
  config.max_retries = options.max_retries;
  config.verify = options.verify;
  config.describe = options.describe;
  config.client_token_prefix = options.client_token_prefix;
  config.latency = &latency;
  config.bytes_stored = &bytes_stored;

  OtaConfig ota;
  std::optional<SigningKey> key;
  if (options.ota) {
    auto loaded = SigningKey::from_certificate_file(options.ota_cert);
    if (!loaded) {
      std::fprintf(stderr, "chunkload: --ota-cert: %s\n", loaded.error().c_str());
      return kExitUsage;
    }
    key = std::move(*loaded);
    ota = ota_config(options, &*key);
  } else if (options.verify || !options.describe) {
    auto info =
        fetch_stream_info(options.control_url, options.token, options.stream_id, kControlTimeoutMs);
    if (!info) {
      std::fprintf(stderr, "chunkload: cannot read stream %s: %s\n%s\n", options.stream_id.c_str(),
                   info.error().c_str(),
                   options.describe ? "(--no-verify downloads without verifying digests)"
                                    : "(--no-describe needs the control API for the sizes)");
      return kExitFailed;
    }
    config.control = std::move(*info);
  }

  ProgressLine progress(!options.quiet && ::isatty(STDERR_FILENO) == 1, options.devices);
  chunkd::Expected<RunResult, std::string> run = chunkd::unexpected<std::string>("no engine");
  if (options.engine == Engine::Raw) {
    RawFleet fleet(options, config);
    run = fleet.run(g_stop, progress);
  } else {
    Fleet fleet(options, config, options.ota ? &ota : nullptr);
    run = fleet.run(g_stop, progress);
  }
  if (!run) {
    std::fprintf(stderr, "chunkload: %s\n", run.error().c_str());
    return kExitUsage;
  }
  const std::string report = options.json ? report_json(options, *run) : report_text(options, *run);
  std::fputs(report.c_str(), stdout);
  std::fflush(stdout);

  for (const DeviceOutcome& d : run->devices) {
    if (d.state != DeviceState::Done) return kExitFailed;
  }
  return kExitOk;
}

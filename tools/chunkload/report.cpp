#include "tools/chunkload/report.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cinttypes>
#include <cstdarg>

#include "protocol/control.hpp"
#include "tools/chunkload/ota_report.hpp"

namespace chunkd::chunkload {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;
constexpr std::size_t kMaxFailuresJson = 100;
constexpr std::size_t kMaxFailuresText = 10;

struct Totals {
  std::uint32_t done = 0;
  std::uint32_t failed = 0;
  DeviceStats sum;
  std::vector<const DeviceOutcome*> failures;
};

Totals total(const RunResult& run) {
  Totals t;
  for (const DeviceOutcome& d : run.devices) {
    if (d.state == DeviceState::Done) {
      ++t.done;
    } else {
      ++t.failed;
      t.failures.push_back(&d);
    }
    const DeviceStats& s = d.stats;
    t.sum.bytes += s.bytes;
    t.sum.blocks += s.blocks;
    t.sum.files_done += s.files_done;
    t.sum.requests += s.requests;
    t.sum.re_requests += s.re_requests;
    t.sum.throttle_retries += s.throttle_retries;
    t.sum.duplicates += s.duplicates;
    t.sum.out_of_range += s.out_of_range;
    t.sum.bad_length += s.bad_length;
    t.sum.stray += s.stray;
    t.sum.unsolicited += s.unsolicited;
    t.sum.decode_errors += s.decode_errors;
    t.sum.send_errors += s.send_errors;
    for (std::size_t k = 0; k < kRejectionKinds; ++k) t.sum.rejections[k] += s.rejections[k];
  }
  return t;
}

double rate(double amount, double seconds) { return seconds > 0 ? amount / seconds : 0.0; }

double device_seconds(const DeviceStats& s) {
  if (!s.first_request || !s.finished) return 0;
  return std::chrono::duration<double>(*s.finished - *s.first_request).count();
}

[[gnu::format(printf, 1, 2)]] std::string fmt(const char* format, ...) {
  std::array<char, 64> buf{};
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf.data(), buf.size(), format, args);
  va_end(args);
  return buf.data();
}

const char* mode_name(Mode m) { return m == Mode::Window ? "window" : "bitmap"; }

struct Counter {
  const char* name;
  std::uint64_t value;
};
std::vector<Counter> anomalies(const Totals& t, const RunResult& run) {
  return {{"out_of_range", t.sum.out_of_range},
          {"bad_length", t.sum.bad_length},
          {"stray", t.sum.stray},
          {"unsolicited", t.sum.unsolicited},
          {"decode_errors", t.sum.decode_errors},
          {"send_errors", t.sum.send_errors},
          {"unroutable", run.unroutable}};
}

}  // namespace

std::string report_json(const Options& options, const RunResult& run) {
  const Totals t = total(run);
  std::string out = "{";
  auto key = [&out](const char* k) {
    if (out.size() > 1) out += ',';
    out += '"';
    out += k;
    out += "\":";
  };
  auto num = [&](const char* k, std::uint64_t v) {
    key(k);
    out += std::to_string(v);
  };
  auto real = [&](const char* k, double v) {
    key(k);
    out += fmt("%.3f", v);
  };
  auto str = [&](const char* k, std::string_view v) {
    key(k);
    protocol::append_json_string(out, v);
  };

  str("stream", options.ota ? std::string_view("(from each job)") : options.stream_id);
  str("format", protocol::to_string(options.format));
  str("mode", mode_name(options.mode));
  num("block_size_bytes", options.block_size_bytes);
  num("blocks_per_request", options.blocks_per_request);
  num("in_flight", options.in_flight);
  num("connections", options.connections);
  str("engine", engine_name(options.engine));
  num("devices", run.devices.size());
  num("devices_done", t.done);
  num("devices_failed", t.failed);
  num("files_done", t.sum.files_done);
  num("bytes", t.sum.bytes);
  num("blocks", t.sum.blocks);
  real("wall_seconds", run.wall_seconds);
  real("mib_per_s", rate(static_cast<double>(t.sum.bytes) / kMiB, run.wall_seconds));
  real("blocks_per_s", rate(static_cast<double>(t.sum.blocks), run.wall_seconds));
  key("latency_ms");
  out += "{\"requests\":" + std::to_string(run.latency.count) +
         ",\"p50\":" + fmt("%.3f", run.latency.p50_ms) +
         ",\"p99\":" + fmt("%.3f", run.latency.p99_ms) +
         ",\"max\":" + fmt("%.3f", run.latency.max_ms) + "}";
  num("requests", t.sum.requests);
  num("re_requests", t.sum.re_requests);
  num("throttle_retries", t.sum.throttle_retries);
  num("duplicates", t.sum.duplicates);
  for (const Counter& c : anomalies(t, run)) num(c.name, c.value);
  key("rejections");
  out += '{';
  bool first = true;
  for (std::size_t k = 0; k < kRejectionKinds; ++k) {
    if (t.sum.rejections[k] == 0) continue;
    if (!first) out += ',';
    first = false;
    protocol::append_json_string(out, rejection_name(k));
    out += ':' + std::to_string(t.sum.rejections[k]);
  }
  out += '}';
  key("stopped");
  if (run.stopped.empty()) {
    out += "null";
  } else {
    protocol::append_json_string(out, run.stopped);
  }
  key("failures");
  out += '[';
  for (std::size_t i = 0; i < t.failures.size() && i < kMaxFailuresJson; ++i) {
    if (i > 0) out += ',';
    out += "{\"thing\":";
    protocol::append_json_string(out, t.failures[i]->thing);
    out += ",\"reason\":";
    protocol::append_json_string(out, t.failures[i]->failure);
    out += '}';
  }
  out += ']';
  num("failures_omitted",
      t.failures.size() > kMaxFailuresJson ? t.failures.size() - kMaxFailuresJson : 0);
  if (options.ota) {
    out += ',';
    out += ota_report_json(run);
  }
  if (run.devices.size() == 1) {
    const DeviceOutcome& d = run.devices.front();
    const double secs = device_seconds(d.stats);
    key("per_device");
    out += "[{\"thing\":";
    protocol::append_json_string(out, d.thing);
    out += ",\"bytes\":" + std::to_string(d.stats.bytes) + ",\"seconds\":" + fmt("%.3f", secs) +
           ",\"mib_per_s\":" + fmt("%.3f", rate(static_cast<double>(d.stats.bytes) / kMiB, secs)) +
           "}]";
  }
  out += "}\n";
  return out;
}

std::string report_text(const Options& options, const RunResult& run) {
  const Totals t = total(run);
  std::string out;
  auto line = [&out](const char* label, const std::string& text) {
    std::array<char, 16> buf{};
    std::snprintf(buf.data(), buf.size(), "%-12s", label);
    out += buf.data();
    out += text;
    out += '\n';
  };
  const std::string n = options.blocks_per_request == 0
                            ? std::string("auto")
                            : std::to_string(options.blocks_per_request);
  const std::string conns = options.connections == 0
                                ? std::string("one connection per device")
                                : std::to_string(options.connections) + " shared connection(s)";
  line("stream", (options.ota ? std::string("(from each job)") : options.stream_id) + " (" +
                     std::string(protocol::to_string(options.format)) + ", " +
                     mode_name(options.mode) + ", l=" + std::to_string(options.block_size_bytes) +
                     ", n=" + n + ", in-flight " + std::to_string(options.in_flight) + ", " +
                     conns + ", " + engine_name(options.engine) + " engine)");
  line("devices", std::to_string(t.done) + " done, " + std::to_string(t.failed) + " failed (of " +
                      std::to_string(run.devices.size()) + ")" +
                      (run.stopped.empty() ? "" : "; stopped: " + run.stopped));
  line("transferred", fmt("%.2f MiB", static_cast<double>(t.sum.bytes) / kMiB) + " in " +
                          std::to_string(t.sum.blocks) + " blocks, " +
                          std::to_string(t.sum.files_done) + " file(s) completed");
  line("wall time", fmt("%.3f s", run.wall_seconds));
  line("throughput",
       fmt("%.2f MiB/s", rate(static_cast<double>(t.sum.bytes) / kMiB, run.wall_seconds)) + ", " +
           fmt("%.0f blocks/s", rate(static_cast<double>(t.sum.blocks), run.wall_seconds)));
  line("latency", fmt("p50 %.2f ms", run.latency.p50_ms) +
                      fmt(", p99 %.2f ms", run.latency.p99_ms) +
                      fmt(", max %.2f ms", run.latency.max_ms) + " (" +
                      std::to_string(run.latency.count) + " requests)");
  line("requests", std::to_string(t.sum.requests) + " sent, " + std::to_string(t.sum.re_requests) +
                       " re-requests, " + std::to_string(t.sum.throttle_retries) +
                       " throttle retries, " + std::to_string(t.sum.duplicates) +
                       " duplicate blocks");
  std::string rej;
  for (std::size_t k = 0; k < kRejectionKinds; ++k) {
    if (t.sum.rejections[k] == 0) continue;
    if (!rej.empty()) rej += ", ";
    rej += std::string(rejection_name(k)) + " " + std::to_string(t.sum.rejections[k]);
  }
  line("rejections", rej.empty() ? "none" : rej);
  std::string odd;
  for (const Counter& c : anomalies(t, run)) {
    if (c.value == 0) continue;
    if (!odd.empty()) odd += ", ";
    odd += std::string(c.name) + " " + std::to_string(c.value);
  }
  line("anomalies", odd.empty() ? "none" : odd);
  if (options.ota) out += ota_report_text(run);
  if (run.devices.size() == 1) {
    const DeviceOutcome& d = run.devices.front();
    const double secs = device_seconds(d.stats);
    line("device", d.thing +
                       fmt(": %.2f MiB/s", rate(static_cast<double>(d.stats.bytes) / kMiB, secs)) +
                       fmt(" over %.3f s", secs));
  }
  for (std::size_t i = 0; i < t.failures.size() && i < kMaxFailuresText; ++i) {
    line("failed", t.failures[i]->thing + ": " + t.failures[i]->failure);
  }
  if (t.failures.size() > kMaxFailuresText) {
    line("failed", "... and " + std::to_string(t.failures.size() - kMaxFailuresText) + " more");
  }
  return out;
}

void ProgressLine::update(std::uint32_t done, std::uint32_t failed, std::uint64_t bytes,
                          TimePoint now) {
  if (!enabled_) return;
  samples_.emplace_back(now, bytes);
  while (samples_.size() > 2 && now - samples_.front().first > std::chrono::seconds(1)) {
    samples_.pop_front();
  }
  double mibps = 0;
  if (samples_.size() >= 2) {
    const double secs =
        std::chrono::duration<double>(samples_.back().first - samples_.front().first).count();
    mibps =
        rate(static_cast<double>(samples_.back().second - samples_.front().second) / kMiB, secs);
  }
  constexpr int kWidth = 24;
  const int filled =
      devices_ == 0 ? 0 : static_cast<int>(std::uint64_t{done + failed} * kWidth / devices_);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r[%s] %u/%u devices done, %u failed  %.1f MiB  %.1f MiB/s\033[K",
               bar.c_str(), done, devices_, failed, static_cast<double>(bytes) / kMiB, mibps);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressLine::clear() {
  if (!drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace chunkd::chunkload

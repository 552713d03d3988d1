// The end-of-run report (human text or JSON with the same fields; docs/chunkload.md lists them)
// and the live progress line on stderr. Main thread only.
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "tools/chunkload/device.hpp"
#include "tools/chunkload/latency.hpp"
#include "tools/chunkload/options.hpp"
#include "tools/chunkload/ota_device.hpp"

namespace chunkd::chunkload {

struct DeviceOutcome {
  std::string thing;
  DeviceState state = DeviceState::Waiting;
  std::string failure;
  DeviceStats stats;
  std::optional<OtaStats> ota;  // --ota
};

struct RunResult {
  std::vector<DeviceOutcome> devices;
  double wall_seconds = 0;  // first connect → last device done or failed
  LatencyHistogram::Summary latency;
  std::uint64_t unroutable = 0;  // messages on topics that name no device of this run
  std::string stopped;           // "", "max-seconds" or "interrupted"
};

std::string report_json(const Options& options, const RunResult& run);
std::string report_text(const Options& options, const RunResult& run);

// A one-line progress display redrawn in place on stderr (a terminal). Disabled: does nothing.
class ProgressLine {
 public:
  ProgressLine(bool enabled, std::uint32_t devices) : enabled_(enabled), devices_(devices) {}
  void update(std::uint32_t done, std::uint32_t failed, std::uint64_t bytes, TimePoint now);
  void clear();  // erases the line before the report is printed

 private:
  bool enabled_;
  std::uint32_t devices_;
  bool drawn_ = false;
  std::deque<std::pair<TimePoint, std::uint64_t>> samples_;  // the last second or so
};

}  // namespace chunkd::chunkload

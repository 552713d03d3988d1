#include "tools/chunkload/ota_report.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <vector>

namespace chunkd::chunkload {
namespace {

struct Times {
  std::vector<double> seconds;
  double p50() const { return seconds.empty() ? 0 : seconds[seconds.size() / 2]; }
  double max() const { return seconds.empty() ? 0 : seconds.back(); }
};

struct Summary {
  std::array<std::uint64_t, 6> outcomes{};  // by OtaOutcome
  std::uint64_t simulated = 0;
  std::uint64_t updates = 0;
  std::uint64_t notifies = 0;
  std::uint64_t bad_notifies = 0;
  Times to_job, to_download, to_outcome;
};

void add(Times& t, const std::optional<TimePoint>& from, const std::optional<TimePoint>& to) {
  if (from && to) t.seconds.push_back(std::chrono::duration<double>(*to - *from).count());
}

Summary summarize(const RunResult& run) {
  Summary s;
  for (const DeviceOutcome& d : run.devices) {
    if (!d.ota) continue;
    const OtaStats& o = *d.ota;
    ++s.outcomes[static_cast<std::size_t>(o.outcome)];
    if (o.simulated) ++s.simulated;
    s.updates += o.updates;
    s.notifies += o.notifies;
    s.bad_notifies += o.bad_notifies;
    add(s.to_job, o.started, o.job);
    add(s.to_download, o.started, o.downloaded);
    add(s.to_outcome, o.started, o.reported);
  }
  for (Times* t : {&s.to_job, &s.to_download, &s.to_outcome}) {
    std::sort(t->seconds.begin(), t->seconds.end());
  }
  return s;
}

std::uint64_t count(const Summary& s, OtaOutcome o) {
  return s.outcomes[static_cast<std::size_t>(o)];
}

std::string seconds(double v) {
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%.3f", v);
  return buf.data();
}

std::string times_json(const Times& t) {
  return "{\"devices\":" + std::to_string(t.seconds.size()) + ",\"p50\":" + seconds(t.p50()) +
         ",\"max\":" + seconds(t.max()) + "}";
}

std::string times_text(const Times& t) {
  if (t.seconds.empty()) return "no device got there";
  return "p50 " + seconds(t.p50()) + " s, max " + seconds(t.max()) + " s (" +
         std::to_string(t.seconds.size()) + " devices)";
}

}  // namespace

std::string ota_report_json(const RunResult& run) {
  const Summary s = summarize(run);
  std::string out = "\"ota\":{";
  for (OtaOutcome o : {OtaOutcome::Succeeded, OtaOutcome::Failed, OtaOutcome::Rejected,
                       OtaOutcome::TimedOut, OtaOutcome::Error}) {
    out += "\"" + std::string(to_string(o)) + "\":" + std::to_string(count(s, o)) + ",";
  }
  out += "\"simulated_failures\":" + std::to_string(s.simulated) +
         ",\"updates\":" + std::to_string(s.updates) +
         ",\"notifies\":" + std::to_string(s.notifies) +
         ",\"bad_notifies\":" + std::to_string(s.bad_notifies) +
         ",\"time_to_job_s\":" + times_json(s.to_job) +
         ",\"time_to_download_s\":" + times_json(s.to_download) +
         ",\"time_to_outcome_s\":" + times_json(s.to_outcome) + "}";
  return out;
}

std::string ota_report_text(const RunResult& run) {
  const Summary s = summarize(run);
  std::string out;
  auto line = [&out](const char* label, const std::string& text) {
    std::array<char, 16> buf{};
    std::snprintf(buf.data(), buf.size(), "%-12s", label);
    out += buf.data();
    out += text;
    out += '\n';
  };
  line("ota", std::to_string(count(s, OtaOutcome::Succeeded)) + " succeeded, " +
                  std::to_string(count(s, OtaOutcome::Failed)) + " failed (" +
                  std::to_string(s.simulated) + " simulated), " +
                  std::to_string(count(s, OtaOutcome::Rejected)) + " rejected, " +
                  std::to_string(count(s, OtaOutcome::TimedOut)) + " timed out, " +
                  std::to_string(count(s, OtaOutcome::Error)) + " errors");
  line("jobs", std::to_string(s.updates) + " updates sent, " + std::to_string(s.notifies) +
                   " notify-next received (" + std::to_string(s.bad_notifies) + " unreadable)");
  line("to job", times_text(s.to_job));
  line("to download", times_text(s.to_download));
  line("to outcome", times_text(s.to_outcome));
  return out;
}

}  // namespace chunkd::chunkload

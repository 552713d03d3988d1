// chunkctl job watch: polls GET /jobs/{id} (and, on a terminal, the IN_PROGRESS executions of
// GET /jobs/{id}/things) every --interval-ms until the job is finished.
//
// On a terminal (stdout) the view is redrawn in place: a bar per execution status over every
// thing the job reached (waiting + released), then one line per device in progress with its
// `receive` details ("N/M", what the OTA agent reports) as a bar, as many as fit (at most 20) and
// a line for the rest. Otherwise (a pipe, a log) one line per change of the status or the counts;
// with --json the describe data object instead, one per line. Both end with the outcome line.
// A poll that fails after the first is retried (chunkd restarting is no reason to stop watching).
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <string_view>
#include <thread>

#include "tools/chunkctl/job.hpp"

namespace chunkctl {
namespace {

constexpr int kBarWidth = 30;
constexpr std::size_t kMaxDeviceLines = 20;
constexpr int kPollTimeoutMs = 10000;

struct Kind {
  const char* label;  // on the terminal
  const char* text;   // in counts_text
  const char* key;    // in jobProcessDetails
};
constexpr std::array<Kind, JobCounts::kKinds> kKinds = {{
    {"WAITING", "waiting", "numberOfWaitingThings"},
    {"QUEUED", "queued", "numberOfQueuedThings"},
    {"IN_PROGRESS", "in progress", "numberOfInProgressThings"},
    {"SUCCEEDED", "succeeded", "numberOfSucceededThings"},
    {"FAILED", "failed", "numberOfFailedThings"},
    {"REJECTED", "rejected", "numberOfRejectedThings"},
    {"TIMED_OUT", "timed out", "numberOfTimedOutThings"},
    {"CANCELED", "canceled", "numberOfCanceledThings"},
    {"REMOVED", "removed", "numberOfRemovedThings"},
}};
constexpr std::size_t kRemoved = 8;

std::string bar(std::uint64_t done, std::uint64_t total) {
  int filled = total == 0 ? 0 : static_cast<int>(std::min(done, total) * kBarWidth / total);
  return "[" + std::string(static_cast<std::size_t>(filled), '#') +
         std::string(static_cast<std::size_t>(kBarWidth - filled), '.') + "]";
}

// "N/M" with 0 <= N <= M, M > 0.
std::optional<std::pair<std::uint64_t, std::uint64_t>> fraction(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size()) return {};
  std::uint64_t parts[2] = {0, 0};
  std::string_view halves[2] = {text.substr(0, slash), text.substr(slash + 1)};
  for (int i = 0; i < 2; ++i) {
    if (halves[i].size() > 12) return {};
    for (char c : halves[i]) {
      if (c < '0' || c > '9') return {};
      parts[i] = parts[i] * 10 + static_cast<std::uint64_t>(c - '0');
    }
  }
  if (parts[1] == 0 || parts[0] > parts[1]) return {};
  return std::make_pair(parts[0], parts[1]);
}

std::string device_line(simdjson::dom::element e) {
  char name[40];
  std::snprintf(name, sizeof name, "  %-32.32s ", str(e, "thingName").c_str());
  simdjson::dom::element details;
  std::string_view receive;
  if (e.at_pointer("/statusDetails/receive").get(receive) == simdjson::SUCCESS) {
    if (auto f = fraction(receive))
      return name + bar(f->first, f->second) + " " + std::string(receive);
  }
  std::string text;
  simdjson::dom::object o;
  if (e["statusDetails"].get(o) == simdjson::SUCCESS) {
    for (auto [k, v] : o) {
      text += text.empty() ? "" : " ";
      text +=
          std::string(k) + "=" + (v.is_string() ? std::string(v.get_string().value_unsafe()) : "");
    }
  }
  return name + (text.empty() ? "started" : text);
}

std::string outcome_line(const std::string& id, simdjson::dom::element job, const JobCounts& c,
                         const std::string& status) {
  std::uint64_t released = c.total() - c.n[JobCounts::kWaiting];
  std::string line = "job " + id + " " + status;
  std::string why = str(job, "reasonCode") == status ? "" : str(job, "reasonCode");
  if (!str(job, "comment").empty()) why += (why.empty() ? "" : ": ") + str(job, "comment");
  if (!why.empty()) line += " (" + why + ")";
  line += ": " + std::to_string(c.n[JobCounts::kSucceeded]) + " of " + std::to_string(released) +
          " succeeded";
  for (std::size_t k = JobCounts::kQueued; k < JobCounts::kKinds; ++k) {
    if (k == JobCounts::kSucceeded || c.n[k] == 0) continue;
    line += ", " + std::to_string(c.n[k]) + " " + kKinds[k].text;
  }
  return line;
}

struct Screen {
  int rows = 24, cols = 80;
  std::size_t drawn = 0;  // lines of the last frame

  void measure() {
    winsize ws{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
      rows = ws.ws_row, cols = ws.ws_col;
    }
  }
  void draw(const std::vector<std::string>& lines) {
    std::string out;
    if (drawn > 0) out += "\033[" + std::to_string(drawn) + "A\r\033[J";
    for (const std::string& l : lines) {
      out += l.substr(0, static_cast<std::size_t>(std::max(cols - 1, 10)));
      out += '\n';
    }
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
    drawn = lines.size();
  }
};

std::vector<std::string> frame(const JobArgs& a, const std::string& status, const JobCounts& c,
                               const Answer* devices, std::size_t device_lines) {
  std::vector<std::string> lines;
  lines.push_back("job " + a.id + "  " + status + "  " + std::to_string(c.total()) + " things");
  for (std::size_t k = 0; k < JobCounts::kKinds; ++k) {
    if (k == kRemoved && c.n[k] == 0) continue;
    char line[96];
    std::snprintf(line, sizeof line, "  %-12s %s %6llu/%llu", kKinds[k].label,
                  bar(c.n[k], c.total()).c_str(), static_cast<unsigned long long>(c.n[k]),
                  static_cast<unsigned long long>(c.total()));
    lines.emplace_back(line);
  }
  std::uint64_t in_progress = c.n[JobCounts::kInProgress];
  if (in_progress == 0 || devices == nullptr) return lines;
  lines.push_back("devices in progress:");
  std::size_t shown = 0;
  simdjson::dom::array rows;
  if (devices->data["executions"].get(rows) == simdjson::SUCCESS) {
    for (auto e : rows) {
      if (shown == device_lines) break;
      lines.push_back(device_line(e));
      ++shown;
    }
  }
  if (in_progress > shown)
    lines.push_back("  ... and " + std::to_string(in_progress - shown) + " more");
  return lines;
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

std::uint64_t JobCounts::total() const {
  std::uint64_t sum = 0;
  for (auto v : n) sum += v;
  return sum;
}

std::optional<JobCounts> job_counts(simdjson::dom::element data) {
  simdjson::dom::element details;
  if (data["jobProcessDetails"].get(details) != simdjson::SUCCESS) return {};
  JobCounts c;
  for (std::size_t k = 0; k < JobCounts::kKinds; ++k) {
    std::uint64_t v = 0;
    // An older chunkd has no numberOfWaitingThings: 0.
    if (details[kKinds[k].key].get(v) != simdjson::SUCCESS && k != JobCounts::kWaiting) return {};
    c.n[k] = v;
  }
  return c;
}

std::string counts_text(const JobCounts& c) {
  std::string out = std::to_string(c.total()) + " things:";
  for (std::size_t k = 0; k < JobCounts::kKinds; ++k) {
    if (k == kRemoved && c.n[k] == 0) continue;
    out += (k == 0 ? " " : ", ") + std::string(kKinds[k].text) + " " + std::to_string(c.n[k]);
  }
  return out;
}

int job_watch(const Client& client, const JobArgs& a) {
  const std::string path = "/jobs/" + chunkd::tools::url_encode(a.id);
  const bool terminal = !a.g.json && ::isatty(STDOUT_FILENO) == 1;
  const int timeout_ms = std::min(a.g.timeout_ms, kPollTimeoutMs);
  Screen screen;
  std::string last;  // the last line printed (not on a terminal)
  bool polled = false, reachable = true;
  for (;; std::this_thread::sleep_for(std::chrono::milliseconds(a.interval_ms))) {
    simdjson::dom::parser job_parser, things_parser;
    Answer job = client.call("GET", path, "", job_parser, timeout_ms);
    if (job.exit == kExitUsage && polled) {  // chunkd restarting, a network blip: try again
      if (reachable) std::fputs(job.message.c_str(), stderr);
      if (terminal) screen.drawn = 0;  // the message moved the cursor: draw below it
      reachable = false;
      continue;
    }
    if (job.exit != kExitOk) return report(job);
    polled = reachable = true;
    const std::string status = str(job.data, "status");
    auto counts = job_counts(job.data);
    if (!counts) {
      std::fputs("chunkctl: the job's answer has no jobProcessDetails\n", stderr);
      return kExitUsage;
    }
    const bool finished = status != "IN_PROGRESS";
    if (terminal) {
      screen.measure();
      std::size_t fit = static_cast<std::size_t>(std::max(screen.rows - 14, 1));
      std::size_t device_lines = std::min(kMaxDeviceLines, fit);
      Answer devices;
      bool have_devices = false;
      if (counts->n[JobCounts::kInProgress] > 0) {
        devices = client.call(
            "GET", path + "/things?status=IN_PROGRESS&maxResults=" + std::to_string(device_lines),
            "", things_parser, timeout_ms);
        have_devices = devices.exit == kExitOk;
      }
      screen.draw(frame(a, status, *counts, have_devices ? &devices : nullptr, device_lines));
    } else {
      std::string line =
          a.g.json ? simdjson::minify(job.data) : status + " " + counts_text(*counts);
      if (line != last) {
        std::printf("%s%s\n", a.g.json ? "" : (now_utc() + " job " + a.id + " ").c_str(),
                    line.c_str());
        std::fflush(stdout);
        last = line;
      }
    }
    if (finished) {
      if (!a.g.json) std::printf("%s\n", outcome_line(a.id, job.data, *counts, status).c_str());
      bool all_succeeded = counts->n[JobCounts::kSucceeded] == counts->total();
      return status == "COMPLETED" && all_succeeded ? kExitOk : kExitRefused;
    }
    if (a.once) return kExitOk;
  }
}

}  // namespace chunkctl

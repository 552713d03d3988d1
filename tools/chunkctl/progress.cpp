#include "tools/chunkctl/progress.hpp"

#include <simdjson.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>

namespace chunkctl {
namespace {

constexpr int kBarWidth = 30;
constexpr int kPollTimeoutMs = 2000;

std::string mib(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

std::string progress_line(const std::string& describe_body) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(describe_body).get(root) != simdjson::SUCCESS) return "";
  simdjson::dom::element p;
  if (root.at_pointer("/data/progress").get(p) != simdjson::SUCCESS) return "";
  std::uint64_t file = 0, files = 0, done = 0, total = 0;
  if (p["file"].get(file) != simdjson::SUCCESS || p["files"].get(files) != simdjson::SUCCESS ||
      p["bytesDone"].get(done) != simdjson::SUCCESS ||
      p["bytesTotal"].get(total) != simdjson::SUCCESS) {
    return "";
  }
  std::string line = "file " + std::to_string(file + 1) + "/" + std::to_string(files) + " [";
  int filled = total == 0 ? 0 : static_cast<int>(std::min(done, total) * kBarWidth / total);
  line.append(static_cast<std::size_t>(filled), '#');
  line.append(static_cast<std::size_t>(kBarWidth - filled), '.');
  line += "] " + mib(done) + (total == 0 ? std::string(" MiB") : " / " + mib(total) + " MiB");
  return line;
}

chunkd::Expected<chunkd::tools::Response, std::string> with_progress(
    const chunkd::tools::Url& url, const std::string& stream_path,
    const std::vector<std::pair<std::string, std::string>>& headers, const Request& request) {
  if (::isatty(STDERR_FILENO) != 1) return request();
  std::mutex mu;
  std::condition_variable cv;
  std::optional<chunkd::Expected<chunkd::tools::Response, std::string>> answer;
  std::thread worker([&] {
    auto r = request();
    std::lock_guard<std::mutex> lock(mu);
    answer.emplace(std::move(r));
    cv.notify_one();
  });
  bool drawn = false;
  std::unique_lock<std::mutex> lock(mu);
  while (!cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return answer.has_value(); })) {
    lock.unlock();
    auto polled = chunkd::tools::http_request(url, "GET", stream_path, "", headers, kPollTimeoutMs);
    std::string line = polled ? progress_line(polled->body) : "";
    if (!line.empty()) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      std::fflush(stderr);
      drawn = true;
    }
    lock.lock();
  }
  lock.unlock();
  worker.join();
  if (drawn) std::fputs("\r\033[K", stderr);
  return std::move(*answer);
}

}  // namespace chunkctl

#include "tests/support/notify_socket.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "tests/support/net.hpp"

namespace chunkd::test {
namespace {

using Clock = std::chrono::steady_clock;

bool line_matches(std::string_view message, std::string_view line) {
  const bool prefix = !line.empty() && line.back() == '*';
  if (prefix) line.remove_suffix(1);
  std::size_t start = 0;
  while (start <= message.size()) {
    std::size_t end = message.find('\n', start);
    if (end == std::string_view::npos) end = message.size();
    const std::string_view field = message.substr(start, end - start);
    if (prefix ? field.substr(0, line.size()) == line : field == line) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

NotifySocket::~NotifySocket() {
  if (exported_) ::unsetenv("NOTIFY_SOCKET");
  if (fd_ >= 0) ::close(fd_);
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

bool NotifySocket::open() {
  dir_ = make_temp_dir("notify", error_);
  if (dir_.empty()) return false;
  path_ = dir_ + "/notify.sock";
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path_.size() >= sizeof address.sun_path) {
    error_ = "socket path too long: " + path_;
    return false;
  }
  std::memcpy(address.sun_path, path_.c_str(), path_.size() + 1);
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    error_ = errno_text("socket");
    return false;
  }
  if (::bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    error_ = errno_text("bind");
    return false;
  }
  return true;
}

void NotifySocket::export_env() {
  ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  exported_ = true;
}

bool NotifySocket::receive(int timeout_ms) {
  pollfd pfd{fd_, POLLIN, 0};
  if (::poll(&pfd, 1, timeout_ms) <= 0) return false;
  char buf[4096];
  const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
  if (n < 0) return false;
  messages_.emplace_back(buf, static_cast<std::size_t>(n));
  return true;
}

const std::vector<std::string>& NotifySocket::poll() {
  while (fd_ >= 0 && receive(0)) {
  }
  return messages_;
}

int NotifySocket::wait_for(std::string_view line, int timeout_ms, std::size_t from) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::size_t next = from;
  while (fd_ >= 0) {
    for (; next < messages_.size(); ++next) {
      if (line_matches(messages_[next], line)) return static_cast<int>(next);
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    receive(static_cast<int>(left < 200 ? left : 200));
  }
  return -1;
}

bool NotifySocket::has(std::size_t index, std::string_view line) const {
  return index < messages_.size() && line_matches(messages_[index], line);
}

std::string NotifySocket::joined() const {
  std::string out;
  for (const std::string& m : messages_) {
    std::string one = m;
    for (char& c : one) {
      if (c == '\n') c = '|';
    }
    out += one + "\n";
  }
  return out.empty() ? "(no message)\n" : out;
}

}  // namespace chunkd::test

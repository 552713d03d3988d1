#include "io/service_notify.hpp"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <ctime>

#include "io/log.hpp"

namespace chunkd::io {
namespace {

constexpr const char* kTag = "service";

std::string monotonic_usec() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const auto usec = static_cast<unsigned long long>(now.tv_sec) * 1000000ULL +
                    static_cast<unsigned long long>(now.tv_nsec) / 1000ULL;
  return std::to_string(usec);
}

}  // namespace

std::string ServiceNotifier::status_line(std::string_view text) {
  if (text.size() > kMaxStatusBytes) text = text.substr(0, kMaxStatusBytes);
  std::string line(text);
  for (char& c : line) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) c = ' ';
  }
  return line;
}

void ServiceNotifier::status(std::string_view text) { send("STATUS=" + status_line(text)); }

void ServiceNotifier::ready(std::string_view text) {
  ready_sent_ = true;
  send("READY=1\nSTATUS=" + status_line(text));
}

void ServiceNotifier::reloading(std::string_view text) {
  send("RELOADING=1\nMONOTONIC_USEC=" + monotonic_usec() + "\nSTATUS=" + status_line(text));
}

void ServiceNotifier::reloaded(std::string_view text) {
  if (ready_sent_) {
    send("READY=1\nSTATUS=" + status_line(text));
  } else {
    status(text);
  }
}

void ServiceNotifier::stopping(std::string_view text) {
  send("STOPPING=1\nSTATUS=" + status_line(text));
}

void ServiceNotifier::send(const std::string& message) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  if (socket == nullptr || *socket == '\0') return;
  const int rc = sd_notify(0, message.c_str());
  if (rc >= 0 || failure_logged_) return;
  failure_logged_ = true;
  LOG_WARN(kTag, "cannot notify the service manager at NOTIFY_SOCKET=%s: %s", socket,
           std::strerror(-rc));
}

}  // namespace chunkd::io

// ServiceNotifier: tells the service manager how chunkd is doing (sd_notify(3), for a systemd
// unit with Type=notify): READY=1 once it serves, RELOADING=1 … READY=1 around a reload,
// STOPPING=1 on the way out, and a STATUS= line that `systemctl status chunkd` shows.
//
// Owns: nothing but a flag. Every call is a no-op when $NOTIFY_SOCKET is unset (chunkd run by
// hand, by the tests, or by another init system). A message the manager cannot be sent is logged
// once (a unit with Type=notify would then time out starting, and the log says why).
// Thread: the loop thread (one object per daemon).
// Status text: one line of at most kMaxStatusBytes; control characters become spaces, so text
// taken from the config (a broker URI) can never add a field of its own.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace chunkd::io {

class ServiceNotifier {
 public:
  static constexpr std::size_t kMaxStatusBytes = 200;

  // STATUS= only: what chunkd is doing or waiting for.
  void status(std::string_view text);
  // READY=1 and STATUS=: the control API listens and the broker session is up.
  void ready(std::string_view text);
  // RELOADING=1 (with MONOTONIC_USEC=, which newer managers want) and STATUS=.
  void reloading(std::string_view text);
  // The reload is over: READY=1 if ready() was called before, else STATUS= only (READY=1 still
  // comes from ready() once chunkd serves).
  void reloaded(std::string_view text);
  // STOPPING=1 and STATUS=.
  void stopping(std::string_view text);

  // The STATUS= value for `text` (one line, bounded). Exposed for the tests.
  static std::string status_line(std::string_view text);

 private:
  void send(const std::string& message);

  bool ready_sent_ = false;
  bool failure_logged_ = false;
};

}  // namespace chunkd::io

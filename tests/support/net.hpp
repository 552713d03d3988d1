// Small POSIX helpers shared by the test harnesses (TestBroker, TestDaemon): loopback ports,
// files, errno text. Thread-compatible; no global state.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace chunkd::test {

// "<what>: <strerror(errno)>" for the current errno.
std::string errno_text(const char* what);
// Binds port 0 on 127.0.0.1, reads the port the kernel chose, closes the socket (0 on failure).
std::uint16_t pick_free_port();
// A loopback port held bound but not listening while the object lives: a connection to it is
// refused at once, and no other process can take the port meanwhile (as one could take a port
// pick_free_port() gave back). port() is 0 when it could not be bound.
class ClosedPort {
 public:
  ClosedPort();
  ~ClosedPort();
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};
// True when something accepts TCP connections on 127.0.0.1:<port>.
bool port_accepts(std::uint16_t port);
// The whole file, or "" when it cannot be read.
std::string read_file(const std::string& path);
// A new private directory $TMPDIR/chunkd-<name>-XXXXXX (/tmp without TMPDIR); "" with `error`
// set when it cannot be made.
std::string make_temp_dir(const std::string& name, std::string& error);
// Forks and execs `argv` (null-terminated; with `envp` when not null) with stdin on /dev/null and
// stdout/stderr on `out_fd`/`err_fd`. The child dies with the test process (PR_SET_PDEATHSIG),
// starts with signals unblocked and SIGPIPE at its default, and inherits no other descriptor (a
// client socket inherited there would outlive the client's close). Prepare everything before
// calling: after fork() only async-signal-safe calls run. Returns the pid, or -1 with `error` set.
pid_t spawn(const std::vector<char*>& argv, char* const* envp, int out_fd, int err_fd,
            std::string& error);

// What stop_child() returns when `pid` did not exit in time and was killed with SIGKILL.
inline constexpr int kChildKilled = -2;
// SIGTERM to `pid`, then waits up to `timeout_ms` for it to exit; past that, SIGKILL and reap.
// Returns the wait status (>= 0) when it exited in time, kChildKilled when it had to be killed,
// -1 when it could not be waited for (not our child, or already reaped).
int stop_child(pid_t pid, int timeout_ms);

}  // namespace chunkd::test

// TestBroker: a private Mosquitto broker for one test, on a free loopback port.
//
// Owns: a temporary directory (config, broker log, broker stderr) and the broker child process.
// Thread: the test's thread; every call blocks until it is done (bounded). Not for the libuv loop.
// Dependencies: POSIX and the C++ standard library only (it is compiled into every test binary).
//
// Usage:
//   chunkd::test::TestBroker broker;
//   ASSERT_TRUE(broker.start()) << broker.error();
//   options.uri = broker.uri();                // "tcp://127.0.0.1:<port>"
//   ...
//   broker.restart();                           // same port: clients see a broker restart
//   broker.pause(); ... broker.resume();        // SIGSTOP/SIGCONT: a broker that stops reading
// The destructor stops the broker and removes the temporary directory.
//
// The generated config: `listener <port> 127.0.0.1`, `allow_anonymous true`,
// `set_tcp_nodelay true`, `persistence false`, `max_queued_messages 100000`, log to log_path(),
// plus any `extra_config` lines given to the constructor (lines such as `certfile` apply to that
// listener: tls_uri() then names it). With FullConfig the test writes the whole config instead
// ("@PORT@" stands for the port picked) and only the log, persistence and user lines are added.
// The binary is CHUNKD_MOSQUITTO (compile definition) or /usr/sbin/mosquitto.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace chunkd::test {

// Writes a Mosquitto password file for `users` (name, password) with mosquitto_passwd (on PATH,
// from the Debian package mosquitto). False with `error` set on failure.
bool write_password_file(const std::string& path,
                         const std::vector<std::pair<std::string, std::string>>& users,
                         std::string& error);

class TestBroker {
 public:
  // `extra_config`: more mosquitto.conf lines appended after the defaults (may be empty).
  explicit TestBroker(std::string extra_config = {});
  // The whole mosquitto.conf but logging: listeners, authentication, limits. Every "@PORT@" is
  // replaced by the port picked.
  struct FullConfig {
    std::string text;
  };
  explicit TestBroker(FullConfig config);
  ~TestBroker();
  TestBroker(const TestBroker&) = delete;
  TestBroker& operator=(const TestBroker&) = delete;

  // Picks a free loopback port, writes the config and starts the broker; returns once the port
  // accepts connections (at most ~10 s). On failure returns false and error() says why (with the
  // broker's stderr). Calling start() on a running broker is a no-op returning true.
  bool start();
  // SIGTERM, wait (bounded), SIGKILL if it did not exit. Idempotent.
  void stop();
  // stop() then start again on the same port. Returns false (see error()) if it did not come back.
  bool restart();
  // SIGSTOP / SIGCONT the broker: it keeps its sockets but stops reading and writing.
  void pause();
  void resume();

  bool running() const { return pid_ > 0; }
  std::uint16_t port() const { return port_; }
  std::string uri() const;      // "tcp://127.0.0.1:<port>"
  std::string tls_uri() const;  // "ssl://127.0.0.1:<port>"
  std::string host() const { return "127.0.0.1"; }
  const std::string& log_path() const { return log_path_; }
  const std::string& error() const { return error_; }
  // The broker's log so far (for failure messages).
  std::string log_contents() const;

 private:
  bool make_dir();
  bool write_config();
  bool launch();
  bool wait_until_accepting(int timeout_ms);

  std::string extra_config_;
  bool full_config_ = false;  // extra_config_ is the whole config
  std::string dir_;
  std::string config_path_;
  std::string log_path_;
  std::string stderr_path_;
  std::string error_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool paused_ = false;
};

}  // namespace chunkd::test

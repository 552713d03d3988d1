// TestDaemon: the real chunkd binary, run as an operator would, for integration tests.
//
// Owns: a temporary directory (config, data_dir, bucket directories, token file, the daemon's
// stderr log) and the chunkd child process.
// Thread: the test's thread; every call blocks until it is done (bounded). Not for a libuv loop.
// Dependencies: POSIX and the C++ standard library only (it is compiled into every test binary).
//
// Usage:
//   chunkd::test::TestBroker broker;  ASSERT_TRUE(broker.start()) << broker.error();
//   chunkd::test::TestDaemon daemon(broker.uri());
//   std::string dir = daemon.add_bucket("firmware");        // the test fills this directory
//   daemon.set("delivery", "per_thing_queue_requests", "1");  // any key: section, key, TOML value
//   ASSERT_TRUE(daemon.start()) << daemon.error();          // waits for GET /healthz == 200
//   chunkd::test::HttpClient http = daemon.http();
//   ...
//   EXPECT_EQ(daemon.stop(), 0) << daemon.log();            // SIGTERM: the exit status
//   daemon.kill9();  daemon.start();                        // same config, same data_dir
//
// The generated config sets mqtt.uri, control.listen "127.0.0.1:<free port>", storage.data_dir
// (in the temporary directory) and log.level "debug" unless overridden with set(). The port is
// picked by binding port 0 and closing the socket; start() retries with another port when the
// daemon exits during start-up. The binary is CHUNKD_BINARY_DIR "/engine/chunkd".
// The destructor kills a daemon still running (SIGKILL) and removes the temporary directory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/http_client.hpp"

namespace chunkd::test {

// Path of the chunkd binary (and of the tools next to it), from CHUNKD_BINARY_DIR.
std::string chunkd_binary_path();
std::string chunkctl_binary_path();
std::string chunkload_binary_path();

// A file with `size` deterministic pseudo-random bytes derived from `seed`.
std::string test_bytes(std::size_t size, std::uint64_t seed);
// Writes bytes to `path` (creating parent directories). False on failure.
bool write_file(const std::string& path, const std::string& bytes);
std::string read_whole_file(const std::string& path);

// Runs a program, collects its stdout and stderr (bounded by `timeout_ms`; the child is killed
// after it). exit_code is the exit status, -signal when killed by a signal, -1000 on timeout.
struct ProcessResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
ProcessResult run_process(const std::vector<std::string>& argv, int timeout_ms = 120000,
                          const std::vector<std::pair<std::string, std::string>>& env = {});

class TestDaemon {
 public:
  explicit TestDaemon(std::string mqtt_uri);
  ~TestDaemon();
  TestDaemon(const TestDaemon&) = delete;
  TestDaemon& operator=(const TestDaemon&) = delete;

  // Creates <dir>/buckets/<name> and maps bucket `name` to it. Returns the directory.
  std::string add_bucket(const std::string& name);
  // Maps bucket `name` to an existing directory.
  void map_bucket(const std::string& name, const std::string& directory);
  // Sets `key = toml_value` in `[section]` (toml_value is TOML text: "16", "true", "\"x\"").
  void set(const std::string& section, const std::string& key, const std::string& toml_value);
  // Writes `token` to a token file and sets control.token_file to it.
  void set_token(const std::string& token);
  // TOML text appended verbatim after the generated tables (for whole extra tables).
  void set_extra_toml(std::string text) { extra_toml_ = std::move(text); }
  // Quotes a string as a TOML basic string.
  static std::string quote(const std::string& text);
  // Writes config_path() (picking the control port first if none is chosen yet). start() does it
  // too; call it directly to run `chunkd --config <config_path()> --check`.
  bool write_config();

  // Writes the config and starts chunkd. With `wait_ready`, returns once GET /healthz answers
  // 200 (at most `timeout_ms`); without, once the control port accepts connections. False (see
  // error()) if chunkd exited or did not get there in time. No-op returning true when running.
  bool start(bool wait_ready = true, int timeout_ms = 60000);
  // SIGTERM and wait (at most `timeout_ms`, then SIGKILL). Returns the exit status: 0..255, or
  // -signal when a signal ended it, or -1000 when it had to be killed. -2000 when not running.
  int stop(int timeout_ms = 60000);
  // SIGKILL and reap. No-op when not running.
  void kill9();
  // True while the child has not exited (reaps it when it has).
  bool running();
  // Polls GET /healthz until it answers `status` (at most `timeout_ms`).
  bool wait_health(int status, int timeout_ms = 60000);

  pid_t pid() const { return pid_; }
  std::uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& config_path() const { return config_path_; }
  const std::string& error() const { return error_; }
  // The daemon's stderr so far (all its runs, appended), for failure messages. At most the last
  // `max_bytes` bytes.
  std::string log(std::size_t max_bytes = 64 * 1024) const;

  // A new HTTP client to the control port.
  HttpClient http(int timeout_ms = 30000) const;
  // Authorization header for set_token()'s token (empty list when none).
  HttpClient::Headers auth() const;

 private:
  bool make_dir();
  bool launch();
  bool wait_started(bool wait_ready, int timeout_ms);

  std::string mqtt_uri_;
  std::string dir_;
  std::string data_dir_;
  std::string config_path_;
  std::string log_path_;
  std::string token_;
  std::string extra_toml_;
  std::map<std::string, std::string> buckets_;
  std::map<std::string, std::map<std::string, std::string>> settings_;  // section → key → value
  std::string error_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  int last_status_ = -2000;
};

}  // namespace chunkd::test

#include "tests/support/daemon.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/net.hpp"

#ifndef CHUNKD_BINARY_DIR
#define CHUNKD_BINARY_DIR "."
#endif

extern char** environ;

namespace chunkd::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string status_text(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

std::vector<char*> c_argv(const std::vector<std::string>& args) {
  std::vector<char*> out;
  out.reserve(args.size() + 1);
  for (const auto& a : args) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string chunkd_binary_path() { return std::string(CHUNKD_BINARY_DIR) + "/engine/chunkd"; }
std::string chunkctl_binary_path() { return std::string(CHUNKD_BINARY_DIR) + "/tools/chunkctl"; }
std::string chunkload_binary_path() { return std::string(CHUNKD_BINARY_DIR) + "/tools/chunkload"; }

std::string test_bytes(std::size_t size, std::uint64_t seed) {
  std::string out(size, '\0');
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  std::size_t i = 0;
  while (i < size) {
    // xorshift64*
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    std::uint64_t v = x * 0x2545F4914F6CDD1Dull;
    for (int k = 0; k < 8 && i < size; ++k, ++i) {
      out[i] = static_cast<char>(static_cast<unsigned char>(v >> (8 * k)));
    }
  }
  return out;
}

bool write_file(const std::string& path, const std::string& bytes) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  return static_cast<bool>(out);
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

ProcessResult run_process(const std::vector<std::string>& argv, int timeout_ms,
                          const std::vector<std::pair<std::string, std::string>>& env) {
  ProcessResult result;
  if (argv.empty()) return result;
  // Everything the child needs is prepared before fork().
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    bool overridden = false;
    for (const auto& [name, value] : env) {
      if (entry.compare(0, name.size() + 1, name + "=") == 0) overridden = true;
    }
    if (!overridden) env_strings.push_back(std::move(entry));
  }
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp = c_argv(env_strings);
  std::vector<char*> args = c_argv(argv);

  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    result.err = errno_text("pipe2");
    return result;
  }
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.err = errno_text("pipe2");
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return result;
  }
  const pid_t pid = spawn(args, envp.data(), out_pipe[1], err_pipe[1], result.err);
  if (pid < 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) ::close(fd);
    return result;
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  bool out_open = true;
  bool err_open = true;
  bool timed_out = false;
  char buf[65536];
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[2] = {{out_open ? out_pipe[0] : -1, POLLIN, 0},
                     {err_open ? err_pipe[0] : -1, POLLIN, 0}};
    int r = ::poll(fds, 2, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (r < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        (i == 0 ? out_open : err_open) = false;
      }
    }
  }
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  if (timed_out) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    result.exit_code = -1000;
    return result;
  }
  // Both pipes closed: the child exited (or closed them); wait for it, bounded.
  while (true) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return result;
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.exit_code = -1000;
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.exit_code = status_code(status);
  return result;
}

TestDaemon::TestDaemon(std::string mqtt_uri) : mqtt_uri_(std::move(mqtt_uri)) { make_dir(); }

TestDaemon::~TestDaemon() {
  kill9();
  if (!dir_.empty() && std::getenv("CHUNKD_TEST_KEEP") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

bool TestDaemon::make_dir() {
  if (!dir_.empty()) return true;
  dir_ = make_temp_dir("daemon", error_);
  if (dir_.empty()) return false;
  data_dir_ = dir_ + "/data";
  config_path_ = dir_ + "/chunkd.toml";
  log_path_ = dir_ + "/chunkd.log";
  return true;
}

std::string TestDaemon::add_bucket(const std::string& name) {
  std::string path = dir_ + "/buckets/" + name;
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  buckets_[name] = path;
  return path;
}

void TestDaemon::map_bucket(const std::string& name, const std::string& directory) {
  buckets_[name] = directory;
}

void TestDaemon::set(const std::string& section, const std::string& key,
                     const std::string& toml_value) {
  settings_[section][key] = toml_value;
}

void TestDaemon::set_token(const std::string& token) {
  token_ = token;
  std::string path = dir_ + "/token";
  write_file(path, token + "\n");
  set("control", "token_file", quote(path));
}

std::string TestDaemon::quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

bool TestDaemon::write_config() {
  if (port_ == 0) port_ = pick_free_port();
  std::map<std::string, std::map<std::string, std::string>> tables = settings_;
  auto set_default = [&](const std::string& section, const std::string& key,
                         const std::string& value) {
    tables[section].emplace(key, value);  // keeps a value set by the test
  };
  set_default("mqtt", "uri", quote(mqtt_uri_));
  set_default("mqtt", "client_id", quote("chunkd-test-" + std::to_string(::getpid())));
  tables["control"]["listen"] = quote("127.0.0.1:" + std::to_string(port_));
  set_default("storage", "data_dir", quote(data_dir_));
  for (const auto& [name, path] : buckets_) set_default("buckets", quote(name), quote(path));
  std::ofstream out(config_path_, std::ios::trunc);
  out << "# generated by tests/support/daemon.cpp\n";
  for (const auto& [section, keys] : tables) {
    out << "\n[" << section << "]\n";
    for (const auto& [key, value] : keys) out << key << " = " << value << "\n";
  }
  if (!extra_toml_.empty()) out << "\n" << extra_toml_ << "\n";
  out.close();
  if (!out) {
    error_ = "cannot write " + config_path_;
    return false;
  }
  return true;
}

bool TestDaemon::launch() {
  const std::string binary = chunkd_binary_path();
  if (::access(binary.c_str(), X_OK) != 0) {
    error_ = "no chunkd binary at " + binary + ": build the `chunkd` target first";
    return false;
  }
  std::vector<std::string> args = {binary, "--config", config_path_};
  std::vector<char*> argv = c_argv(args);
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    error_ = errno_text("open daemon log");
    return false;
  }
  const std::string banner = "\n===== chunkd start (port " + std::to_string(port_) + ") =====\n";
  [[maybe_unused]] ssize_t w = ::write(log_fd, banner.data(), banner.size());
  const pid_t pid = spawn(argv, nullptr, log_fd, log_fd, error_);
  if (pid < 0) {
    ::close(log_fd);
    return false;
  }
  ::close(log_fd);
  pid_ = pid;
  return true;
}

bool TestDaemon::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    last_status_ = status_code(status);
    pid_ = -1;
    return false;
  }
  return true;
}

bool TestDaemon::wait_health(int status, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (!running()) return false;
    HttpClient client("127.0.0.1", port_, 5000);
    if (client.connected()) {
      auto r = client.request("GET", "/healthz");
      if (r.status == status) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

bool TestDaemon::wait_started(bool wait_ready, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      last_status_ = status_code(status);
      error_ = "chunkd exited during start-up (" + status_text(status) + "); log:\n" + log();
      return false;
    }
    if (port_accepts(port_)) {
      if (!wait_ready) return true;
      HttpClient client("127.0.0.1", port_, 5000);
      auto resp = client.request("GET", "/healthz");
      if (resp.status == 200) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  error_ = "chunkd did not become " + std::string(wait_ready ? "ready" : "reachable") +
           " on port " + std::to_string(port_) + " within " + std::to_string(timeout_ms) +
           " ms; log:\n" + log();
  return false;
}

bool TestDaemon::start(bool wait_ready, int timeout_ms) {
  if (running()) return true;
  error_.clear();
  if (dir_.empty() && !make_dir()) return false;
  // Keep the port of a previous run (clients may hold it); pick another one if it is taken.
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (port_ == 0 || attempt > 0) port_ = pick_free_port();
    if (port_ == 0) {
      error_ = "no free loopback port";
      continue;
    }
    if (!write_config() || !launch()) return false;
    if (wait_started(wait_ready, timeout_ms)) return true;
    if (running()) {  // alive but not ready in time: do not retry, report
      kill9();
      return false;
    }
    // Exited during start-up: retry only when the port was the problem.
    if (log().find("in use") == std::string::npos) return false;
  }
  return false;
}

int TestDaemon::stop(int timeout_ms) {
  if (pid_ <= 0) return -2000;
  const int status = stop_child(pid_, timeout_ms);
  pid_ = -1;
  if (status == -1) return -1;
  last_status_ = status == kChildKilled ? -1000 : status_code(status);
  return last_status_;
}

void TestDaemon::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  last_status_ = status_code(status);
}

std::string TestDaemon::log(std::size_t max_bytes) const {
  std::string text = read_whole_file(log_path_);
  if (text.size() > max_bytes) text = "...\n" + text.substr(text.size() - max_bytes);
  return text;
}

HttpClient TestDaemon::http(int timeout_ms) const {
  return HttpClient("127.0.0.1", port_, timeout_ms);
}

HttpClient::Headers TestDaemon::auth() const {
  if (token_.empty()) return {};
  return {{"Authorization", "Bearer " + token_}};
}

}  // namespace chunkd::test

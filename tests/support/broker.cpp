#include "tests/support/broker.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
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
#include <vector>

#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"

#ifndef CHUNKD_MOSQUITTO
#define CHUNKD_MOSQUITTO "/usr/sbin/mosquitto"
#endif

namespace chunkd::test {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

bool write_password_file(const std::string& path,
                         const std::vector<std::pair<std::string, std::string>>& users,
                         std::string& error) {
  ::unlink(path.c_str());
  for (const auto& [name, password] : users) {
    // mosquitto_passwd -c makes the file, -b takes the password from the command line.
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec mosquitto_passwd \"$@\"", "sh"};
    if (::access(path.c_str(), F_OK) != 0) argv.emplace_back("-c");
    for (const std::string& arg : {std::string("-b"), path, name, password}) argv.push_back(arg);
    const ProcessResult r = run_process(argv, 30000);
    if (r.exit_code != 0) {
      error = "mosquitto_passwd for user '" + name + "' failed (exit " +
              std::to_string(r.exit_code) + "): " + r.out + r.err;
      return false;
    }
  }
  return true;
}

TestBroker::TestBroker(std::string extra_config) : extra_config_(std::move(extra_config)) {}

TestBroker::TestBroker(FullConfig config)
    : extra_config_(std::move(config.text)), full_config_(true) {}

TestBroker::~TestBroker() {
  stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string TestBroker::uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }

std::string TestBroker::tls_uri() const { return "ssl://127.0.0.1:" + std::to_string(port_); }

std::string TestBroker::log_contents() const {
  return log_path_.empty() ? std::string() : read_file(log_path_);
}

bool TestBroker::make_dir() {
  if (!dir_.empty()) return true;
  dir_ = make_temp_dir("broker", error_);
  if (dir_.empty()) return false;
  config_path_ = dir_ + "/mosquitto.conf";
  log_path_ = dir_ + "/mosquitto.log";
  stderr_path_ = dir_ + "/stderr.log";
  return true;
}

bool TestBroker::write_config() {
  std::ofstream out(config_path_, std::ios::trunc);
  if (!full_config_) {
    out << "listener " << port_ << " 127.0.0.1\n"
        << "allow_anonymous true\n"
        << "set_tcp_nodelay true\n"
        << "max_queued_messages 100000\n";
  }
  out << "persistence false\n"
      << "log_dest file " << log_path_ << "\n"
      << "log_timestamp_format %Y-%m-%dT%H:%M:%S\n";
  // Run as root, mosquitto would switch to the `mosquitto` user and could not write the log.
  if (::geteuid() == 0) out << "user root\n";
  std::string extra = extra_config_;
  const std::string port = std::to_string(port_);
  for (auto at = extra.find("@PORT@"); at != std::string::npos; at = extra.find("@PORT@", at)) {
    extra.replace(at, 6, port);
  }
  if (!extra.empty()) out << extra << "\n";
  out.close();
  if (!out) {
    error_ = "cannot write " + config_path_;
    return false;
  }
  return true;
}

bool TestBroker::launch() {
  const std::string binary = CHUNKD_MOSQUITTO[0] != '\0' ? CHUNKD_MOSQUITTO : "/usr/sbin/mosquitto";
  // Everything the child needs is prepared before fork(): after it only async-signal-safe calls.
  std::vector<char*> argv = {const_cast<char*>(binary.c_str()), const_cast<char*>("-c"),
                             const_cast<char*>(config_path_.c_str()), nullptr};
  int err_fd = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (err_fd < 0) {
    error_ = errno_text("open broker stderr file");
    return false;
  }
  const pid_t pid = spawn(argv, nullptr, err_fd, err_fd, error_);
  if (pid < 0) {
    ::close(err_fd);
    return false;
  }
  ::close(err_fd);
  pid_ = pid;
  paused_ = false;
  return true;
}

bool TestBroker::wait_until_accepting(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      error_ = "mosquitto exited during start-up (status " + std::to_string(status) +
               "): " + read_file(stderr_path_) + log_contents();
      return false;
    }
    if (port_accepts(port_)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  error_ = "mosquitto did not accept connections on port " + std::to_string(port_) + " within " +
           std::to_string(timeout_ms) + " ms: " + read_file(stderr_path_) + log_contents();
  stop();
  return false;
}

bool TestBroker::start() {
  if (pid_ > 0) return true;
  error_.clear();
  if (!make_dir()) return false;
  // Another process may take the port between our probe and the broker's bind: retry a few times.
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = pick_free_port();
    if (port_ == 0) {
      error_ = "no free loopback port";
      continue;
    }
    if (!write_config() || !launch()) return false;
    if (wait_until_accepting(10000)) return true;
  }
  return false;
}

bool TestBroker::restart() {
  stop();
  error_.clear();
  if (port_ == 0 || dir_.empty()) return start();
  if (!launch()) return false;
  return wait_until_accepting(10000);
}

void TestBroker::pause() {
  if (pid_ > 0 && !paused_ && ::kill(pid_, SIGSTOP) == 0) paused_ = true;
}

void TestBroker::resume() {
  if (pid_ > 0 && paused_) {
    ::kill(pid_, SIGCONT);
    paused_ = false;
  }
}

void TestBroker::stop() {
  if (pid_ <= 0) return;
  resume();
  stop_child(pid_, 5000);
  pid_ = -1;
}

}  // namespace chunkd::test

#include "tests/support/postgres.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <thread>

#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"

extern char** environ;

namespace chunkd::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kBinDir = "/usr/lib/postgresql/15/bin";
constexpr const char* kServerUser = "postgres";
constexpr int kStopTimeoutMs = 20000;

std::string bin(const char* name) { return std::string(kBinDir) + "/" + name; }

bool running_as_root() { return ::geteuid() == 0; }

// chown -R to the server user (only when we are root: otherwise we are the server user).
bool give_to_server_user(const std::string& dir, std::string& error) {
  if (!running_as_root()) return true;
  const passwd* user = ::getpwnam(kServerUser);
  if (user == nullptr) {
    error = "no system user 'postgres' (install the Debian package postgresql)";
    return false;
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (::chown(it->path().c_str(), user->pw_uid, user->pw_gid) != 0) {
      error = errno_text(("chown " + it->path().string()).c_str());
      return false;
    }
  }
  if (ec || ::chown(dir.c_str(), user->pw_uid, user->pw_gid) != 0) {
    error = ec ? "list " + dir + ": " + ec.message() : errno_text(("chown " + dir).c_str());
    return false;
  }
  return true;
}

}  // namespace

TestPostgres::~TestPostgres() {
  stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string TestPostgres::missing() {
  for (const char* name : {"initdb", "postgres", "psql", "pg_isready"}) {
    if (::access(bin(name).c_str(), X_OK) != 0) {
      return bin(name) + " is missing (install the Debian package postgresql; tools/deps does it)";
    }
  }
  if (running_as_root() && ::getpwnam(kServerUser) == nullptr) {
    return "no system user 'postgres' to run the server as (install the Debian package "
           "postgresql)";
  }
  return {};
}

std::vector<std::string> TestPostgres::as_server_user(std::vector<std::string> argv) const {
  // env -C: the server user may not be allowed into the test's working directory.
  std::vector<std::string> out = {"/usr/bin/env", "-C", dir_};
  if (running_as_root()) {
    out = {"/usr/bin/setpriv", "--reuid", kServerUser, "--regid",      kServerUser, "--init-groups",
           "--pdeathsig",      "keep",    "--",        "/usr/bin/env", "-C",        dir_};
  }
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::string TestPostgres::url() const {
  return "postgresql://chunkd@127.0.0.1:" + std::to_string(port_) + "/chunkd";
}

std::string TestPostgres::log() const { return log_path_.empty() ? "" : read_file(log_path_); }

bool TestPostgres::make_cluster() {
  dir_ = make_temp_dir("pg", error_);
  if (dir_.empty()) return false;
  log_path_ = dir_ + "/postgres.log";
  std::error_code ec;
  std::filesystem::create_directory(dir_ + "/sock", ec);
  if (ec || !give_to_server_user(dir_, error_)) {
    if (ec) error_ = "create " + dir_ + "/sock: " + ec.message();
    return false;
  }
  ProcessResult r =
      run_process(as_server_user({bin("initdb"), "-D", dir_ + "/data", "-U", "postgres",
                                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"}),
                  120000);
  if (r.exit_code != 0) {
    error_ = "initdb failed (" + std::to_string(r.exit_code) + "): " + r.err + r.out;
    return false;
  }
  return true;
}

bool TestPostgres::launch() {
  std::vector<std::string> args = as_server_user(
      {bin("postgres"), "-D", dir_ + "/data", "-h", "127.0.0.1", "-p", std::to_string(port_), "-k",
       dir_ + "/sock", "-c", "fsync=off", "-c", "max_connections=50"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    error_ = errno_text("open the PostgreSQL log");
    return false;
  }
  pid_ = spawn(argv, environ, log_fd, log_fd, error_);
  ::close(log_fd);
  return pid_ > 0;
}

bool TestPostgres::wait_until_ready() {
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "postgres exited during start-up: " + log();
      return false;
    }
    ProcessResult r = run_process({bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                                   std::to_string(port_), "-U", "postgres", "-d", "postgres"},
                                  10000);
    if (r.exit_code == 0) return true;
    if (Clock::now() > deadline) {
      error_ = "postgres did not accept connections within 30 s: " + log();
      stop();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

bool TestPostgres::start() {
  if (pid_ > 0) return true;
  if (std::string why = missing(); !why.empty()) {
    error_ = why;
    return false;
  }
  if (dir_.empty() && !make_cluster()) return false;
  if (port_ == 0) port_ = pick_free_port();
  if (port_ == 0) {
    error_ = "no free loopback port";
    return false;
  }
  if (!launch() || !wait_until_ready()) return false;
  if (created_) return true;
  ProcessResult r =
      run_process({bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                   std::to_string(port_), "-U", "postgres", "-d", "postgres", "-c",
                   "CREATE ROLE chunkd LOGIN", "-c", "CREATE DATABASE chunkd OWNER chunkd"},
                  60000);
  if (r.exit_code != 0) {
    error_ = "creating the chunkd role and database failed: " + r.err + r.out;
    return false;
  }
  created_ = true;
  return true;
}

void TestPostgres::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGINT);  // fast shutdown: SIGTERM would wait for every client to leave
  const auto deadline = Clock::now() + std::chrono::milliseconds(kStopTimeoutMs);
  int status = 0;
  while (Clock::now() < deadline) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno != EINTR)) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill9();
}

void TestPostgres::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  // The backends notice their postmaster is gone and exit; until they have, a new postmaster
  // refuses to start (the old shared memory is still in use): start() then fails, saying so.
}

bool TestPostgres::restart() {
  stop();
  return start();
}

std::string TestPostgres::psql(const std::string& sql) {
  ProcessResult r =
      run_process({bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                   "-p", std::to_string(port_), "-U", "postgres", "-d", "chunkd", "-c", sql},
                  60000);
  if (r.exit_code != 0) {
    error_ = "psql failed (" + std::to_string(r.exit_code) + "): " + r.err + r.out;
    return {};
  }
  return r.out;
}

}  // namespace chunkd::test

#include "tests/support/s3_server.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"

extern char** environ;

namespace chunkd::test {
namespace {

using Clock = std::chrono::steady_clock;

// The absolute path of executable `name` on PATH, or "".
std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

std::string tool_path() { return std::string(CHUNKD_SOURCE_DIR) + "/tests/support/s3_tool.py"; }

}  // namespace

TestS3Server::~TestS3Server() {
  stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string TestS3Server::missing() {
  if (find_on_path("moto_server").empty()) {
    return "moto_server is not on PATH (pip install 'moto[server]' boto3)";
  }
  std::string python = find_on_path("python3");
  if (python.empty()) return "python3 is not on PATH";
  ProcessResult r = run_process({python, "-c", "import boto3"}, 60000);
  if (r.exit_code != 0) return "python3 cannot import boto3 (pip install boto3): " + r.err;
  return {};
}

std::string TestS3Server::log() const { return log_path_.empty() ? "" : read_file(log_path_); }

bool TestS3Server::launch() {
  const std::string binary = find_on_path("moto_server");
  const std::string port = std::to_string(port_);
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
  env.emplace_back("INITIAL_NO_AUTH_ACTION_COUNT=3");
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = {binary, "-H", "127.0.0.1", "-p", port};
  if (!cert_.empty()) args.insert(args.end(), {"-c", cert_, "-k", key_});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    error_ = errno_text("open the S3 server's log");
    return false;
  }
  pid_ = spawn(argv, envp.data(), log_fd, log_fd, error_);
  ::close(log_fd);
  return pid_ > 0;
}

bool TestS3Server::start() {
  if (pid_ > 0) return true;
  if (std::string why = missing(); !why.empty()) {
    error_ = why;
    return false;
  }
  if (dir_.empty()) {
    dir_ = make_temp_dir("s3", error_);
    if (dir_.empty()) return false;
    log_path_ = dir_ + "/moto.log";
  }
  port_ = pick_free_port();
  if (port_ == 0 || !launch()) return false;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!port_accepts(port_)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "moto_server exited during start-up: " + log();
      return false;
    }
    if (Clock::now() > deadline) {
      error_ = "moto_server did not accept connections within 30 s: " + log();
      stop();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string out;
  if (!tool({"init", endpoint()}, out)) return false;
  std::istringstream words(out);
  words >> key_id_ >> secret_;
  if (key_id_.empty() || secret_.empty()) {
    error_ = "s3_tool.py init printed no key: " + out;
    return false;
  }
  return true;
}

bool TestS3Server::tool(const std::vector<std::string>& args, std::string& out) {
  std::vector<std::string> argv = {find_on_path("python3"), tool_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::pair<std::string, std::string>> env;
  if (!ca_.empty()) env.emplace_back("AWS_CA_BUNDLE", ca_);  // boto3 trusts the test CA
  ProcessResult r = run_process(argv, 120000, env);
  if (r.exit_code != 0) {
    error_ = "s3_tool.py " + args.front() + " failed (" + std::to_string(r.exit_code) +
             "): " + r.err + r.out;
    return false;
  }
  out = r.out;
  return true;
}

bool TestS3Server::make_bucket(const std::string& bucket) {
  std::string out;
  return tool({"bucket", endpoint(), key_id_, secret_, bucket}, out);
}

std::optional<std::string> TestS3Server::put(const std::string& bucket, const std::string& key,
                                             const std::string& bytes) {
  auto versions = put_all(bucket, {{key, bytes}});
  if (!versions || versions->size() != 1) return std::nullopt;
  return versions->front();
}

std::optional<std::string> TestS3Server::get(const std::string& bucket, const std::string& key) {
  std::string path = dir_ + "/download-" + std::to_string(files_++);
  std::string out;
  if (!tool({"get", endpoint(), key_id_, secret_, bucket, key, path}, out)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(path);
  return bytes;
}

int TestS3Server::versions(const std::string& bucket, const std::string& key) {
  std::string out;
  if (!tool({"versions", endpoint(), key_id_, secret_, bucket, key}, out)) return -1;
  try {
    return std::stoi(out);
  } catch (...) {
    error_ = "s3_tool.py versions printed " + out;
    return -1;
  }
}

std::optional<std::vector<std::string>> TestS3Server::put_all(
    const std::string& bucket, const std::vector<std::pair<std::string, std::string>>& objects) {
  std::vector<std::string> args = {"put", endpoint(), key_id_, secret_, bucket};
  std::vector<std::string> files;
  for (const auto& [key, bytes] : objects) {
    files.push_back(dir_ + "/upload-" + std::to_string(files_++));
    if (!write_file(files.back(), bytes)) {
      error_ = "cannot write " + files.back();
      return std::nullopt;
    }
    args.push_back(key);
    args.push_back(files.back());
  }
  std::string out;
  bool ok = tool(args, out);
  for (const std::string& file : files) std::filesystem::remove(file);
  if (!ok) return std::nullopt;
  std::vector<std::string> versions;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) versions.push_back(line);
  if (versions.size() != objects.size()) {
    error_ = "s3_tool.py put printed " + std::to_string(versions.size()) + " versions for " +
             std::to_string(objects.size()) + " objects: " + out;
    return std::nullopt;
  }
  return versions;
}

void TestS3Server::pause() {
  if (pid_ > 0 && !paused_ && ::kill(pid_, SIGSTOP) == 0) paused_ = true;
}

void TestS3Server::resume() {
  if (pid_ > 0 && paused_) {
    ::kill(pid_, SIGCONT);
    paused_ = false;
  }
}

void TestS3Server::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  paused_ = false;
}

void TestS3Server::stop() {
  if (pid_ <= 0) return;
  resume();
  stop_child(pid_, 5000);
  pid_ = -1;
  paused_ = false;
}

}  // namespace chunkd::test

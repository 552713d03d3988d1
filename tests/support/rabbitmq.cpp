#include "tests/support/rabbitmq.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"

extern char** environ;

namespace chunkd::test {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kServer = "/usr/lib/rabbitmq/bin/rabbitmq-server";
constexpr const char* kCtl = "/usr/lib/rabbitmq/bin/rabbitmqctl";
constexpr const char* kEpmd = "/usr/bin/epmd";
constexpr const char* kSetsid = "/usr/bin/setsid";

// Starts `argv` under setsid (its own process group, pid == pgid) with `env` added to ours.
pid_t spawn_group(std::vector<std::string> argv, const std::vector<std::string>& env,
                  const std::string& out_path, std::string& error) {
  argv.insert(argv.begin(), kSetsid);
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const std::string& e : env) env_strings.push_back(e);
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = errno_text("open node output");
    return -1;
  }
  const pid_t pid = spawn(args, envp.data(), fd, fd, error);
  ::close(fd);
  return pid;
}

// Signals the group `pid` leads, waits up to `timeout_ms` for the leader, then SIGKILLs the group.
void stop_group(pid_t pid, int signum, int timeout_ms) {
  if (pid <= 0) return;
  ::kill(-pid, signum);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (Clock::now() < deadline && ::waitpid(pid, &status, WNOHANG) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(-pid, SIGKILL);  // beam.smp and erl_child_setup outlive the script otherwise
  ::waitpid(pid, &status, 0);
}

}  // namespace

struct RabbitNode::Shared {
  std::string dir;
  std::uint16_t epmd_port = 0;
  pid_t epmd_pid = -1;
  int nodes = 0;

  ~Shared() {
    stop_group(epmd_pid, SIGTERM, 2000);
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }

  bool start_epmd(std::string& error) {
    if (epmd_pid > 0) return true;
    epmd_port = pick_free_port();
    epmd_pid = spawn_group({kEpmd, "-port", std::to_string(epmd_port), "-address", "127.0.0.1"}, {},
                           dir + "/epmd.out", error);
    if (epmd_pid < 0) return false;
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
      if (port_accepts(epmd_port)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    error = "epmd did not listen on port " + std::to_string(epmd_port);
    return false;
  }
};

RabbitNode::RabbitNode() : RabbitNode(std::make_shared<Shared>(), 0) {}

RabbitNode::RabbitNode(std::shared_ptr<Shared> shared, int index)
    : shared_(std::move(shared)), index_(index) {}

RabbitNode::~RabbitNode() { stop(); }

bool RabbitNode::available() { return ::access(kServer, X_OK) == 0 && ::access(kEpmd, X_OK) == 0; }

std::string RabbitNode::missing() {
  return std::string("RabbitMQ is not installed (") + kServer +
         "): install the Debian package rabbitmq-server (tools/deps does it)";
}

std::string RabbitNode::amqp_uri() const {
  return "amqp://guest@127.0.0.1:" + std::to_string(amqp_port_) + "/%2f";
}

void RabbitNode::enable_tls(std::string ca_file, std::string cert_file, std::string key_file) {
  tls_files_[0] = std::move(ca_file);
  tls_files_[1] = std::move(cert_file);
  tls_files_[2] = std::move(key_file);
}

std::string RabbitNode::amqps_uri(const std::string& host) const {
  return "amqps://guest@" + host + ":" + std::to_string(amqps_port_) + "/%2f";
}

std::string RabbitNode::mqtt_uri() const { return "tcp://127.0.0.1:" + std::to_string(mqtt_port_); }

std::string RabbitNode::log() const { return read_file(log_path_) + read_file(log_path_ + ".out"); }

// Directory, epmd, ports and config, once.
bool RabbitNode::prepare() {
  if (!nodename_.empty()) return true;
  if (shared_->dir.empty()) {
    shared_->dir = make_temp_dir("rabbit", error_);
    if (shared_->dir.empty()) return false;
    std::ofstream(shared_->dir + "/enabled_plugins") << "[rabbitmq_mqtt].\n";
    std::ofstream(shared_->dir + "/rabbitmq-env.conf") << "";
  }
  if (!shared_->start_epmd(error_)) return false;
  amqp_port_ = pick_free_port();
  mqtt_port_ = pick_free_port();
  dist_port_ = pick_free_port();
  const std::string name = "chunkd" + std::to_string(index_) + "-" + std::to_string(amqp_port_);
  nodename_ = name + "@localhost";
  conf_path_ = shared_->dir + "/" + name + ".conf";
  log_path_ = shared_->dir + "/log/" + name + ".log";
  std::ofstream conf(conf_path_);
  conf << "listeners.tcp.1 = 127.0.0.1:" << amqp_port_ << "\n"
       << "mqtt.listeners.tcp.1 = 127.0.0.1:" << mqtt_port_ << "\n"
       << "mqtt.allow_anonymous = true\n"
       << "loopback_users = none\n"
       << "disk_free_limit.absolute = 1MB\n";
  if (!tls_files_[0].empty()) {
    amqps_port_ = pick_free_port();
    conf << "listeners.ssl.1 = 127.0.0.1:" << amqps_port_ << "\n"
         << "ssl_options.cacertfile = " << tls_files_[0] << "\n"
         << "ssl_options.certfile = " << tls_files_[1] << "\n"
         << "ssl_options.keyfile = " << tls_files_[2] << "\n"
         << "ssl_options.verify = verify_none\n"
         << "ssl_options.fail_if_no_peer_cert = false\n";
  }
  conf.close();
  if (!conf) error_ = "cannot write " + conf_path_;
  return static_cast<bool>(conf);
}

std::vector<std::string> RabbitNode::env() const {
  const std::string& d = shared_->dir;
  const std::string name = nodename_.substr(0, nodename_.find('@'));
  return {"HOME=" + d,
          "RABBITMQ_NODENAME=" + nodename_,
          "RABBITMQ_MNESIA_BASE=" + d + "/mnesia",
          "RABBITMQ_LOG_BASE=" + d + "/log",
          "RABBITMQ_LOGS=" + log_path_,
          "RABBITMQ_CONFIG_FILE=" + conf_path_,
          "RABBITMQ_ENABLED_PLUGINS_FILE=" + d + "/enabled_plugins",
          "RABBITMQ_CONF_ENV_FILE=" + d + "/rabbitmq-env.conf",
          "RABBITMQ_PID_FILE=" + d + "/" + name + ".pid",
          "RABBITMQ_DIST_PORT=" + std::to_string(dist_port_),
          "ERL_EPMD_PORT=" + std::to_string(shared_->epmd_port),
          "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"};
}

bool RabbitNode::start() {
  if (pid_ > 0) return true;
  error_.clear();
  if (!available()) {
    error_ = missing();
    return false;
  }
  if (!prepare()) return false;
  std::filesystem::create_directories(shared_->dir + "/log");
  pid_ = spawn_group({kServer}, env(), log_path_ + ".out", error_);
  if (pid_ < 0) return false;
  return wait_ready(90000);
}

bool RabbitNode::wait_ready(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      stop_group(pid_, SIGKILL, 0);
      pid_ = -1;
      error_ = "rabbitmq-server exited during start-up: " + log();
      return false;
    }
    if (port_accepts(amqp_port_) && port_accepts(mqtt_port_) &&
        (amqps_port_ == 0 || port_accepts(amqps_port_))) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  error_ = "RabbitMQ did not accept AMQP and MQTT within " + std::to_string(timeout_ms) +
           " ms: " + log();
  stop();
  return false;
}

void RabbitNode::stop() {
  stop_group(pid_, SIGTERM, 20000);
  pid_ = -1;
}

void RabbitNode::kill9() {
  stop_group(pid_, SIGKILL, 0);
  pid_ = -1;
}

int RabbitNode::ctl(const std::vector<std::string>& args, std::string& out) const {
  std::vector<std::string> argv = {kCtl, "-n", nodename_};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::pair<std::string, std::string>> vars;
  for (const std::string& e : env()) {
    const auto eq = e.find('=');
    vars.emplace_back(e.substr(0, eq), e.substr(eq + 1));
  }
  const ProcessResult r = run_process(argv, 60000, vars);
  out = r.out + r.err;
  return r.exit_code;
}

namespace {

void put_length(std::string& out, std::size_t n) {
  do {
    auto digit = static_cast<unsigned char>(n % 128);
    n /= 128;
    if (n > 0) digit |= 0x80;
    out.push_back(static_cast<char>(digit));
  } while (n > 0);
}

void put_string(std::string& out, const std::string& s) {
  out.push_back(static_cast<char>(s.size() >> 8));
  out.push_back(static_cast<char>(s.size() & 0xff));
  out += s;
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval timeout{10, 0};  // a broker that never answers fails the call, not the test run
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

bool write_all(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

bool mqtt_publish_raw(std::uint16_t port, const std::string& topic, const std::string& payload,
                      std::string& error) {
  const int fd = connect_loopback(port);
  if (fd < 0) {
    error = errno_text("connect to the MQTT port");
    return false;
  }
  std::string head;
  put_string(head, "MQTT");
  head += std::string("\x04\x02\x00\x1e", 4);  // 3.1.1, clean session, keep-alive 30 s
  put_string(head, "raw-" + std::to_string(::getpid()) + "-" + std::to_string(port));
  std::string connect = "\x10";
  put_length(connect, head.size());
  connect += head;
  std::string body;
  put_string(body, topic);
  body += payload;
  std::string publish = "\x30";
  put_length(publish, body.size());
  publish += body;
  char connack[4] = {};
  bool ok = write_all(fd, connect) && ::read(fd, connack, sizeof connack) == 4 &&
            connack[0] == 0x20 && connack[3] == 0;
  ok = ok && write_all(fd, publish) && write_all(fd, std::string("\xe0\x00", 2));
  if (!ok) error = "MQTT connect or publish refused";
  char drain = 0;
  if (ok) ok = ::read(fd, &drain, 1) >= 0;  // the broker closes after DISCONNECT: all was read
  ::close(fd);
  return ok;
}

RabbitCluster::RabbitCluster(int nodes) {
  auto shared = std::make_shared<RabbitNode::Shared>();
  for (int i = 0; i < nodes; ++i) {
    nodes_.push_back(std::unique_ptr<RabbitNode>(new RabbitNode(shared, i)));
  }
}

RabbitCluster::~RabbitCluster() {
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) (*it)->stop();
}

// Starts every node, then joins nodes 1.. to node 0 (stop_app, join_cluster, start_app).
bool RabbitCluster::start() {
  for (auto& n : nodes_) {
    if (!n->start()) {
      error_ = n->nodename() + ": " + n->error();
      return false;
    }
  }
  for (std::size_t i = 1; i < nodes_.size(); ++i) {
    std::string out;
    for (const std::vector<std::string>& step :
         {std::vector<std::string>{"stop_app"},
          std::vector<std::string>{"join_cluster", nodes_[0]->nodename()},
          std::vector<std::string>{"start_app"}}) {
      if (nodes_[i]->ctl(step, out) != 0) {
        error_ = nodes_[i]->nodename() + ": rabbitmqctl " + step[0] + ": " + out;
        return false;
      }
    }
    if (!nodes_[i]->wait_ready(90000)) {
      error_ = nodes_[i]->nodename() + ": " + nodes_[i]->error();
      return false;
    }
  }
  return true;
}

}  // namespace chunkd::test

// RabbitNode / RabbitCluster: private RabbitMQ 3.10 nodes (Debian's rabbitmq-server) with the MQTT
// plugin, on free loopback ports, for tests.
//
// Owns: a temporary directory (config, enabled_plugins, mnesia, logs, HOME with the Erlang
// cookie), an epmd of its own (on a free port: ERL_EPMD_PORT) and the node processes, each
// started under setsid so the whole tree (the start script, beam.smp, erl_child_setup) is one
// process group, stopped and killed by that group's id. Never touches a system-wide broker,
// epmd or /var/lib/rabbitmq.
// Thread: the test's thread; every call blocks (bounded). Not for a libuv loop.
// Dependencies: POSIX and the C++ standard library only.
//
// Start recipe (what start() does; tools/cluster-up may reuse it):
//   env HOME=<dir> RABBITMQ_NODENAME=<name>@localhost RABBITMQ_MNESIA_BASE=<dir>/mnesia
//       RABBITMQ_LOG_BASE=<dir>/log RABBITMQ_LOGS=<dir>/log/<name>.log
//       RABBITMQ_CONFIG_FILE=<dir>/<name>.conf RABBITMQ_ENABLED_PLUGINS_FILE=<dir>/enabled_plugins
//       RABBITMQ_CONF_ENV_FILE=<dir>/rabbitmq-env.conf (empty) RABBITMQ_PID_FILE=<dir>/<name>.pid
//       RABBITMQ_DIST_PORT=<free> ERL_EPMD_PORT=<free>
//       RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
//     setsid /usr/lib/rabbitmq/bin/rabbitmq-server     (not /usr/sbin/…: that one su's to rabbitmq)
//   with epmd started first: setsid epmd -port <ERL_EPMD_PORT> -address 127.0.0.1
//   enabled_plugins: [rabbitmq_mqtt].
//   <name>.conf: listeners.tcp.1 = 127.0.0.1:<amqp>, mqtt.listeners.tcp.1 = 127.0.0.1:<mqtt>,
//     mqtt.allow_anonymous = true, loopback_users = none, disk_free_limit.absolute = 1MB;
//     with enable_tls(): listeners.ssl.1 = 127.0.0.1:<amqps>, ssl_options.cacertfile,
//     ssl_options.certfile, ssl_options.keyfile, ssl_options.verify = verify_none,
//     ssl_options.fail_if_no_peer_cert = false.
// Ready when both ports accept (about 10 s on 2 cores). rabbitmqctl runs with the same env.
//
// Usage:
//   if (!RabbitNode::available()) GTEST_SKIP() << RabbitNode::missing();
//   RabbitNode node;  ASSERT_TRUE(node.start()) << node.error();
//   node.amqp_uri();  node.mqtt_uri();  node.stop();  node.kill9();  node.start();  // same ports
//   RabbitCluster cluster(3);  ASSERT_TRUE(cluster.start()) << cluster.error();  cluster.node(1)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace chunkd::test {

class RabbitNode {
 public:
  // A node with its own directory and epmd.
  RabbitNode();
  ~RabbitNode();
  RabbitNode(const RabbitNode&) = delete;
  RabbitNode& operator=(const RabbitNode&) = delete;

  static bool available();       // rabbitmq-server and epmd are installed
  static std::string missing();  // the skip message when they are not

  // Starts the node (again, on the same ports and data, after stop()/kill9()); returns once it
  // accepts AMQP and MQTT (at most 90 s). False with error() set (and the node's log) on failure.
  bool start();
  // Graceful stop (SIGTERM to the group, bounded wait, then SIGKILL). Idempotent.
  void stop();
  // SIGKILL to the node's whole process group, as a crash.
  void kill9();
  bool running() const { return pid_ > 0; }

  // Adds an AMQPS listener (TLS, no client certificates asked) with these PEM files: the CA
  // chain, the node's certificate and key. Call before the first start().
  void enable_tls(std::string ca_file, std::string cert_file, std::string key_file);
  std::uint16_t amqps_port() const { return amqps_port_; }
  std::string amqps_uri(
      const std::string& host = "127.0.0.1") const;  // amqps://guest@host:port/%2f

  std::uint16_t amqp_port() const { return amqp_port_; }
  std::uint16_t mqtt_port() const { return mqtt_port_; }
  std::string amqp_uri() const;  // "amqp://guest@127.0.0.1:<port>/%2f"
  std::string mqtt_uri() const;  // "tcp://127.0.0.1:<port>"
  const std::string& nodename() const { return nodename_; }
  const std::string& error() const { return error_; }
  std::string log() const;

  // rabbitmqctl <args> against this node: its exit code, `out` gets stdout+stderr.
  int ctl(const std::vector<std::string>& args, std::string& out) const;

 private:
  friend class RabbitCluster;
  struct Shared;  // the directory and epmd, shared by a cluster's nodes
  RabbitNode(std::shared_ptr<Shared> shared, int index);
  bool prepare();
  std::vector<std::string> env() const;
  bool wait_ready(int timeout_ms);

  std::shared_ptr<Shared> shared_;
  int index_ = 0;
  std::string nodename_;
  std::string conf_path_;
  std::string log_path_;
  std::uint16_t amqp_port_ = 0;
  std::uint16_t amqps_port_ = 0;  // 0: no TLS listener
  std::string tls_files_[3];      // ca, cert, key
  std::uint16_t mqtt_port_ = 0;
  std::uint16_t dist_port_ = 0;
  pid_t pid_ = -1;  // the process group leader (setsid)
  std::string error_;
};

// Publishes `payload` to `topic` at QoS 0 over a fresh MQTT 3.1.1 connection to 127.0.0.1:<port>
// (CONNECT, CONNACK, PUBLISH, DISCONNECT, over a plain socket: for topics a client library would
// refuse or a test needs byte-exact). False with `error` set on failure.
bool mqtt_publish_raw(std::uint16_t port, const std::string& topic, const std::string& payload,
                      std::string& error);

// N nodes joined into one cluster (node 0 first; the others join_cluster it).
class RabbitCluster {
 public:
  explicit RabbitCluster(int nodes);
  ~RabbitCluster();
  bool start();
  RabbitNode& node(int i) { return *nodes_.at(static_cast<std::size_t>(i)); }
  int size() const { return static_cast<int>(nodes_.size()); }
  const std::string& error() const { return error_; }

 private:
  std::vector<std::unique_ptr<RabbitNode>> nodes_;
  std::string error_;
};

}  // namespace chunkd::test

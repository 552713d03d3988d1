// chunkd with [amqp] when RabbitMQ refuses it (README "Broker TLS, login and ACL"): before the
// broker ever accepted chunkd, a refused login stops chunkd with one error line and exit code 1;
// after that, it is retried (logged once) until the broker takes chunkd back. One RabbitMQ node
// and one S3 server (the content bucket every shared config needs) for the suite.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/api.hpp"
#include "tests/integration/device.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"
#include "tests/support/rabbitmq.hpp"
#include "tests/support/s3_server.hpp"
#include "tests/support/tls_certs.hpp"

namespace chunkd::test {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> lines_with(const std::string& log, const std::string& part) {
  std::vector<std::string> out;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(part) != std::string::npos) out.push_back(line);
  }
  return out;
}

class AmqpLogin : public ::testing::Test {
 protected:
  struct Shared {
    TestCerts certs;
    RabbitNode node;
    TestS3Server s3;
    std::string dir;
    std::string credentials;
    std::string error;
  };
  static Shared* shared_;

  static void SetUpTestSuite() {
    if (!RabbitNode::available() || !TestS3Server::missing().empty()) return;
    shared_ = new Shared;
    Shared& s = *shared_;
    if (!s.certs.make()) {
      s.error = s.certs.error();
      return;
    }
    s.node.enable_tls(s.certs.path("ca.crt"), s.certs.path("server.crt"),
                      s.certs.path("server.key"));
    if (!s.node.start()) {
      s.error = s.node.error();
    } else if (!s.s3.start() || !s.s3.make_bucket("content")) {
      s.error = s.s3.error();
    } else if (s.dir = make_temp_dir("amqp-login", s.error); !s.dir.empty()) {
      s.credentials = s.dir + "/s3-credentials";
      write_file(s.credentials, s.s3.credentials_ini());
      std::string out;
      if (s.node.ctl({"add_user", "chunkd", "right"}, out) != 0 ||
          s.node.ctl({"set_permissions", "-p", "/", "chunkd", ".*", ".*", ".*"}, out) != 0) {
        s.error = "rabbitmqctl: " + out;
      }
    }
  }
  static void TearDownTestSuite() {
    if (shared_ != nullptr && !shared_->dir.empty()) std::filesystem::remove_all(shared_->dir);
    delete shared_;
    shared_ = nullptr;
  }

  void SetUp() override {
    if (!RabbitNode::available()) GTEST_SKIP() << RabbitNode::missing();
    if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_NE(shared_, nullptr);
    ASSERT_TRUE(shared_->error.empty()) << shared_->error;
    if (!node().running()) ASSERT_TRUE(node().start()) << node().error();
    set_password("right");
  }

  static RabbitNode& node() { return shared_->node; }
  static std::string uri() {
    return "amqp://chunkd@127.0.0.1:" + std::to_string(node().amqp_port()) + "/%2f";
  }
  static void set_password(const std::string& password) {
    std::string out;
    ASSERT_EQ(node().ctl({"change_password", "chunkd", password}, out), 0) << out;
  }

  // chunkd on the suite's node as user chunkd, its password file holding `password`; `extra`
  // goes into [amqp].
  void configure(TestDaemon& daemon, const std::string& password, const std::string& uris,
                 const std::string& extra = "") {
    const std::string password_file = daemon.dir() + "/amqp.password";
    ASSERT_TRUE(write_file(password_file, password + "\n"));
    daemon.add_bucket("fw");
    daemon.set("storage", "content_bucket", "\"shared\"");
    daemon.set_extra_toml(
        "[amqp]\nuris = [" + uris +
        "]\nqueue = \"login.requests\"\npassword_file = " + TestDaemon::quote(password_file) +
        "\n" + extra + "\n[buckets.shared]\ntype = \"s3\"\nendpoint = " +
        TestDaemon::quote(shared_->s3.endpoint()) +
        "\nregion = \"us-east-1\"\nbucket = \"content\"\ncredentials_file = " +
        TestDaemon::quote(shared_->credentials) + "\n");
    ASSERT_TRUE(daemon.write_config());
  }

  static std::string amqps_uri() {
    return "amqps://chunkd@127.0.0.1:" + std::to_string(node().amqps_port()) + "/%2f";
  }
  static std::string cert(const std::string& name) { return shared_->certs.path(name); }

  // chunkd_amqp_connect_failures_total over every cause.
  double failures(TestDaemon& daemon) {
    const std::string metrics = daemon.http().request("GET", "/metrics").body;
    double total = 0;
    for (const std::string& line : lines_with(metrics, "chunkd_amqp_connect_failures_total{")) {
      total += std::stod(line.substr(line.rfind(' ') + 1));
    }
    return total;
  }
  double failures(TestDaemon& daemon, const std::string& cause) {
    return metric_value(daemon.http().request("GET", "/metrics").body,
                        "chunkd_amqp_connect_failures_total{cause=\"" + cause + "\"}");
  }
};

AmqpLogin::Shared* AmqpLogin::shared_ = nullptr;

// A wrong password at start-up is an operator's typo, not an outage: one error line naming the
// user and the URI, exit code 1, no retry.
TEST_F(AmqpLogin, AWrongPasswordAtStartUpStopsChunkdWithOneLine) {
  TestDaemon daemon(node().mqtt_uri());
  configure(daemon, "wrong", TestDaemon::quote(uri()));
  const auto started = Clock::now();
  const ProcessResult r =
      run_process({chunkd_binary_path(), "--config", daemon.config_path()}, 60000);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto errors = lines_with(r.err, " error ");
  ASSERT_EQ(errors.size(), 1u) << r.err;
  EXPECT_NE(errors[0].find("amqp: " + uri() +
                           ": the broker refused the login of user chunkd (403 "
                           "ACCESS_REFUSED"),
            std::string::npos)
      << errors[0];
  EXPECT_NE(errors[0].find("amqp.password_file"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("exiting (not retried at start-up)"), std::string::npos) << errors[0];
  EXPECT_TRUE(lines_with(r.err, "retrying").empty()) << r.err;
  std::printf("[ measured ] a refused login stopped chunkd after %lld ms\n",
              static_cast<long long>(took.count()));
}

// Every URI is tried before the verdict: with one node refusing and another unreachable (it may
// come up and accept), chunkd retries and says so once per cause.
TEST_F(AmqpLogin, ARefusalWhileAnotherUriMayAcceptIsRetried) {
  TestDaemon daemon(node().mqtt_uri());
  const ClosedPort closed;
  ASSERT_NE(closed.port(), 0);
  const std::string dead = "amqp://chunkd@127.0.0.1:" + std::to_string(closed.port()) + "/%2f";
  configure(daemon, "wrong", TestDaemon::quote(dead) + ", " + TestDaemon::quote(uri()));
  ASSERT_TRUE(daemon.start(/*wait_ready=*/false)) << daemon.error();
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (failures(daemon) < 6 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(failures(daemon), 6) << daemon.log();
  ASSERT_TRUE(daemon.running()) << daemon.log();
  EXPECT_GE(failures(daemon, "login_refused"), 1) << daemon.log();
  EXPECT_GE(failures(daemon, "unreachable"), 1) << daemon.log();
  const auto refused = lines_with(daemon.log(), "refused the login of user chunkd");
  ASSERT_EQ(refused.size(), 1u) << daemon.log();
  EXPECT_NE(refused[0].find(" warn "), std::string::npos) << refused[0];
  EXPECT_NE(refused[0].find("; retrying"), std::string::npos) << refused[0];
  EXPECT_EQ(lines_with(daemon.log(), "amqp: " + dead + ": connect to").size(), 1u) << daemon.log();
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

// Once chunkd has served, a refused login (the password changed, the node restarted) is retried
// and logged once; the right password again brings chunkd back without a restart of chunkd.
TEST_F(AmqpLogin, AfterServingARefusalIsRetriedUntilThePasswordIsRightAgain) {
  TestDaemon daemon(node().mqtt_uri());
  configure(daemon, "right", TestDaemon::quote(uri()));
  ASSERT_TRUE(daemon.start()) << daemon.error();
  set_password("changed");
  node().stop();
  ASSERT_TRUE(node().start()) << node().error();
  const double before = failures(daemon);
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (failures(daemon) < before + 4 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(failures(daemon), before + 4) << daemon.log();
  ASSERT_TRUE(daemon.running()) << daemon.log();
  EXPECT_EQ(daemon.http().request("GET", "/healthz").status, 503);
  const auto refused = lines_with(daemon.log(), "refused the login of user chunkd");
  ASSERT_EQ(refused.size(), 1u) << daemon.log();
  EXPECT_NE(refused[0].find(" warn "), std::string::npos) << refused[0];
  EXPECT_NE(refused[0].find("; retrying"), std::string::npos) << refused[0];

  set_password("right");
  EXPECT_TRUE(daemon.wait_health(200)) << daemon.log();
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

// amqps:// for real: RabbitMQ's TLS listener, its certificate verified against amqp.ca_file.
TEST_F(AmqpLogin, OverAmqpsWithTheRightCaADeviceDownloads) {
  TestDaemon daemon(node().mqtt_uri());
  configure(daemon, "right", TestDaemon::quote(amqps_uri()),
            "ca_file = " + TestDaemon::quote(cert("ca.crt")) + "\n");
  ASSERT_TRUE(daemon.start()) << daemon.error() << daemon.log();
  const std::string bytes = test_bytes(100 * 1024 + 3, 7);
  write_file(daemon.dir() + "/buckets/fw/tls.bin", bytes);
  HttpClient http = daemon.http();
  auto created =
      http.request("POST", "/streams/tls", create_body({{0, "fw", "tls.bin", std::nullopt}}),
                   {{"Content-Type", "application/json"}});
  ASSERT_TRUE(created.status == 201 || created.status == 200) << created.body << daemon.log();
  Device d(node().mqtt_uri(), "tls-dev");
  ASSERT_TRUE(d.connect() && d.watch("tls")) << d.mqtt().error();
  DownloadResult r = d.download("tls", protocol::Format::Cbor, 0, DownloadOptions{});
  ASSERT_TRUE(r.ok) << r.error << daemon.log();
  EXPECT_TRUE(bytes_to_string(r.bytes) == bytes);
  EXPECT_FALSE(lines_with(daemon.log(), "consuming login.requests on " + amqps_uri()).empty())
      << daemon.log();
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

// A CA that did not sign the node's certificate: one error line naming the URI, the CA file and
// the verification error, exit code 1.
TEST_F(AmqpLogin, OverAmqpsWithAWrongCaChunkdExitsWithOneLine) {
  TestDaemon daemon(node().mqtt_uri());
  configure(daemon, "right", TestDaemon::quote(amqps_uri()),
            "ca_file = " + TestDaemon::quote(cert("other-ca.crt")) + "\n");
  const ProcessResult r =
      run_process({chunkd_binary_path(), "--config", daemon.config_path()}, 60000);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto errors = lines_with(r.err, " error ");
  ASSERT_EQ(errors.size(), 1u) << r.err;
  EXPECT_NE(
      errors[0].find("amqp: " + amqps_uri() +
                     ": broker certificate not trusted by "
                     "amqp.ca_file " +
                     cert("other-ca.crt") + " (self-signed certificate in certificate chain)"),
      std::string::npos)
      << errors[0];
  EXPECT_TRUE(lines_with(r.err, "retrying").empty()) << r.err;
}

}  // namespace
}  // namespace chunkd::test

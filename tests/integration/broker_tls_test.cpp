// chunkd against a Mosquitto TLS listener with certificates made for the test: a good set-up
// serves a device's download end to end (chunkd and the device both on TLS with certificates and
// logins); every setting the broker refuses stops chunkd at start-up with one error line naming
// the cause and the key; a broker not up yet is waited for; a refusal after start-up is retried
// and logged once per outage (README, "Broker TLS, login and ACL").
#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include "tests/integration/api.hpp"
#include "tests/support/tls_certs.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;

std::vector<std::string> lines_with(const std::string& log, const std::string& part) {
  std::vector<std::string> out;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(part) != std::string::npos) out.push_back(line);
  }
  return out;
}

double metric(const std::string& metrics, const std::string& sample) {
  for (const std::string& line : lines_with(metrics, sample + " ")) {
    if (line.rfind(sample + " ", 0) == 0) return std::stod(line.substr(sample.size() + 1));
  }
  return -1;
}

std::string failures_metric(const std::string& cause) {
  return "chunkd_mqtt_connect_failures_total{cause=\"" + cause + "\"}";
}

class BrokerTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TestCerts;
    if (!certs_->make()) FAIL() << certs_->error();
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  void SetUp() override {
    passwords_ = certs_->path("passwd-" + std::to_string(::getpid()));
    ASSERT_TRUE(write_password_file(passwords_, {{"chunkd", "right"}, {"thing-1", "t1"}}, error_))
        << error_;
  }
  void TearDown() override { ::unlink(passwords_.c_str()); }

  static std::string cert(const std::string& name) { return certs_->path(name); }

  // A TLS listener with the test CA and `server_cert`, client certificates required, logins
  // checked against passwords_.
  std::string broker_config(const std::string& server_cert) const {
    return "listener @PORT@ 127.0.0.1\ncafile " + cert("ca.crt") + "\ncertfile " +
           cert(server_cert) + "\nkeyfile " + cert("server.key") +
           "\nrequire_certificate true\nallow_anonymous false\npassword_file " + passwords_ +
           "\nset_tcp_nodelay true\n";
  }

  // chunkd with every TLS and login setting right; a test changes one.
  void configure(TestDaemon& d, const std::string& password = "right") {
    d.set("log", "level", "\"info\"");
    d.set("mqtt", "ca_file", TestDaemon::quote(cert("ca.crt")));
    d.set("mqtt", "cert_file", TestDaemon::quote(cert("client.crt")));
    d.set("mqtt", "key_file", TestDaemon::quote(cert("client.key")));
    d.set("mqtt", "username", "\"chunkd\"");
    ASSERT_TRUE(write_file(d.dir() + "/mqtt.password", password + "\n"));
    d.set("mqtt", "password_file", TestDaemon::quote(d.dir() + "/mqtt.password"));
  }

  double read_metric(TestDaemon& d, const std::string& sample) {
    return metric(d.http().request("GET", "/metrics").body, sample);
  }

  static TestCerts* certs_;
  std::string passwords_;
  std::string error_;
};

TestCerts* BrokerTls::certs_ = nullptr;

TEST_F(BrokerTls, GoodSetupServesADownloadThroughTheTlsBroker) {
  TestBroker broker(TestBroker::FullConfig{broker_config("server.crt")});
  ASSERT_TRUE(broker.start()) << broker.error();
  TestDaemon daemon(broker.tls_uri());
  configure(daemon);
  const std::string bucket = daemon.add_bucket("fw");
  const std::string file = test_bytes(100000, 3);
  ASSERT_TRUE(write_file(bucket + "/fw.bin", file));
  ASSERT_TRUE(daemon.start()) << daemon.error() << broker.log_contents();
  auto created =
      daemon.http().request("POST", "/streams/fw", create_body({{0, "fw", "fw.bin", std::nullopt}}),
                            {{"Content-Type", "application/json"}});
  ASSERT_EQ(created.status, 201) << created.body;

  Device device(broker.tls_uri(), "thing-1");
  device.mqtt().set_login(
      {"thing-1", "t1", cert("ca.crt"), cert("client.crt"), cert("client.key")});
  ASSERT_TRUE(device.connect()) << device.mqtt().error() << broker.log_contents();
  ASSERT_TRUE(device.watch("fw"));
  DownloadResult got = device.download("fw", Format::Cbor, 0, DownloadOptions{});
  ASSERT_TRUE(got.ok) << got.error << daemon.log(4000);
  EXPECT_EQ(bytes_to_string(got.bytes), file);
  const std::string metrics = daemon.http().request("GET", "/metrics").body;
  for (const char* cause :
       {"unreachable", "tls_untrusted", "tls_client_rejected", "login_refused"}) {
    EXPECT_EQ(metric(metrics, failures_metric(cause)), 0) << cause;
  }
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

// Each: exit status 1, one error line naming the cause and the key, and no retry loop.
TEST_F(BrokerTls, SettingsTheBrokerRefusesStopChunkdAtStartWithOneLine) {
  struct Case {
    const char* name;
    const char* server_cert;
    std::function<void(TestDaemon&)> change;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"wrong CA", "server.crt",
       [](TestDaemon& d) { d.set("mqtt", "ca_file", TestDaemon::quote(cert("other-ca.crt"))); },
       "mqtt: broker certificate not trusted by mqtt.ca_file " + cert("other-ca.crt") + " ("},
      {"broker certificate for another name", "wrong-host.crt", [](TestDaemon&) {},
       "mqtt: broker certificate does not name the host '127.0.0.1' of mqtt.uri ssl://"},
      {"expired client certificate", "server.crt",
       [](TestDaemon& d) {
         d.set("mqtt", "cert_file", TestDaemon::quote(cert("client-expired.crt")));
       },
       "mqtt: broker rejected the client certificate mqtt.cert_file " + cert("client-expired.crt")},
      {"client certificate from another CA", "server.crt",
       [](TestDaemon& d) {
         d.set("mqtt", "cert_file", TestDaemon::quote(cert("client-other-ca.crt")));
       },
       "mqtt: broker rejected the client certificate mqtt.cert_file " +
           cert("client-other-ca.crt")},
      {"key of another certificate", "server.crt",
       [](TestDaemon& d) { d.set("mqtt", "key_file", TestDaemon::quote(cert("stray.key"))); },
       "mqtt.key_file '" + cert("stray.key") + "' does not match mqtt.cert_file '" +
           cert("client.crt") + "'"},
      {"bad password", "server.crt", [this](TestDaemon& d) { configure(d, "wrong"); },
       "mqtt: broker refused the login for user 'chunkd': not authorized (mqtt.username, "
       "mqtt.password_file)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TestBroker broker(TestBroker::FullConfig{broker_config(c.server_cert)});
    ASSERT_TRUE(broker.start()) << broker.error();
    TestDaemon daemon(broker.tls_uri());
    configure(daemon);
    c.change(daemon);
    ASSERT_TRUE(daemon.write_config());
    const ProcessResult r =
        run_process({chunkd_binary_path(), "--config", daemon.config_path()}, 60000);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    const auto errors = lines_with(r.err, " error ");
    ASSERT_EQ(errors.size(), 1u) << r.err;
    EXPECT_NE(errors[0].find(c.expect), std::string::npos) << errors[0];
    EXPECT_TRUE(lines_with(r.err, "retrying").empty()) << r.err;
    if (std::string(c.name) == "expired client certificate") {
      EXPECT_NE(errors[0].find(": it expired on "), std::string::npos) << errors[0];
    }
  }
}

// Not a verdict on the settings: chunkd waits, says so once, and connects when the broker is up.
TEST_F(BrokerTls, ABrokerNotUpYetIsWaitedFor) {
  TestBroker broker(TestBroker::FullConfig{broker_config("server.crt")});
  ASSERT_TRUE(broker.start()) << broker.error();
  broker.stop();  // its port is known and closed
  TestDaemon daemon(broker.tls_uri());
  configure(daemon);
  ASSERT_TRUE(daemon.start(/*wait_ready=*/false)) << daemon.error();
  const std::string unreachable = failures_metric("unreachable");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (read_metric(daemon, unreachable) < 4 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(read_metric(daemon, unreachable), 4) << daemon.log();
  EXPECT_EQ(daemon.http().request("GET", "/healthz").status, 503);
  const auto warnings = lines_with(daemon.log(), "mqtt: cannot reach the broker at ssl://");
  ASSERT_EQ(warnings.size(), 1u) << daemon.log();
  EXPECT_NE(warnings[0].find(" warn "), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("Connection refused (mqtt.uri); retrying"), std::string::npos)
      << warnings[0];

  ASSERT_TRUE(broker.restart()) << broker.error();
  EXPECT_TRUE(daemon.wait_health(200)) << daemon.log();
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

// Once chunkd has served, a refused login is retried with backoff, logged once per outage and
// counted on every attempt; chunkd serves again when the broker takes it back.
TEST_F(BrokerTls, ARefusalAfterStartIsRetriedAndLoggedOncePerOutage) {
  TestBroker broker(TestBroker::FullConfig{broker_config("server.crt")});
  ASSERT_TRUE(broker.start()) << broker.error();
  TestDaemon daemon(broker.tls_uri());
  configure(daemon);
  ASSERT_TRUE(daemon.start()) << daemon.error() << broker.log_contents();
  const std::string refused = failures_metric("login_refused");

  for (int outage = 1; outage <= 2; ++outage) {
    SCOPED_TRACE(outage);
    const double before = read_metric(daemon, refused);
    ASSERT_TRUE(write_password_file(passwords_, {{"chunkd", "changed"}}, error_)) << error_;
    ASSERT_TRUE(broker.restart()) << broker.error();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (read_metric(daemon, refused) < before + 4 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_GE(read_metric(daemon, refused), before + 4) << daemon.log();
    ASSERT_TRUE(daemon.running()) << daemon.log();
    EXPECT_EQ(daemon.http().request("GET", "/healthz").status, 503);
    const auto logged = lines_with(daemon.log(), "broker refused the login for user 'chunkd'");
    ASSERT_EQ(logged.size(), static_cast<std::size_t>(outage)) << daemon.log();
    EXPECT_NE(logged.back().find(" warn "), std::string::npos) << logged.back();
    EXPECT_NE(logged.back().find("; retrying"), std::string::npos) << logged.back();

    ASSERT_TRUE(write_password_file(passwords_, {{"chunkd", "right"}}, error_)) << error_;
    ASSERT_TRUE(broker.restart()) << broker.error();
    ASSERT_TRUE(daemon.wait_health(200)) << daemon.log();
  }
  EXPECT_TRUE(lines_with(daemon.log(), " error ").empty()) << daemon.log();
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

}  // namespace
}  // namespace chunkd::test

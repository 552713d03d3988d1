// Why a connection to the broker failed, as the pool reports it: each TLS and login failure
// against a real Mosquitto with certificates made for the test (tests/support/tls_certs.hpp), in
// both MQTT versions (their connects take different paths through libmosquitto), each cause
// reported once however often it repeats, and counted on every attempt.
#include <gtest/gtest.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "io/mqtt_failure.hpp"
#include "io/mqtt_pool.hpp"
#include "tests/support/broker.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"
#include "tests/support/tls_certs.hpp"

namespace {

using chunkd::io::MqttFailure;
using chunkd::io::MqttFailureReport;
using chunkd::io::MqttOptions;
using chunkd::io::MqttPool;
using chunkd::io::MqttProtocol;
using chunkd::test::TestBroker;
using chunkd::test::TestCerts;

bool run_until(uv_loop_t* loop, const std::function<bool()>& pred, int guard_ms = 30000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(guard_ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    uv_run(loop, UV_RUN_NOWAIT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class MqttTlsTest : public ::testing::TestWithParam<MqttProtocol> {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TestCerts;
    if (!certs_->make()) FAIL() << certs_->error();
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    pool_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  static std::string cert(const std::string& name) { return certs_->path(name); }

  // A TLS listener with the CA, `server_cert` and the broker key; `more` adds lines.
  static std::string tls_listener(const std::string& server_cert, const std::string& more = "") {
    return "listener @PORT@ 127.0.0.1\ncafile " + cert("ca.crt") + "\ncertfile " +
           cert(server_cert) + "\nkeyfile " + cert("server.key") + "\n" + more;
  }

  MqttOptions options(const std::string& uri) {
    MqttOptions o;
    o.uri = uri;
    o.client_id = "chunkd-tls";
    o.connections = 2;
    o.reconnect_min_ms = 10;
    o.reconnect_max_ms = 40;
    o.protocol = GetParam();
    o.subscriptions = {"tls/+/get"};
    return o;
  }

  MqttPool& start_pool(MqttOptions o) {
    pool_ = std::make_unique<MqttPool>(&loop_, std::move(o), nullptr, nullptr);
    pool_->on_failure([this](const MqttFailureReport& r) { reports_.push_back(r); });
    auto started = pool_->start();
    EXPECT_TRUE(started) << started.error().message();
    return *pool_;
  }

  std::uint64_t attempts(MqttFailure cause) const {
    return pool_->stats().connect_failures[static_cast<std::size_t>(cause)];
  }

  // Runs until `cause` failed at least `n` times, then expects it reported exactly once and
  // nothing else reported: the report of that cause.
  MqttFailureReport expect_reported_once(MqttFailure cause, std::uint64_t n = 4) {
    EXPECT_TRUE(run_until(&loop_, [&] { return attempts(cause) >= n; }))
        << "attempts: " << attempts(cause) << ", reports: " << describe();
    EXPECT_FALSE(pool_->ready());
    EXPECT_EQ(reports_.size(), 1u) << describe();
    if (reports_.empty()) return {};
    EXPECT_EQ(reports_[0].cause, cause) << describe();
    EXPECT_EQ(reports_[0].permanent, chunkd::io::mqtt_failure_permanent(cause));
    return reports_[0];
  }

  std::string describe() const {
    std::string text;
    for (const auto& r : reports_) {
      text += std::string("[") + chunkd::io::mqtt_failure_name(r.cause) + "] " + r.message + "\n";
    }
    return text;
  }

  static TestCerts* certs_;
  uv_loop_t loop_{};
  std::unique_ptr<MqttPool> pool_;
  std::vector<MqttFailureReport> reports_;
};

TestCerts* MqttTlsTest::certs_ = nullptr;

INSTANTIATE_TEST_SUITE_P(Protocols, MqttTlsTest,
                         ::testing::Values(MqttProtocol::V5, MqttProtocol::V311),
                         [](const auto& info) {
                           return info.param == MqttProtocol::V5 ? "Mqtt5" : "Mqtt311";
                         });

TEST_P(MqttTlsTest, GoodCertificatesConnectWithoutAnyFailure) {
  TestBroker broker(TestBroker::FullConfig{tls_listener("server.crt",
                                                        "require_certificate true\n"
                                                        "allow_anonymous true\n")});
  ASSERT_TRUE(broker.start()) << broker.error();
  MqttOptions o = options(broker.tls_uri());
  o.ca_file = cert("ca.crt");
  o.cert_file = cert("client.crt");
  o.key_file = cert("client.key");
  MqttPool& pool = start_pool(o);
  ASSERT_TRUE(run_until(&loop_, [&] { return pool.ready(); }))
      << describe() << broker.log_contents();
  EXPECT_TRUE(reports_.empty()) << describe();
  for (std::uint64_t n : pool.stats().connect_failures) EXPECT_EQ(n, 0u);
}

TEST_P(MqttTlsTest, BrokerCertificateFromAnotherCaIsNotTrusted) {
  TestBroker broker(TestBroker::FullConfig{tls_listener("server.crt", "allow_anonymous true\n")});
  ASSERT_TRUE(broker.start()) << broker.error();
  MqttOptions o = options(broker.tls_uri());
  o.ca_file = cert("other-ca.crt");
  start_pool(o);
  const MqttFailureReport r = expect_reported_once(MqttFailure::TlsUntrusted);
  EXPECT_TRUE(r.permanent);
  EXPECT_TRUE(has(r.message,
                  "broker certificate not trusted by mqtt.ca_file " + cert("other-ca.crt") + " ("))
      << r.message;
}

TEST_P(MqttTlsTest, BrokerCertificateForAnotherHostIsRefused) {
  TestBroker broker(
      TestBroker::FullConfig{tls_listener("wrong-host.crt", "allow_anonymous true\n")});
  ASSERT_TRUE(broker.start()) << broker.error();
  MqttOptions o = options(broker.tls_uri());
  o.ca_file = cert("ca.crt");
  start_pool(o);
  const MqttFailureReport r = expect_reported_once(MqttFailure::TlsHostMismatch);
  EXPECT_TRUE(has(r.message, "does not name the host '127.0.0.1' of mqtt.uri " + o.uri))
      << r.message;
}

// The broker judges chunkd's certificate after chunkd's side of the handshake: the refusal comes
// as an alert or as a reset, whichever wins; both are the same cause.
TEST_P(MqttTlsTest, ClientCertificatesTheBrokerRefuses) {
  TestBroker broker(TestBroker::FullConfig{tls_listener("server.crt",
                                                        "require_certificate true\n"
                                                        "allow_anonymous true\n")});
  ASSERT_TRUE(broker.start()) << broker.error();
  struct Case {
    const char* cert;
    const char* expect;
  };
  for (const Case& c :
       {Case{"client-other-ca.crt", "): is it signed by a CA in the broker's cafile?"},
        Case{"client-expired.crt", ": it expired on "},
        Case{"", "broker wants a client certificate: set mqtt.cert_file"}}) {
    SCOPED_TRACE(c.cert);
    reports_.clear();
    MqttOptions o = options(broker.tls_uri());
    o.ca_file = cert("ca.crt");
    if (c.cert[0] != '\0') {
      o.cert_file = cert(c.cert);
      o.key_file = cert("client.key");
    }
    MqttPool& pool = start_pool(o);
    const MqttFailureReport r = expect_reported_once(MqttFailure::TlsClientRejected);
    EXPECT_TRUE(has(r.message, c.expect)) << r.message;
    bool done = false;
    pool.stop(0, [&] { done = true; });
    ASSERT_TRUE(run_until(&loop_, [&] { return done; }));
  }
}

TEST_P(MqttTlsTest, RefusedLoginsNameTheUser) {
  const std::string passwords = certs_->path("passwords");
  std::string error;
  ASSERT_TRUE(chunkd::test::write_password_file(passwords, {{"chunkd", "right"}}, error)) << error;
  TestBroker broker(TestBroker::FullConfig{
      tls_listener("server.crt", "allow_anonymous false\npassword_file " + passwords + "\n")});
  ASSERT_TRUE(broker.start()) << broker.error();
  struct Case {
    const char* user;
    const char* password;
    const char* expect;
  };
  for (const Case& c :
       {Case{"chunkd", "wrong",
             "broker refused the login for user 'chunkd': not authorized"
             " (mqtt.username, mqtt.password_file)"},
        Case{"nobody", "right", "login for user 'nobody'"},
        Case{"", "", "broker refused chunkd without a login: not authorized (set mqtt.username"}}) {
    SCOPED_TRACE(c.user);
    reports_.clear();
    MqttOptions o = options(broker.tls_uri());
    o.ca_file = cert("ca.crt");
    o.username = c.user;
    o.password = c.password;
    MqttPool& pool = start_pool(o);
    const MqttFailureReport r = expect_reported_once(MqttFailure::LoginRefused);
    EXPECT_TRUE(has(r.message, c.expect)) << r.message;
    bool done = false;
    pool.stop(0, [&] { done = true; });
    ASSERT_TRUE(run_until(&loop_, [&] { return done; }));
  }
  MqttOptions o = options(broker.tls_uri());
  o.ca_file = cert("ca.crt");
  o.username = "chunkd";
  o.password = "right";
  MqttPool& pool = start_pool(o);
  reports_.clear();
  ASSERT_TRUE(run_until(&loop_, [&] { return pool.ready(); })) << describe();
  EXPECT_TRUE(reports_.empty()) << describe();
}

// Not a verdict on the settings: a retry may get through (a broker restarting, a port that is
// about to be a TLS listener).
TEST_P(MqttTlsTest, TransientCausesAreReportedOnceAndRetried) {
  TestBroker plain;
  ASSERT_TRUE(plain.start()) << plain.error();
  MqttOptions o = options(plain.tls_uri());
  o.ca_file = cert("ca.crt");
  start_pool(o);
  MqttFailureReport r = expect_reported_once(MqttFailure::TlsHandshake);
  EXPECT_FALSE(r.permanent);
  EXPECT_TRUE(has(r.message, "is that port a TLS listener?")) << r.message;

  pool_.reset();
  reports_.clear();
  const chunkd::test::ClosedPort closed_port;
  const std::uint16_t closed = closed_port.port();
  start_pool(options("tcp://127.0.0.1:" + std::to_string(closed)));
  r = expect_reported_once(MqttFailure::Unreachable);
  EXPECT_TRUE(has(r.message, "cannot reach the broker at tcp://127.0.0.1:" +
                                 std::to_string(closed) + ": Connection refused"))
      << r.message;
}

// Files libmosquitto would only try at each connect are checked when the pool starts.
TEST_P(MqttTlsTest, UnusableTlsFilesFailAtStart) {
  struct Case {
    const char* ca;
    const char* cert;
    const char* key;
    const char* expect;
  };
  for (const Case& c : {
           Case{"client.key", "", "", "mqtt.ca_file '"},
           Case{"ca.crt", "client.crt", "stray.key", "mqtt.key_file '"},
           Case{"ca.crt", "client.key", "client.key", "mqtt.cert_file '"},
       }) {
    SCOPED_TRACE(c.expect);
    MqttOptions o = options("ssl://127.0.0.1:1");
    o.ca_file = cert(c.ca);
    if (c.cert[0] != '\0') o.cert_file = cert(c.cert);
    if (c.key[0] != '\0') o.key_file = cert(c.key);
    MqttPool pool(&loop_, o, nullptr, nullptr);
    auto started = pool.start();
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().code, std::errc::invalid_argument);
    EXPECT_TRUE(has(started.error().message(), c.expect)) << started.error().message();
  }
  MqttOptions o = options("ssl://127.0.0.1:1");
  o.ca_file = cert("ca.crt");
  o.cert_file = cert("client.crt");
  o.key_file = cert("stray.key");
  MqttPool pool(&loop_, o, nullptr, nullptr);
  auto started = pool.start();
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().detail, "mqtt.key_file '" + cert("stray.key") +
                                        "' does not match mqtt.cert_file '" + cert("client.crt") +
                                        "' (key values mismatch)");
}

}  // namespace

// AmqpClient over amqps:// against a real RabbitMQ TLS listener (tests/support/rabbitmq.hpp,
// certificates from tests/support/tls_certs.hpp): the right CA connects, a wrong one (or none: the
// system's CAs) is a permanent failure naming the CA and the verification error, and a port that
// does not speak TLS is a transient one.
#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "io/amqp_client.hpp"
#include "tests/support/loop.hpp"
#include "tests/support/rabbitmq.hpp"
#include "tests/support/tls_certs.hpp"

namespace {

using chunkd::io::AmqpClient;
using chunkd::io::AmqpClientOptions;
using chunkd::io::AmqpFailure;
using chunkd::io::AmqpFailureReport;
using chunkd::test::RabbitNode;
using chunkd::test::run_until;
using chunkd::test::TestCerts;

class AmqpTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!RabbitNode::available()) return;
    certs_ = new TestCerts();
    if (!certs_->make()) {
      start_error_ = certs_->error();
      return;
    }
    node_ = new RabbitNode();
    node_->enable_tls(certs_->path("ca.crt"), certs_->path("server.crt"),
                      certs_->path("server.key"));
    if (!node_->start()) start_error_ = node_->error();
  }
  static void TearDownTestSuite() {
    delete node_;
    node_ = nullptr;
    delete certs_;
    certs_ = nullptr;
  }

  void SetUp() override {
    if (!RabbitNode::available()) GTEST_SKIP() << RabbitNode::missing();
    ASSERT_TRUE(start_error_.empty()) << start_error_;
    ASSERT_EQ(uv_loop_init(&loop_), 0);
  }
  void TearDown() override {
    for (auto& c : clients_) {
      bool done = false;
      c->stop(2000, [&] { done = true; });
      EXPECT_TRUE(run_until(&loop_, [&] { return done; }));
    }
    clients_.clear();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  AmqpClient& make(const std::string& uri, const std::string& ca_file) {
    AmqpClientOptions o;
    o.uris = {uri};
    o.ca_file = ca_file;
    o.queue = "tls.requests";
    o.backoff_max_ms = 200;
    clients_.push_back(std::make_unique<AmqpClient>(&loop_, std::move(o), nullptr, nullptr));
    clients_.back()->on_failure([this](const AmqpFailureReport& r) { failures_.push_back(r); });
    return *clients_.back();
  }

  static TestCerts* certs_;
  static RabbitNode* node_;
  static std::string start_error_;
  uv_loop_t loop_{};
  std::vector<std::unique_ptr<AmqpClient>> clients_;
  std::vector<AmqpFailureReport> failures_;
};

TestCerts* AmqpTlsTest::certs_ = nullptr;
RabbitNode* AmqpTlsTest::node_ = nullptr;
std::string AmqpTlsTest::start_error_;

// The certificate names IP address 127.0.0.1 (rabbitmq-c 0.11's own host check would refuse it).
TEST_F(AmqpTlsTest, TheRightCaConnects) {
  AmqpClient& c = make(node_->amqps_uri(), certs_->path("ca.crt"));
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return c.connected() || !failures_.empty(); }));
  EXPECT_TRUE(failures_.empty()) << failures_[0].message;
  EXPECT_TRUE(c.connected()) << node_->log();
}

TEST_F(AmqpTlsTest, AWrongCaIsAPermanentFailureNamingTheCaAndTheError) {
  AmqpClient& c = make(node_->amqps_uri(), certs_->path("other-ca.crt"));
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return !failures_.empty(); }));
  const AmqpFailureReport& r = failures_[0];
  EXPECT_EQ(r.cause, AmqpFailure::TlsUntrusted) << r.message;
  EXPECT_TRUE(r.permanent);
  EXPECT_NE(r.message.find(
                node_->amqps_uri() + ": broker certificate not trusted by amqp.ca_file " +
                certs_->path("other-ca.crt") + " (self-signed certificate in certificate chain)"),
            std::string::npos)
      << r.message;
  EXPECT_FALSE(c.connected());
}

TEST_F(AmqpTlsTest, WithoutACaTheSystemsCasDoNotTrustAPrivateCa) {
  AmqpClient& c = make(node_->amqps_uri(), "");
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return !failures_.empty(); }));
  EXPECT_EQ(failures_[0].cause, AmqpFailure::TlsUntrusted) << failures_[0].message;
  EXPECT_NE(failures_[0].message.find("the system's CA certificates (amqp.ca_file not set)"),
            std::string::npos)
      << failures_[0].message;
}

TEST_F(AmqpTlsTest, ACertificateForAnotherHostIsPermanent) {
  // The node's certificate names IP 127.0.0.1 only.
  AmqpClient& c = make(node_->amqps_uri("localhost"), certs_->path("ca.crt"));
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return !failures_.empty(); }));
  EXPECT_EQ(failures_[0].cause, AmqpFailure::TlsHostMismatch) << failures_[0].message;
  EXPECT_TRUE(failures_[0].permanent);
  EXPECT_NE(failures_[0].message.find("(hostname mismatch)"), std::string::npos)
      << failures_[0].message;
}

TEST_F(AmqpTlsTest, ACaFileWithoutCertificatesIsRefusedAtStart) {
  auto started = make(node_->amqps_uri(), certs_->path("stray.key")).start();
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().detail,
            "amqp.ca_file " + certs_->path("stray.key") + " holds no usable CA certificate (PEM)");
}

TEST_F(AmqpTlsTest, APortThatDoesNotSpeakTlsIsRetried) {
  const std::string plain =
      "amqps://guest@127.0.0.1:" + std::to_string(node_->amqp_port()) + "/%2f";
  AmqpClient& c = make(plain, certs_->path("ca.crt"));
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(run_until(&loop_, [&] { return !failures_.empty(); }));
  EXPECT_FALSE(failures_[0].permanent) << failures_[0].message;
  EXPECT_EQ(failures_[0].cause, AmqpFailure::TlsHandshake) << failures_[0].message;
}

}  // namespace

// The classification of failed AMQP attempts (io/amqp_failure.hpp): which are permanent, and the
// words of each. tests/io/amqp_client_test.cpp and tests/integration/amqp_login_test.cpp meet the
// real ones from RabbitMQ.
#include "io/amqp_failure.hpp"

#include <amqp.h>
#include <amqp_framing.h>
#include <gtest/gtest.h>
#include <openssl/x509_vfy.h>

#include <set>
#include <string>

namespace {

using chunkd::io::AmqpAttempt;
using chunkd::io::AmqpAttemptContext;
using chunkd::io::AmqpFailure;
using chunkd::io::classify_amqp_failure;

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

AmqpAttemptContext context() {
  return AmqpAttemptContext{"amqps://chunkd@mq.example:5671/prod", "chunkd", "prod",
                            "/etc/chunkd/amqp-ca.crt"};
}

AmqpAttempt at(AmqpAttempt::Stage stage, int status, int reply_code = 0, std::string text = "") {
  AmqpAttempt a;
  a.stage = stage;
  a.status = status;
  a.reply_code = reply_code;
  a.reply_text = std::move(text);
  return a;
}

using Stage = AmqpAttempt::Stage;

TEST(AmqpFailure, EveryCauseHasItsOwnMetricName) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < chunkd::io::kAmqpFailureCount; ++i) {
    names.insert(chunkd::io::amqp_failure_name(static_cast<AmqpFailure>(i)));
  }
  EXPECT_EQ(names.size(), chunkd::io::kAmqpFailureCount);
  EXPECT_EQ(names.count("other"), 1u);
}

TEST(AmqpFailure, ARefusedLoginIsPermanentAndNamesTheUserTheUriAndTheKeys) {
  const auto r = classify_amqp_failure(
      at(Stage::Login, 0, AMQP_ACCESS_REFUSED,
         "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN."),
      context());
  EXPECT_EQ(r.cause, AmqpFailure::LoginRefused);
  EXPECT_TRUE(r.permanent);
  EXPECT_EQ(r.uri, "amqps://chunkd@mq.example:5671/prod");
  EXPECT_TRUE(has(r.message, "amqps://chunkd@mq.example:5671/prod: ")) << r.message;
  EXPECT_TRUE(has(r.message, "refused the login of user chunkd (403 ACCESS_REFUSED - Login"))
      << r.message;
  EXPECT_TRUE(has(r.message, "amqp.password_file")) << r.message;
}

TEST(AmqpFailure, AnUnknownVhostOrOneTheUserMayNotUseIsPermanent) {
  for (const auto& [code, text] :
       {std::pair{AMQP_NOT_ALLOWED, "NOT_ALLOWED - vhost prod not found"},
        std::pair{AMQP_ACCESS_REFUSED,
                  "ACCESS_REFUSED - access to vhost 'prod' refused for user 'chunkd'"}}) {
    const auto r = classify_amqp_failure(at(Stage::Login, 0, code, text), context());
    EXPECT_EQ(r.cause, AmqpFailure::VhostRefused) << text;
    EXPECT_TRUE(r.permanent);
    EXPECT_TRUE(has(r.message, "refused vhost \"prod\" to user chunkd")) << r.message;
  }
}

TEST(AmqpFailure, ASocketClosedDuringTheLoginWithoutAVerdictIsRetried) {
  for (int status : {AMQP_STATUS_CONNECTION_CLOSED, AMQP_STATUS_SOCKET_CLOSED,
                     AMQP_STATUS_SOCKET_ERROR, AMQP_STATUS_TIMEOUT}) {
    AmqpAttempt a = at(Stage::Login, status);
    a.what = "login";
    const auto r = classify_amqp_failure(a, context());
    EXPECT_EQ(r.cause, AmqpFailure::Closed) << status;
    EXPECT_FALSE(r.permanent);
    EXPECT_TRUE(has(r.message, "login: " + std::string(amqp_error_string2(status)))) << r.message;
  }
}

TEST(AmqpFailure, TlsVerdictsArePermanentAndOtherTlsFailuresAreNot) {
  AmqpAttempt untrusted = at(Stage::Connect, AMQP_STATUS_SSL_PEER_VERIFY_FAILED);
  untrusted.verify_error = "unable to get local issuer certificate";
  auto r = classify_amqp_failure(untrusted, context());
  EXPECT_EQ(r.cause, AmqpFailure::TlsUntrusted);
  EXPECT_TRUE(r.permanent);
  EXPECT_TRUE(has(r.message,
                  "not trusted by amqp.ca_file /etc/chunkd/amqp-ca.crt (unable to get "
                  "local issuer certificate)"))
      << r.message;
  AmqpAttemptContext system = context();
  system.ca_file.clear();
  r = classify_amqp_failure(untrusted, system);
  EXPECT_TRUE(has(r.message, "the system's CA certificates (amqp.ca_file not set)")) << r.message;

  r = classify_amqp_failure(at(Stage::Connect, AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED), context());
  EXPECT_EQ(r.cause, AmqpFailure::TlsHostMismatch);
  EXPECT_TRUE(r.permanent);
  AmqpAttempt host = at(Stage::Connect, AMQP_STATUS_SSL_PEER_VERIFY_FAILED);
  host.verify_code = X509_V_ERR_HOSTNAME_MISMATCH;
  host.verify_error = "hostname mismatch";
  r = classify_amqp_failure(host, context());
  EXPECT_EQ(r.cause, AmqpFailure::TlsHostMismatch);
  EXPECT_TRUE(r.permanent);
  EXPECT_TRUE(has(r.message, "does not name the host of the URI in amqp.uris (hostname mismatch)"))
      << r.message;

  AmqpAttempt files = at(Stage::Connect, AMQP_STATUS_SSL_ERROR);
  files.tls_files = true;
  r = classify_amqp_failure(files, context());
  EXPECT_EQ(r.cause, AmqpFailure::TlsFiles);
  EXPECT_TRUE(r.permanent);

  for (int status : {AMQP_STATUS_SSL_CONNECTION_FAILED, AMQP_STATUS_SSL_ERROR}) {
    r = classify_amqp_failure(at(Stage::Connect, status), context());
    EXPECT_EQ(r.cause, AmqpFailure::TlsHandshake) << status;
    EXPECT_FALSE(r.permanent);
  }
}

TEST(AmqpFailure, AnUnreachableBrokerAndOtherClosesAreRetried) {
  AmqpAttempt a = at(Stage::Connect, AMQP_STATUS_SOCKET_ERROR);
  a.what = "connect to mq.example:5671";
  auto r = classify_amqp_failure(a, context());
  EXPECT_EQ(r.cause, AmqpFailure::Unreachable);
  EXPECT_FALSE(r.permanent);
  EXPECT_TRUE(has(r.message, "connect to mq.example:5671: ")) << r.message;

  // A 403 after the login (a queue the user may not configure) is not a refused login.
  AmqpAttempt declare = at(Stage::Setup, 0, AMQP_ACCESS_REFUSED, "ACCESS_REFUSED - no access");
  declare.what = "queue.declare chunkd.requests";
  r = classify_amqp_failure(declare, context());
  EXPECT_EQ(r.cause, AmqpFailure::BrokerClosed);
  EXPECT_FALSE(r.permanent);
  EXPECT_TRUE(has(r.message, "queue.declare chunkd.requests: the broker closed")) << r.message;

  r = classify_amqp_failure(at(Stage::Login, 0, AMQP_CONNECTION_FORCED, "shutdown"), context());
  EXPECT_EQ(r.cause, AmqpFailure::BrokerClosed);
  EXPECT_FALSE(r.permanent);
}

TEST(AmqpFailure, TheBrokersWordsAreMadePrintableAndBounded) {
  const std::string text = std::string("ACCESS_REFUSED\n\x1b[31m") + std::string(1000, 'x');
  const auto r = classify_amqp_failure(at(Stage::Login, 0, AMQP_ACCESS_REFUSED, text), context());
  EXPECT_EQ(r.message.find('\n'), std::string::npos);
  EXPECT_EQ(r.message.find('\x1b'), std::string::npos);
  EXPECT_LT(r.message.size(), 500u) << r.message;
}

TEST(AmqpFailure, APasswordInTheUriIsMasked) {
  using chunkd::io::amqp_uri_without_password;
  EXPECT_EQ(amqp_uri_without_password("amqp://u:secret@h:5672/v"), "amqp://u:***@h:5672/v");
  EXPECT_EQ(amqp_uri_without_password("amqp://u@h:5672/v"), "amqp://u@h:5672/v");
  EXPECT_EQ(amqp_uri_without_password("amqp://h:5672/a@b"), "amqp://h:5672/a@b");
  EXPECT_EQ(amqp_uri_without_password("amqp://h"), "amqp://h");
  AmqpAttemptContext c = context();
  c.uri = "amqp://chunkd:hunter2@mq.example/prod";
  const auto r = classify_amqp_failure(at(Stage::Login, 0, AMQP_ACCESS_REFUSED, "x"), c);
  EXPECT_FALSE(has(r.message, "hunter2")) << r.message;
  EXPECT_FALSE(has(r.uri, "hunter2")) << r.uri;
}

}  // namespace

// The words for each failure (io/mqtt_failure.hpp) where no test broker can provoke it: every
// CONNACK refusal of both MQTT versions, libmosquitto's log lines, and what an attempt that broke
// without a line is taken for. tests/io/mqtt_tls_test.cpp meets the real ones.
#include "io/mqtt_failure.hpp"

#include <gtest/gtest.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/x509_vfy.h>

#include <cerrno>
#include <set>
#include <string>

#include "io/mqtt_options.hpp"

namespace {

using chunkd::io::MqttAttemptTrace;
using chunkd::io::MqttFailure;
using chunkd::io::MqttOptions;
using chunkd::io::MqttUri;

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

MqttOptions tls_options() {
  MqttOptions o;
  o.uri = "ssl://gw.example:8883";
  o.ca_file = "/etc/chunkd/ca.crt";
  o.username = "chunkd";
  return o;
}

MqttUri tls_uri() { return MqttUri{true, "gw.example", 8883, false}; }

TEST(MqttFailure, EveryCauseHasItsOwnMetricName) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < chunkd::io::kMqttFailureCount; ++i) {
    names.insert(chunkd::io::mqtt_failure_name(static_cast<MqttFailure>(i)));
  }
  EXPECT_EQ(names.size(), chunkd::io::kMqttFailureCount);
  EXPECT_EQ(names.count("unknown"), 0u);
}

TEST(MqttFailure, ConnackRefusalsOfBothVersions) {
  const MqttOptions o = tls_options();
  struct Case {
    int reason;
    bool mqtt5;
    MqttFailure cause;
    const char* says;
  };
  for (const Case& c : {
           Case{CONNACK_REFUSED_BAD_USERNAME_PASSWORD, false, MqttFailure::LoginRefused,
                "login for user 'chunkd': bad username or password (mqtt.username"},
           Case{CONNACK_REFUSED_NOT_AUTHORIZED, false, MqttFailure::LoginRefused, "not authorized"},
           Case{MQTT_RC_BAD_USERNAME_OR_PASSWORD, true, MqttFailure::LoginRefused,
                "login for user 'chunkd'"},
           Case{MQTT_RC_NOT_AUTHORIZED, true, MqttFailure::LoginRefused, ": not authorized ("},
           Case{CONNACK_REFUSED_SERVER_UNAVAILABLE, false, MqttFailure::BrokerUnavailable,
                "cannot take chunkd now: server unavailable"},
           Case{MQTT_RC_SERVER_BUSY, true, MqttFailure::BrokerUnavailable, "cannot take chunkd"},
           Case{MQTT_RC_CONNECTION_RATE_EXCEEDED, true, MqttFailure::BrokerUnavailable, "now"},
           Case{CONNACK_REFUSED_IDENTIFIER_REJECTED, false, MqttFailure::Refused,
                "client identifier rejected (CONNACK 2) (mqtt.client_id)"},
           Case{MQTT_RC_CLIENTID_NOT_VALID, true, MqttFailure::Refused, "(mqtt.client_id)"},
           Case{MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION, true, MqttFailure::Refused,
                "(mqtt.protocol)"},
           Case{MQTT_RC_BANNED, true, MqttFailure::Refused, "broker refused the connection: "},
       }) {
    SCOPED_TRACE(c.reason);
    const auto r = chunkd::io::mqtt_refused(o, c.reason, c.mqtt5);
    EXPECT_EQ(r.cause, c.cause);
    EXPECT_EQ(r.permanent, c.cause != MqttFailure::BrokerUnavailable);
    EXPECT_TRUE(has(r.message, c.says)) << r.message;
  }
  MqttOptions anonymous = o;
  anonymous.username.clear();
  const auto r = chunkd::io::mqtt_refused(anonymous, MQTT_RC_NOT_AUTHORIZED, true);
  EXPECT_TRUE(has(r.message,
                  "without a login: not authorized (set mqtt.username and "
                  "mqtt.password_file)"))
      << r.message;
  // A username is text from the config: control characters do not reach the log line.
  anonymous.username = "a\nb";
  EXPECT_TRUE(has(chunkd::io::mqtt_refused(anonymous, 5, false).message, "user 'a?b'"));
}

TEST(MqttFailure, LogLinesAndTheTlsSessionNameTheTlsCause) {
  const MqttOptions o = tls_options();
  MqttAttemptTrace t;
  t.note("Client chunkd-0 sending CONNECT", X509_V_OK, false);
  t.note("OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed",
         X509_V_ERR_CERT_HAS_EXPIRED, false);
  t.note("OpenSSL Error[1]: error:later:second line", X509_V_OK, false);
  EXPECT_EQ(t.openssl_reason, "certificate verify failed");
  auto r = chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_TLS, 0);
  EXPECT_EQ(r.cause, MqttFailure::TlsUntrusted);
  EXPECT_EQ(r.message,
            "broker certificate not trusted by mqtt.ca_file /etc/chunkd/ca.crt (certificate has "
            "expired)");

  t.clear();
  t.note("Error: host name verification failed.", X509_V_OK, false);
  t.note("OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed", 1, false);
  EXPECT_EQ(chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_TLS, 0).cause,
            MqttFailure::TlsHostMismatch);

  t.clear();
  t.note("Error: Unable to load client key file \"/x/k.key\".", X509_V_OK, false);
  t.note("OpenSSL Error[0]: error:05800074:x509 certificate routines::key values mismatch",
         X509_V_OK, false);
  r = chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_TLS, 0);
  EXPECT_EQ(r.cause, MqttFailure::TlsFiles);
  EXPECT_TRUE(has(r.message, "Unable to load client key file \"/x/k.key\". (key values mismatch)"))
      << r.message;

  t.clear();
  t.note("OpenSSL Error[0]: error:0A00042E:SSL routines::tlsv1 alert protocol version", 0, false);
  EXPECT_EQ(chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_ERRNO, EPROTO).cause,
            MqttFailure::TlsHandshake);
  t.clear();
  t.note("OpenSSL Error[0]: error:0A000418:SSL routines::tlsv1 alert unknown ca", 0, true);
  EXPECT_EQ(chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_CONN_LOST, 0).cause,
            MqttFailure::TlsClientRejected);
}

// A TLS session that breaks without a line: after the handshake, the broker refused chunkd's
// certificate; before it, the handshake failed (not a verdict).
TEST(MqttFailure, ABreakWithoutALineIsJudgedByTheHandshake) {
  MqttOptions o = tls_options();
  MqttAttemptTrace t;
  t.tls_done = true;
  auto r = chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_ERRNO, EPROTO);
  EXPECT_EQ(r.cause, MqttFailure::TlsClientRejected);
  EXPECT_TRUE(has(r.message, "broker wants a client certificate: set mqtt.cert_file")) << r.message;
  o.cert_file = "/nonexistent/chunkd.crt";
  r = chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_CONN_LOST, ECONNRESET);
  EXPECT_TRUE(has(r.message,
                  "mqtt.cert_file /nonexistent/chunkd.crt (the broker closed the "
                  "connection right after the TLS handshake): is it signed by a CA"))
      << r.message;
  t.tls_done = false;
  r = chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_ERRNO, ECONNRESET);
  EXPECT_EQ(r.cause, MqttFailure::TlsHandshake);
  EXPECT_FALSE(r.permanent);
  // Before any TLS: the TCP connection itself.
  r = chunkd::io::mqtt_broken(o, tls_uri(), t, MOSQ_ERR_ERRNO, ECONNREFUSED);
  EXPECT_EQ(r.cause, MqttFailure::Unreachable);
  EXPECT_EQ(r.message,
            "cannot reach the broker at ssl://gw.example:8883: Connection refused (mqtt.uri)");
}

TEST(MqttFailure, PlainTcpClosedBeforeConnackHintsAtTls) {
  MqttOptions o;
  o.uri = "tcp://gw.example:8883";
  const auto r = chunkd::io::mqtt_broken(o, MqttUri{false, "gw.example", 8883, false},
                                         MqttAttemptTrace{}, MOSQ_ERR_CONN_LOST, 0);
  EXPECT_EQ(r.cause, MqttFailure::Closed);
  EXPECT_FALSE(r.permanent);
  EXPECT_TRUE(has(r.message, "(a TLS listener needs an ssl:// mqtt.uri)")) << r.message;
}

}  // namespace

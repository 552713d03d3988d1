#include "io/mqtt_failure.hpp"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>

#include "base/assert.hpp"
#include "io/mqtt_options.hpp"

namespace chunkd::io {
namespace {

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Text from outside (a username, a library's line) made safe for one log line.
std::string printable(std::string_view text, std::size_t max_bytes = 200) {
  std::string out;
  for (char ch : text.substr(0, max_bytes)) {
    out += std::isprint(static_cast<unsigned char>(ch)) != 0 ? ch : '?';
  }
  return out;
}

std::string lower_first(std::string text) {
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

// What a CONNACK refusal means, in a few words.
std::string connack_text(int reason, bool mqtt5) {
  if (mqtt5) return lower_first(mosquitto_reason_string(reason));
  switch (reason) {
    case CONNACK_REFUSED_PROTOCOL_VERSION:
      return "unacceptable protocol version";
    case CONNACK_REFUSED_IDENTIFIER_REJECTED:
      return "client identifier rejected";
    case CONNACK_REFUSED_SERVER_UNAVAILABLE:
      return "server unavailable";
    case CONNACK_REFUSED_BAD_USERNAME_PASSWORD:
      return "bad username or password";
    case CONNACK_REFUSED_NOT_AUTHORIZED:
      return "not authorized";
    default:
      return "reason " + std::to_string(reason);
  }
}

MqttFailureReport report(MqttFailure cause, std::string message) {
  return MqttFailureReport{cause, mqtt_failure_permanent(cause), std::move(message)};
}

// A TLS alert the broker sends about chunkd's certificate.
bool certificate_alert(std::string_view reason) {
  if (!contains(reason, "alert")) return false;
  for (const char* what : {"certificate", "unknown ca", "access denied"}) {
    if (contains(reason, what)) return true;
  }
  return false;
}

MqttFailureReport client_rejected(const MqttOptions& o, const std::string& why) {
  if (o.cert_file.empty()) {
    return report(
        MqttFailure::TlsClientRejected,
        "broker wants a client certificate: set mqtt.cert_file and mqtt.key_file (" + why + ")");
  }
  const std::string note = client_certificate_note(o.cert_file);
  return report(MqttFailure::TlsClientRejected,
                "broker rejected the client certificate mqtt.cert_file " + o.cert_file + " (" +
                    why +
                    "): " + (note.empty() ? "is it signed by a CA in the broker's cafile?" : note));
}

MqttFailureReport untrusted(const MqttOptions& o, const MqttAttemptTrace& t) {
  const std::string why = t.verify_result != X509_V_OK
                              ? X509_verify_cert_error_string(t.verify_result)
                              : t.openssl_reason;
  const std::string by = o.ca_file.empty() ? "the system's CA certificates (mqtt.ca_file not set)"
                                           : "mqtt.ca_file " + o.ca_file;
  return report(MqttFailure::TlsUntrusted,
                "broker certificate not trusted by " + by + " (" + why + ")");
}

// The connection broke over TLS: the log lines say why, or the moment it broke does.
std::optional<MqttFailureReport> tls_broken(const MqttOptions& o, const MqttUri& uri,
                                            const MqttAttemptTrace& t, int rc, int err) {
  if (!t.load_error.empty()) {
    return report(MqttFailure::TlsFiles,
                  "cannot use the TLS files (mqtt.ca_file, mqtt.cert_file, "
                  "mqtt.key_file): " +
                      t.load_error + " (" + t.openssl_reason + ")");
  }
  if (t.host_mismatch) {
    return report(MqttFailure::TlsHostMismatch, "broker certificate does not name the host '" +
                                                    uri.host + "' of mqtt.uri " + o.uri +
                                                    " (host name verification failed)");
  }
  if (contains(t.openssl_reason, "certificate verify failed")) return untrusted(o, t);
  if (certificate_alert(t.openssl_reason)) return client_rejected(o, t.openssl_reason);
  if (!t.openssl_reason.empty()) {
    return report(MqttFailure::TlsHandshake, "TLS with the broker at " + o.uri +
                                                 " failed: " + t.openssl_reason +
                                                 " (is that port a TLS listener? mqtt.uri)");
  }
  // No line: after a completed handshake only the broker's verdict on chunkd's certificate ends
  // the session before CONNACK (its reset may beat the alert to the read).
  const bool reset = rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_TLS ||
                     rc == MOSQ_ERR_TLS_HANDSHAKE ||
                     (rc == MOSQ_ERR_ERRNO && (err == EPROTO || err == ECONNRESET || err == EPIPE));
  if (t.tls_done && reset) {
    return client_rejected(o, "the broker closed the connection right after the TLS handshake");
  }
  if (reset) {
    const std::string why = rc == MOSQ_ERR_ERRNO ? std::strerror(err) : mosquitto_strerror(rc);
    return report(MqttFailure::TlsHandshake, "TLS with the broker at " + o.uri +
                                                 " failed during the handshake: " + why +
                                                 " (is that port a TLS listener? mqtt.uri)");
  }
  return std::nullopt;
}

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};

// The reason of OpenSSL's oldest queued error, and an empty queue afterwards.
std::string openssl_reason() {
  const unsigned long e = ERR_peek_error();
  const char* reason = e != 0 ? ERR_reason_error_string(e) : nullptr;
  ERR_clear_error();
  return reason != nullptr ? reason : "no detail";
}

std::string utc_text(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "an unreadable date";
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

// A key file that is encrypted must not make OpenSSL ask on the terminal.
int no_passphrase(char*, int, int, void*) { return 0; }

}  // namespace

std::string client_certificate_note(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return "";
  std::unique_ptr<X509, X509Free> cert(PEM_read_X509(f, nullptr, no_passphrase, nullptr));
  std::fclose(f);
  ERR_clear_error();
  if (!cert) return "";
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) < 0) {
    return "it expired on " + utc_text(X509_get0_notAfter(cert.get()));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) > 0) {
    return "it is not valid before " + utc_text(X509_get0_notBefore(cert.get()));
  }
  return "";
}

Expected<void> check_tls_files(const MqttOptions& o) {
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return fail(std::errc::not_enough_memory, "TLS context: " + openssl_reason());
  SSL_CTX_set_default_passwd_cb(ctx.get(), no_passphrase);
  if (!o.ca_file.empty() &&
      SSL_CTX_load_verify_locations(ctx.get(), o.ca_file.c_str(), nullptr) != 1) {
    return fail(std::errc::invalid_argument, "mqtt.ca_file '" + o.ca_file +
                                                 "' holds no usable CA certificate (" +
                                                 openssl_reason() + ")");
  }
  if (o.cert_file.empty()) return {};
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.cert_file.c_str()) != 1) {
    return fail(
        std::errc::invalid_argument,
        "mqtt.cert_file '" + o.cert_file + "' is not a PEM certificate (" + openssl_reason() + ")");
  }
  const std::string mismatch =
      "mqtt.key_file '" + o.key_file + "' does not match mqtt.cert_file '" + o.cert_file + "'";
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), o.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    const std::string why = openssl_reason();
    if (why == "key values mismatch") {
      return fail(std::errc::invalid_argument, mismatch + " (" + why + ")");
    }
    return fail(
        std::errc::invalid_argument,
        "mqtt.key_file '" + o.key_file + "' is not an unencrypted PEM private key (" + why + ")");
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    return fail(std::errc::invalid_argument, mismatch + " (" + openssl_reason() + ")");
  }
  return {};
}

const char* mqtt_failure_name(MqttFailure cause) {
  switch (cause) {
    case MqttFailure::Unreachable:
      return "unreachable";
    case MqttFailure::Closed:
      return "closed";
    case MqttFailure::BrokerUnavailable:
      return "broker_unavailable";
    case MqttFailure::TlsHandshake:
      return "tls_handshake";
    case MqttFailure::TlsUntrusted:
      return "tls_untrusted";
    case MqttFailure::TlsHostMismatch:
      return "tls_host_mismatch";
    case MqttFailure::TlsClientRejected:
      return "tls_client_rejected";
    case MqttFailure::TlsFiles:
      return "tls_files";
    case MqttFailure::LoginRefused:
      return "login_refused";
    case MqttFailure::Refused:
      return "refused";
  }
  return "unknown";
}

bool mqtt_failure_permanent(MqttFailure cause) {
  switch (cause) {
    case MqttFailure::Unreachable:
    case MqttFailure::Closed:
    case MqttFailure::BrokerUnavailable:
    case MqttFailure::TlsHandshake:
      return false;
    case MqttFailure::TlsUntrusted:
    case MqttFailure::TlsHostMismatch:
    case MqttFailure::TlsClientRejected:
    case MqttFailure::TlsFiles:
    case MqttFailure::LoginRefused:
    case MqttFailure::Refused:
      return true;
  }
  return false;
}

void MqttAttemptTrace::note(std::string_view line, long verify, bool handshake_done) {
  tls_done = tls_done || handshake_done;
  if (line.starts_with("OpenSSL Error[")) {
    if (openssl_reason.empty()) {
      // "OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed"
      const auto colon = line.rfind(':');
      openssl_reason = printable(colon == std::string_view::npos ? line : line.substr(colon + 1));
    }
    if (verify_result == X509_V_OK) verify_result = verify;
  } else if (line.starts_with("Error: host name verification failed")) {
    host_mismatch = true;
  } else if (line.starts_with("Error: Unable to load") ||
             line.starts_with("Error: Client certificate/key are inconsistent")) {
    if (load_error.empty()) load_error = printable(line.substr(std::strlen("Error: ")));
  }
}

MqttFailureReport mqtt_unreachable(const MqttOptions& o, std::string_view why) {
  return report(MqttFailure::Unreachable,
                "cannot reach the broker at " + o.uri + ": " + printable(why) + " (mqtt.uri)");
}

MqttFailureReport mqtt_refused(const MqttOptions& o, int reason, bool mqtt5) {
  CHUNKD_ASSERT(reason != 0);
  const std::string text = connack_text(reason, mqtt5);
  const bool login =
      mqtt5 ? reason == MQTT_RC_BAD_USERNAME_OR_PASSWORD || reason == MQTT_RC_NOT_AUTHORIZED
            : reason == CONNACK_REFUSED_BAD_USERNAME_PASSWORD ||
                  reason == CONNACK_REFUSED_NOT_AUTHORIZED;
  if (login && o.username.empty()) {
    return report(MqttFailure::LoginRefused, "broker refused chunkd without a login: " + text +
                                                 " (set mqtt.username and mqtt.password_file)");
  }
  if (login) {
    return report(MqttFailure::LoginRefused, "broker refused the login for user '" +
                                                 printable(o.username) + "': " + text +
                                                 " (mqtt.username, mqtt.password_file)");
  }
  const bool busy = mqtt5 ? reason == MQTT_RC_SERVER_UNAVAILABLE || reason == MQTT_RC_SERVER_BUSY ||
                                reason == MQTT_RC_QUOTA_EXCEEDED ||
                                reason == MQTT_RC_CONNECTION_RATE_EXCEEDED
                          : reason == CONNACK_REFUSED_SERVER_UNAVAILABLE;
  if (busy) {
    return report(MqttFailure::BrokerUnavailable,
                  "the broker at " + o.uri + " cannot take chunkd now: " + text);
  }
  std::string key;
  if (mqtt5 ? reason == MQTT_RC_CLIENTID_NOT_VALID
            : reason == CONNACK_REFUSED_IDENTIFIER_REJECTED) {
    key = " (mqtt.client_id)";
  } else if (mqtt5 ? reason == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION
                   : reason == CONNACK_REFUSED_PROTOCOL_VERSION) {
    key = " (mqtt.protocol)";
  }
  return report(MqttFailure::Refused, "broker refused the connection: " + text + " (CONNACK " +
                                          std::to_string(reason) + ")" + key);
}

MqttFailureReport mqtt_broken(const MqttOptions& o, const MqttUri& uri, const MqttAttemptTrace& t,
                              int rc, int err) {
  if (uri.tls) {
    if (auto r = tls_broken(o, uri, t, rc, err)) return std::move(*r);
  }
  const std::string why = rc == MOSQ_ERR_ERRNO ? std::strerror(err) : mosquitto_strerror(rc);
  if (rc == MOSQ_ERR_EAI ||
      (rc == MOSQ_ERR_ERRNO && (err == ECONNREFUSED || err == ETIMEDOUT || err == EHOSTUNREACH ||
                                err == ENETUNREACH || err == EADDRNOTAVAIL))) {
    return mqtt_unreachable(o, why);
  }
  return report(MqttFailure::Closed,
                "the broker at " + o.uri + " closed the connection before accepting chunkd: " +
                    why + (uri.tls ? "" : " (a TLS listener needs an ssl:// mqtt.uri)"));
}

}  // namespace chunkd::io

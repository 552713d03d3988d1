// Why a connection attempt to the broker failed, in words an operator can act on.
//
// A connection (io/mqtt_connection.hpp) collects what libmosquitto says during an attempt
// (MqttAttemptTrace: its log lines, caught only while connecting, and the TLS verify result) and
// turns the attempt's end into one MqttFailureReport: a cause, whether retrying can help, and a
// one-line message naming the config key to check. The pool reports each cause once until it is
// ready again and counts every failed attempt by cause (MqttStats::connect_failures).
//
// How libmosquitto 2.0 shows each cause (observed with Mosquitto 2.0.11 and OpenSSL 3.0, and
// checked by tests/io/mqtt_tls_test.cpp):
//   - broker certificate not signed by the CA: connect returns MOSQ_ERR_TLS after the log line
//     "OpenSSL Error[0]: ...:certificate verify failed"; SSL_get_verify_result names the reason;
//   - broker certificate for another host: the same, preceded by "Error: host name verification
//     failed.";
//   - client certificate refused by the broker (unknown CA, expired, none sent): TLS 1.3 ends
//     the client's handshake before the broker judges the certificate, so the refusal comes
//     after it: either a read fails after "OpenSSL Error[0]: ...:sslv3 alert certificate
//     expired" (or "tlsv1 alert unknown ca", "tlsv13 alert certificate required"), or, when the
//     broker's reset wins the race, the CONNECT write fails with errno EPROTO and no line at all;
//   - client key not matching its certificate, unreadable TLS files: MOSQ_ERR_TLS after "Error:
//     Unable to load ..." (MqttPool::start checks these files first, so this means they changed);
//   - login refused: CONNACK reason 4/5 (3.1.1) or 134/135 (MQTT 5). Mosquitto 2.0 answers a
//     wrong password and an unknown user with "not authorized" (5/135), never 4/134.
//
// Thread: any (pure functions; client_certificate_note reads a file).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/expected.hpp"
#include "io/mqtt_uri.hpp"

namespace chunkd::io {

struct MqttOptions;  // io/mqtt_options.hpp, which includes this header for its counters

enum class MqttFailure : std::uint8_t {
  Unreachable,        // no TCP connection: refused, timed out, name not resolved
  Closed,             // the broker closed the connection before CONNACK (plain TCP)
  BrokerUnavailable,  // CONNACK: server unavailable, busy, quota or rate exceeded
  TlsHandshake,       // TLS failed without a verdict (e.g. the port is not a TLS listener)
  TlsUntrusted,       // the broker's certificate failed verification against the CA
  TlsHostMismatch,    // the broker's certificate does not name the host of mqtt.uri
  TlsClientRejected,  // the broker refused chunkd's client certificate (or wants one)
  TlsFiles,           // libmosquitto could not load the TLS files
  LoginRefused,       // CONNACK: bad username or password, not authorized
  Refused,            // CONNACK: any other refusal (banned, client id rejected, ...)
};
inline constexpr std::size_t kMqttFailureCount = 10;

// The metric label: "unreachable", "tls_untrusted", "login_refused", ...
const char* mqtt_failure_name(MqttFailure cause);
// True when the same settings will fail again: TLS verdicts, TLS files, refused logins and
// other CONNACK refusals. False for what a later attempt may get past (the broker not up yet,
// busy, a handshake cut short).
bool mqtt_failure_permanent(MqttFailure cause);

struct MqttFailureReport {
  MqttFailure cause = MqttFailure::Unreachable;
  bool permanent = false;
  std::string message;  // one line without the "mqtt: " prefix, naming the key to check
};

// What libmosquitto said during one attempt; cleared when an attempt begins.
struct MqttAttemptTrace {
  std::string openssl_reason;  // of the first "OpenSSL Error[n]: ..." line, e.g. "certificate
                               // verify failed"
  std::string load_error;      // an "Error: Unable to load ..." line
  long verify_result = 0;      // X509_V_OK, or why the broker's certificate failed
  bool host_mismatch = false;  // "Error: host name verification failed."
  bool tls_done = false;       // the TLS handshake completed (seen at "sending CONNECT")

  void clear() { *this = MqttAttemptTrace{}; }
  // Takes one libmosquitto log line; `verify_result` and `tls_done` are read from its TLS session
  // at that moment (0 and false without one).
  void note(std::string_view line, long verify_result, bool tls_done);
};

// An attempt that ended before any TCP connection (`why`: strerror or a resolver's message).
MqttFailureReport mqtt_unreachable(const MqttOptions& o, std::string_view why);
// A CONNACK refusal: `reason` as libmosquitto's on_connect gives it (3.1.1 return code, or the
// MQTT 5 reason code when `mqtt5`). REQUIRES: reason != 0.
MqttFailureReport mqtt_refused(const MqttOptions& o, int reason, bool mqtt5);
// An attempt whose connection (or TLS session) broke before CONNACK: `rc` the libmosquitto
// error, `err` the errno that came with it (MOSQ_ERR_ERRNO), `trace` the attempt's log lines.
MqttFailureReport mqtt_broken(const MqttOptions& o, const MqttUri& uri,
                              const MqttAttemptTrace& trace, int rc, int err);

// What is wrong with the certificate in `path` on its own, for a message: "it expired on
// 2026-01-02 03:04:05 UTC", "it is not valid before ...", or "" (fine, or unreadable).
std::string client_certificate_note(const std::string& path);

// Loads the TLS files as libmosquitto will (the CA file, the client certificate chain and key)
// and checks that the key belongs to the certificate. Errors name the key and the file:
// "mqtt.key_file '/x/k.pem' does not match mqtt.cert_file '/x/c.pem' (key values mismatch)".
Expected<void> check_tls_files(const MqttOptions& o);

}  // namespace chunkd::io

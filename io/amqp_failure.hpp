// Why an AMQP session attempt (io/amqp_session.cpp) failed, and whether retrying can help: the
// AMQP counterpart of io/mqtt_failure.hpp, for the policy of README "Broker TLS, login and ACL"
// (until the broker accepted chunkd once, a permanent failure stops chunkd; engine/daemon.cpp).
//
// How rabbitmq-c 0.11 and RabbitMQ 3.10 show each cause (checked by tests/io/amqp_failure_test.cpp
// here and by tests/io/amqp_client_test.cpp and tests/integration/amqp_login_test.cpp for real):
//   - wrong password or unknown user: rabbitmq-c announces the authentication_failure_close
//     capability, so RabbitMQ answers the login with connection.close 403 ACCESS_REFUSED
//     ("Login was refused using authentication mechanism PLAIN ...") before closing;
//   - unknown vhost, or a user without rights on it: connection.close 530 NOT_ALLOWED to the
//     login's connection.open (403 ACCESS_REFUSED for a vhost the user may not use);
//   - the socket closed during the login WITHOUT a connection.close (AMQP_STATUS_CONNECTION_CLOSED
//     or AMQP_STATUS_SOCKET_CLOSED): what a node that is stopping or starting does, and what
//     RabbitMQ does for a bad login only to clients without that capability: transient;
//   - amqps:// broker certificate not trusted (by amqp.ca_file, or the system's CAs):
//     AMQP_STATUS_SSL_PEER_VERIFY_FAILED after the handshake; the verify callback caught why
//     (RabbitMQ sends its CA along: "self-signed certificate in certificate chain");
//   - certificate for another host: the same, with X509_V_ERR_HOSTNAME_MISMATCH or
//     X509_V_ERR_IP_ADDRESS_MISMATCH (OpenSSL checks the host: rabbitmq-c 0.11's own check,
//     AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED, reads DNS names only and is turned off);
//   - any other TLS failure (not a TLS port, the handshake cut): AMQP_STATUS_SSL_CONNECTION_FAILED
//     or AMQP_STATUS_SSL_ERROR: transient (a port still starting looks the same).
//
// Thread: any (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace chunkd::io {

enum class AmqpFailure : std::uint8_t {
  Unreachable,      // no TCP connection: refused, timed out, name not resolved
  Closed,           // the socket closed (or timed out) during the handshake, without a verdict
  TlsHandshake,     // TLS failed without a verdict on the certificate
  TlsUntrusted,     // the broker's certificate failed verification against the CA
  TlsHostMismatch,  // the broker's certificate does not name the URI's host
  TlsFiles,         // the CA certificates (amqp.ca_file, or the system's) cannot be loaded
  LoginRefused,     // connection.close 403 ACCESS_REFUSED: wrong user or password
  VhostRefused,     // connection.close 530 NOT_ALLOWED: unknown vhost, or no rights on it
  BrokerClosed,     // any other connection.close or channel.close while setting up
  Other,            // anything else (out of memory, a lost session)
};
inline constexpr std::size_t kAmqpFailureCount = 10;

const char* amqp_failure_name(AmqpFailure cause);  // "login_refused", ...
// True when the same settings will fail again on that node: TLS verdicts and files, refused
// logins and vhosts.
bool amqp_failure_permanent(AmqpFailure cause);

// What one attempt ended with.
struct AmqpAttempt {
  enum class Stage : std::uint8_t { Connect, Login, Setup };
  Stage stage = Stage::Connect;
  int status = 0;            // rabbitmq-c's AMQP_STATUS_* (library errors), 0 when none
  int reply_code = 0;        // the broker's connection.close / channel.close code, 0 when none
  std::string reply_text;    // its text (from outside: made printable and bounded here)
  std::string what;          // the step or RPC that failed, e.g. "queue.declare chunkd.requests"
  std::string verify_error;  // X509 verification error of the broker's certificate, "" when none
  int verify_code = 0;       // its X509_V_ERR_* code
  bool tls_files = false;    // the CA file could not be loaded (status says how)
};

struct AmqpFailureReport {
  AmqpFailure cause = AmqpFailure::Other;
  bool permanent = false;  // amqp_failure_permanent(cause), or as the client decided (see there)
  std::string uri;         // the URI tried (no password)
  std::string message;     // one line without the "amqp: " prefix, naming the key to check
};

// Where the settings come from, for the message.
struct AmqpAttemptContext {
  std::string uri;  // as configured (a password in it is masked in the message)
  std::string user;
  std::string vhost;
  std::string ca_file;  // amqp.ca_file, "" : the system's CAs
};

AmqpFailureReport classify_amqp_failure(const AmqpAttempt& attempt, const AmqpAttemptContext& c);

// `uri` with the password (user:password@) replaced by "***".
std::string amqp_uri_without_password(std::string_view uri);
// Text from outside made safe for one log line: non-printable bytes become '?', at most max_bytes.
std::string amqp_printable(std::string_view text, std::size_t max_bytes = 200);

}  // namespace chunkd::io

#include "io/amqp_failure.hpp"

#include <amqp.h>
#include <amqp_framing.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <cctype>

namespace chunkd::io {
namespace {

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

AmqpFailureReport report(AmqpFailure cause, const AmqpAttemptContext& c, std::string message) {
  const std::string uri = amqp_uri_without_password(c.uri);
  return AmqpFailureReport{cause, amqp_failure_permanent(cause), uri, uri + ": " + message};
}

// "(403 ACCESS_REFUSED - Login was refused ...)"
std::string broker_words(const AmqpAttempt& a) {
  return "(" + std::to_string(a.reply_code) + " " + amqp_printable(a.reply_text) + ")";
}

std::string library_words(int status) {
  return status == 0 ? std::string("failed") : std::string(amqp_error_string2(status));
}

AmqpFailureReport tls_failure(const AmqpAttempt& a, const AmqpAttemptContext& c) {
  if (a.tls_files) {
    return report(AmqpFailure::TlsFiles, c,
                  "cannot load the CA certificates " +
                      (c.ca_file.empty() ? std::string("of the system (amqp.ca_file not set)")
                                         : "amqp.ca_file " + c.ca_file) +
                      " (" + library_words(a.status) + ")");
  }
  const bool wrong_host = a.status == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED ||
                          a.verify_code == X509_V_ERR_HOSTNAME_MISMATCH ||
                          a.verify_code == X509_V_ERR_IP_ADDRESS_MISMATCH;
  if (wrong_host) {
    const std::string why = a.verify_error.empty() ? library_words(a.status) : a.verify_error;
    return report(AmqpFailure::TlsHostMismatch, c,
                  "broker certificate does not name the host of the URI in amqp.uris (" +
                      amqp_printable(why) + ")");
  }
  if (a.status == AMQP_STATUS_SSL_PEER_VERIFY_FAILED) {
    const std::string by = c.ca_file.empty() ? "the system's CA certificates (amqp.ca_file not set)"
                                             : "amqp.ca_file " + c.ca_file;
    const std::string why = a.verify_error.empty() ? library_words(a.status) : a.verify_error;
    return report(AmqpFailure::TlsUntrusted, c,
                  "broker certificate not trusted by " + by + " (" + amqp_printable(why) + ")");
  }
  return report(AmqpFailure::TlsHandshake, c,
                "TLS with the broker failed: " + library_words(a.status) +
                    " (is that port a TLS listener? amqp.uris)");
}

// A connection.close (or channel.close) the broker sent.
AmqpFailureReport broker_closed(const AmqpAttempt& a, const AmqpAttemptContext& c) {
  const bool vhost_words = contains(a.reply_text, "vhost");
  if (a.stage == AmqpAttempt::Stage::Login &&
      (a.reply_code == AMQP_NOT_ALLOWED || (a.reply_code == AMQP_ACCESS_REFUSED && vhost_words))) {
    return report(AmqpFailure::VhostRefused, c,
                  "the broker refused vhost \"" + amqp_printable(c.vhost) + "\" to user " +
                      amqp_printable(c.user) + " " + broker_words(a) +
                      ": check the vhost in amqp.uris and the user's permissions");
  }
  if (a.stage == AmqpAttempt::Stage::Login && a.reply_code == AMQP_ACCESS_REFUSED) {
    return report(AmqpFailure::LoginRefused, c,
                  "the broker refused the login of user " + amqp_printable(c.user) + " " +
                      broker_words(a) +
                      ": check the user in amqp.uris and the password in amqp.password_file");
  }
  const std::string what = a.what.empty() ? std::string("session set-up") : a.what;
  return report(AmqpFailure::BrokerClosed, c,
                amqp_printable(what) + ": the broker closed the connection " + broker_words(a));
}

}  // namespace

const char* amqp_failure_name(AmqpFailure cause) {
  switch (cause) {
    case AmqpFailure::Unreachable:
      return "unreachable";
    case AmqpFailure::Closed:
      return "closed";
    case AmqpFailure::TlsHandshake:
      return "tls_handshake";
    case AmqpFailure::TlsUntrusted:
      return "tls_untrusted";
    case AmqpFailure::TlsHostMismatch:
      return "tls_host_mismatch";
    case AmqpFailure::TlsFiles:
      return "tls_files";
    case AmqpFailure::LoginRefused:
      return "login_refused";
    case AmqpFailure::VhostRefused:
      return "vhost_refused";
    case AmqpFailure::BrokerClosed:
      return "broker_closed";
    case AmqpFailure::Other:
      break;
  }
  return "other";
}

bool amqp_failure_permanent(AmqpFailure cause) {
  return cause == AmqpFailure::TlsUntrusted || cause == AmqpFailure::TlsHostMismatch ||
         cause == AmqpFailure::TlsFiles || cause == AmqpFailure::LoginRefused ||
         cause == AmqpFailure::VhostRefused;
}

AmqpFailureReport classify_amqp_failure(const AmqpAttempt& a, const AmqpAttemptContext& c) {
  if (a.reply_code != 0) return broker_closed(a, c);
  const int s = a.status;
  if (a.tls_files || (s <= AMQP_STATUS_SSL_ERROR && s > _AMQP_STATUS_SSL_NEXT_VALUE)) {
    return tls_failure(a, c);
  }
  const std::string what = a.what.empty() ? std::string("connect") : amqp_printable(a.what);
  if (a.stage == AmqpAttempt::Stage::Connect) {
    return report(AmqpFailure::Unreachable, c, what + ": " + library_words(s));
  }
  if (s == AMQP_STATUS_CONNECTION_CLOSED || s == AMQP_STATUS_SOCKET_CLOSED ||
      s == AMQP_STATUS_SOCKET_ERROR || s == AMQP_STATUS_TIMEOUT ||
      s == AMQP_STATUS_HEARTBEAT_TIMEOUT) {
    return report(AmqpFailure::Closed, c,
                  what + ": " + library_words(s) + " (the broker closed without saying why)");
  }
  return report(AmqpFailure::Other, c, what + ": " + library_words(s));
}

std::string amqp_uri_without_password(std::string_view uri) {
  const std::size_t scheme = uri.find("://");
  if (scheme == std::string_view::npos) return std::string(uri);
  const std::size_t start = scheme + 3;
  const std::size_t end = std::min(uri.find('/', start), uri.size());
  const std::size_t at = uri.substr(0, end).rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(uri);
  const std::size_t colon = uri.substr(0, at).find(':', start);
  if (colon == std::string_view::npos) return std::string(uri);
  return std::string(uri.substr(0, colon + 1)) + "***" + std::string(uri.substr(at));
}

std::string amqp_printable(std::string_view text, std::size_t max_bytes) {
  std::string out;
  for (char ch : text.substr(0, max_bytes)) {
    out += std::isprint(static_cast<unsigned char>(ch)) != 0 ? ch : '?';
  }
  if (text.size() > max_bytes) out += "...";
  return out;
}

}  // namespace chunkd::io

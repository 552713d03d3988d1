#include "io/mqtt_uri.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

namespace chunkd::io {
namespace {

constexpr std::uint16_t kTcpPort = 1883;
constexpr std::uint16_t kTlsPort = 8883;

Unexpected<base::Error> bad(std::string detail) {
  return fail(std::errc::invalid_argument, std::move(detail));
}

bool parse_port(std::string_view text, std::uint16_t& port) {
  if (text.empty() || text.size() > 5) return false;
  unsigned value = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') return false;
    value = value * 10 + static_cast<unsigned>(ch - '0');
  }
  if (value < 1 || value > 65535) return false;
  port = static_cast<std::uint16_t>(value);
  return true;
}

bool has_forbidden_chars(std::string_view s) {
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f) return true;
  }
  return s.find_first_of("/?#@ ") != std::string_view::npos;
}

}  // namespace

Expected<MqttUri> parse_mqtt_uri(std::string_view uri) {
  MqttUri out;
  const auto sep = uri.find("://");
  if (sep == std::string_view::npos) return bad("expected tcp://host:port or ssl://host:port");
  const std::string_view scheme = uri.substr(0, sep);
  if (scheme == "tcp") {
    out.port = kTcpPort;
  } else if (scheme == "ssl") {
    out.tls = true;
    out.port = kTlsPort;
  } else {
    return bad("unknown scheme '" + std::string(scheme) + "' (use tcp:// or ssl://)");
  }
  const std::string_view rest = uri.substr(sep + 3);
  if (has_forbidden_chars(rest)) {
    return bad("unexpected path, query, credentials, space or control character after the host");
  }
  std::string_view host;
  std::string_view port_text;
  bool has_port = false;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return bad("unterminated [IPv6] host");
    host = rest.substr(1, close - 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("expected :port after ]");
      port_text = after.substr(1);
      has_port = true;
    }
  } else {
    const auto colon = rest.find(':');
    host = rest.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = rest.substr(colon + 1);
      has_port = true;
    }
  }
  if (host.empty()) return bad("missing host");
  if (has_port && !parse_port(port_text, out.port)) {
    return bad("port must be a number from 1 to 65535");
  }
  out.host = std::string(host);
  in6_addr scratch{};
  out.host_is_ip = ::inet_pton(AF_INET, out.host.c_str(), &scratch) == 1 ||
                   ::inet_pton(AF_INET6, out.host.c_str(), &scratch) == 1;
  return out;
}

}  // namespace chunkd::io

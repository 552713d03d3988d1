#include "io/amqp_uri.hpp"

#include <amqp.h>

#include <vector>

namespace chunkd::io {

Expected<AmqpUri> parse_amqp_uri(const std::string& uri) {
  std::vector<char> text(uri.begin(), uri.end());
  text.push_back('\0');
  amqp_connection_info info;
  amqp_default_connection_info(&info);
  if (amqp_parse_url(text.data(), &info) != AMQP_STATUS_OK) {
    return fail(std::errc::invalid_argument,
                "\"" + uri + "\" is not an amqp://[user@]host[:port][/vhost] URI");
  }
  if (info.port <= 0 || info.port > 65535 || info.host == nullptr || info.host[0] == '\0') {
    return fail(std::errc::invalid_argument, "\"" + uri + "\": no host or a bad port");
  }
  AmqpUri out;
  out.user = info.user;
  out.password = info.password;
  out.host = info.host;
  out.port = info.port;
  out.vhost = info.vhost;
  out.tls = info.ssl != 0;
  return out;
}

}  // namespace chunkd::io

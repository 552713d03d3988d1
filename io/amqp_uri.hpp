// An amqp:// or amqps:// URI taken apart (rabbitmq-c's amqp_parse_url):
// amqp://user:pass@host:port/vhost, defaults guest/guest, port 5672 (5671 for amqps), vhost "/"
// when the path is absent. Thread: any; pure.
#pragma once

#include <string>

#include "base/expected.hpp"

namespace chunkd::io {

struct AmqpUri {
  std::string user;
  std::string password;
  std::string host;
  int port = 5672;
  std::string vhost;
  bool tls = false;
};

// An error names the URI and what is wrong with it.
Expected<AmqpUri> parse_amqp_uri(const std::string& uri);

}  // namespace chunkd::io

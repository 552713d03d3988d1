// A minimal blocking HTTP/1.1 client for the tools (chunkctl, chunkload): one request per
// connection, Content-Length bodies, bounded response size, plain http:// only (run chunkctl next
// to the daemon or through an operator's TLS tunnel).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/expected.hpp"

namespace chunkd::tools {

struct Url {
  std::string host;
  std::string port;
  std::string base_path;  // without trailing slash
};
chunkd::Expected<Url, std::string> parse_url(const std::string& url);

struct Response {
  int status = 0;
  std::string body;
};

// Sends one request and reads the whole response. `timeout_ms` bounds connect, send and receive.
chunkd::Expected<Response, std::string> http_request(
    const Url& url, const std::string& method, const std::string& path_and_query,
    const std::string& body, const std::vector<std::pair<std::string, std::string>>& headers,
    int timeout_ms);

// Percent-encodes a path segment or query value.
std::string url_encode(const std::string& s);

}  // namespace chunkd::tools

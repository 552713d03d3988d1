// A small HTTP/1.1 server on libuv TCP handles, parsing with http-parser.
//
// Keep-alive and several requests per connection (answered in order, one at a time), Content-Length
// bodies only (chunked request bodies are refused 411/400), and a limit on everything: header bytes,
// body bytes (over it: 413 with `too_large_body`), open connections (over it: accept then close),
// idle time between requests, and total time to receive one request (a client trickling one byte
// a second is cut off). Responses always carry Content-Length.
//
// The handler may answer later (after an asynchronous ingest): it is given a Responder that can
// be called once, from the loop thread; if the client went away meanwhile the response is dropped.
//
// Thread: everything on the loop thread. close() stops accepting, lets responses in progress
// finish (bounded by `shutdown_grace_ms`), closes every handle, then calls `done`.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace chunkd::io {

struct HttpLimits {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  std::size_t max_connections = 1024;
  int idle_timeout_ms = 60000;     // keep-alive connection with no request in progress
  int request_timeout_ms = 10000;  // from a request's first byte to its last
  int shutdown_grace_ms = 5000;
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // percent-decoded path, without the query
  std::string query;   // raw query string without '?'
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string peer;  // "127.0.0.1:54321"

  // First header with this lower-case name, or nullptr.
  const std::string* header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

class HttpServer {
 public:
  using Responder = std::function<void(HttpResponse)>;
  using Handler = std::function<void(HttpRequest&& request, Responder respond)>;
  // Builds the body of the responses the server makes itself (400 on a parse error, 408, 413, 431,
  // 503 while closing): the engine plugs in its error envelope for that status and message.
  using ErrorBody = std::function<std::string(int status, std::string_view message)>;

  HttpServer(uv_loop_t* loop, HttpLimits limits, Handler handler, ErrorBody error_body);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // host is an IPv4 or IPv6 literal; port 0 picks a free port (see port()).
  std::error_code listen(const std::string& host, std::uint16_t port);
  std::uint16_t port() const;
  std::size_t open_connections() const;
  void close(std::function<void()> done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkd::io

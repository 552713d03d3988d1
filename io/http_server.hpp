// A small HTTP/1.1 server on libuv TCP handles, parsing with http-parser.
//
// Keep-alive and several requests per connection (answered in order, one at a time), Content-Length
// bodies only (chunked request bodies are refused 411/400), HTTP/1.0 and HTTP/1.1 only (any other
// version is refused 505), and a limit on everything: header bytes (431), body bytes (413), idle
// time between requests, and total time to receive one request (408: a client trickling one byte a
// second is cut off). Responses always carry Content-Length; a response to HEAD carries the
// Content-Length of its body but not the body (RFC 9110 §9.3.2), so a handler answers HEAD as it
// answers GET.
//
// Memory: a pipelined request is not parsed (nor more input read) while the connection's previous
// response is unwritten; one server-wide budget (max_buffered_bytes) covers buffered request
// bodies and unwritten responses: a body that does not fit is refused with 503 before any of it is
// read (its Content-Length is reserved when its headers are complete).
//
// Connections: at most max_connections, and at most max_connections_per_client from one address.
// When every slot is taken, the longest-idle keep-alive connection (between requests, nothing in
// flight) is closed to make room; a client that still finds no room gets 503 (written, then the
// connection is closed).
//
// Authorization: an Authorize hook (set_authorize) sees each request's head when its headers are
// complete; an answer it returns is sent instead of calling the handler, without reading the body
// (the connection is then closed if a body was announced). `Expect: 100-continue` gets its 100
// only after the hook and the budget let the body in.
//
// The handler may answer later (after an asynchronous ingest): it is given a Responder that can
// be called once, from the loop thread; if the client went away meanwhile the response is dropped.
//
// Thread: everything on the loop thread. close() stops accepting, lets responses in progress
// finish (bounded by `shutdown_grace_ms`), closes every handle, then calls `done`.
// REQUIRES: close() exactly once (checked); destroy the server only after `done` has run
// (checked: a server destroyed with handles open aborts).
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/expected.hpp"

namespace chunkd::io {
namespace detail {
class HttpListener;
}

struct HttpLimits {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  std::size_t max_connections = 1024;
  int idle_timeout_ms = 60000;     // keep-alive connection with no request in progress
  int request_timeout_ms = 10000;  // from a request's first byte to its last
  // When every slot is taken and none is idle, a connection whose request head (request line and
  // headers) began at least this long ago and is still unfinished is closed to make room: a client
  // sends its head in one packet, a slowloris never finishes it.
  int slow_head_ms = 1000;
  int shutdown_grace_ms = 5000;
  // Response bytes waiting to be written on one connection; over it the connection is closed. With
  // pipelining held back, this bounds one response.
  std::size_t max_queued_write_bytes = 4 * 1024 * 1024;
  // Request bodies being buffered plus responses not yet written, all connections together; a body
  // that does not fit gets 503.
  std::size_t max_buffered_bytes = std::size_t{32} << 20;
  // Open connections from one client address; more get 503.
  std::size_t max_connections_per_client = 64;
};

// Added: counters for metrics (read on the loop thread).
struct HttpServerStats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_rejected = 0;            // every slot busy, none idle: 503 then close
  std::uint64_t connections_refused_per_client = 0;  // over max_connections_per_client: 503
  std::uint64_t connections_evicted = 0;    // idle keep-alive connections closed to make room
  std::uint64_t bodies_refused_budget = 0;  // 503: the body did not fit max_buffered_bytes
  std::uint64_t early_responses = 0;        // answered by the Authorize hook (e.g. 401)
  std::uint64_t buffered_bytes = 0;         // now: bodies being buffered + unwritten responses
  std::uint64_t buffered_bytes_peak = 0;    // the most buffered_bytes ever was
  std::uint64_t unfinished_heads = 0;       // now: request heads begun, not yet complete
  std::uint64_t requests = 0;               // handed to the handler
  std::uint64_t error_responses = 0;        // answered by the server itself (400, 408, 411, ...)
  std::uint64_t timeouts = 0;               // idle and request timeouts
  std::uint64_t write_overflows = 0;        // closed over max_queued_write_bytes
  std::uint64_t responses_dropped = 0;      // responder called after its connection closed
};

// The statuses of the responses the server makes itself, each with the ErrorBody of that status:
// 400 malformed request, 408 request not received in time, 411 body without Content-Length,
// 413 body over max_body_bytes, 431 header over max_header_bytes, 500 the handler did not answer,
// 503 a request still arriving while the server closes, 505 HTTP version other than 1.0 and 1.1.
inline constexpr int kServerErrorStatuses[] = {400, 408, 411, 413, 431, 500, 503, 505};

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
  // A Responder is copyable; the first call answers, a second call is a bug (asserts). Calling it
  // after the client went away is fine (dropped). Destroying every copy without calling it answers
  // 500, so keep copies on the loop thread.
  using Responder = std::function<void(HttpResponse)>;
  using Handler = std::function<void(HttpRequest&& request, Responder respond)>;
  // Builds the body of the responses the server makes itself (400 on a parse error, 408, 413, 431,
  // 503 while closing): the engine plugs in its error envelope for that status and message.
  using ErrorBody = std::function<std::string(int status, std::string_view message)>;
  // Told the status of each request the server refuses itself, before the handler sees it (every
  // kServerErrorStatuses but 500), so the embedder can count them with the requests it answers.
  using RefusedObserver = std::function<void(int status)>;
  // Sees a request's head (method, path, query, headers, peer; no body yet) when its headers are
  // complete. A response it returns is the answer (the handler is not called, the body not read);
  // nullopt lets the request go on.
  using Authorize = std::function<std::optional<HttpResponse>(const HttpRequest& head)>;

  HttpServer(uv_loop_t* loop, HttpLimits limits, Handler handler, ErrorBody error_body);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // host is an IPv4 or IPv6 literal; port 0 picks a free port (see port()). On failure the error
  // carries libuv's errno (EADDRINUSE, EACCES, EINVAL for a host that is not a literal) and a
  // detail naming the address.
  // REQUIRES: called at most once, before close().
  Expected<void> listen(const std::string& host, std::uint16_t port);
  // REQUIRES: called before listen().
  void set_authorize(Authorize authorize);
  std::uint16_t port() const;
  std::size_t open_connections() const;  // holding a slot (not refused, not closing)
  HttpServerStats stats() const;         // added
  // REQUIRES: called before listen().
  void set_refused_observer(RefusedObserver observer);
  void close(std::function<void()> done);

 private:
  std::unique_ptr<detail::HttpListener> impl_;
};

}  // namespace chunkd::io

// HttpClient: a tiny blocking HTTP/1.1 client for tests.
//
// Owns: one TCP socket (IPv4 or IPv6 literal host), reused across requests (keep-alive), and the
// bytes read past the last response (so pipelined responses are read one by one).
// Thread: the test's thread; every call blocks, bounded by the timeout given to the constructor
// (per call). Never call it from the libuv loop thread of the server under test.
// Dependencies: POSIX and the C++ standard library only (it is compiled into every test binary).
//
// Usage:
//   chunkd::test::HttpClient c("127.0.0.1", port);
//   auto r = c.request("POST", "/streams/x", body, {{"Content-Type", "application/json"}});
//   EXPECT_EQ(r.status, 201) << r.error;        // status 0: no response (see r.error)
//   r.body; r.header("content-type");             // header names are lower-cased
//
//   c.send_raw("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");  // pipelining, malformed input
//   auto a = c.read_response(); auto b = c.read_response();
//   EXPECT_TRUE(c.wait_closed());                // the server closed the connection
//
// request() connects again if the connection is not open (connects() counts the connects), adds
// Host and Content-Length (unless given), and skips 1xx interim responses. After a response
// with "Connection: close" (or an HTTP/1.0 one without keep-alive) the next request() opens a
// new connection; the old socket stays open until then, so wait_closed() can check the server
// closed it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chunkd::test {

struct HttpClientResponse {
  int status = 0;  // 0: no (complete) response; see `error`
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string error;

  // First header with this lower-case name, or nullptr.
  const std::string* header(std::string_view name) const;
  bool ok() const { return status != 0; }
};

class HttpClient {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  // Connects at once (connected() says whether it worked; error() says why not). `source`, when
  // given, is the local IP literal to connect from (e.g. "127.0.0.2": another loopback client).
  HttpClient(std::string host, std::uint16_t port, int timeout_ms = 10000, std::string source = {});
  ~HttpClient();
  HttpClient(HttpClient&& other) noexcept;
  HttpClient& operator=(HttpClient&& other) noexcept;
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // (Re)connects if not connected. True when connected.
  bool connect();
  // True while the socket is open and the peer has not been seen closing it.
  bool connected() const { return fd_ >= 0 && !peer_closed_; }
  int connects() const { return connects_; }

  HttpClientResponse request(std::string_view method, std::string_view target,
                             std::string_view body = {}, const Headers& headers = {});

  // Sends bytes as they are. False (see error()) if the connection is closed or the send fails.
  bool send_raw(std::string_view bytes);
  // Reads the next response (a 1xx interim response too). Reads the body by Content-Length, or
  // until the connection closes when there is none.
  HttpClientResponse read_response();
  // Waits until the peer closes the connection (EOF or reset); data that arrives meanwhile is
  // kept for read_response(). False if still open after timeout_ms.
  bool wait_closed(int timeout_ms = 10000);
  // Everything the server sends until it closes the connection (or `timeout_ms` passes), unparsed.
  std::string read_until_closed(int timeout_ms = 30000) const;

  void close();           // orderly close
  void reset();           // close with RST (SO_LINGER 0)
  void shutdown_write();  // half-close: the server sees EOF
  void set_timeout_ms(int timeout_ms) { timeout_ms_ = timeout_ms; }

  const std::string& error() const { return error_; }
  int fd() const { return fd_; }

 private:
  // Reads more bytes into buffer_; 0 on EOF, -1 on error or timeout (error_ set), else count.
  long read_some(long long deadline_ms);
  bool bind_source(int fd, int family);

  std::string host_;
  std::string source_;
  std::uint16_t port_ = 0;
  int timeout_ms_ = 10000;
  int fd_ = -1;
  int connects_ = 0;
  bool peer_closed_ = false;
  bool close_pending_ = false;  // the last response carried "Connection: close"
  std::string buffer_;          // received, not yet returned
  std::string error_;
};

}  // namespace chunkd::test

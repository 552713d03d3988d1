// Private to io/: what the HTTP listener (io/http_server.cpp) and its connections
// (io/http_connection.cpp, parser callbacks in io/http_parse.cpp) share, plus the wire helpers
// both use (io/http_wire.cpp). Not part of the contract; engine code includes io/http_server.hpp.
//
// Ownership: the HttpListener owns every HttpConnection through its table (`connections_`, keyed by
// the connection's address): those holding a slot (bounded by HttpLimits::max_connections and,
// per client address, max_connections_per_client) and those being refused (a 503 being written,
// bounded by kMaxRefusing). A connection is removed from it, and freed, only from its last
// handle's close callback; it gives its slot back earlier, when it starts closing.
// A connection reaches the listener only through the few members marked "for connections".
//
// Thread: everything on the loop thread.
#pragma once

#include <http_parser.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/http_limits.hpp"
#include "io/http_server.hpp"

namespace chunkd::io::detail {

inline constexpr const char* kHttpLog = "http";
// One read buffer shared by every connection: read callbacks copy out of it.
inline constexpr std::size_t kHttpReadBufferBytes = 64 * 1024;
// http_parser_parse_url keeps offsets in uint16_t.
inline constexpr std::size_t kMaxUrlBytes = 65535;

// ---- wire helpers (io/http_wire.cpp): pure functions ----------------------------------------

const char* reason_phrase(int status);

struct RequestTarget {
  std::string path;   // percent-decoded, never holds a NUL
  std::string query;  // raw, without '?'
};
// Splits a request target; nullopt when it is malformed (bad URL or percent-encoding, %00).
std::optional<RequestTarget> split_target(const std::string& url);

// A header name is a token; a value holds no CR, LF or NUL.
bool valid_header(const std::string& name, const std::string& value);

// Status line and headers of `response`, ending with the blank line. Content-Length is always
// set from the body; extra headers that the server sets itself are skipped, and invalid ones are
// dropped and counted in `invalid_headers`.
std::string format_response_head(const HttpResponse& response, bool close_after, bool http10,
                                 std::size_t& invalid_headers);

// The server's own JSON error body when the engine plugged in none (or it threw).
std::string default_error_body(int status, std::string_view message);

// "127.0.0.1:54321", "[::1]:54321", or "?".
std::string format_peer(const uv_tcp_t* tcp);

// ---- the listener and its connections -------------------------------------------------------

class HttpConnection;

class HttpListener {
 public:
  using Handler = HttpServer::Handler;
  using ErrorBody = HttpServer::ErrorBody;

  HttpListener(uv_loop_t* loop, HttpLimits limits, Handler handler, ErrorBody error_body);
  ~HttpListener();  // REQUIRES: close() has called `done` (or listen() was never called)
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  Expected<void> listen(const std::string& host, std::uint16_t port);
  void close(std::function<void()> done);
  void set_authorize(HttpServer::Authorize authorize) { authorize_ = std::move(authorize); }
  std::uint16_t port() const { return bound_port_; }
  std::size_t open_connections() const { return slots_used_; }
  HttpServerStats stats_snapshot() const;

  // ---- for connections ----
  const HttpLimits& limits() const { return limits_; }
  HttpServerStats& stats() { return *stats_; }
  // Shared with each Responder so that a response dropped after its connection was freed is still
  // counted (while the server exists).
  const std::shared_ptr<HttpServerStats>& shared_stats() const { return stats_; }
  const Handler& handler() const { return handler_; }
  // The Authorize hook's answer for `head`, if any (a hook that throws answers 500).
  std::optional<HttpResponse> authorize(const HttpRequest& head) const;
  ByteBudget& budget() { return budget_; }
  // True at most once a minute per client address: log the warning then.
  bool should_warn(std::string_view address);
  // `c` is idle (between requests, nothing in flight) from now on / not any more. Only a
  // connection holding a slot is listed.
  void mark_idle(HttpConnection* c);
  void unmark_idle(HttpConnection* c);
  // A request head began (parser's message begin) / finished or was abandoned.
  void mark_head(HttpConnection* c);
  void unmark_head(HttpConnection* c);
  // `c` starts closing: its slot (and its place in the idle list) is free from now on.
  void on_closing(HttpConnection* c);
  char* read_buffer() { return read_buffer_.get(); }
  bool closing() const { return phase_ != Phase::Open; }
  std::string make_error_body(int status, std::string_view message) const;
  void set_refused_observer(HttpServer::RefusedObserver observer);
  // A request refused before the handler: tells the observer.
  void note_refused(int status) const;
  // Calls c->resume() on the next loop turn. REQUIRES: `c` is not already scheduled.
  void schedule_resume(std::shared_ptr<HttpConnection> c);
  // The last handle of `c` is closed: frees its slot (and `c`). REQUIRES: `c` holds a slot.
  void release(HttpConnection* c);

 private:
  // The listening handle lives on the heap so that a failed listen() can close it without the
  // server having to outlive the close callback.
  struct ListenHandle {
    uv_tcp_t tcp;
    HttpListener* owner = nullptr;  // nullptr once detached (failed listen)
  };
  enum class Phase { Open, Closing, Finalizing, Closed };

  void on_connection(int status);
  void accept_connection();
  // Why `address` cannot have a slot now (after evicting an idle connection if that makes room),
  // or nullptr.
  const char* refusal(const std::string& address);
  void refuse(std::shared_ptr<HttpConnection> c, const char* why);
  void maybe_finish_close();
  bool quiet() const;

  static void on_listen_handle_closed(uv_handle_t* handle);
  static void on_resume_idle(uv_idle_t* idle);
  static void on_grace_timer(uv_timer_t* timer);
  static void on_final_closed(uv_handle_t* handle);

  uv_loop_t* loop_;
  HttpLimits limits_;
  Handler handler_;
  ErrorBody error_body_;
  HttpServer::RefusedObserver refused_observer_;
  std::unique_ptr<char[]> read_buffer_;

  Phase phase_ = Phase::Open;
  bool listened_ = false;
  ListenHandle* listen_handle_ = nullptr;
  std::uint16_t bound_port_ = 0;
  HttpServer::Authorize authorize_;
  // Every connection, by address: slot holders, refused ones, and those closing.
  std::unordered_map<HttpConnection*, std::shared_ptr<HttpConnection>> connections_;
  std::size_t slots_used_ = 0;                                // at most max_connections
  std::unordered_map<std::string, std::size_t> per_address_;  // slots used by client address
  std::size_t refusing_ = 0;                                  // 503s being written
  std::list<HttpConnection*> idle_;                           // longest idle first
  std::list<HttpConnection*> heads_;  // request head begun, not finished: oldest first
  ByteBudget budget_;
  PeerWarnings warnings_;

  uv_idle_t resume_idle_{};  // runs pipelined input parked while a request was in the handler
  bool resume_idle_init_ = false;
  std::vector<std::shared_ptr<HttpConnection>> resume_list_;  // at most one entry per connection

  uv_timer_t grace_timer_{};
  bool grace_timer_init_ = false;
  int final_closes_pending_ = 0;
  std::function<void()> done_;

  std::shared_ptr<HttpServerStats> stats_ = std::make_shared<HttpServerStats>();
};

// One accepted TCP connection: reads and parses requests (http-parser), enforces the header, body
// and time limits, hands each complete request to the handler, writes the responses in order and
// keeps the connection alive between requests. The state machine is described at the top of
// io/http_connection.cpp.
class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  explicit HttpConnection(HttpListener* server);

  // Initialises the TCP and timer handles. REQUIRES: called once, before accept.
  int init_handles(uv_loop_t* loop);
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  // Accepted: learns the peer's name (address() is valid from here on).
  void accepted();
  // Given a slot: arms the idle timer and starts reading.
  void start();
  // Given no slot: answers 503 with `message`, then closes (within a short bound).
  void refuse_connection(std::string_view message);
  const std::string& address() const { return address_; }
  bool holds_slot() const { return holds_slot_; }
  bool refused() const { return refused_; }
  // The server began to close: answer 503 to a request being received, finish or close an idle
  // connection; a request in the handler is left to answer.
  void on_server_closing();
  // Parked pipelined input may be parsed now (from the listener's idle handle).
  void resume();
  bool handling() const { return state_ == State::Handling; }
  void close_now();

  // ---- for the listener ----
  std::list<HttpConnection*>::iterator idle_pos;  // valid while idle_listed
  bool idle_listed = false;
  std::list<HttpConnection*>::iterator head_pos;  // valid while head_listed
  bool head_listed = false;
  std::uint64_t head_began_ms = 0;  // uv_now when the listed head began

  // A Responder's answer (nullptr: destroyed without answering) for request number `for_seq`.
  void on_response(std::uint64_t for_seq, HttpResponse* response);

 private:
  enum class State { Reading, Handling, Finishing, Lingering, Closed };
  enum class TimerMode { None, Idle, Request, Write, Finish, Linger };

  // input
  void start_reading();
  void on_data(const char* data, std::size_t len);
  void on_eof();
  void process_input();
  void after_input();
  void dispatch();
  void run_handler(HttpRequest request);
  void fail_request();

  // output
  void send_response(HttpResponse& response, bool close_after);
  void send_error(int status, std::string_view message);
  void after_response();
  bool awaiting_drain() const;
  void release_body_charge();
  HttpResponse internal_error() const;
  bool queue_write(std::string head, std::string body);
  void begin_finish();

  void set_timer(TimerMode mode, int timeout_ms);
  int finish_timeout_ms() const;

  // parser callbacks
  static const http_parser_settings& parser_settings();
  static int on_message_begin(http_parser* p);
  static int on_url(http_parser* p, const char* at, std::size_t len);
  static int on_header_field(http_parser* p, const char* at, std::size_t len);
  static int on_header_value(http_parser* p, const char* at, std::size_t len);
  static int on_headers_complete(http_parser* p);
  static int on_body(http_parser* p, const char* at, std::size_t len);
  static int on_message_complete(http_parser* p);
  bool add_header_bytes(std::size_t len);
  bool admit_head();
  bool admit_body(const http_parser* p);
  void refuse(int status, std::string message);

  // libuv callbacks
  static void on_alloc(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_timer(uv_timer_t* timer);
  static void on_handle_closed(uv_handle_t* handle);

  HttpListener* server_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  int open_handles_ = 0;
  std::string peer_ = "?";
  std::string address_ = "?";  // peer_ without the port
  bool holds_slot_ = false;
  bool refused_ = false;     // refuse_connection(): a short finish bound
  bool drain_wait_ = false;  // a response is unwritten: parsing and reading wait for on_write
  std::size_t writes_in_flight_ = 0;  // uv_write requests whose callback has not run

  State state_ = State::Reading;
  TimerMode timer_mode_ = TimerMode::None;
  bool reading_ = false;
  bool read_eof_ = false;
  bool in_handler_ = false;
  bool resume_scheduled_ = false;
  std::size_t discarded_bytes_ = 0;

  http_parser parser_{};
  std::string input_;          // received, not yet parsed
  std::size_t input_off_ = 0;  // parsed prefix of `input_`

  // The request being parsed.
  bool in_message_ = false;
  bool message_ready_ = false;
  bool last_was_value_ = false;
  std::size_t header_bytes_ = 0;
  std::string url_;
  HttpRequest request_;
  bool head_ = false;     // the request is a HEAD (known once its target began): no body
  int error_status_ = 0;  // set by a parser callback that refused the request
  std::string error_message_;
  std::optional<HttpResponse> early_response_;  // the Authorize hook's answer
  std::size_t body_charge_ = 0;                 // reserved in the listener's budget

  // The request in the handler.
  std::uint64_t seq_ = 0;
  bool keep_alive_ = true;
  bool http10_ = false;
};

}  // namespace chunkd::io::detail

// HTTP/1.1 listener: libuv TCP handles, http-parser 2.9, one request in the handler at a time per
// connection.
//
// A connection moves through these states:
//   Reading   → the parser consumes input; a complete request pauses the parser (in
//               on_message_complete) and is dispatched: → Handling.
//   Handling  → waiting for the Responder; input that arrives meanwhile is kept (bounded: reading
//               stops past kMaxBufferedInputBytes) and parsed once the response is queued.
//   Finishing → the last response is queued; uv_shutdown sends FIN once it is written. Input is
//               discarded.
//   Lingering → FIN sent; input is read and discarded (bounded in bytes and time) until the peer
//               closes, so that a client still sending does not get a reset that destroys the
//               response it has not read yet.
//   Closed    → uv_close called on both handles; the object is freed by the last close callback.
//
// One uv_timer_t per connection serves the idle timeout (Reading, no request begun), the request
// timeout (Reading, a request begun) and the finishing/lingering bound.
//
// A Responder holds a shared ResponderState: a weak reference to its connection plus the sequence
// number of the request it answers. A response for a closed connection, or for a request that is no
// longer the one in the handler, is dropped. A Responder destroyed without being called answers
// 500.
#include "io/http_server.hpp"

#include <arpa/inet.h>
#include <http_parser.h>
#include <netinet/in.h>

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <unordered_map>

#include "base/text.hpp"
#include "io/log.hpp"

namespace chunkd::io {

const std::string* HttpRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return &value;
  }
  return nullptr;
}

namespace {

constexpr const char* kLog = "http";
constexpr std::size_t kReadBufferBytes = 64 * 1024;
// Pipelined input kept while a request is in the handler; past it, reading stops until the answer.
constexpr std::size_t kMaxBufferedInputBytes = 64 * 1024;
// After the last response: how much input is read and thrown away, and for how long at most.
constexpr std::size_t kMaxLingerBytes = 1024 * 1024;
constexpr int kMaxLingerMs = 2000;
// Bound on writing the last response when idle timeouts are disabled.
constexpr int kDefaultFinishMs = 60000;
constexpr int kListenBacklog = 1024;
// http_parser_parse_url keeps offsets in uint16_t.
constexpr std::size_t kMaxUrlBytes = 65535;

std::error_code uv_error(int code) { return {-code, std::system_category()}; }

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      break;
  }
  if (status >= 200 && status < 300) return "Success";
  if (status >= 400 && status < 500) return "Client Error";
  if (status >= 500 && status < 600) return "Server Error";
  return "Status";
}

// Splits the request target into a decoded path and a raw query.
bool split_target(const std::string& url, std::string& path, std::string& query) {
  if (url.empty() || url.size() > kMaxUrlBytes) return false;
  http_parser_url parts;
  http_parser_url_init(&parts);
  if (http_parser_parse_url(url.data(), url.size(), 0, &parts) != 0) return false;
  std::string_view raw_path = "/";
  if ((parts.field_set & (1u << UF_PATH)) != 0) {
    raw_path =
        std::string_view(url).substr(parts.field_data[UF_PATH].off, parts.field_data[UF_PATH].len);
  }
  query.clear();
  if ((parts.field_set & (1u << UF_QUERY)) != 0) {
    query = url.substr(parts.field_data[UF_QUERY].off, parts.field_data[UF_QUERY].len);
  }
  // %00 is refused: a decoded path never holds a NUL.
  auto decoded = base::percent_decode(raw_path, false);
  if (!decoded || decoded->find('\0') != std::string::npos) return false;
  path = std::move(*decoded);
  return true;
}

bool is_token_char(char c) {
  if (c >= 'a' && c <= 'z') return true;
  if (c >= 'A' && c <= 'Z') return true;
  if (c >= '0' && c <= '9') return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool valid_header(const std::string& name, const std::string& value) {
  if (name.empty()) return false;
  if (!std::all_of(name.begin(), name.end(), is_token_char)) return false;
  return std::none_of(value.begin(), value.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

std::string format_peer(const uv_tcp_t* tcp) {
  sockaddr_storage addr{};
  int len = sizeof(addr);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char ip[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(&addr);
    uv_ip4_name(in4, ip, sizeof(ip));
    return std::string(ip) + ":" + std::to_string(ntohs(in4->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    uv_ip6_name(in6, ip, sizeof(ip));
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "?";
}

}  // namespace

struct HttpServer::Impl {
  struct Connection;
  struct ResponderState;

  // The listening handle lives on the heap so that a failed listen() can close it without the
  // server having to outlive the close callback.
  struct Listener {
    uv_tcp_t tcp;
    Impl* impl = nullptr;  // nullptr once detached (failed listen)
  };
  // A connection over max_connections: accepted, then closed at once.
  struct Rejected {
    uv_tcp_t tcp;
    Impl* impl = nullptr;
  };
  struct WriteReq {
    uv_write_t req;
    std::string head;
    std::string body;
  };

  enum class Phase { Open, Closing, Finalizing, Closed };

  Impl(uv_loop_t* loop_in, HttpLimits limits_in, Handler handler_in, ErrorBody error_body_in)
      : loop(loop_in),
        limits(limits_in),
        handler(std::move(handler_in)),
        error_body(std::move(error_body_in)),
        read_buffer(new char[kReadBufferBytes]) {}

  std::error_code listen(const std::string& host, std::uint16_t port);
  void close(std::function<void()> done);
  void on_connection(int status);
  void reject_connection();
  void schedule_resume(const std::shared_ptr<Connection>& c);
  void maybe_finish_close();
  std::string make_error_body(int status, std::string_view message);

  static void on_listener_closed(uv_handle_t* handle);
  static void on_resume_idle(uv_idle_t* idle);
  static void on_grace_timer(uv_timer_t* timer);
  static void on_final_closed(uv_handle_t* handle);

  uv_loop_t* loop;
  HttpLimits limits;
  Handler handler;
  ErrorBody error_body;
  std::unique_ptr<char[]> read_buffer;  // shared by every connection: read callbacks copy out of it

  Phase phase = Phase::Open;
  bool listened = false;
  Listener* listener = nullptr;
  std::uint16_t bound_port = 0;
  std::unordered_map<Connection*, std::shared_ptr<Connection>> connections;
  std::size_t rejected_closing = 0;
  bool limit_warned = false;  // "refusing connections" logged since the limit was last reached

  uv_idle_t resume_idle{};  // runs pipelined input parked while a request was in the handler
  bool resume_idle_init = false;
  std::vector<std::shared_ptr<Connection>> resume_list;  // at most one entry per connection

  uv_timer_t grace_timer{};
  bool grace_timer_init = false;
  int final_closes_pending = 0;
  std::function<void()> done;

  // Shared with the ResponderStates so that a response dropped after its connection was freed is
  // still counted (while the server exists).
  std::shared_ptr<HttpServerStats> stats = std::make_shared<HttpServerStats>();
};

struct HttpServer::Impl::ResponderState {
  ResponderState(std::weak_ptr<Connection> c, std::weak_ptr<HttpServerStats> st, std::uint64_t s)
      : connection(std::move(c)), stats(std::move(st)), seq(s) {}
  ~ResponderState();
  ResponderState(const ResponderState&) = delete;
  ResponderState& operator=(const ResponderState&) = delete;
  void respond(HttpResponse response);

  std::weak_ptr<Connection> connection;
  std::weak_ptr<HttpServerStats> stats;
  std::uint64_t seq;
  bool used = false;
};

struct HttpServer::Impl::Connection : std::enable_shared_from_this<Connection> {
  enum class State { Reading, Handling, Finishing, Lingering, Closed };
  enum class TimerMode { None, Idle, Request, Finish, Linger };

  explicit Connection(Impl* s) : server(s) {
    http_parser_init(&parser, HTTP_REQUEST);
    parser.data = this;
  }

  // --- input ---
  void start_reading();
  void on_data(const char* data, std::size_t len);
  void on_eof();
  void process_input();
  void dispatch();
  void fail_request();

  // --- output ---
  void on_response(std::uint64_t for_seq, HttpResponse* response);
  void send_response(HttpResponse& response, bool close_after);
  void send_error(int status, std::string_view message);
  HttpResponse internal_error() {
    return HttpResponse{
        500, "application/json", server->make_error_body(500, "the request was not answered"), {}};
  }
  bool queue_write(std::string head, std::string body);
  void begin_finish();
  void close_now();

  void set_timer(TimerMode mode, int timeout_ms);
  int finish_timeout_ms() const {
    return server->limits.idle_timeout_ms > 0 ? server->limits.idle_timeout_ms : kDefaultFinishMs;
  }

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

  // libuv callbacks
  static void on_alloc(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_timer(uv_timer_t* timer);
  static void on_handle_closed(uv_handle_t* handle);

  Impl* server;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  int open_handles = 0;
  std::string peer = "?";

  State state = State::Reading;
  TimerMode timer_mode = TimerMode::None;
  bool reading = false;
  bool read_eof = false;
  bool in_handler = false;
  bool resume_scheduled = false;
  std::size_t discarded_bytes = 0;

  http_parser parser{};
  std::string input;          // received, not yet parsed
  std::size_t input_off = 0;  // parsed prefix of `input`

  // The request being parsed.
  bool in_message = false;
  bool message_ready = false;
  bool last_was_value = false;
  std::size_t header_bytes = 0;
  std::string url;
  HttpRequest request;
  int error_status = 0;  // set by a parser callback that refused the request
  std::string error_message;

  // The request in the handler.
  std::uint64_t seq = 0;
  bool keep_alive = true;
  bool http10 = false;
};

const http_parser_settings& HttpServer::Impl::Connection::parser_settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_message_begin = &on_message_begin;
    s.on_url = &on_url;
    s.on_header_field = &on_header_field;
    s.on_header_value = &on_header_value;
    s.on_headers_complete = &on_headers_complete;
    s.on_body = &on_body;
    s.on_message_complete = &on_message_complete;
    return s;
  }();
  return settings;
}

// ---------------------------------------------------------------------------------------------
// ResponderState

HttpServer::Impl::ResponderState::~ResponderState() {
  if (used) return;
  if (auto c = connection.lock()) c->on_response(seq, nullptr);
}

void HttpServer::Impl::ResponderState::respond(HttpResponse response) {
  assert(!used && "HttpServer::Responder called twice");
  if (used) return;
  used = true;
  if (auto c = connection.lock()) {
    c->on_response(seq, &response);
  } else if (auto counters = stats.lock()) {
    ++counters->responses_dropped;  // the connection is gone; the server is still there
    LOG_DEBUG(kLog, "response dropped: the connection is gone");
  }
}

// ---------------------------------------------------------------------------------------------
// Connection: input

void HttpServer::Impl::Connection::start_reading() {
  if (reading || read_eof || state == State::Closed) return;
  int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp), &on_alloc, &on_read);
  if (rc != 0) {
    LOG_DEBUG(kLog, "%s: read start failed: %s", peer.c_str(), uv_strerror(rc));
    close_now();
    return;
  }
  reading = true;
}

void HttpServer::Impl::Connection::on_alloc(uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(handle->data);
  *buf = uv_buf_init(c->server->read_buffer.get(), static_cast<unsigned>(kReadBufferBytes));
}

void HttpServer::Impl::Connection::on_read(uv_stream_t* stream, ssize_t nread,
                                           const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(stream->data);
  if (nread == 0) return;  // EAGAIN
  if (nread == UV_EOF) {
    c->on_eof();
    return;
  }
  if (nread < 0) {
    LOG_DEBUG(kLog, "%s: read error: %s", c->peer.c_str(), uv_strerror(static_cast<int>(nread)));
    c->close_now();
    return;
  }
  c->on_data(buf->base, static_cast<std::size_t>(nread));
}

void HttpServer::Impl::Connection::on_data(const char* data, std::size_t len) {
  switch (state) {
    case State::Reading:
      input.append(data, len);
      process_input();
      return;
    case State::Handling:
      input.append(data, len);
      if (input.size() - input_off >= kMaxBufferedInputBytes && reading) {
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
        reading = false;
      }
      return;
    case State::Finishing:
    case State::Lingering:
      discarded_bytes += len;
      if (discarded_bytes > kMaxLingerBytes) close_now();
      return;
    case State::Closed:
      return;
  }
}

void HttpServer::Impl::Connection::on_eof() {
  read_eof = true;
  reading = false;
  switch (state) {
    case State::Reading:
      process_input();  // answers what is complete, then finishes
      return;
    case State::Handling:
      return;  // the response is still sent; then the connection finishes
    case State::Finishing:
      return;  // on_shutdown closes once the response is written
    case State::Lingering:
      close_now();
      return;
    case State::Closed:
      return;
  }
}

void HttpServer::Impl::Connection::process_input() {
  while (state == State::Reading && input_off < input.size()) {
    const char* data = input.data() + input_off;
    std::size_t len = input.size() - input_off;
    std::size_t parsed = http_parser_execute(&parser, &parser_settings(), data, len);
    input_off += parsed;
    http_errno err = HTTP_PARSER_ERRNO(&parser);
    if (err == HPE_PAUSED && message_ready) {
      http_parser_pause(&parser, 0);
      message_ready = false;
      dispatch();
      continue;
    }
    if (err != HPE_OK || parsed != len) {
      fail_request();
      return;
    }
  }
  if (state != State::Reading) {
    if (state == State::Handling && input_off > 0 && input_off == input.size()) {
      input.clear();
      input_off = 0;
    }
    return;
  }
  input.clear();
  input_off = 0;
  if (read_eof) {
    if (in_message) {
      LOG_DEBUG(kLog, "%s: connection closed in the middle of a request", peer.c_str());
      close_now();
    } else if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&tcp)) > 0) {
      begin_finish();
    } else {
      close_now();
    }
    return;
  }
  if (!in_message) set_timer(TimerMode::Idle, server->limits.idle_timeout_ms);
  start_reading();
}

void HttpServer::Impl::Connection::fail_request() {
  if (state == State::Closed) return;  // a parser callback already closed the connection
  http_errno err = HTTP_PARSER_ERRNO(&parser);
  int status = error_status;
  std::string message = error_message;
  if (status == 0) {
    if (err == HPE_HEADER_OVERFLOW) {
      status = 431;
      message = "request header too large";
    } else {
      status = 400;
      message = std::string("malformed request: ") + http_errno_description(err);
    }
  }
  LOG_DEBUG(kLog, "%s: refused request (%d): %s [%s]", peer.c_str(), status, message.c_str(),
            http_errno_name(err));
  send_error(status, message);
}

void HttpServer::Impl::Connection::dispatch() {
  state = State::Handling;
  set_timer(TimerMode::None, 0);
  in_message = false;

  HttpRequest req = std::move(request);
  request = HttpRequest{};
  if (!split_target(url, req.path, req.query)) {
    LOG_DEBUG(kLog, "%s: refused request (400): bad request target", peer.c_str());
    state = State::Reading;
    send_error(400, "malformed request target (bad percent-encoding or URL)");
    return;
  }
  url.clear();
  req.peer = peer;

  ++seq;
  ++server->stats->requests;
  auto responder_state = std::make_shared<ResponderState>(weak_from_this(), server->stats, seq);
  in_handler = true;
  try {
    server->handler(std::move(req), [responder_state](HttpResponse response) {
      responder_state->respond(std::move(response));
    });
  } catch (const std::exception& e) {
    LOG_ERROR(kLog, "%s: request handler threw: %s", peer.c_str(), e.what());
    if (!responder_state->used) responder_state->respond(internal_error());
  } catch (...) {
    LOG_ERROR(kLog, "%s: request handler threw", peer.c_str());
    if (!responder_state->used) responder_state->respond(internal_error());
  }
  // If the handler kept no copy of the Responder, this answers 500 while in_handler still says
  // that process_input() is on the stack and goes on by itself.
  responder_state.reset();
  in_handler = false;
}

// ---------------------------------------------------------------------------------------------
// Connection: parser callbacks

int HttpServer::Impl::Connection::on_message_begin(http_parser* p) {
  auto* c = static_cast<Connection*>(p->data);
  c->in_message = true;
  c->message_ready = false;
  c->last_was_value = false;
  c->header_bytes = 0;
  c->url.clear();
  c->request = HttpRequest{};
  c->error_status = 0;
  c->error_message.clear();
  c->set_timer(TimerMode::Request, c->server->limits.request_timeout_ms);
  return 0;
}

bool HttpServer::Impl::Connection::add_header_bytes(std::size_t len) {
  header_bytes += len;
  if (header_bytes <= server->limits.max_header_bytes) return true;
  error_status = 431;
  error_message =
      "request header exceeds " + std::to_string(server->limits.max_header_bytes) + " bytes";
  return false;
}

int HttpServer::Impl::Connection::on_url(http_parser* p, const char* at, std::size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  if (!c->add_header_bytes(len)) return -1;
  c->url.append(at, len);
  return 0;
}

int HttpServer::Impl::Connection::on_header_field(http_parser* p, const char* at, std::size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  bool new_field = c->request.headers.empty() || c->last_was_value;
  // A header line costs its name, its value and ": " plus CRLF.
  if (!c->add_header_bytes(len + (new_field ? 4 : 0))) return -1;
  if (new_field) c->request.headers.emplace_back();
  std::string& name = c->request.headers.back().first;
  for (std::size_t i = 0; i < len; ++i) {
    char ch = at[i];
    name.push_back(ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch - 'A' + 'a') : ch);
  }
  c->last_was_value = false;
  return 0;
}

int HttpServer::Impl::Connection::on_header_value(http_parser* p, const char* at, std::size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  if (!c->add_header_bytes(len)) return -1;
  if (c->request.headers.empty()) return -1;  // the parser never does this
  c->request.headers.back().second.append(at, len);
  c->last_was_value = true;
  return 0;
}

int HttpServer::Impl::Connection::on_headers_complete(http_parser* p) {
  auto* c = static_cast<Connection*>(p->data);
  const HttpLimits& limits = c->server->limits;
  if (p->method == HTTP_CONNECT) {
    c->error_status = 400;
    c->error_message = "CONNECT is not supported";
    return -1;
  }
  if ((p->flags & F_CHUNKED) != 0 || c->request.header("transfer-encoding") != nullptr) {
    c->error_status = 411;
    c->error_message = "a request body needs Content-Length (Transfer-Encoding is not supported)";
    return -1;
  }
  if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > limits.max_body_bytes) {
    c->error_status = 413;
    c->error_message = "too_large_body: the request body exceeds " +
                       std::to_string(limits.max_body_bytes) + " bytes";
    return -1;
  }
  c->keep_alive = http_should_keep_alive(p) != 0;
  c->http10 = p->http_major == 1 && p->http_minor == 0;
  c->request.method = http_method_str(static_cast<http_method>(p->method));
  if ((p->flags & F_CONTENTLENGTH) != 0) {
    c->request.body.reserve(static_cast<std::size_t>(p->content_length));
    const std::string* expect = c->request.header("expect");
    if (expect != nullptr && p->http_major == 1 && p->http_minor >= 1 && p->content_length > 0 &&
        base::iequals(*expect, "100-continue")) {
      if (!c->queue_write("HTTP/1.1 100 Continue\r\n\r\n", {})) return -1;
    }
  }
  return 0;
}

int HttpServer::Impl::Connection::on_body(http_parser* p, const char* at, std::size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  if (c->request.body.size() + len > c->server->limits.max_body_bytes) {
    c->error_status = 413;
    c->error_message = "too_large_body: the request body exceeds " +
                       std::to_string(c->server->limits.max_body_bytes) + " bytes";
    return -1;
  }
  c->request.body.append(at, len);
  return 0;
}

int HttpServer::Impl::Connection::on_message_complete(http_parser* p) {
  auto* c = static_cast<Connection*>(p->data);
  c->message_ready = true;
  c->keep_alive = http_should_keep_alive(p) != 0;
  http_parser_pause(p, 1);  // one request at a time: process_input dispatches it
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Connection: output

void HttpServer::Impl::Connection::on_response(std::uint64_t for_seq, HttpResponse* response) {
  if (state != State::Handling || for_seq != seq) {
    ++server->stats->responses_dropped;
    LOG_DEBUG(kLog, "%s: response dropped: the connection is gone", peer.c_str());
    return;
  }
  if (response == nullptr) {
    LOG_WARN(kLog, "%s: request handler dropped its responder without answering", peer.c_str());
    HttpResponse internal = internal_error();
    send_response(internal, !keep_alive || server->phase != Phase::Open);
    return;
  }
  bool close_after = !keep_alive || server->phase != Phase::Open;
  for (const auto& [name, value] : response->headers) {
    if (base::iequals(name, "connection") && base::iequals(value, "close")) close_after = true;
  }
  send_response(*response, close_after);
}

void HttpServer::Impl::Connection::send_response(HttpResponse& response, bool close_after) {
  std::string head;
  head.reserve(192);
  head += "HTTP/1.1 ";
  head += std::to_string(response.status);
  head += ' ';
  head += reason_phrase(response.status);
  head += "\r\n";
  if (!response.content_type.empty() && valid_header("content-type", response.content_type)) {
    head += "Content-Type: ";
    head += response.content_type;
    head += "\r\n";
  }
  head += "Content-Length: ";
  head += std::to_string(response.body.size());
  head += "\r\n";
  for (const auto& [name, value] : response.headers) {
    if (!valid_header(name, value) || base::iequals(name, "content-length") ||
        base::iequals(name, "connection") || base::iequals(name, "transfer-encoding") ||
        base::iequals(name, "content-type")) {
      if (!valid_header(name, value)) {
        LOG_WARN(kLog, "%s: response header dropped (invalid name or value)", peer.c_str());
      }
      continue;
    }
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
  if (close_after) {
    head += "Connection: close\r\n";
  } else if (http10) {
    head += "Connection: keep-alive\r\n";
  }
  head += "\r\n";

  bool handling = state == State::Handling;
  if (handling) state = State::Reading;
  if (!queue_write(std::move(head), std::move(response.body))) return;
  if (close_after || !handling) {
    begin_finish();
    return;
  }
  if (in_handler) return;  // dispatch() returns into process_input, which goes on
  if (input_off < input.size()) {
    server->schedule_resume(shared_from_this());  // pipelined input: parse it on the next turn
  } else {
    process_input();  // nothing to parse: arms the idle timer, reads again, or finishes at EOF
  }
}

void HttpServer::Impl::Connection::send_error(int status, std::string_view message) {
  ++server->stats->error_responses;
  HttpResponse response{status, "application/json", server->make_error_body(status, message), {}};
  send_response(response, true);
}

bool HttpServer::Impl::Connection::queue_write(std::string head, std::string body) {
  if (state == State::Closed) return false;
  auto* w = new WriteReq{};
  w->req.data = w;
  w->head = std::move(head);
  w->body = std::move(body);
  uv_buf_t bufs[2] = {uv_buf_init(w->head.data(), static_cast<unsigned>(w->head.size())),
                      uv_buf_init(w->body.data(), static_cast<unsigned>(w->body.size()))};
  unsigned count = w->body.empty() ? 1u : 2u;
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp);
  int rc = uv_write(&w->req, stream, bufs, count, &on_write);
  if (rc != 0) {
    delete w;
    LOG_DEBUG(kLog, "%s: write failed: %s", peer.c_str(), uv_strerror(rc));
    close_now();
    return false;
  }
  if (uv_stream_get_write_queue_size(stream) > server->limits.max_queued_write_bytes) {
    ++server->stats->write_overflows;
    LOG_WARN(kLog, "%s: closing: client does not read its responses (%zu bytes queued)",
             peer.c_str(), uv_stream_get_write_queue_size(stream));
    close_now();
    return false;
  }
  return true;
}

void HttpServer::Impl::Connection::on_write(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  auto* c = static_cast<Connection*>(req->handle->data);
  delete w;
  if (status < 0 && c->state != State::Closed) {
    LOG_DEBUG(kLog, "%s: write error: %s", c->peer.c_str(), uv_strerror(status));
    c->close_now();
  }
}

void HttpServer::Impl::Connection::begin_finish() {
  if (state == State::Closed || state == State::Finishing || state == State::Lingering) return;
  state = State::Finishing;
  input.clear();
  input_off = 0;
  set_timer(TimerMode::Finish, finish_timeout_ms());
  auto* req = new uv_shutdown_t{};
  int rc = uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&tcp), &on_shutdown);
  if (rc != 0) {
    delete req;
    LOG_DEBUG(kLog, "%s: shutdown failed: %s", peer.c_str(), uv_strerror(rc));
    close_now();
    return;
  }
  start_reading();  // discard what the client still sends, notice when it closes
}

void HttpServer::Impl::Connection::on_shutdown(uv_shutdown_t* req, int status) {
  auto* c = static_cast<Connection*>(req->handle->data);
  delete req;
  if (c->state == State::Closed) return;
  // While the server shuts down nobody waits for stragglers: the input has been drained all along,
  // so the close sends FIN after the response, not a reset.
  if (status < 0 || c->read_eof || c->server->phase != Phase::Open) {
    c->close_now();
    return;
  }
  c->state = State::Lingering;
  c->set_timer(TimerMode::Linger, std::min(kMaxLingerMs, c->finish_timeout_ms()));
}

void HttpServer::Impl::Connection::close_now() {
  if (state == State::Closed) return;
  state = State::Closed;
  reading = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp), &on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), &on_handle_closed);
}

void HttpServer::Impl::Connection::on_handle_closed(uv_handle_t* handle) {
  auto* c = static_cast<Connection*>(handle->data);
  if (--c->open_handles > 0) return;
  Impl* s = c->server;
  s->connections.erase(c);  // may free c
  if (s->connections.size() < s->limits.max_connections) s->limit_warned = false;
  s->maybe_finish_close();
}

void HttpServer::Impl::Connection::set_timer(TimerMode mode, int timeout_ms) {
  if (state == State::Closed) return;
  if (mode == timer_mode) return;
  uv_timer_stop(&timer);
  timer_mode = mode;
  if (mode == TimerMode::None || timeout_ms <= 0) return;
  uv_timer_start(&timer, &on_timer, static_cast<std::uint64_t>(timeout_ms), 0);
}

void HttpServer::Impl::Connection::on_timer(uv_timer_t* timer) {
  auto* c = static_cast<Connection*>(timer->data);
  TimerMode mode = c->timer_mode;
  c->timer_mode = TimerMode::None;
  switch (mode) {
    case TimerMode::Idle:
      ++c->server->stats->timeouts;
      LOG_DEBUG(kLog, "%s: idle timeout", c->peer.c_str());
      c->close_now();
      return;
    case TimerMode::Request:
      ++c->server->stats->timeouts;
      LOG_DEBUG(kLog, "%s: request timeout", c->peer.c_str());
      if (c->state == State::Reading) {
        c->send_error(408, "the request was not received in time");
      } else {
        c->close_now();
      }
      return;
    case TimerMode::Finish:
      LOG_DEBUG(kLog, "%s: the last response was not read in time", c->peer.c_str());
      c->close_now();
      return;
    case TimerMode::Linger:
      c->close_now();
      return;
    case TimerMode::None:
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Server

std::string HttpServer::Impl::make_error_body(int status, std::string_view message) {
  if (error_body) {
    try {
      return error_body(status, message);
    } catch (...) {
      LOG_ERROR(kLog, "error body callback threw");
    }
  }
  std::string escaped;
  for (char ch : message) {
    if (ch == '"' || ch == '\\') escaped.push_back('\\');
    if (static_cast<unsigned char>(ch) >= 0x20) escaped.push_back(ch);
  }
  return "{\"status\":" + std::to_string(status) + ",\"message\":\"" + escaped + "\"}";
}

std::error_code HttpServer::Impl::listen(const std::string& host, std::uint16_t port) {
  assert(!listened && phase == Phase::Open && "listen() once, before close()");
  if (listened || phase != Phase::Open) return uv_error(UV_EINVAL);

  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    return uv_error(UV_EINVAL);  // not an IPv4 or IPv6 literal
  }

  auto* l = new Listener{};
  int rc = uv_tcp_init(loop, &l->tcp);
  if (rc != 0) {
    delete l;
    return uv_error(rc);
  }
  l->impl = this;
  l->tcp.data = l;
  rc = uv_tcp_bind(&l->tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l->tcp), kListenBacklog,
                   [](uv_stream_t* stream, int status) {
                     auto* self = static_cast<Listener*>(stream->data);
                     if (self->impl != nullptr) self->impl->on_connection(status);
                   });
  }
  sockaddr_storage bound{};
  int bound_len = sizeof(bound);
  if (rc == 0) {
    rc = uv_tcp_getsockname(&l->tcp, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  }
  if (rc != 0) {
    l->impl = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp), &on_listener_closed);
    LOG_DEBUG(kLog, "cannot listen on %s port %u: %s", host.c_str(), static_cast<unsigned>(port),
              uv_strerror(rc));
    return uv_error(rc);
  }
  bound_port = bound.ss_family == AF_INET6
                   ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                   : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);

  uv_idle_init(loop, &resume_idle);
  resume_idle.data = this;
  resume_idle_init = true;
  listener = l;
  listened = true;
  LOG_DEBUG(kLog, "listening on %s port %u", host.c_str(), static_cast<unsigned>(bound_port));
  return {};
}

void HttpServer::Impl::on_listener_closed(uv_handle_t* handle) {
  auto* l = static_cast<Listener*>(handle->data);
  Impl* impl = l->impl;
  delete l;
  if (impl != nullptr) {
    impl->listener = nullptr;
    impl->maybe_finish_close();
  }
}

void HttpServer::Impl::on_connection(int status) {
  if (status < 0) {
    LOG_WARN(kLog, "accept failed: %s", uv_strerror(status));
    return;
  }
  if (phase != Phase::Open) return;
  if (connections.size() >= limits.max_connections) {
    reject_connection();
    return;
  }
  auto c = std::make_shared<Connection>(this);
  int rc = uv_tcp_init(loop, &c->tcp);
  if (rc != 0) {
    LOG_WARN(kLog, "cannot create a connection handle: %s", uv_strerror(rc));
    return;
  }
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c.get();
  c->timer.data = c.get();
  c->open_handles = 2;
  connections.emplace(c.get(), c);
  rc = uv_accept(reinterpret_cast<uv_stream_t*>(&listener->tcp),
                 reinterpret_cast<uv_stream_t*>(&c->tcp));
  if (rc != 0) {
    LOG_WARN(kLog, "accept failed: %s", uv_strerror(rc));
    c->close_now();
    return;
  }
  ++stats->connections_accepted;
  uv_tcp_nodelay(&c->tcp, 1);
  c->peer = format_peer(&c->tcp);
  c->set_timer(Connection::TimerMode::Idle, limits.idle_timeout_ms);
  c->start_reading();
}

void HttpServer::Impl::reject_connection() {
  auto* r = new Rejected{};
  if (uv_tcp_init(loop, &r->tcp) != 0) {
    delete r;
    return;
  }
  r->impl = this;
  r->tcp.data = r;
  ++rejected_closing;
  ++stats->connections_rejected;
  int rc = uv_accept(reinterpret_cast<uv_stream_t*>(&listener->tcp),
                     reinterpret_cast<uv_stream_t*>(&r->tcp));
  if (rc == 0 && !limit_warned) {
    limit_warned = true;  // once per episode at the limit; the count is in stats()
    LOG_WARN(kLog, "refusing connections: %zu open (max_connections)", connections.size());
  } else if (rc == 0) {
    LOG_DEBUG(kLog, "connection refused: %zu open (max_connections)", connections.size());
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&r->tcp), [](uv_handle_t* handle) {
    auto* rejected = static_cast<Rejected*>(handle->data);
    Impl* impl = rejected->impl;
    delete rejected;
    --impl->rejected_closing;
    impl->maybe_finish_close();
  });
}

void HttpServer::Impl::schedule_resume(const std::shared_ptr<Connection>& c) {
  if (c->resume_scheduled) return;
  c->resume_scheduled = true;
  resume_list.push_back(c);
  if (resume_list.size() == 1) uv_idle_start(&resume_idle, &on_resume_idle);
}

void HttpServer::Impl::on_resume_idle(uv_idle_t* idle) {
  auto* impl = static_cast<Impl*>(idle->data);
  std::vector<std::shared_ptr<Connection>> ready;
  ready.swap(impl->resume_list);
  for (auto& c : ready) {
    c->resume_scheduled = false;
    if (c->state == Connection::State::Reading) c->process_input();
  }
  if (impl->resume_list.empty()) uv_idle_stop(&impl->resume_idle);
}

void HttpServer::Impl::close(std::function<void()> done_in) {
  assert(phase == Phase::Open && "close() called twice");
  if (phase != Phase::Open) return;
  phase = Phase::Closing;
  done = std::move(done_in);

  if (listener != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener->tcp), &on_listener_closed);
  }
  uv_timer_init(loop, &grace_timer);
  grace_timer.data = this;
  grace_timer_init = true;

  std::vector<std::shared_ptr<Connection>> snapshot;
  snapshot.reserve(connections.size());
  for (auto& [raw, c] : connections) snapshot.push_back(c);
  for (auto& c : snapshot) {
    if (c->state == Connection::State::Lingering) c->close_now();
    if (c->state != Connection::State::Reading) continue;  // in the handler, or finishing
    if (c->in_message || c->input_off < c->input.size()) {
      c->send_error(503, "the server is shutting down");
    } else if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&c->tcp)) > 0) {
      c->begin_finish();
    } else {
      c->close_now();
    }
  }
  if (!connections.empty()) {
    uv_timer_start(&grace_timer, &on_grace_timer,
                   static_cast<std::uint64_t>(std::max(0, limits.shutdown_grace_ms)), 0);
  }
  maybe_finish_close();
}

void HttpServer::Impl::on_grace_timer(uv_timer_t* timer) {
  auto* impl = static_cast<Impl*>(timer->data);
  std::vector<std::shared_ptr<Connection>> snapshot;
  for (auto& [raw, c] : impl->connections) snapshot.push_back(c);
  std::size_t handling = 0;
  for (auto& c : snapshot) {
    if (c->state == Connection::State::Handling) ++handling;
    c->close_now();
  }
  if (handling > 0) {
    LOG_WARN(kLog, "shutdown grace expired: closed %zu connections with requests unanswered",
             handling);
  }
}

void HttpServer::Impl::maybe_finish_close() {
  if (phase != Phase::Closing) return;
  if (listener != nullptr || !connections.empty() || rejected_closing > 0) return;
  phase = Phase::Finalizing;
  resume_list.clear();
  final_closes_pending = 0;
  if (grace_timer_init) {
    uv_timer_stop(&grace_timer);
    ++final_closes_pending;
    uv_close(reinterpret_cast<uv_handle_t*>(&grace_timer), &on_final_closed);
  }
  if (resume_idle_init) {
    uv_idle_stop(&resume_idle);
    ++final_closes_pending;
    uv_close(reinterpret_cast<uv_handle_t*>(&resume_idle), &on_final_closed);
  }
}

void HttpServer::Impl::on_final_closed(uv_handle_t* handle) {
  auto* impl = static_cast<Impl*>(handle->data);
  if (--impl->final_closes_pending > 0) return;
  impl->phase = Phase::Closed;
  impl->grace_timer_init = false;
  impl->resume_idle_init = false;
  auto done = std::move(impl->done);
  impl->done = nullptr;
  if (done) done();  // may destroy the server: nothing after this
}

// ---------------------------------------------------------------------------------------------
// HttpServer

HttpServer::HttpServer(uv_loop_t* loop, HttpLimits limits, Handler handler, ErrorBody error_body)
    : impl_(std::make_unique<Impl>(loop, limits, std::move(handler), std::move(error_body))) {}

HttpServer::~HttpServer() {
  bool quiet = impl_->listener == nullptr && impl_->connections.empty() &&
               impl_->rejected_closing == 0 && !impl_->grace_timer_init && !impl_->resume_idle_init;
  if (!quiet) {
    LOG_ERROR(kLog, "HttpServer destroyed with handles open: call close() and wait for done");
    std::abort();
  }
}

std::error_code HttpServer::listen(const std::string& host, std::uint16_t port) {
  return impl_->listen(host, port);
}

std::uint16_t HttpServer::port() const { return impl_->bound_port; }

std::size_t HttpServer::open_connections() const { return impl_->connections.size(); }

HttpServerStats HttpServer::stats() const { return *impl_->stats; }

void HttpServer::close(std::function<void()> done) { impl_->close(std::move(done)); }

}  // namespace chunkd::io

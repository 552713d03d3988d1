// One HTTP/1.1 connection: http-parser 2.9, one request in the handler at a time.
//
// A connection moves through these states:
//   Reading   → the parser consumes input; a complete request pauses the parser (in
//               on_message_complete) and is dispatched: → Handling. While a response is
//               unwritten (the client does not read), nothing more is parsed or read
//               (`drain_wait_`) until on_write sees the write queue empty: a pipelining client
//               costs one response, not a queue of them. "Unwritten" lasts until the write's
//               callback: a write the kernel took at once still holds its response until then,
//               so a connection answers at most one pipelined request per loop turn (without
//               that, one 64 KiB read of small pipelined requests held ~1,700 responses).
//   Handling  → waiting for the Responder; input that arrives meanwhile is kept (bounded: reading
//               stops past kMaxBufferedInputBytes) and parsed once the response is queued.
//   Finishing → the last response is queued; uv_shutdown sends FIN once it is written. Input is
//               discarded.
//   Lingering → FIN sent; input is read and discarded (bounded in bytes and time) until the peer
//               closes, so that a client still sending does not get a reset that destroys the
//               response it has not read yet.
//   Closed    → uv_close called on both handles; the object is freed by the last close callback.
//
// One uv_timer_t per connection serves the idle timeout (Reading, no request begun; the connection
// is then on the listener's idle list, the first to be closed when slots run out), the request
// timeout (Reading, a request begun), the bound on an unwritten response (the idle timeout again)
// and the finishing/lingering bound.
//
// A Responder holds a shared ResponderState: a weak reference to its connection plus the sequence
// number of the request it answers. A response for a closed connection, or for a request that is no
// longer the one in the handler, is dropped. A Responder destroyed without being called answers
// 500.
#include <algorithm>
#include <exception>

#include "base/assert.hpp"
#include "base/text.hpp"
#include "io/http_internal.hpp"
#include "io/log.hpp"

namespace chunkd::io::detail {
namespace {

// Pipelined input kept while a request is in the handler; past it, reading stops until the answer.
constexpr std::size_t kMaxBufferedInputBytes = 64 * 1024;
// After the last response: how much input is read and thrown away, and for how long at most.
constexpr std::size_t kMaxLingerBytes = 1024 * 1024;
constexpr int kMaxLingerMs = 2000;
// Bound on writing the last response when idle timeouts are disabled.
constexpr int kDefaultFinishMs = 60000;

struct WriteReq {
  uv_write_t req;
  std::string head;
  std::string body;
  std::size_t charged = 0;  // in the listener's budget until on_write
};

// What a Responder shares between its copies.
struct ResponderState {
  ResponderState(std::weak_ptr<HttpConnection> c, std::weak_ptr<HttpServerStats> st,
                 std::uint64_t s)
      : connection(std::move(c)), stats(std::move(st)), seq(s) {}
  ~ResponderState() {
    if (used) return;
    if (auto c = connection.lock()) c->on_response(seq, nullptr);
  }
  ResponderState(const ResponderState&) = delete;
  ResponderState& operator=(const ResponderState&) = delete;

  void respond(HttpResponse response) {
    CHUNKD_ASSERT(!used && "HttpServer::Responder called twice");
    used = true;
    if (auto c = connection.lock()) {
      c->on_response(seq, &response);
    } else if (auto counters = stats.lock()) {
      ++counters->responses_dropped;  // the connection is gone; the server is still there
      LOG_DEBUG(kHttpLog, "response dropped: the connection is gone");
    }
  }

  std::weak_ptr<HttpConnection> connection;
  std::weak_ptr<HttpServerStats> stats;
  std::uint64_t seq;
  bool used = false;
};

}  // namespace

HttpConnection::HttpConnection(HttpListener* server) : server_(server) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
}

int HttpConnection::init_handles(uv_loop_t* loop) {
  CHUNKD_ASSERT(open_handles_ == 0);
  const int rc = uv_tcp_init(loop, &tcp_);
  if (rc != 0) return rc;
  uv_timer_init(loop, &timer_);
  tcp_.data = this;
  timer_.data = this;
  open_handles_ = 2;
  return 0;
}

void HttpConnection::accepted() {
  peer_ = format_peer(&tcp_);
  address_ = peer_address(peer_);
}

void HttpConnection::start() {
  holds_slot_ = true;
  uv_tcp_nodelay(&tcp_, 1);
  set_timer(TimerMode::Idle, server_->limits().idle_timeout_ms);
  start_reading();
}

void HttpConnection::refuse_connection(std::string_view message) {
  refused_ = true;
  send_error(503, message);  // then finishes: FIN after the answer, input discarded, bounded
}

void HttpConnection::on_server_closing() {
  if (state_ == State::Lingering) close_now();
  if (state_ != State::Reading) return;  // in the handler, or finishing
  if (in_message_ || input_off_ < input_.size()) {
    send_error(503, "the server is shutting down");
  } else if (uv_stream_get_write_queue_size(stream()) > 0) {
    begin_finish();
  } else {
    close_now();
  }
}

void HttpConnection::resume() {
  resume_scheduled_ = false;
  if (state_ == State::Reading) process_input();
}

// ---------------------------------------------------------------------------------------------
// Input

void HttpConnection::start_reading() {
  if (reading_ || read_eof_ || state_ == State::Closed) return;
  int rc = uv_read_start(stream(), &on_alloc, &on_read);
  if (rc != 0) {
    LOG_DEBUG(kHttpLog, "%s: read start failed: %s", peer_.c_str(), uv_strerror(rc));
    close_now();
    return;
  }
  reading_ = true;
}

void HttpConnection::on_alloc(uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
  auto* c = static_cast<HttpConnection*>(handle->data);
  *buf = uv_buf_init(c->server_->read_buffer(), static_cast<unsigned>(kHttpReadBufferBytes));
}

void HttpConnection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<HttpConnection*>(stream->data);
  if (nread == 0) return;  // EAGAIN
  if (nread == UV_EOF) {
    c->on_eof();
    return;
  }
  if (nread < 0) {
    LOG_DEBUG(kHttpLog, "%s: read error: %s", c->peer_.c_str(),
              uv_strerror(static_cast<int>(nread)));
    c->close_now();
    return;
  }
  c->on_data(buf->base, static_cast<std::size_t>(nread));
}

void HttpConnection::on_data(const char* data, std::size_t len) {
  switch (state_) {
    case State::Reading:
      input_.append(data, len);
      if (drain_wait_) {
        uv_read_stop(stream());  // read again once the response is written
        reading_ = false;
        return;
      }
      process_input();
      return;
    case State::Handling:
      input_.append(data, len);
      if (input_.size() - input_off_ >= kMaxBufferedInputBytes && reading_) {
        uv_read_stop(stream());
        reading_ = false;
      }
      return;
    case State::Finishing:
    case State::Lingering:
      discarded_bytes_ += len;
      if (discarded_bytes_ > kMaxLingerBytes) close_now();
      return;
    case State::Closed:
      return;
  }
}

void HttpConnection::on_eof() {
  read_eof_ = true;
  reading_ = false;
  switch (state_) {
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

void HttpConnection::process_input() {
  while (state_ == State::Reading && !drain_wait_ && input_off_ < input_.size()) {
    const char* data = input_.data() + input_off_;
    std::size_t len = input_.size() - input_off_;
    std::size_t parsed = http_parser_execute(&parser_, &parser_settings(), data, len);
    input_off_ += parsed;
    http_errno err = HTTP_PARSER_ERRNO(&parser_);
    if (err == HPE_PAUSED && message_ready_) {
      http_parser_pause(&parser_, 0);
      message_ready_ = false;
      dispatch();
      continue;
    }
    if (err != HPE_OK || parsed != len) {
      fail_request();
      return;
    }
  }
  after_input();
}

// Everything parsed that could be: park, wait for more, or finish at EOF.
void HttpConnection::after_input() {
  if (state_ != State::Reading) {
    if (state_ == State::Handling && input_off_ > 0 && input_off_ == input_.size()) {
      input_.clear();
      input_off_ = 0;
    }
    return;
  }
  if (drain_wait_) return;  // the rest is parsed once the response is written
  input_.clear();
  input_off_ = 0;
  if (read_eof_) {
    if (in_message_) {
      LOG_DEBUG(kHttpLog, "%s: connection closed in the middle of a request", peer_.c_str());
      close_now();
    } else if (uv_stream_get_write_queue_size(stream()) > 0) {
      begin_finish();
    } else {
      close_now();
    }
    return;
  }
  if (!in_message_) set_timer(TimerMode::Idle, server_->limits().idle_timeout_ms);
  start_reading();
}

void HttpConnection::fail_request() {
  if (state_ == State::Closed) return;  // a parser callback already closed the connection
  release_body_charge();
  if (early_response_) {
    // The Authorize hook answered a request announcing a body: answer without reading it.
    LOG_DEBUG(kHttpLog, "%s: answered %d before the body", peer_.c_str(), early_response_->status);
    HttpResponse early = std::move(*early_response_);
    early_response_.reset();
    send_response(early, true);
    return;
  }
  http_errno err = HTTP_PARSER_ERRNO(&parser_);
  int status = error_status_;
  std::string message = error_message_;
  if (status == 0) {
    if (err == HPE_HEADER_OVERFLOW) {
      status = 431;
      message = "request header too large";
    } else {
      status = 400;
      message = std::string("malformed request: ") + http_errno_description(err);
    }
  }
  LOG_DEBUG(kHttpLog, "%s: refused request (%d): %s [%s]", peer_.c_str(), status, message.c_str(),
            http_errno_name(err));
  send_error(status, message);
}

void HttpConnection::dispatch() {
  state_ = State::Handling;
  set_timer(TimerMode::None, 0);
  in_message_ = false;

  HttpRequest req = std::move(request_);  // path, query and peer set by admit_head()
  request_ = HttpRequest{};
  url_.clear();
  run_handler(std::move(req));
  release_body_charge();  // the body is the handler's now
}

void HttpConnection::release_body_charge() {
  if (body_charge_ == 0) return;
  server_->budget().release(body_charge_);
  body_charge_ = 0;
}

void HttpConnection::run_handler(HttpRequest request) {
  ++seq_;
  auto responder_state =
      std::make_shared<ResponderState>(weak_from_this(), server_->shared_stats(), seq_);
  in_handler_ = true;
  if (early_response_) {  // the Authorize hook answered: the handler never sees the request
    HttpResponse early = std::move(*early_response_);
    early_response_.reset();
    responder_state->respond(std::move(early));
  } else {
    ++server_->stats().requests;
    try {
      server_->handler()(std::move(request), [responder_state](HttpResponse response) {
        responder_state->respond(std::move(response));
      });
    } catch (const std::exception& e) {
      LOG_ERROR(kHttpLog, "%s: request handler threw: %s", peer_.c_str(), e.what());
      if (!responder_state->used) responder_state->respond(internal_error());
    } catch (...) {
      LOG_ERROR(kHttpLog, "%s: request handler threw", peer_.c_str());
      if (!responder_state->used) responder_state->respond(internal_error());
    }
  }
  // If the handler kept no copy of the Responder, this answers 500 while in_handler_ still says
  // that process_input() is on the stack and goes on by itself.
  responder_state.reset();
  in_handler_ = false;
}

// ---------------------------------------------------------------------------------------------
// Output and keep-alive

HttpResponse HttpConnection::internal_error() const {
  return HttpResponse{
      500, "application/json", server_->make_error_body(500, "the request was not answered"), {}};
}

void HttpConnection::on_response(std::uint64_t for_seq, HttpResponse* response) {
  if (state_ != State::Handling || for_seq != seq_) {
    ++server_->stats().responses_dropped;
    LOG_DEBUG(kHttpLog, "%s: response dropped: the connection is gone", peer_.c_str());
    return;
  }
  bool close_after = !keep_alive_ || server_->closing();
  if (response == nullptr) {
    LOG_WARN(kHttpLog, "%s: request handler dropped its responder without answering",
             peer_.c_str());
    HttpResponse internal = internal_error();
    send_response(internal, close_after);
    return;
  }
  for (const auto& [name, value] : response->headers) {
    if (base::iequals(name, "connection") && base::iequals(value, "close")) close_after = true;
  }
  send_response(*response, close_after);
}

void HttpConnection::send_response(HttpResponse& response, bool close_after) {
  std::size_t invalid_headers = 0;
  std::string head = format_response_head(response, close_after, http10_, invalid_headers);
  for (std::size_t i = 0; i < invalid_headers; ++i) {
    LOG_WARN(kHttpLog, "%s: response header dropped (invalid name or value)", peer_.c_str());
  }

  bool handling = state_ == State::Handling;
  if (handling) state_ = State::Reading;
  // RFC 9110 §9.3.2: a response to HEAD is the GET response's head, Content-Length included.
  if (!queue_write(std::move(head), head_ ? std::string() : std::move(response.body))) return;
  if (close_after || !handling) {
    begin_finish();
    return;
  }
  if (awaiting_drain()) {
    // The client is not reading: hold the next request back until this response is written.
    drain_wait_ = true;
    if (reading_) uv_read_stop(stream());
    reading_ = false;
    set_timer(TimerMode::Write, finish_timeout_ms());
    return;
  }
  if (in_handler_) return;  // run_handler() returns into process_input, which goes on
  after_response();
}

bool HttpConnection::awaiting_drain() const {
  return writes_in_flight_ > 0 ||
         uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_)) > 0;
}

// The response is written (or in the kernel): go on with pipelined input, or wait for more.
void HttpConnection::after_response() {
  if (input_off_ < input_.size()) {
    // Pipelined input: parse it on the next turn.
    if (!resume_scheduled_) {
      resume_scheduled_ = true;
      server_->schedule_resume(shared_from_this());
    }
  } else {
    process_input();  // nothing to parse: arms the idle timer, reads again, or finishes at EOF
  }
}

void HttpConnection::send_error(int status, std::string_view message) {
  ++server_->stats().error_responses;
  server_->note_refused(status);
  HttpResponse response{status, "application/json", server_->make_error_body(status, message), {}};
  send_response(response, true);
}

bool HttpConnection::queue_write(std::string head, std::string body) {
  if (state_ == State::Closed) return false;
  auto* w = new WriteReq{};
  w->req.data = w;
  w->head = std::move(head);
  w->body = std::move(body);
  w->charged = w->head.size() + w->body.size();
  server_->budget().charge(w->charged);
  uv_buf_t bufs[2] = {uv_buf_init(w->head.data(), static_cast<unsigned>(w->head.size())),
                      uv_buf_init(w->body.data(), static_cast<unsigned>(w->body.size()))};
  unsigned count = w->body.empty() ? 1u : 2u;
  int rc = uv_write(&w->req, stream(), bufs, count, &on_write);
  if (rc == 0) ++writes_in_flight_;
  if (rc != 0) {
    server_->budget().release(w->charged);
    delete w;
    LOG_DEBUG(kHttpLog, "%s: write failed: %s", peer_.c_str(), uv_strerror(rc));
    close_now();
    return false;
  }
  const std::size_t queued = uv_stream_get_write_queue_size(stream());
  if (queued > server_->limits().max_queued_write_bytes) {
    ++server_->stats().write_overflows;
    if (server_->should_warn(address_)) {
      LOG_WARN(kHttpLog, "%s: closing: client does not read its responses (%zu bytes queued)",
               peer_.c_str(), queued);
    }
    close_now();
    return false;
  }
  return true;
}

void HttpConnection::on_write(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  auto* c = static_cast<HttpConnection*>(req->handle->data);
  c->server_->budget().release(w->charged);
  delete w;
  CHUNKD_ASSERT(c->writes_in_flight_ > 0);
  --c->writes_in_flight_;
  if (status < 0 && c->state_ != State::Closed) {
    LOG_DEBUG(kHttpLog, "%s: write error: %s", c->peer_.c_str(), uv_strerror(status));
    c->close_now();
    return;
  }
  if (c->drain_wait_ && c->state_ == State::Reading && !c->awaiting_drain()) {
    c->drain_wait_ = false;
    c->after_response();
  }
}

void HttpConnection::begin_finish() {
  if (state_ == State::Closed || state_ == State::Finishing || state_ == State::Lingering) return;
  state_ = State::Finishing;
  drain_wait_ = false;
  release_body_charge();
  input_.clear();
  input_off_ = 0;
  set_timer(TimerMode::Finish, finish_timeout_ms());
  auto* req = new uv_shutdown_t{};
  int rc = uv_shutdown(req, stream(), &on_shutdown);
  if (rc != 0) {
    delete req;
    LOG_DEBUG(kHttpLog, "%s: shutdown failed: %s", peer_.c_str(), uv_strerror(rc));
    close_now();
    return;
  }
  start_reading();  // discard what the client still sends, notice when it closes
}

void HttpConnection::on_shutdown(uv_shutdown_t* req, int status) {
  auto* c = static_cast<HttpConnection*>(req->handle->data);
  delete req;
  if (c->state_ == State::Closed) return;
  // While the server shuts down nobody waits for stragglers: the input has been drained all along,
  // so the close sends FIN after the response, not a reset.
  if (status < 0 || c->read_eof_ || c->server_->closing()) {
    c->close_now();
    return;
  }
  c->state_ = State::Lingering;
  c->set_timer(TimerMode::Linger, std::min(kMaxLingerMs, c->finish_timeout_ms()));
}

void HttpConnection::close_now() {
  if (state_ == State::Closed) return;
  CHUNKD_ASSERT(open_handles_ == 2);  // both handles initialised, neither closing yet
  server_->on_closing(this);          // the slot is free from now on
  holds_slot_ = false;
  state_ = State::Closed;
  reading_ = false;
  release_body_charge();
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &on_handle_closed);
}

void HttpConnection::on_handle_closed(uv_handle_t* handle) {
  auto* c = static_cast<HttpConnection*>(handle->data);
  CHUNKD_ASSERT(c->open_handles_ > 0);
  if (--c->open_handles_ > 0) return;
  c->server_->release(c);  // may free c
}

// ---------------------------------------------------------------------------------------------
// Timers

int HttpConnection::finish_timeout_ms() const {
  if (refused_) return kMaxLingerMs;  // a refused client gets a short while to read its 503
  const int idle_ms = server_->limits().idle_timeout_ms;
  return idle_ms > 0 ? idle_ms : kDefaultFinishMs;
}

void HttpConnection::set_timer(TimerMode mode, int timeout_ms) {
  if (state_ == State::Closed) return;
  if (mode == timer_mode_) return;
  uv_timer_stop(&timer_);
  if (mode == TimerMode::Idle) {
    server_->mark_idle(this);
  } else if (timer_mode_ == TimerMode::Idle) {
    server_->unmark_idle(this);
  }
  timer_mode_ = mode;
  if (mode == TimerMode::None || timeout_ms <= 0) return;
  uv_timer_start(&timer_, &on_timer, static_cast<std::uint64_t>(timeout_ms), 0);
}

void HttpConnection::on_timer(uv_timer_t* timer) {
  auto* c = static_cast<HttpConnection*>(timer->data);
  TimerMode mode = c->timer_mode_;
  c->set_timer(TimerMode::None, 0);
  switch (mode) {
    case TimerMode::Idle:
      ++c->server_->stats().timeouts;
      LOG_DEBUG(kHttpLog, "%s: idle timeout", c->peer_.c_str());
      c->close_now();
      return;
    case TimerMode::Request:
      ++c->server_->stats().timeouts;
      LOG_DEBUG(kHttpLog, "%s: request timeout", c->peer_.c_str());
      if (c->state_ == State::Reading) {
        c->send_error(408, "the request was not received in time");
      } else {
        c->close_now();
      }
      return;
    case TimerMode::Write:
      ++c->server_->stats().timeouts;
      LOG_DEBUG(kHttpLog, "%s: the response was not read in time", c->peer_.c_str());
      c->close_now();
      return;
    case TimerMode::Finish:
      LOG_DEBUG(kHttpLog, "%s: the last response was not read in time", c->peer_.c_str());
      c->close_now();
      return;
    case TimerMode::Linger:
      c->close_now();
      return;
    case TimerMode::None:
      return;
  }
}

}  // namespace chunkd::io::detail

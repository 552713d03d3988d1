// HttpServer: the listener. Accepts connections into a bounded table of slots (max_connections,
// max_connections_per_client; when full, the longest-idle connection is closed to make room, and a
// client still without room gets 503), runs the pipelined input its connections park, keeps the
// server-wide byte budget, and closes gracefully: stop accepting, let responses in progress finish
// within shutdown_grace_ms, close every handle, then call `done`. Each connection is an
// HttpConnection (io/http_connection.cpp).
#include "io/http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdlib>

#include "base/assert.hpp"
#include "io/http_internal.hpp"
#include "io/log.hpp"

namespace chunkd::io {
namespace detail {
namespace {

constexpr int kListenBacklog = 1024;
// Refused connections writing their 503 at once; past it, a refused connection is closed
// unanswered.
constexpr std::size_t kMaxRefusing = 256;

std::error_code uv_error(int code) { return {-code, std::system_category()}; }

std::string where(const std::string& host, std::uint16_t port) {
  return "cannot listen on " + host + " port " + std::to_string(port);
}

}  // namespace

HttpListener::HttpListener(uv_loop_t* loop, HttpLimits limits, Handler handler,
                           ErrorBody error_body)
    : loop_(loop),
      limits_(limits),
      handler_(std::move(handler)),
      error_body_(std::move(error_body)),
      read_buffer_(new char[kHttpReadBufferBytes]),
      budget_(limits_.max_buffered_bytes) {
  CHUNKD_ASSERT(limits_.max_connections > 0 && limits_.max_connections_per_client > 0);
}

HttpListener::~HttpListener() {
  if (!quiet()) {
    LOG_ERROR(kHttpLog, "HttpServer destroyed with handles open: call close() and wait for done");
    std::abort();
  }
}

bool HttpListener::quiet() const {
  return listen_handle_ == nullptr && connections_.empty() && !grace_timer_init_ &&
         !resume_idle_init_;
}

HttpServerStats HttpListener::stats_snapshot() const {
  HttpServerStats s = *stats_;
  s.buffered_bytes = budget_.used_bytes();
  s.buffered_bytes_peak = budget_.peak_bytes();
  s.unfinished_heads = heads_.size();
  return s;
}

std::optional<HttpResponse> HttpListener::authorize(const HttpRequest& head) const {
  if (!authorize_) return std::nullopt;
  try {
    return authorize_(head);
  } catch (...) {
    LOG_ERROR(kHttpLog, "%s: authorize callback threw", head.peer.c_str());
    return HttpResponse{
        500, "application/json", make_error_body(500, "the request could not be authorized"), {}};
  }
}

bool HttpListener::should_warn(std::string_view address) {
  return warnings_.should_warn(address, uv_now(loop_));
}

std::string HttpListener::make_error_body(int status, std::string_view message) const {
  if (error_body_) {
    try {
      return error_body_(status, message);
    } catch (...) {
      LOG_ERROR(kHttpLog, "error body callback threw");
    }
  }
  return default_error_body(status, message);
}

void HttpListener::set_refused_observer(HttpServer::RefusedObserver observer) {
  CHUNKD_ASSERT(!listened_ && "set_refused_observer() before listen()");
  refused_observer_ = std::move(observer);
}

void HttpListener::note_refused(int status) const {
  if (refused_observer_) refused_observer_(status);
}

Expected<void> HttpListener::listen(const std::string& host, std::uint16_t port) {
  CHUNKD_ASSERT(!listened_ && phase_ == Phase::Open && "listen() once, before close()");

  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    return fail(uv_error(UV_EINVAL), where(host, port) + ": not an IPv4 or IPv6 literal");
  }

  auto* l = new ListenHandle{};
  int rc = uv_tcp_init(loop_, &l->tcp);
  if (rc != 0) {
    delete l;
    return fail(uv_error(rc), where(host, port));
  }
  l->owner = this;
  l->tcp.data = l;
  rc = uv_tcp_bind(&l->tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l->tcp), kListenBacklog,
                   [](uv_stream_t* stream, int status) {
                     auto* self = static_cast<ListenHandle*>(stream->data);
                     if (self->owner != nullptr) self->owner->on_connection(status);
                   });
  }
  sockaddr_storage bound{};
  int bound_len = sizeof(bound);
  if (rc == 0) {
    rc = uv_tcp_getsockname(&l->tcp, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  }
  if (rc != 0) {
    l->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp), &on_listen_handle_closed);
    return fail(uv_error(rc), where(host, port));
  }
  bound_port_ = bound.ss_family == AF_INET6
                    ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                    : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);

  uv_idle_init(loop_, &resume_idle_);
  resume_idle_.data = this;
  resume_idle_init_ = true;
  listen_handle_ = l;
  listened_ = true;
  LOG_DEBUG(kHttpLog, "listening on %s port %u", host.c_str(), static_cast<unsigned>(bound_port_));
  return {};
}

void HttpListener::on_listen_handle_closed(uv_handle_t* handle) {
  auto* l = static_cast<ListenHandle*>(handle->data);
  HttpListener* owner = l->owner;
  delete l;
  if (owner != nullptr) {
    owner->listen_handle_ = nullptr;
    owner->maybe_finish_close();
  }
}

void HttpListener::on_connection(int status) {
  if (status < 0) {
    LOG_WARN(kHttpLog, "accept failed: %s", uv_strerror(status));
    return;
  }
  if (phase_ != Phase::Open) return;
  accept_connection();
}

// Accepts first (the peer's address decides), then gives the connection a slot or refuses it.
void HttpListener::accept_connection() {
  auto c = std::make_shared<HttpConnection>(this);
  int rc = c->init_handles(loop_);
  if (rc != 0) {
    LOG_WARN(kHttpLog, "cannot create a connection handle: %s", uv_strerror(rc));
    return;
  }
  const bool inserted = connections_.emplace(c.get(), c).second;
  CHUNKD_ASSERT(inserted);
  rc = uv_accept(reinterpret_cast<uv_stream_t*>(&listen_handle_->tcp), c->stream());
  if (rc != 0) {
    LOG_WARN(kHttpLog, "accept failed: %s", uv_strerror(rc));
    c->close_now();
    return;
  }
  ++stats_->connections_accepted;
  c->accepted();
  if (const char* why = refusal(c->address())) {
    refuse(std::move(c), why);
    return;
  }
  ++slots_used_;
  ++per_address_[c->address()];
  CHUNKD_ASSERT(slots_used_ <= limits_.max_connections);
  c->start();
}

const char* HttpListener::refusal(const std::string& address) {
  auto it = per_address_.find(address);
  if (it != per_address_.end() && it->second >= limits_.max_connections_per_client) {
    ++stats_->connections_refused_per_client;
    return "too many connections from this address (control.max_connections_per_client)";
  }
  if (slots_used_ < limits_.max_connections) return nullptr;
  if (!idle_.empty()) {
    HttpConnection* oldest = idle_.front();
    ++stats_->connections_evicted;
    LOG_DEBUG(kHttpLog, "every connection slot is taken: closing the longest-idle one (%s)",
              oldest->address().c_str());
    oldest->close_now();  // frees its slot at once (on_closing)
    CHUNKD_ASSERT(slots_used_ < limits_.max_connections);
    return nullptr;
  }
  if (!heads_.empty()) {
    HttpConnection* slowest = heads_.front();
    if (uv_now(loop_) - slowest->head_began_ms >=
        static_cast<std::uint64_t>(limits_.slow_head_ms)) {
      ++stats_->connections_evicted;
      LOG_DEBUG(kHttpLog, "every connection slot is taken: closing an unfinished request head (%s)",
                slowest->address().c_str());
      slowest->close_now();
      CHUNKD_ASSERT(slots_used_ < limits_.max_connections);
      return nullptr;
    }
  }
  ++stats_->connections_rejected;
  return "every connection slot is busy (control.max_connections)";
}

void HttpListener::refuse(std::shared_ptr<HttpConnection> c, const char* why) {
  if (should_warn(c->address())) {
    LOG_WARN(kHttpLog, "%s: connection refused: %s; %zu open", c->address().c_str(), why,
             slots_used_);
  }
  if (refusing_ >= kMaxRefusing) {
    c->close_now();  // a flood: no answer
    return;
  }
  ++refusing_;
  c->refuse_connection(why);
}

void HttpListener::mark_idle(HttpConnection* c) {
  if (!c->holds_slot() || c->idle_listed) return;
  c->idle_pos = idle_.insert(idle_.end(), c);
  c->idle_listed = true;
}

void HttpListener::unmark_idle(HttpConnection* c) {
  if (!c->idle_listed) return;
  idle_.erase(c->idle_pos);
  c->idle_listed = false;
}

void HttpListener::mark_head(HttpConnection* c) {
  if (!c->holds_slot() || c->head_listed) return;
  c->head_pos = heads_.insert(heads_.end(), c);
  c->head_listed = true;
  c->head_began_ms = uv_now(loop_);
}

void HttpListener::unmark_head(HttpConnection* c) {
  if (!c->head_listed) return;
  heads_.erase(c->head_pos);
  c->head_listed = false;
}

void HttpListener::on_closing(HttpConnection* c) {
  unmark_idle(c);
  unmark_head(c);
  if (c->refused()) {
    CHUNKD_ASSERT(refusing_ > 0);
    --refusing_;
  }
  if (!c->holds_slot()) return;
  CHUNKD_ASSERT(slots_used_ > 0);
  --slots_used_;
  auto it = per_address_.find(c->address());
  CHUNKD_ASSERT(it != per_address_.end() && it->second > 0);
  if (--it->second == 0) per_address_.erase(it);
}

void HttpListener::release(HttpConnection* c) {
  const std::size_t erased = connections_.erase(c);  // may free c
  CHUNKD_ASSERT(erased == 1);
  maybe_finish_close();
}

void HttpListener::schedule_resume(std::shared_ptr<HttpConnection> c) {
  CHUNKD_ASSERT(resume_idle_init_);
  resume_list_.push_back(std::move(c));
  if (resume_list_.size() == 1) uv_idle_start(&resume_idle_, &on_resume_idle);
}

void HttpListener::on_resume_idle(uv_idle_t* idle) {
  auto* self = static_cast<HttpListener*>(idle->data);
  std::vector<std::shared_ptr<HttpConnection>> ready;
  ready.swap(self->resume_list_);
  for (auto& c : ready) c->resume();
  if (self->resume_list_.empty()) uv_idle_stop(&self->resume_idle_);
}

void HttpListener::close(std::function<void()> done) {
  CHUNKD_ASSERT(phase_ == Phase::Open && "close() called twice");
  phase_ = Phase::Closing;
  done_ = std::move(done);

  if (listen_handle_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listen_handle_->tcp), &on_listen_handle_closed);
  }
  uv_timer_init(loop_, &grace_timer_);
  grace_timer_.data = this;
  grace_timer_init_ = true;

  std::vector<std::shared_ptr<HttpConnection>> snapshot;
  snapshot.reserve(connections_.size());
  for (auto& [raw, c] : connections_) snapshot.push_back(c);
  for (auto& c : snapshot) c->on_server_closing();
  if (!connections_.empty()) {
    uv_timer_start(&grace_timer_, &on_grace_timer,
                   static_cast<std::uint64_t>(std::max(0, limits_.shutdown_grace_ms)), 0);
  }
  maybe_finish_close();
}

void HttpListener::on_grace_timer(uv_timer_t* timer) {
  auto* self = static_cast<HttpListener*>(timer->data);
  std::vector<std::shared_ptr<HttpConnection>> snapshot;
  for (auto& [raw, c] : self->connections_) snapshot.push_back(c);
  std::size_t handling = 0;
  for (auto& c : snapshot) {
    if (c->handling()) ++handling;
    c->close_now();
  }
  if (handling > 0) {
    LOG_WARN(kHttpLog, "shutdown grace expired: closed %zu connections with requests unanswered",
             handling);
  }
}

void HttpListener::maybe_finish_close() {
  if (phase_ != Phase::Closing) return;
  if (listen_handle_ != nullptr || !connections_.empty()) return;
  phase_ = Phase::Finalizing;
  resume_list_.clear();
  final_closes_pending_ = 0;
  if (grace_timer_init_) {
    uv_timer_stop(&grace_timer_);
    ++final_closes_pending_;
    uv_close(reinterpret_cast<uv_handle_t*>(&grace_timer_), &on_final_closed);
  }
  if (resume_idle_init_) {
    uv_idle_stop(&resume_idle_);
    ++final_closes_pending_;
    uv_close(reinterpret_cast<uv_handle_t*>(&resume_idle_), &on_final_closed);
  }
}

void HttpListener::on_final_closed(uv_handle_t* handle) {
  auto* self = static_cast<HttpListener*>(handle->data);
  if (--self->final_closes_pending_ > 0) return;
  self->phase_ = Phase::Closed;
  self->grace_timer_init_ = false;
  self->resume_idle_init_ = false;
  auto done = std::move(self->done_);
  self->done_ = nullptr;
  if (done) done();  // may destroy the server: nothing after this
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// HttpServer

HttpServer::HttpServer(uv_loop_t* loop, HttpLimits limits, Handler handler, ErrorBody error_body)
    : impl_(std::make_unique<detail::HttpListener>(loop, limits, std::move(handler),
                                                   std::move(error_body))) {}

HttpServer::~HttpServer() = default;

Expected<void> HttpServer::listen(const std::string& host, std::uint16_t port) {
  return impl_->listen(host, port);
}

std::uint16_t HttpServer::port() const { return impl_->port(); }

std::size_t HttpServer::open_connections() const { return impl_->open_connections(); }

HttpServerStats HttpServer::stats() const { return impl_->stats_snapshot(); }

void HttpServer::set_authorize(Authorize authorize) { impl_->set_authorize(std::move(authorize)); }

void HttpServer::set_refused_observer(RefusedObserver observer) {
  impl_->set_refused_observer(std::move(observer));
}

void HttpServer::close(std::function<void()> done) { impl_->close(std::move(done)); }

}  // namespace chunkd::io

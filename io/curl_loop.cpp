#include "io/curl_loop.hpp"

#include <mutex>
#include <utility>
#include <vector>

#include "base/assert.hpp"

namespace chunkd::io {

struct CurlLoop::Socket {
  uv_poll_t poll{};
  CurlLoop* owner = nullptr;
  curl_socket_t fd = CURL_SOCKET_BAD;
};

CurlLoop::CurlLoop(uv_loop_t* loop) : loop_(loop) {
  static std::once_flag global;
  std::call_once(global, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  multi_ = curl_multi_init();
  CHUNKD_ASSERT(multi_ != nullptr);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlLoop::on_socket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlLoop::on_timer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  open_handles_ = 1;
}

CurlLoop::~CurlLoop() { CHUNKD_ASSERT(closing_ && open_handles_ == 0); }

void CurlLoop::close_socket(Socket* sock) {
  sockets_.erase(sock);
  uv_poll_stop(&sock->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&sock->poll), [](uv_handle_t* h) {
    auto* closed = static_cast<Socket*>(h->data);
    CurlLoop* owner = closed->owner;
    delete closed;
    owner->open_handles_--;
    owner->maybe_closed();
  });
}

Expected<void> CurlLoop::add(CURL* easy, Done done) {
  if (closing_) return fail(std::errc::operation_canceled, "the HTTP client is closing");
  CURLMcode rc = curl_multi_add_handle(multi_, easy);
  if (rc != CURLM_OK) return fail(std::errc::invalid_argument, curl_multi_strerror(rc));
  done_[easy] = std::move(done);
  return {};
}

void CurlLoop::remove(CURL* easy) {
  if (done_.erase(easy) == 0) return;
  curl_multi_remove_handle(multi_, easy);
}

int CurlLoop::on_socket(CURL*, curl_socket_t s, int what, void* self_ptr, void* socket_ptr) {
  auto* self = static_cast<CurlLoop*>(self_ptr);
  auto* sock = static_cast<Socket*>(socket_ptr);
  if (what == CURL_POLL_REMOVE) {
    if (sock != nullptr && self->sockets_.count(sock) != 0) {
      if (self->multi_ != nullptr) curl_multi_assign(self->multi_, s, nullptr);
      self->close_socket(sock);
    }
    return 0;
  }
  if (sock == nullptr) {
    sock = new Socket;
    sock->owner = self;
    sock->fd = s;
    if (uv_poll_init_socket(self->loop_, &sock->poll, s) != 0) {
      delete sock;
      return -1;
    }
    sock->poll.data = sock;
    self->open_handles_++;
    self->sockets_.insert(sock);
    curl_multi_assign(self->multi_, s, sock);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(&sock->poll, events, [](uv_poll_t* handle, int status, int ready) {
    auto* ready_sock = static_cast<Socket*>(handle->data);
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if ((ready & UV_READABLE) != 0) flags |= CURL_CSELECT_IN;
    if ((ready & UV_WRITABLE) != 0) flags |= CURL_CSELECT_OUT;
    ready_sock->owner->action(ready_sock->fd, flags);
  });
  return 0;
}

int CurlLoop::on_timer(CURLM*, long timeout_ms, void* self_ptr) {
  auto* self = static_cast<CurlLoop*>(self_ptr);
  if (timeout_ms < 0) {
    uv_timer_stop(&self->timer_);
    return 0;
  }
  // Never act inside curl's own call: a zero timeout runs on the next loop iteration.
  uv_timer_start(
      &self->timer_,
      [](uv_timer_t* t) { static_cast<CurlLoop*>(t->data)->action(CURL_SOCKET_TIMEOUT, 0); },
      static_cast<std::uint64_t>(timeout_ms), 0);
  return 0;
}

void CurlLoop::action(curl_socket_t s, int flags) {
  if (closing_) return;
  int running = 0;
  curl_multi_socket_action(multi_, s, flags, &running);
  collect_done();
}

void CurlLoop::collect_done() {
  std::vector<std::pair<CURL*, CURLcode>> finished;
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg == CURLMSG_DONE) finished.emplace_back(msg->easy_handle, msg->data.result);
  }
  for (auto& [easy, result] : finished) {
    auto it = done_.find(easy);
    if (it == done_.end()) continue;  // removed meanwhile
    Done done = std::move(it->second);
    done_.erase(it);
    curl_multi_remove_handle(multi_, easy);
    done(result);  // may add() or remove() other transfers
    if (closing_) return;
  }
}

void CurlLoop::close(std::function<void()> done) {
  CHUNKD_ASSERT(!closing_);
  close_done_ = std::move(done);
  std::vector<CURL*> running;
  for (auto& [easy, cb] : done_) running.push_back(easy);
  for (CURL* easy : running) remove(easy);  // curl closes their sockets: CURL_POLL_REMOVE
  closing_ = true;
  CURLM* multi = multi_;
  multi_ = nullptr;
  curl_multi_cleanup(multi);
  std::vector<Socket*> left(sockets_.begin(), sockets_.end());
  for (Socket* sock : left) close_socket(sock);
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    auto* self = static_cast<CurlLoop*>(h->data);
    self->open_handles_--;
    self->maybe_closed();
  });
}

void CurlLoop::maybe_closed() {
  if (!closing_ || open_handles_ != 0 || !close_done_) return;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  done();
}

}  // namespace chunkd::io

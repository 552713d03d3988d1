// LoopHandles: the libuv handles of one MqttPool and its connections (timers, polls, the flush
// prepare), each on the heap and freed in its close callback, because uv_close is asynchronous.
//
// Owns: every handle it made until that handle's close callback ran. Tracks the open ones so the
// pool's stop can wait for the last close (on_all_closed), and abandon() (also run by the
// destructor) closes whatever is open and detaches its owner, so no callback reaches an object
// that is gone; the handles then free themselves when the loop runs.
//
// Thread: loop thread only.
// REQUIRES: the loop outlives every handle (run it after destroying the pool, as libuv requires).
#pragma once

#include <uv.h>

#include <cstddef>
#include <unordered_set>

#include "base/assert.hpp"

namespace chunkd::io {

class LoopHandles;

struct LoopHandle {
  uv_any_handle u;
  void* owner = nullptr;       // what the callbacks go to; null once it is gone
  LoopHandles* set = nullptr;  // null once the set is gone
  bool closing = false;
  uv_handle_t* handle() { return &u.handle; }
  uv_timer_t* timer() { return &u.timer; }
  uv_poll_t* poll() { return &u.poll; }
  uv_prepare_t* prepare() { return &u.prepare; }
};

class LoopHandles {
 public:
  explicit LoopHandles(uv_loop_t* loop) : loop_(loop) {}
  ~LoopHandles() { abandon(); }
  LoopHandles(const LoopHandles&) = delete;
  LoopHandles& operator=(const LoopHandles&) = delete;

  uv_loop_t* loop() const { return loop_; }

  LoopHandle* timer(void* owner) {
    auto* h = new LoopHandle;
    uv_timer_init(loop_, h->timer());
    return adopt(h, owner);
  }
  LoopHandle* prepare(void* owner) {
    auto* h = new LoopHandle;
    uv_prepare_init(loop_, h->prepare());
    return adopt(h, owner);
  }
  // A poll on `fd`, or null with `error` set to libuv's error code.
  LoopHandle* poll(void* owner, int fd, int& error) {
    auto* h = new LoopHandle;
    error = uv_poll_init_socket(loop_, h->poll(), fd);
    if (error != 0) {
      delete h;  // not registered with the loop
      return nullptr;
    }
    return adopt(h, owner);
  }

  // Closes `h` (null or already closing: nothing). Its callbacks stop now; it is freed later.
  void close(LoopHandle* h) {
    if (h == nullptr || h->closing) return;
    CHUNKD_ASSERT(h->set == this);
    h->closing = true;
    uv_close(h->handle(), on_closed);
  }
  void close_all() {
    const std::unordered_set<LoopHandle*> open = open_;
    for (LoopHandle* h : open) close(h);
  }
  // Closes every open handle and forgets them all: no callback reaches their owners any more.
  void abandon() {
    for (LoopHandle* h : open_) {
      h->owner = nullptr;
      h->set = nullptr;
      if (!h->closing) {
        h->closing = true;
        uv_close(h->handle(), on_closed);
      }
    }
    open_.clear();
  }

  bool empty() const { return open_.empty(); }
  // Called from a close callback each time the last open handle has closed; it may destroy the
  // set's owner (and so the set).
  void on_all_closed(void (*callback)(void*), void* context) {
    all_closed_ = callback;
    all_closed_context_ = context;
  }

 private:
  LoopHandle* adopt(LoopHandle* h, void* owner) {
    h->owner = owner;
    h->set = this;
    h->handle()->data = h;
    open_.insert(h);
    return h;
  }

  static void on_closed(uv_handle_t* handle) noexcept {
    auto* h = static_cast<LoopHandle*>(handle->data);
    LoopHandles* set = h->set;
    if (set != nullptr) set->open_.erase(h);
    delete h;
    if (set == nullptr) return;
    if (set->open_.empty() && set->all_closed_ != nullptr) {
      // Copied first: the callback may destroy the set.
      auto* callback = set->all_closed_;
      void* context = set->all_closed_context_;
      callback(context);
    }
  }

  uv_loop_t* loop_;
  std::unordered_set<LoopHandle*> open_;
  void (*all_closed_)(void*) = nullptr;
  void* all_closed_context_ = nullptr;
};

}  // namespace chunkd::io

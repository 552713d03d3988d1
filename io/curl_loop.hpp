// CurlLoop: libcurl's multi interface driven by a libuv loop (curl_multi_socket_action with one
// uv_poll_t per socket curl asks to watch and one uv_timer_t for curl's timeouts), so HTTP(S)
// transfers run on the loop thread without ever blocking it.
//
// Usage: configure an easy handle (URL, options, callbacks), add() it with a callback that gets
// the transfer's CURLcode once it ends; the easy handle stays the caller's (curl_easy_cleanup is
// the caller's, after `done` or after remove()). The easy handle's write and header callbacks run
// inside the loop's poll/timer callbacks; they may pause the transfer (CURL_WRITEFUNC_PAUSE) and
// the caller resumes it later with curl_easy_pause(CURLPAUSE_CONT) from any loop callback.
//
// Owns: the CURLM handle, the timer and the per-socket poll handles.
// Thread: loop thread only. close() before destruction (it stops every transfer without calling
// their callbacks and closes the libuv handles).
#pragma once

#include <curl/curl.h>
#include <uv.h>

#include <cstddef>
#include <functional>
#include <map>
#include <set>

#include "base/expected.hpp"

namespace chunkd::io {

class CurlLoop {
 public:
  using Done = std::function<void(CURLcode result)>;

  explicit CurlLoop(uv_loop_t* loop);
  ~CurlLoop();
  CurlLoop(const CurlLoop&) = delete;
  CurlLoop& operator=(const CurlLoop&) = delete;

  // Starts the transfer of `easy`. `done` runs on the loop thread once it ends (never inside
  // add()). Fails when the loop is closing or curl refuses the handle.
  Expected<void> add(CURL* easy, Done done);
  // Stops the transfer of `easy` (if running) without calling its `done`.
  void remove(CURL* easy);

  std::size_t transfers() const { return done_.size(); }

  // Stops every transfer (no callbacks) and closes the libuv handles; `done` runs once they are.
  void close(std::function<void()> done);

 private:
  struct Socket;
  static int on_socket(CURL* easy, curl_socket_t s, int what, void* self, void* socket);
  static int on_timer(CURLM* multi, long timeout_ms, void* self);
  void action(curl_socket_t s, int flags);
  void collect_done();
  void maybe_closed();
  void close_socket(Socket* sock);

  uv_loop_t* loop_;
  CURLM* multi_ = nullptr;
  uv_timer_t timer_{};
  std::map<CURL*, Done> done_;
  std::set<Socket*> sockets_;
  std::size_t open_handles_ = 0;  // the timer and the poll handles not yet closed
  bool closing_ = false;
  std::function<void()> close_done_;
};

}  // namespace chunkd::io

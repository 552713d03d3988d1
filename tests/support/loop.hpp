// run_until: turns a test's libuv loop until a condition holds, for the tests that drive a
// component living on the loop (MqttPool, MqttTransport, AmqpClient, AmqpTransport). Header-only;
// the test's thread.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>

namespace chunkd::test {

// Runs `loop` (a 5 ms tick keeps it turning while nothing else is due) until `pred` is true;
// false when it still is not after `guard_ms` (a guard against a hang, not a timing).
inline bool run_until(uv_loop_t* loop, const std::function<bool()>& pred, int guard_ms = 60000) {
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(
      &tick, [](uv_timer_t*) {}, 5, 5);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(guard_ms);
  bool ok = pred();
  while (!ok && std::chrono::steady_clock::now() < deadline) {
    uv_run(loop, UV_RUN_ONCE);
    ok = pred();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

}  // namespace chunkd::test

// The daemon: owns the libuv loop and every object on it, wires them together and runs them.
//
// Start-up, one step per object, in order (any failure is logged with what to change, and run()
// returns 1): open_signals → open_reader: FileReader (io_uring or the thread pool; the choice is
// logged once) → open_registry: RegistryStore (load_all → Catalog) → open_store: ContentStore (tmp
// emptied, blobs counted; GC queued) → open_control: ControlService (bucket directories opened) →
// open_delivery: MqttTransport (subscribing to get/+ and describe/+ once connected; ready →
// /healthz) + Delivery → open_http: HttpServer listening → start_transport: connecting. Each object
// gets its options from the Config as they are; deprecated config keys are logged first.
// Stop (SIGINT/SIGTERM, or stop()): the HTTP listener closes, the control plane refuses new work
// and in-flight ingests are cancelled, delivery finishes started jobs (bounded); then the transport
// flushes (bounded) and disconnects; then the reader and the registry close; every handle is
// closed, uv_loop_close() must return 0, and run() returns 0.
//
// Thread: run() blocks the calling thread, which becomes the loop thread; stop() is for the loop
// thread (signals arrive through uv_signal_t).
#pragma once

#include <cstdint>
#include <memory>

#include "engine/config.hpp"

namespace chunkd::engine {

class Daemon {
 public:
  explicit Daemon(Config config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until stopped; the process exit code: 0 after a graceful stop, 1 when start-up failed or
  // the loop did not close cleanly.
  int run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chunkd::engine

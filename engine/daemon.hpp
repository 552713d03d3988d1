// The daemon: owns the libuv loop and every object on it, wires them together and runs them.
//
// Start-up, one step per object, in order (any failure is logged with what to change, and run()
// returns 1): open_signals → open_reader: FileReader (io_uring or the thread pool; the choice is
// logged once) → open_registry: RegistryStore (load_all → Catalog) → open_store: ContentStore (tmp
// emptied, blobs counted; GC queued) → open_control: ControlService (bucket directories opened) →
// open_delivery: MqttTransport (subscribing to get/+ and describe/+ once connected; ready →
// /healthz) + Delivery → open_http: HttpServer listening → start_transport: connecting. Each object
// gets its options from the Config as they are; deprecated config keys are logged first.
// Reload (SIGHUP): the config file is loaded again (on the thread pool) and compared with the
// running config (engine/config_reload.hpp): log.level, the token file, the buckets and the
// delivery limits change at once; other changed keys are logged as needing a restart and keep
// their running values; a file that does not load is refused with its error and changes nothing.
// One log line says what changed ("reload: log.level info→debug; needs a restart: control.listen")
// or "reload: no change". SIGUSR1 and SIGUSR2 are ignored (logged), not fatal.
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
#include <string>

#include "engine/config.hpp"

namespace chunkd::engine {

class Daemon {
 public:
  // `config_path`: the file `config` was loaded from, read again on SIGHUP ("": reload refused).
  explicit Daemon(Config config, std::string config_path = {});
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

// The fleet: N devices on paho.mqtt.c async clients, either one MQTT connection per device or
// (multiplex) C shared connections, each subscribing to the reply topics of its devices. With
// --ota each device is an OtaDevice: the connection subscribes its notify-next topics, and the
// device subscribes and unsubscribes its stream's data topic itself (Outgoing actions).
//
// Threads. paho runs every callback on its own threads, with its global lock held. Message
// callbacks lock the device they address, let it handle the reply and publish what it answers
// right there (paho allows API calls from callbacks), so the block path never waits for the main
// thread. The main thread (run()) starts devices on their ramp schedule, drives timeouts and
// throttle backoffs through Device::on_tick, draws progress and ends the run; it never calls
// paho while holding a device lock (that order would invert paho's lock → device lock).
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "tools/chunkload/device.hpp"
#include "tools/chunkload/options.hpp"
#include "tools/chunkload/ota_device.hpp"
#include "tools/chunkload/report.hpp"

namespace chunkd::chunkload {

class Fleet {
 public:
  // `config` (and `ota`, null unless --ota) must outlive the fleet.
  Fleet(const Options& options, const DeviceConfig& config, const OtaConfig* ota);
  ~Fleet();  // destroys every MQTT client before any device
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Creates the clients and runs until every device is done or failed, --max-seconds passes, or
  // `stop` becomes true (checked a few times a second). An error means setup failed.
  Expected<RunResult, std::string> run(const std::atomic<bool>& stop, ProgressLine& progress);

  struct Conn;
  struct Dev;
  struct Batch;

 private:
  friend struct FleetCallbacks;
  Expected<bool, std::string> create_clients();
  void connect(Conn& conn);
  void subscribe(Conn& conn);
  // SUBACK of one batch: `granted` holds filters_per_device_ granted QoS values per device
  // (nullptr: refused).
  void subscribed(Batch& batch, const int* granted);
  // SUBACK of a subscription an OTA device asked for.
  void device_subscribed(Dev& dev, bool granted);
  // A message on one of `conn`'s subscriptions, on paho's thread.
  void route(Conn& conn, std::string_view topic, std::span<const std::byte> payload);
  void route_ota(Dev& dev, std::string_view topic, std::span<const std::byte> payload);
  void tick(TimePoint now);
  // With the device locked: publishes `out` on its connection (callback threads only).
  void publish_locked(Dev& dev, Outbox& out);
  // Without any lock held: publishes, then tells the device about refused publishes.
  void publish_unlocked(Dev& dev, Outbox& out);
  // Hands one Outgoing to paho; returns paho's code.
  int execute(Dev& dev, Outgoing& o);
  // With the device locked: paho refused `o` with `rc`.
  void refused_locked(Dev& dev, const Outgoing& o, int rc, TimePoint now);
  void disconnect(Conn& conn);
  // --ota: disconnects every connection, letting queued job updates go out first (bounded).
  void drain();
  void note_terminal_locked(Dev& dev);
  // Fails `conn`'s devices [from, from + count) (relative to its first device).
  void fail_devices(Conn& conn, std::uint32_t from, std::uint32_t count, const std::string& reason);
  void destroy_clients();

  const Options& options_;
  const DeviceConfig& config_;
  const OtaConfig* ota_;
  std::uint32_t filters_per_device_;  // in the connection's SUBSCRIBE: 3, or 1 with --ota
  protocol::TopicCodec topics_;
  std::string route_head_;                  // "<topic_prefix>/<thing_prefix>"
  std::string route_mid_;                   // "/streams/<stream>/"
  std::array<std::string, 3> route_tails_;  // "data/<fmt>", "description/<fmt>", "rejected/<fmt>"
  std::vector<std::unique_ptr<Dev>> devs_;
  std::vector<std::unique_ptr<Conn>> conns_;
  TimePoint t0_;

  std::atomic<std::uint32_t> terminal_{0};
  std::atomic<std::uint32_t> failed_{0};
  std::atomic<std::uint64_t> unroutable_{0};
  std::mutex wake_mu_;
  std::condition_variable wake_;
};

}  // namespace chunkd::chunkload

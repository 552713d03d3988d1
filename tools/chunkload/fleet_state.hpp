// The fleet's per-connection and per-device state (fleet.hpp tells the threading rules), shared by
// fleet.cpp (devices, routing, the run) and fleet_mqtt.cpp (paho clients and callbacks).
// Internal to chunkload.
#pragma once

#include <MQTTAsync.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tools/chunkload/device.hpp"
#include "tools/chunkload/fleet.hpp"
#include "tools/chunkload/ota_device.hpp"

namespace chunkd::chunkload {

struct Fleet::Batch {
  Conn* conn = nullptr;
  std::uint32_t first = 0;  // devices [first, first + count)
  std::uint32_t count = 0;
};

struct Fleet::Conn {
  Fleet* fleet = nullptr;
  MQTTAsync client = nullptr;
  std::string client_id;
  std::uint32_t first = 0;  // devices [first, first + count)
  std::uint32_t count = 0;
  TimePoint start_at;
  std::vector<Batch> batches;
  std::atomic<std::uint32_t> terminal{0};  // its devices done or failed
  bool connect_issued = false;             // main thread only
  bool disconnect_issued = false;          // main thread only
};

struct Fleet::Dev {
  Dev(const DeviceConfig& config, std::uint32_t index) : device(config, index) {}
  std::mutex mu;
  Device device;                   // guarded by mu
  std::unique_ptr<OtaDevice> ota;  // guarded by mu; --ota: drives `device`
  Conn* conn = nullptr;
  std::string thing;
  std::string get_topic;
  std::string describe_topic;
  TimePoint start_at;
  bool started = false;     // guarded by mu: its ramp time has come
  bool subscribed = false;  // guarded by mu: SUBACK received
  bool counted = false;     // guarded by mu: counted in terminal_

  // With mu held: the stream device or the OTA device, whichever this run simulates.
  void start(TimePoint now, Outbox& out) {
    if (ota) {
      ota->start(now, out);
    } else {
      device.start(now, out);
    }
  }
  void on_tick(TimePoint now, Outbox& out) {
    if (ota) {
      ota->on_tick(now, out);
    } else {
      device.on_tick(now, out);
    }
  }
  void fail(const std::string& reason, TimePoint now, bool timed_out = false) {
    if (ota) {
      ota->fail(reason, now, timed_out);
    } else {
      device.fail(reason, now);
    }
  }
  bool terminal() const { return ota ? ota->terminal() : device.terminal(); }
  bool failed() const { return ota ? !ota->as_intended() : device.state() == DeviceState::Failed; }
};

}  // namespace chunkd::chunkload

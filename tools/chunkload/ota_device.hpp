// One simulated device running the OTA agent (--ota), free of MQTT like Device, which it drives
// for the download. What it does on the wire (docs/chunkload.md, "OTA mode"):
//
//   start: $next/get ──notify-next with a job──> subscribe data topic ──SUBACK──> Downloading
//   Downloading (bitmap requests from o = 0; IN_PROGRESS "receive":"N/M" every 32 blocks)
//     ──complete──> unsubscribe data; then one of
//        --fail-percent device:   FAILED {"reason":"simulated failure"}
//        bad signature:           FAILED {"reason":"..."}
//        fileType ≠ 0:            SUCCEEDED
//        else IN_PROGRESS {"self_test":"ready","updatedBy":...}, "reboot": unsubscribe
//        notify-next, wait --ota-reboot-ms, subscribe again, $next/get, and expect a notify-next
//        with the same job still IN_PROGRESS and self_test=ready within 16 s ──> SUCCEEDED
//   A job document the agent cannot use (no MQTT, fields missing): REJECTED {"reason":...}.
//
// The device never subscribes to $next/get/accepted, update/* or the stream's rejected topic:
// every answer it waits for arrives on notify-next, as with the real agent.
//
// Thread: not thread-safe; the fleet calls every member under the device's mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "protocol/jobs.hpp"
#include "tools/chunkload/device.hpp"
#include "tools/chunkload/ota_job.hpp"
#include "tools/chunkload/ota_signature.hpp"

namespace chunkd::chunkload {

// Shared by every OTA device, immutable while they run.
struct OtaConfig {
  std::string topic_prefix = "$aws/things";
  protocol::Format format = protocol::Format::Cbor;
  int data_qos = 0;
  std::uint32_t block_size_bytes = 4096;  // as the DeviceConfig
  const SigningKey* key = nullptr;
  std::chrono::milliseconds reboot{200};
  std::chrono::milliseconds self_test_window{16000};
  std::uint32_t progress_every_blocks = 32;
  std::uint32_t fail_percent = 0;
  std::string version;  // updatedBy
};

// Device i is one of the floor(devices * percent / 100) that fail on purpose, spread evenly.
bool simulated_failure(std::uint32_t index, std::uint32_t percent);

enum class OtaOutcome : std::uint8_t {
  None,       // still running
  Succeeded,  // reported SUCCEEDED
  Failed,     // reported FAILED (simulated, bad signature, download given up)
  Rejected,   // reported REJECTED: a job document the agent cannot use
  TimedOut,   // no outcome within --max-seconds
  Error,      // stopped without reporting: connection, subscription, self-test round trip
};
std::string_view to_string(OtaOutcome o);

struct OtaStats {
  OtaOutcome outcome = OtaOutcome::None;
  bool simulated = false;  // the FAILED was --fail-percent's
  std::string job_id;
  std::string reason;                   // of FAILED, REJECTED, or why the device stopped
  std::optional<TimePoint> started;     // first $next/get
  std::optional<TimePoint> job;         // usable job received
  std::optional<TimePoint> downloaded;  // last block stored
  std::optional<TimePoint> reported;    // outcome published
  std::optional<TimePoint> ended;       // outcome known (reported or not)
  std::uint64_t updates = 0;            // UpdateJobExecution published
  std::uint64_t notifies = 0;           // notify-next messages received
  std::uint64_t bad_notifies = 0;       // not JSON, or an execution without a valid jobId
};

class OtaDevice : public PrefixSink {
 public:
  OtaDevice(const OtaConfig& config, Device& download, std::string thing, std::uint32_t index);
  ~OtaDevice();
  OtaDevice(const OtaDevice&) = delete;
  OtaDevice& operator=(const OtaDevice&) = delete;

  // "<prefix>/<thing>/jobs/notify-next": the fleet subscribes to it (QoS 1) before start().
  const std::string& notify_topic() const { return notify_topic_; }
  void start(TimePoint now, Outbox& out);
  // A message on `topic` (the full topic name). False: not one of this device's topics.
  bool on_message(std::string_view topic, std::span<const std::byte> payload, TimePoint now,
                  Outbox& out);
  // The SUBACK of the subscription this device asked for last (granted: the broker accepted it).
  void on_subscribed(bool granted, TimePoint now, Outbox& out);
  void on_tick(TimePoint now, Outbox& out);
  // Ends the device without a report. No-op once terminal.
  void fail(std::string reason, TimePoint now, bool timed_out);

  bool terminal() const { return stats_.outcome != OtaOutcome::None; }
  // SUCCEEDED, or the FAILED --fail-percent asked for.
  bool as_intended() const {
    return stats_.outcome == OtaOutcome::Succeeded ||
           (stats_.outcome == OtaOutcome::Failed && stats_.simulated);
  }
  const OtaStats& stats() const { return stats_; }

  void consume(std::span<const std::byte> bytes) override;

 private:
  enum class Phase : std::uint8_t {
    Idle,
    WaitingJob,
    Subscribing,  // to the data topic
    Downloading,
    Rebooting,
    Resubscribing,  // to notify-next after the reboot
    SelfTest,
    Over,
  };

  void on_notify(std::span<const std::byte> payload, TimePoint now, Outbox& out);
  void accept_job(NotifiedExecution execution, TimePoint now, Outbox& out);
  void confirm_self_test(const std::optional<NotifiedExecution>& execution, TimePoint now,
                         Outbox& out);
  void forward(Outbox& download_out, Outbox& out);
  void after_download_step(TimePoint now, Outbox& out);
  void downloaded(TimePoint now, Outbox& out);
  void send_next_get(Outbox& out);
  void send_update(protocol::ExecutionStatus status, protocol::StatusDetails details, Outbox& out);
  void report(OtaOutcome outcome, protocol::ExecutionStatus status, std::string reason,
              TimePoint now, Outbox& out);
  void stop(OtaOutcome outcome, std::string reason, TimePoint now);

  const OtaConfig& config_;
  Device& download_;
  std::string thing_;
  bool simulated_failure_;
  std::string notify_topic_;
  Phase phase_ = Phase::Idle;
  OtaStats stats_;
  std::uint64_t next_get_count_ = 0;

  std::optional<OtaDocument> job_;
  std::string update_topic_;
  std::string data_topic_;
  std::string get_topic_;
  std::unique_ptr<SignatureCheck> check_;
  std::uint64_t total_blocks_ = 0;
  std::uint64_t next_progress_ = 0;
  TimePoint phase_deadline_;  // Rebooting: reboot over; SelfTest: give up
  Outbox download_out_;
};

}  // namespace chunkd::chunkload

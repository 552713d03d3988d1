// One simulated device: the download state machine, free of MQTT. The fleet feeds it the replies
// that arrive on its topics and a periodic tick; it answers with the requests to publish
// (appended to an Outbox), which the fleet sends on the device's connection.
//
//   Waiting --start--> Describing --description--> Downloading (file by file) --> Done
//                 \______________(--no-describe)__________/             any state --> Failed
//
// Downloading keeps up to `in_flight` requests outstanding. Each request ("slot") owns the
// blocks it asked for; a block is stored once (duplicates, blocks out of range, wrong lengths
// and replies for another file are counted and dropped). A slot with no new block for
// `timeout` re-requests its missing blocks; `max_retries` such re-requests in a row without
// progress fail the device. RequestThrottled schedules the throttled request again after an
// exponential backoff (50 ms doubling to 5 s, ±20% jitter); any other rejection fails the device.
// Requests carry c = "<prefix><slot>.<generation>" (describe: "<prefix>d") so a rejection names
// the request it answers.
//
// Verification: blocks are written into an anonymous mapping the size of the file and hashed
// (XXH3-128) as the contiguous prefix grows; hashed pages are returned to the kernel, so a
// device's memory is about its blocks in flight, at most its current file.
//
// Thread: not thread-safe. The fleet calls every member under the device's own mutex.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "protocol/error_code.hpp"
#include "protocol/reply.hpp"
#include "protocol/topic.hpp"
#include "tools/chunkload/latency.hpp"
#include "tools/chunkload/options.hpp"
#include "tools/chunkload/stream_info.hpp"

namespace chunkd::chunkload {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// Shared by every device, immutable while devices run (the pointed-to counters are atomic).
struct DeviceConfig {
  protocol::Format format = protocol::Format::Cbor;
  std::uint32_t block_size_bytes = 4096;
  std::uint32_t blocks_per_request = 0;  // 0: `n` left out
  std::uint32_t in_flight = 1;
  Mode mode = Mode::Window;
  std::optional<std::vector<std::uint32_t>> files;
  std::chrono::milliseconds timeout{2000};
  std::uint32_t max_retries = 20;
  bool verify = true;
  bool describe = true;
  std::string client_token_prefix;
  std::optional<StreamInfo> control;  // digests; sizes and version too when !describe
  LatencyHistogram* latency = nullptr;
  std::atomic<std::uint64_t>* bytes_stored = nullptr;  // progress across the fleet
};

// What a device asks its connection to do. The download machinery publishes by verb (to the
// fleet's stream); the OTA device names its topics, subscribes and unsubscribes.
enum class Action : std::uint8_t { Publish, Subscribe, Unsubscribe };
struct Outgoing {
  protocol::Verb verb = protocol::Verb::Get;
  std::vector<std::byte> payload;
  std::string topic;  // empty: the fleet's topic for `verb`
  Action action = Action::Publish;
  int qos = 0;
};
using Outbox = std::vector<Outgoing>;

// Index kErrorCodeCount counts rejection codes chunkload does not know.
inline constexpr std::size_t kRejectionKinds = protocol::kErrorCodeCount + 1;

struct DeviceStats {
  std::uint64_t bytes = 0;   // unique block payload stored
  std::uint64_t blocks = 0;  // unique blocks stored
  std::uint64_t files_done = 0;
  std::uint64_t requests = 0;          // GetStream requests first sent
  std::uint64_t re_requests = 0;       // after a timeout (describe included)
  std::uint64_t throttle_retries = 0;  // sent again after RequestThrottled
  std::uint64_t duplicates = 0;
  std::uint64_t out_of_range = 0;   // block index past the end of the file
  std::uint64_t bad_length = 0;     // `l` or payload size not the block's length
  std::uint64_t stray = 0;          // replies matching nothing in progress (other file, late)
  std::uint64_t unsolicited = 0;    // a block no request asked for (stored anyway)
  std::uint64_t decode_errors = 0;  // replies that do not decode
  std::uint64_t send_errors = 0;    // publishes the MQTT client refused
  std::array<std::uint64_t, kRejectionKinds> rejections{};
  std::optional<TimePoint> started;        // start() called
  std::optional<TimePoint> first_request;  // first GetStream sent
  std::optional<TimePoint> finished;       // Done or Failed
};

enum class DeviceState : std::uint8_t { Waiting, Describing, Downloading, Done, Failed };

// Sees a file's bytes in order, as the contiguous prefix of stored blocks grows (the OTA device
// hashes them for the signature check).
class PrefixSink {
 public:
  virtual void consume(std::span<const std::byte> bytes) = 0;

 protected:
  virtual ~PrefixSink() = default;
};

class Device {
 public:
  Device(const DeviceConfig& config, std::uint32_t seed);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Begins: DescribeStream, or (--no-describe) the first file. Precondition: state Waiting.
  void start(TimePoint now, Outbox& out);
  // Begins downloading one file whose id and size the caller knows (an OTA job document): no
  // description, no `s`, no digest; `sink` (may be null) sees its bytes. Precondition: Waiting.
  void start_file(std::uint32_t file_id, std::uint64_t size_bytes, PrefixSink* sink, TimePoint now,
                  Outbox& out);
  void on_data(std::span<const std::byte> payload, TimePoint now, Outbox& out);
  void on_description(std::span<const std::byte> payload, TimePoint now, Outbox& out);
  void on_rejected(std::span<const std::byte> payload, TimePoint now, Outbox& out);
  // Timeouts and throttle backoffs; call a few times per timeout period.
  void on_tick(TimePoint now, Outbox& out);
  // The MQTT client refused a publish from the last Outbox; the request times out and is retried.
  void on_send_failed() { ++stats_.send_errors; }
  // Ends the device (connection lost, overall deadline, ...). No-op once Done or Failed.
  void fail(std::string reason, TimePoint now);

  DeviceState state() const { return state_; }
  bool terminal() const { return state_ == DeviceState::Done || state_ == DeviceState::Failed; }
  const DeviceStats& stats() const { return stats_; }
  const std::string& failure() const { return failure_; }

 private:
  struct PlannedFile {
    std::uint32_t file_id = 0;
    std::uint64_t size_bytes = 0;
    std::optional<Digest> digest;
  };
  struct Slot {
    bool active = false;
    std::uint32_t generation = 0;
    std::vector<std::uint32_t> blocks;   // blocks this request waits for (ascending)
    std::uint32_t remaining = 0;         // of `blocks`, not yet stored
    TimePoint sent;                      // first sent (latency counts re-requests in)
    TimePoint progress;                  // last block stored or last (re)send
    std::uint32_t stalls = 0;            // re-requests in a row without progress
    std::optional<TimePoint> resend_at;  // throttled: send again then
  };
  struct FileState;

  void send_describe(TimePoint now, Outbox& out);
  bool plan_files(const std::vector<protocol::FileEntry>& available, TimePoint now);
  void begin_next_file(TimePoint now, Outbox& out);
  void fill_slots(TimePoint now, Outbox& out);
  void issue_request(std::uint32_t slot_index, TimePoint now, Outbox& out);
  void resend(std::uint32_t slot_index, bool throttled, TimePoint now, Outbox& out);
  // Stores a verified-length block of the current file: hashes the grown prefix, keeps the rest.
  void keep_block(std::uint32_t idx, std::uint64_t offset, std::span<const std::byte> payload);
  void finish_file(TimePoint now, Outbox& out);
  void finish(TimePoint now);
  std::string token_for(std::uint32_t slot_index) const;
  std::chrono::milliseconds next_backoff();

  const DeviceConfig& config_;
  DeviceState state_ = DeviceState::Waiting;
  std::string failure_;
  DeviceStats stats_;
  std::minstd_rand rng_;
  std::uint32_t throttle_streak_ = 0;

  // Describing.
  TimePoint describe_sent_;
  std::uint32_t describe_stalls_ = 0;
  std::optional<TimePoint> describe_resend_at_;

  std::optional<std::uint64_t> version_;  // `s` of every request
  std::vector<PlannedFile> plan_;
  std::size_t next_file_ = 0;
  std::unique_ptr<FileState> file_;
  std::vector<Slot> slots_;
  PrefixSink* sink_ = nullptr;
};

// "RequestThrottled" → its index in DeviceStats::rejections (kErrorCodeCount when unknown).
std::size_t rejection_index(std::string_view code);
std::string_view rejection_name(std::size_t index);  // "other" for kErrorCodeCount

}  // namespace chunkd::chunkload

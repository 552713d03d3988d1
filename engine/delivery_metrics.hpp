// Every metric of the data plane, registered once here and shared by request intake (Delivery)
// and serving (BlockServer); the scheduler's own gauges stay in the scheduler.
//
// chunkd_requests_total{verb,outcome}: verb is get, describe, or unknown (InvalidTopic); outcome
// is ok (every block handed to the transport / the description queued), the rejection code,
// "aborted" (the transport refused with NotConnected/Error mid-job) or "dropped" (shutdown).
// Counted once per request, when its outcome is known; a RequestThrottled outcome also counts
// chunkd_throttled_total. chunkd_bytes_sent_total counts encoded reply bytes (what the broker
// carries).
//
// Thread: loop thread only. REQUIRES: `metrics` outlives this object.
#pragma once

#include <array>
#include <cstddef>

#include "engine/metrics.hpp"
#include "engine/transport.hpp"
#include "protocol/error_code.hpp"
#include "protocol/topic.hpp"

namespace chunkd::engine {

enum class RequestVerb : std::uint8_t { Get, Describe, Unknown };
inline constexpr std::size_t kRequestVerbCount = 3;
static_assert(static_cast<std::size_t>(RequestVerb::Unknown) + 1 == kRequestVerbCount);

// Outcomes that are not a rejection code.
enum class RequestEnd : std::uint8_t { Ok, Aborted, Dropped };
inline constexpr std::size_t kRequestEndCount = 3;
static_assert(static_cast<std::size_t>(RequestEnd::Dropped) + 1 == kRequestEndCount);

class DeliveryMetrics {
 public:
  explicit DeliveryMetrics(Metrics& metrics);
  DeliveryMetrics(const DeliveryMetrics&) = delete;
  DeliveryMetrics& operator=(const DeliveryMetrics&) = delete;

  void request(RequestVerb verb, protocol::ErrorCode code);  // a rejection
  void request(RequestVerb verb, RequestEnd end);
  void block_sent(protocol::Format format, std::size_t reply_bytes);
  void refused(Transport::SendResult result);  // REQUIRES: result != Ok

  Counter& requests_dropped;  // unaddressable topic or shutting down
  Counter& replies_dropped;   // descriptions/rejections that could not be published
  Counter& jobs_dropped;      // GetStream jobs dropped unfinished
  Histogram& latency;         // GetStream received to its last block handed to the transport

 private:
  static constexpr std::size_t kOutcomeCount =
      static_cast<std::size_t>(protocol::kErrorCodeCount) + kRequestEndCount;
  void count(RequestVerb verb, std::size_t outcome);

  Metrics& metrics_;
  Counter& throttled_;
  Counter& refused_backpressure_;
  Counter& refused_disconnected_;
  Counter& refused_error_;
  Counter& blocks_json_;
  Counter& blocks_cbor_;
  Counter& bytes_json_;
  Counter& bytes_cbor_;
  std::array<Counter*, kRequestVerbCount * kOutcomeCount> requests_{};  // registered on first use
};

}  // namespace chunkd::engine

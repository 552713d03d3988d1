#include "engine/delivery_metrics.hpp"

#include <string>

#include "base/assert.hpp"

namespace chunkd::engine {
namespace {

constexpr const char* kVerbNames[] = {"get", "describe", "unknown"};
static_assert(std::size(kVerbNames) == kRequestVerbCount);
constexpr const char* kEndNames[] = {"ok", "aborted", "dropped"};
static_assert(std::size(kEndNames) == kRequestEndCount);

}  // namespace

DeliveryMetrics::DeliveryMetrics(Metrics& m)
    : requests_dropped(m.counter("chunkd_requests_dropped_total",
                                 "Request messages dropped: unaddressable topic or shutting down")),
      replies_dropped(m.counter("chunkd_replies_dropped_total",
                                "Descriptions/rejections that could not be published")),
      jobs_dropped(m.counter("chunkd_jobs_dropped_total",
                             "GetStream jobs dropped unfinished (publish failure or shutdown)")),
      latency(m.histogram(
          "chunkd_publish_latency_seconds",
          "GetStream received to its last block handed to the transport",
          {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})),
      metrics_(m),
      throttled_(m.counter("chunkd_throttled_total", "Requests answered RequestThrottled")),
      refused_backpressure_(m.counter("chunkd_publish_refused_total",
                                      "Publishes the MQTT side refused",
                                      R"(reason="backpressure")")),
      refused_disconnected_(
          m.counter("chunkd_publish_refused_total", "", R"(reason="not_connected")")),
      refused_error_(m.counter("chunkd_publish_refused_total", "", R"(reason="error")")),
      blocks_json_(m.counter("chunkd_blocks_sent_total", "Data blocks handed to the transport",
                             R"(format="json")")),
      blocks_cbor_(m.counter("chunkd_blocks_sent_total", "", R"(format="cbor")")),
      bytes_json_(m.counter("chunkd_bytes_sent_total",
                            "Encoded data-reply bytes handed to the transport",
                            R"(format="json")")),
      bytes_cbor_(m.counter("chunkd_bytes_sent_total", "", R"(format="cbor")")) {}

void DeliveryMetrics::request(RequestVerb verb, protocol::ErrorCode code) {
  if (code == protocol::ErrorCode::RequestThrottled) throttled_.inc();
  count(verb, static_cast<std::size_t>(code));
}

void DeliveryMetrics::request(RequestVerb verb, RequestEnd end) {
  count(verb, static_cast<std::size_t>(protocol::kErrorCodeCount) + static_cast<std::size_t>(end));
}

void DeliveryMetrics::count(RequestVerb verb, std::size_t outcome) {
  CHUNKD_ASSERT(static_cast<std::size_t>(verb) < kRequestVerbCount && outcome < kOutcomeCount);
  Counter*& c = requests_[static_cast<std::size_t>(verb) * kOutcomeCount + outcome];
  if (c == nullptr) {
    const auto codes = static_cast<std::size_t>(protocol::kErrorCodeCount);
    const std::string name =
        outcome < codes
            ? std::string(protocol::to_string(static_cast<protocol::ErrorCode>(outcome)))
            : std::string(kEndNames[outcome - codes]);
    const std::string labels = std::string("verb=\"") + kVerbNames[static_cast<std::size_t>(verb)] +
                               "\",outcome=\"" + name + "\"";
    c = &metrics_.counter("chunkd_requests_total", "Device requests by verb and outcome", labels);
  }
  c->inc();
}

void DeliveryMetrics::block_sent(protocol::Format format, std::size_t reply_bytes) {
  if (format == protocol::Format::Json) {
    blocks_json_.inc();
    bytes_json_.inc(reply_bytes);
  } else {
    blocks_cbor_.inc();
    bytes_cbor_.inc(reply_bytes);
  }
}

void DeliveryMetrics::refused(Transport::SendResult result) {
  CHUNKD_ASSERT(result != Transport::SendResult::Ok);
  switch (result) {
    case Transport::SendResult::Backpressure:
      refused_backpressure_.inc();
      return;
    case Transport::SendResult::NotConnected:
      refused_disconnected_.inc();
      return;
    case Transport::SendResult::Ok:
    case Transport::SendResult::Error:
      refused_error_.inc();
      return;
  }
}

}  // namespace chunkd::engine

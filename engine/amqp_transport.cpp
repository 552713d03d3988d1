#include "engine/amqp_transport.hpp"

#include <algorithm>
#include <utility>

#include "io/log.hpp"
#include "protocol/jobs_topic.hpp"
#include "protocol/request.hpp"

namespace chunkd::engine {
namespace {

constexpr const char* kTag = "amqp";
constexpr std::uint64_t kRefusalLogMs = 10000;
// The longest a reply topic gets beyond its request topic: get → rejected (+5 bytes);
// describe → description (+3).
constexpr std::size_t kReplyGrowth = 5;
// A jobs request's reply: + "/accepted" or "/rejected".
constexpr std::size_t kJobsReplyGrowth = 9;

std::size_t levels(std::string_view topic) {
  return static_cast<std::size_t>(std::count(topic.begin(), topic.end(), '/')) + 1;
}

}  // namespace

const char* AmqpTransport::refusal_name(Refusal r) {
  switch (r) {
    case Refusal::ReplyKeyTooLong:
      return "reply_key_too_long";
    case Refusal::ExtraLevel:
      return "extra_level";
    case Refusal::PayloadTooLarge:
      return "payload_too_large";
    case Refusal::Count:
      break;
  }
  return "unknown";
}

std::string AmqpTransport::routing_key(std::string_view topic) {
  std::string key(topic);
  std::replace(key.begin(), key.end(), '/', '.');
  return key;
}

std::string AmqpTransport::binding_key(std::string_view topic_prefix, std::string_view verb) {
  return routing_key(topic_prefix) + ".*.streams.*." + std::string(verb) + ".*";
}

std::vector<std::string> AmqpTransport::jobs_binding_keys(std::string_view topic_prefix) {
  std::vector<std::string> keys;
  for (std::string& filter : protocol::JobsTopicCodec(std::string(topic_prefix)).subscriptions()) {
    std::string key = routing_key(filter);
    std::replace(key.begin(), key.end(), '+', '*');
    keys.push_back(std::move(key));
  }
  return keys;
}

AmqpTransport::AmqpTransport(uv_loop_t* loop, AmqpOptions options)
    : loop_(loop), options_(std::move(options)) {
  for (const std::string& uri : options_.uris) {
    uris_text_ += (uris_text_.empty() ? "" : ", ") + uri;
  }
  // <prefix>/<thing>/streams/<id>/<verb>/<fmt>
  request_levels_ = levels(options_.topic_prefix) + 5;
  jobs_levels_ = levels(options_.topic_prefix) + 3;
  io::AmqpClientOptions o;
  o.uris = options_.uris;
  o.password = options_.password;
  o.ca_file = options_.ca_file;
  o.queue = options_.queue;
  o.exchange = options_.exchange;
  o.binding_keys = {binding_key(options_.topic_prefix, "get"),
                    binding_key(options_.topic_prefix, "describe")};
  if (options_.jobs && !options_.jobs_queue.empty()) {
    o.jobs_queue = options_.jobs_queue;
    o.jobs_binding_keys = jobs_binding_keys(options_.topic_prefix);
  }
  o.prefetch = options_.prefetch;
  o.delivery_limit = options_.delivery_limit;
  o.max_queued_bytes = kMaxQueuedBytes;
  client_ = std::make_unique<io::AmqpClient>(
      loop, std::move(o), [this](io::AmqpDelivery&& d) { on_delivery(std::move(d)); },
      [this](bool up, std::string_view why) { on_state(up, why); });
}

AmqpTransport::~AmqpTransport() = default;

Expected<void> AmqpTransport::start(RequestHandler on_request, ReadyHandler on_ready) {
  if (options_.topic_prefix.find_first_of(".*#+") != std::string::npos) {
    return fail(std::errc::invalid_argument,
                "topic prefix \"" + options_.topic_prefix +
                    "\" has '.', '*', '#' or '+', which RabbitMQ would route as separators or "
                    "wildcards");
  }
  on_request_ = std::move(on_request);
  on_ready_ = std::move(on_ready);
  return client_->start();
}

bool AmqpTransport::ready() const { return client_->connected(); }

void AmqpTransport::on_delivery(io::AmqpDelivery&& d) {
  received_++;
  topic_ = d.routing_key;
  std::replace(topic_.begin(), topic_.end(), '.', '/');
  auto refuse_now = [&](Refusal r) {
    refuse(r, d.routing_key);
    client_->finish(d.session, d.tag);  // acked: never redelivered
  };
  if (d.routing_key.size() + (d.jobs ? kJobsReplyGrowth : kReplyGrowth) > io::kAmqpMaxShortString) {
    return refuse_now(Refusal::ReplyKeyTooLong);
  }
  const std::size_t n = levels(topic_);
  if (d.jobs ? (n != jobs_levels_ && n != jobs_levels_ + 1) : n != request_levels_) {
    return refuse_now(Refusal::ExtraLevel);
  }
  if (d.body.size() > protocol::kMaxRequestPayloadBytes) {
    return refuse_now(Refusal::PayloadTooLarge);
  }
  const RequestTag tag = next_tag_++;
  unacked_[tag] = Delivered{d.session, d.tag};
  if (on_request_) {
    on_request_(topic_, d.body, tag);
  } else {
    finished(tag);
  }
}

void AmqpTransport::on_state(bool up, std::string_view why) {
  if (!up) {
    // The broker requeues every unacknowledged delivery of the lost session.
    unacked_.clear();
    LOG_WARN(kTag, "session lost: %.*s", static_cast<int>(why.size()), why.data());
  } else {
    LOG_INFO(kTag, "consuming %s on %s", options_.queue.c_str(), client_->stats().uri.c_str());
  }
  if (on_ready_) on_ready_(up);
}

void AmqpTransport::refuse(Refusal r, std::string_view detail) {
  const auto i = static_cast<std::size_t>(r);
  refused_[i]++;
  const std::uint64_t now = uv_now(loop_);
  if (logged_any_[i] && now - logged_ms_[i] < kRefusalLogMs) return;
  logged_any_[i] = true;
  logged_ms_[i] = now;
  LOG_WARN(kTag, "refused a request (%s, %llu so far; one line per 10 s): %.*s%s", refusal_name(r),
           static_cast<unsigned long long>(refused_[i]),
           static_cast<int>(std::min<std::size_t>(detail.size(), 300)), detail.data(),
           detail.size() > 300 ? "…" : "");
}

Transport::SendResult AmqpTransport::send(std::string_view /*key*/, std::string_view topic,
                                          std::span<const std::span<const std::byte>> parts,
                                          int /*qos*/) {
  if (topic.size() > io::kAmqpMaxShortString) {
    refuse(Refusal::ReplyKeyTooLong, topic);
    return SendResult::Error;
  }
  switch (client_->publish(routing_key(topic), parts)) {
    case io::AmqpClient::PublishResult::Ok:
      sent_++;
      return SendResult::Ok;
    case io::AmqpClient::PublishResult::Backpressure:
      refused_backpressure_++;
      return SendResult::Backpressure;
    case io::AmqpClient::PublishResult::NotConnected:
      refused_disconnected_++;
      return SendResult::NotConnected;
    case io::AmqpClient::PublishResult::Error:
      return SendResult::Error;
  }
  return SendResult::Error;
}

std::size_t AmqpTransport::channel_of(std::string_view /*key*/) const { return 0; }

bool AmqpTransport::writable(std::size_t /*channel*/) const { return client_->writable(); }

std::size_t AmqpTransport::bytes_in_flight() const { return client_->queued_bytes(); }

void AmqpTransport::on_writable(std::function<void()> callback) {
  client_->on_writable(std::move(callback));
}

TransportStats AmqpTransport::stats() const {
  const io::AmqpStats s = client_->stats();
  TransportStats t;
  t.messages_received = received_;
  t.messages_sent = sent_;
  t.socket_writes = s.publishes;
  t.reconnects = s.sessions > 0 ? s.sessions - 1 : 0;
  t.refused_backpressure = refused_backpressure_;
  t.refused_disconnected = refused_disconnected_;
  return t;
}

void AmqpTransport::finished(RequestTag tag) {
  auto it = unacked_.find(tag);
  if (it == unacked_.end()) return;  // its session was lost: the broker redelivers it
  client_->finish(it->second.session, it->second.tag);
  unacked_.erase(it);
}

void AmqpTransport::requeue(RequestTag tag) {
  auto it = unacked_.find(tag);
  if (it == unacked_.end()) return;  // its session was lost: the broker redelivers it anyway
  client_->requeue(it->second.session, it->second.tag);
  unacked_.erase(it);
}

void AmqpTransport::stop(int flush_timeout_ms, std::function<void()> done) {
  client_->stop(flush_timeout_ms, std::move(done));
}

void AmqpTransport::consume_jobs(bool on) { client_->consume_jobs(on); }

void AmqpTransport::register_metrics(Metrics& metrics) {
  auto stat = [this](std::uint64_t io::AmqpStats::*field) {
    return [this, field] { return static_cast<double>(client_->stats().*field); };
  };
  metrics.gauge_fn("chunkd_amqp_connected", "1 while a session consumes the request queue.", "",
                   [this] { return client_->connected() ? 1.0 : 0.0; });
  metrics.gauge_fn("chunkd_amqp_jobs_consuming",
                   "1 while this instance consumes the jobs queue (it serves jobs).", "",
                   [this] { return client_->stats().jobs_consuming ? 1.0 : 0.0; });
  metrics.counter_fn("chunkd_amqp_sessions_total", "AMQP sessions set up (the first included).", "",
                     stat(&io::AmqpStats::sessions));
  metrics.counter_fn("chunkd_amqp_failovers_total",
                     "AMQP sessions set up on another URI than the previous one.", "",
                     stat(&io::AmqpStats::failovers));
  for (std::size_t i = 0; i < io::kAmqpFailureCount; ++i) {
    metrics.counter_fn(
        "chunkd_amqp_connect_failures_total",
        "AMQP connection attempts that did not reach a consuming session, by cause.",
        std::string("cause=\"") + io::amqp_failure_name(static_cast<io::AmqpFailure>(i)) + "\"",
        [this, i] { return static_cast<double>(client_->stats().failures_by_cause[i]); });
  }
  metrics.gauge_fn("chunkd_amqp_unacked_requests",
                   "Requests delivered and not yet finished (their acks wait for them).", "",
                   [this] { return static_cast<double>(unacked_.size()); });
  metrics.gauge_fn("chunkd_amqp_queued_bytes",
                   "Reply bytes handed to the session, not yet written.", "",
                   [this] { return static_cast<double>(client_->queued_bytes()); });
  metrics.counter_fn("chunkd_amqp_publishes_total", "Replies written to the broker connection.", "",
                     stat(&io::AmqpStats::publishes));
  metrics.gauge_fn("chunkd_amqp_confirms_pending", "Replies published, not yet confirmed.", "",
                   stat(&io::AmqpStats::confirms_pending));
  metrics.counter_fn("chunkd_amqp_acks_total", "Requests acknowledged to the broker.", "",
                     stat(&io::AmqpStats::acks));
  metrics.counter_fn("chunkd_amqp_requeued_total",
                     "Requests handed back for redelivery because a reply was nacked.", "",
                     stat(&io::AmqpStats::requeued));
  const char* refused = "Requests refused (dropped and acknowledged), by reason.";
  for (std::size_t i = 0; i < static_cast<std::size_t>(Refusal::Count); ++i) {
    metrics.counter_fn("chunkd_amqp_refused_total", refused,
                       std::string("reason=\"") + refusal_name(static_cast<Refusal>(i)) + "\"",
                       [this, i] { return static_cast<double>(refused_[i]); });
  }
  metrics.counter_fn("chunkd_amqp_refused_total", refused, "reason=\"broker_internal_error\"",
                     stat(&io::AmqpStats::broker_internal_errors));
}

}  // namespace chunkd::engine

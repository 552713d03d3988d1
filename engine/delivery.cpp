// Delivery: the glue between MQTT requests and the scheduler (see delivery.hpp for the path).
//
// Decisions recorded here:
// - Every reply (data, description, rejection) goes through the thing's scheduler queue, so a
//   thing receives its replies in request order. Only when the thing's queue (or the global one)
//   is full is a reply published at once, out of band: RequestThrottled for a GetStream or
//   DescribeStream over the bound, or the rejection itself when it cannot be queued.
// - chunkd_requests_total{verb,outcome}: verb is get, describe, or unknown (InvalidTopic);
//   outcome is ok (every block handed to the transport / the description queued), the
//   rejection code, "aborted" (the transport refused with NotConnected/Error mid-job) or
//   "dropped" (shutdown). It is counted once per request, when its outcome is known.
// - Extent read failures map to ETagMismatch when the bytes do not match the manifest (or the
//   blob is short), RequestThrottled when the cache or reader is out of room with nothing in
//   flight, InternalError otherwise (a missing blob, an I/O error).
// - chunkd_bytes_sent_total counts encoded reply bytes (what the broker carries).
// - A block covering several extents is copied into one stitch buffer before encoding; a block
//   inside one extent is encoded straight from the cache.
#include "engine/delivery.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/scheduler.hpp"
#include "protocol/reply.hpp"
#include "protocol/request.hpp"
#include "protocol/topic.hpp"

namespace chunkd::engine {
namespace {

using protocol::ErrorCode;
using protocol::Format;

enum VerbLabel { kGet = 0, kDescribe = 1, kUnknown = 2 };
constexpr const char* kVerbNames[] = {"get", "describe", "unknown"};
// Outcomes: the 14 error codes, then ok, aborted, dropped.
constexpr int kOutcomeOk = protocol::kErrorCodeCount;
constexpr int kOutcomeAborted = kOutcomeOk + 1;
constexpr int kOutcomeDropped = kOutcomeOk + 2;
constexpr int kOutcomeCount = kOutcomeOk + 3;

std::string outcome_name(int outcome) {
  if (outcome == kOutcomeOk) return "ok";
  if (outcome == kOutcomeAborted) return "aborted";
  if (outcome == kOutcomeDropped) return "dropped";
  return std::string(protocol::to_string(static_cast<ErrorCode>(outcome)));
}

ErrorCode code_for(std::error_code error) {
  if (error == CacheError::ManifestMismatch || error == CacheError::ShortRead ||
      error == CacheError::NoManifestEntry) {
    return ErrorCode::ETagMismatch;
  }
  if (error == std::errc::no_buffer_space || error == std::errc::too_many_files_open ||
      error == std::errc::too_many_files_open_in_system ||
      error == std::errc::resource_unavailable_try_again || error == std::errc::not_enough_memory) {
    return ErrorCode::RequestThrottled;
  }
  return ErrorCode::InternalError;
}

std::string_view message_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidTopic:
      return "unknown request verb or format";
    case ErrorCode::ResourceNotFound:
      return "no such stream or file";
    case ErrorCode::VersionMismatch:
      return "stream version does not match";
    case ErrorCode::OffsetOutOfBounds:
      return "no requested block lies inside the file";
    case ErrorCode::ETagMismatch:
      return "the file no longer matches what the stream recorded";
    case ErrorCode::RequestThrottled:
      return "too many requests queued; retry later";
    case ErrorCode::InternalError:
      return "internal error";
    default:
      return protocol::to_string(code);
  }
}

std::optional<std::string_view> view(const std::optional<std::string>& s) {
  if (!s) return std::nullopt;
  return std::string_view(*s);
}

}  // namespace

struct Delivery::Impl final : SchedulerSink {
  Impl(uv_loop_t* l, const Catalog& c, io::FileReader& reader, Transport& p, Metrics& m,
       const Clock& clk, DeliveryOptions o)
      : loop(l),
        catalog(c),
        transport(p),
        metrics(m),
        clock(clk),
        options(std::move(o)),
        codec(options.topic_prefix),
        cache(reader, m, cache_options(options)),
        scheduler(l, cache, p, *this, clk, m, scheduler_options(options)),
        dropped(m.counter("chunkd_requests_dropped_total",
                          "Request messages dropped: unaddressable topic or shutting down")),
        throttled(m.counter("chunkd_throttled_total", "Requests answered RequestThrottled")),
        replies_dropped(m.counter("chunkd_replies_dropped_total",
                                  "Descriptions/rejections that could not be published")),
        latency(m.histogram(
            "chunkd_publish_latency_seconds",
            "GetStream received to its last block handed to the transport",
            {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})) {
    assert(protocol::TopicCodec::valid_prefix(options.topic_prefix));
    const std::size_t reply_bytes =
        std::max(protocol::data_reply_max_bytes(Format::Json, protocol::kMaxBlockSize,
                                                protocol::kMaxClientTokenBytes),
                 protocol::data_reply_max_bytes(Format::Cbor, protocol::kMaxBlockSize,
                                                protocol::kMaxClientTokenBytes));
    encode_buffer.resize(reply_bytes);
    stitch_buffer.resize(protocol::kMaxBlockSize);
    requests.fill(nullptr);
  }

  static BlockCacheOptions cache_options(const DeliveryOptions& o) {
    BlockCacheOptions c;
    c.data_dir = o.data_dir;
    c.capacity_bytes = o.cache_capacity_bytes;
    c.max_open_files = o.max_open_files;
    return c;
  }

  static SchedulerOptions scheduler_options(const DeliveryOptions& o) {
    SchedulerOptions s;
    s.per_thing_queue_requests = o.per_thing_queue_requests;
    s.global_queue_requests = o.global_queue_requests;
    s.per_thing_blocks_per_s = o.per_thing_blocks_per_s;
    s.global_blocks_per_s = o.global_blocks_per_s;
    s.max_publish_bytes_in_flight = o.max_publish_bytes_in_flight;
    s.quantum_bytes = o.quantum_bytes;
    s.qos = o.qos;
    return s;
  }

  uv_loop_t* loop;
  const Catalog& catalog;
  Transport& transport;
  Metrics& metrics;
  const Clock& clock;
  DeliveryOptions options;
  protocol::TopicCodec codec;
  BlockCache cache;
  Scheduler scheduler;  // declared after the cache: destroyed first, releasing its pins
  Counter& dropped;
  Counter& throttled;
  Counter& replies_dropped;
  Histogram& latency;
  std::array<Counter*, 3 * kOutcomeCount> requests{};
  std::vector<std::byte> encode_buffer;
  std::vector<std::byte> stitch_buffer;
  std::vector<std::span<const std::byte>> reply_parts;  // what encode_block returns
  std::string topic;                                    // scratch for reply topics
  bool stopping = false;
  std::shared_ptr<char> alive = std::make_shared<char>(0);

  void count(VerbLabel verb, int outcome) {
    Counter*& c = requests[static_cast<std::size_t>(verb * kOutcomeCount + outcome)];
    if (c == nullptr) {
      std::string labels = std::string("verb=\"") + kVerbNames[verb] + "\",outcome=\"" +
                           outcome_name(outcome) + "\"";
      c = &metrics.counter("chunkd_requests_total", "Device requests by verb and outcome", labels);
    }
    c->inc();
  }

  void count(VerbLabel verb, ErrorCode code) {
    if (code == ErrorCode::RequestThrottled) throttled.inc();
    count(verb, static_cast<int>(code));
  }

  // ---- requests ----

  void on_message(std::string_view request_topic, std::span<const std::byte> payload) {
    if (stopping) {
      dropped.inc();
      return;
    }
    protocol::ParsedTopic parsed = codec.parse(request_topic);
    switch (parsed.status) {
      case protocol::ParsedTopic::Status::Drop:
        dropped.inc();
        return;
      case protocol::ParsedTopic::Status::InvalidTopic:
        reject(kUnknown, parsed.thing, parsed.stream, Format::Json, std::nullopt,
               ErrorCode::InvalidTopic, message_for(ErrorCode::InvalidTopic));
        return;
      case protocol::ParsedTopic::Status::Ok:
        break;
    }
    if (parsed.verb == protocol::Verb::Describe) {
      describe(parsed, payload);
    } else {
      get(parsed, payload);
    }
  }

  void describe(const protocol::ParsedTopic& t, std::span<const std::byte> payload) {
    auto request = protocol::decode_describe_request(t.format, payload);
    if (!request) {
      const auto& e = request.error();
      reject(kDescribe, t.thing, t.stream, t.format, view(e.client_token), e.code, e.message);
      return;
    }
    const auto token = view(request->client_token);
    StreamSnapshot stream = catalog.find(t.stream);
    if (!stream) {
      reject(kDescribe, t.thing, t.stream, t.format, token, ErrorCode::ResourceNotFound,
             "no such stream");
      return;
    }
    std::vector<protocol::FileEntry> files;
    files.reserve(stream->files.size());
    for (const auto& f : stream->files) files.push_back({f.file_id, f.size_bytes});
    auto body =
        protocol::encode_description(t.format, token, stream->version, stream->description, files);
    codec.reply_topic(topic, t.thing, t.stream, protocol::ReplyKind::Description, t.format);
    switch (scheduler.post(t.thing, topic, std::move(body))) {
      case Scheduler::Admit::Ok:
        count(kDescribe, kOutcomeOk);
        return;
      case Scheduler::Admit::Throttled:
        throttle_now(kDescribe, t, token);
        return;
      case Scheduler::Admit::Stopped:
        dropped.inc();
        return;
    }
  }

  void get(const protocol::ParsedTopic& t, std::span<const std::byte> payload) {
    auto request = protocol::decode_get_request(t.format, payload);
    if (!request) {
      const auto& e = request.error();
      reject(kGet, t.thing, t.stream, t.format, view(e.client_token), e.code, e.message);
      return;
    }
    const protocol::GetStreamRequest& r = *request;
    const auto token = view(r.client_token);
    StreamSnapshot stream = catalog.find(t.stream);
    if (!stream) {
      reject(kGet, t.thing, t.stream, t.format, token, ErrorCode::ResourceNotFound,
             "no such stream");
      return;
    }
    if (r.version && *r.version != stream->version && !options.relax_version_check) {
      reject(kGet, t.thing, t.stream, t.format, token, ErrorCode::VersionMismatch,
             "stream version is " + std::to_string(stream->version));
      return;
    }
    const io::StoredFile* file = find_file(*stream, r.file_id);
    if (file == nullptr) {
      reject(kGet, t.thing, t.stream, t.format, token, ErrorCode::ResourceNotFound,
             "no file " + std::to_string(r.file_id) + " in the stream");
      return;
    }
    BlockJob job;
    if (auto code = protocol::select_blocks(r, file->size_bytes, job.blocks)) {
      reject(kGet, t.thing, t.stream, t.format, token, *code, message_for(*code));
      return;
    }
    job.thing = std::string(t.thing);
    job.file = file;
    job.stream = std::move(stream);
    job.block_size = r.block_size;
    codec.reply_topic(job.data_topic, t.thing, t.stream, protocol::ReplyKind::Data, t.format);
    codec.reply_topic(job.rejected_topic, t.thing, t.stream, protocol::ReplyKind::Rejected,
                      t.format);
    job.format = t.format;
    job.client_token = r.client_token;
    job.received_ms = clock.now_ms();
    switch (scheduler.submit(std::move(job))) {
      case Scheduler::Admit::Ok:
        return;  // counted when it ends
      case Scheduler::Admit::Throttled:
        throttle_now(kGet, t, token);
        return;
      case Scheduler::Admit::Stopped:
        dropped.inc();
        return;
    }
  }

  // Queues a rejection behind the thing's earlier replies (or publishes it at once when the
  // queue is full).
  void reject(VerbLabel verb, std::string_view thing, std::string_view stream, Format format,
              std::optional<std::string_view> token, ErrorCode code, std::string_view message) {
    count(verb, code);
    auto body = protocol::encode_rejected(format, token, code, message);
    codec.reply_topic(topic, thing, stream, protocol::ReplyKind::Rejected, format);
    switch (scheduler.post(thing, topic, body)) {
      case Scheduler::Admit::Ok:
        return;
      case Scheduler::Admit::Throttled:
        publish_now(thing, body);
        return;
      case Scheduler::Admit::Stopped:
        replies_dropped.inc();
        return;
    }
  }

  void throttle_now(VerbLabel verb, const protocol::ParsedTopic& t,
                    std::optional<std::string_view> token) {
    count(verb, ErrorCode::RequestThrottled);
    auto body = protocol::encode_rejected(t.format, token, ErrorCode::RequestThrottled,
                                          message_for(ErrorCode::RequestThrottled));
    codec.reply_topic(topic, t.thing, t.stream, protocol::ReplyKind::Rejected, t.format);
    publish_now(t.thing, body);
  }

  void publish_now(std::string_view thing, std::span<const std::byte> body) {
    if (transport.send(thing, topic, body, options.qos) != Transport::SendResult::Ok) {
      replies_dropped.inc();
    }
  }

  // ---- SchedulerSink ----

  // CBOR: a short header, then the payload straight from the cache extents (the transport
  // gathers them into one write, with no copy in user space). JSON: base64 needs the block in one
  // piece, so a block spanning extents is stitched first.
  std::span<const std::span<const std::byte>> encode_block(
      const BlockJob& job, std::uint32_t block_index,
      std::span<const std::span<const std::byte>> pieces) override {
    std::size_t payload_bytes = 0;
    for (auto p : pieces) payload_bytes += p.size();
    reply_parts.clear();
    if (job.format == Format::Cbor) {
      const std::size_t n = protocol::encode_cbor_data_header(
          encode_buffer, view(job.client_token), job.file->file_id, block_index, payload_bytes);
      assert(n > 0 && "encode buffer sized by data_reply_max_bytes");
      reply_parts.emplace_back(encode_buffer.data(), n);
      reply_parts.insert(reply_parts.end(), pieces.begin(), pieces.end());
      return reply_parts;
    }
    std::span<const std::byte> payload;
    if (pieces.size() == 1) {
      payload = pieces[0];
    } else {
      std::size_t at = 0;
      for (auto p : pieces) {
        assert(at + p.size() <= stitch_buffer.size());
        std::memcpy(stitch_buffer.data() + at, p.data(), p.size());
        at += p.size();
      }
      payload = std::span<const std::byte>(stitch_buffer.data(), at);
    }
    const std::size_t n = protocol::encode_data_reply(
        job.format, encode_buffer, view(job.client_token), job.file->file_id, block_index, payload);
    assert(n > 0 && "encode buffer sized by data_reply_max_bytes");
    reply_parts.emplace_back(encode_buffer.data(), n);
    return reply_parts;
  }

  std::vector<std::byte> encode_failure(const BlockJob& job, std::error_code error) override {
    const ErrorCode code = code_for(error);
    return protocol::encode_rejected(job.format, view(job.client_token), code, message_for(code));
  }

  void job_ended(const BlockJob& job, JobEnd end, std::error_code error) override {
    switch (end) {
      case JobEnd::Completed:
        count(kGet, kOutcomeOk);
        latency.observe(static_cast<double>(clock.now_ms() - job.received_ms) / 1000.0);
        return;
      case JobEnd::Failed:
        count(kGet, code_for(error));
        return;
      case JobEnd::PublishFailed:
        count(kGet, kOutcomeAborted);
        return;
      case JobEnd::Dropped:
        count(kGet, kOutcomeDropped);
        return;
    }
  }

  void stop(int timeout_ms, std::function<void()> done) {
    stopping = true;
    std::weak_ptr<char> weak = alive;
    scheduler.stop(timeout_ms, [weak, this, done = std::move(done)] {
      if (!weak.expired()) cache.close();
      if (done) done();
    });
  }
};

Delivery::Delivery(uv_loop_t* loop, const Catalog& catalog, io::FileReader& reader,
                   Transport& transport, Metrics& metrics, const Clock& clock,
                   DeliveryOptions options)
    : impl_(std::make_unique<Impl>(loop, catalog, reader, transport, metrics, clock,
                                   std::move(options))) {}

Delivery::~Delivery() = default;

void Delivery::on_message(std::string_view topic, std::span<const std::byte> payload) {
  impl_->on_message(topic, payload);
}

void Delivery::stop(int timeout_ms, std::function<void()> done) {
  impl_->stop(timeout_ms, std::move(done));
}

std::size_t Delivery::queued_requests() const { return impl_->scheduler.queued_requests(); }

}  // namespace chunkd::engine

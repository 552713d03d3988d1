// Delivery: request intake. It decodes and validates each request and moves it forward: a job or
// a reply into the Scheduler, or, when the thing's queue is full, a RequestThrottled reply sent at
// once through the BlockServer (see delivery.hpp for the whole path).
//
// Decisions recorded here:
// - Every reply (data, description, rejection) goes through the thing's scheduler queue, so a
//   thing receives its replies in request order. Only when the thing's queue (or the global one)
//   is full is a reply sent at once, out of band: RequestThrottled for a GetStream or
//   DescribeStream over the bound, or the rejection itself when it cannot be queued.
// - A thing outside a stream's allowedThings gets Unauthorized for every request on it, checked
//   right after the stream is found (before the version, the file and any cache or disk work).
//   Unknown streams stay ResourceNotFound. Refusals are counted like every rejection
//   (chunkd_requests_total{outcome="Unauthorized"}) and logged at debug level only.
//   A rule change applies to requests arriving after it; jobs already queued are served.
// - A request's outcome is counted once (engine/delivery_metrics.hpp): here for a rejection at
//   intake or a queued description, by the BlockServer for a GetStream job once it ended.
#include "engine/delivery.hpp"

#include <optional>
#include <utility>
#include <vector>

#include "base/assert.hpp"
#include "engine/block_cache.hpp"
#include "engine/block_server.hpp"
#include "engine/delivery_metrics.hpp"
#include "engine/reply_errors.hpp"
#include "engine/scheduler.hpp"
#include "io/log.hpp"
#include "protocol/reply.hpp"
#include "protocol/request.hpp"
#include "protocol/thing_pattern.hpp"
#include "protocol/topic.hpp"

namespace chunkd::engine {
namespace {

using protocol::ErrorCode;
using protocol::Format;

std::optional<std::string_view> view(const std::optional<std::string>& s) {
  if (!s) return std::nullopt;
  return std::string_view(*s);
}

}  // namespace

struct Delivery::Impl {
  Impl(uv_loop_t* l, const Catalog& c, io::FileReader& reader, Transport& t, Metrics& m,
       const Clock& clk, DeliveryOptions o, StreamHealth* health)
      : catalog(c),
        clock(clk),
        transport(t),
        options(std::move(o)),
        codec(options.topic_prefix),
        metrics(m),
        cache(reader, m, options.cache),
        server(cache, t, metrics, clk, options.qos, health),
        scheduler(l, server, t, clk, m, options.scheduler) {
    CHUNKD_ASSERT(protocol::TopicCodec::valid_prefix(options.topic_prefix));
  }

  const Catalog& catalog;
  const Clock& clock;
  Transport& transport;
  DeliveryOptions options;
  protocol::TopicCodec codec;
  DeliveryMetrics metrics;
  BlockCache cache;
  BlockServer server;   // after the cache: the cache outlives every pin and read it started
  Scheduler scheduler;  // last: destroyed first, releasing its items' pins
  std::string topic;    // scratch for reply topics
  // The request on_message is handling: handed to the scheduler with its reply, or finished here
  // when the reply went out at once (transport.hpp).
  Transport::RequestTag tag = Transport::kNoRequestTag;
  bool stopping = false;
  std::shared_ptr<char> alive = std::make_shared<char>(0);

  void on_message(std::string_view request_topic, std::span<const std::byte> payload) {
    if (stopping) {  // not finished: another instance may serve it (transport.hpp)
      metrics.requests_dropped.inc();
      return;
    }
    protocol::ParsedTopic parsed = codec.parse(request_topic);
    switch (parsed.status) {
      case protocol::ParsedTopic::Status::Drop:
        metrics.requests_dropped.inc();
        finished();
        return;
      case protocol::ParsedTopic::Status::InvalidTopic:
        reject(RequestVerb::Unknown, parsed.thing, parsed.stream, Format::Json, std::nullopt,
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
      reject(RequestVerb::Describe, t.thing, t.stream, t.format, view(e.client_token), e.code,
             e.message);
      return;
    }
    const auto token = view(request->client_token);
    StreamSnapshot stream = catalog.find(t.stream);
    if (!stream) {
      reject(RequestVerb::Describe, t.thing, t.stream, t.format, token, ErrorCode::ResourceNotFound,
             "no such stream");
      return;
    }
    if (!may_read(t, *stream)) {
      reject(RequestVerb::Describe, t.thing, t.stream, t.format, token, ErrorCode::Unauthorized,
             message_for(ErrorCode::Unauthorized));
      return;
    }
    std::vector<protocol::FileEntry> files;
    files.reserve(stream->files.size());
    for (const auto& f : stream->files) files.push_back({f.file_id, f.size_bytes});
    auto body =
        protocol::encode_description(t.format, token, stream->version, stream->description, files);
    codec.reply_topic(topic, t.thing, t.stream, protocol::ReplyKind::Description, t.format);
    admitted(RequestVerb::Describe, t, token, scheduler.post(t.thing, topic, std::move(body), tag));
  }

  void get(const protocol::ParsedTopic& t, std::span<const std::byte> payload) {
    auto request = protocol::decode_get_request(t.format, payload);
    if (!request) {
      const auto& e = request.error();
      reject(RequestVerb::Get, t.thing, t.stream, t.format, view(e.client_token), e.code,
             e.message);
      return;
    }
    const protocol::GetStreamRequest& r = *request;
    const auto token = view(r.client_token);
    auto refuse = [&](ErrorCode code, std::string_view message) {
      reject(RequestVerb::Get, t.thing, t.stream, t.format, token, code, message);
    };
    StreamSnapshot stream = catalog.find(t.stream);
    if (!stream) return refuse(ErrorCode::ResourceNotFound, "no such stream");
    if (!may_read(t, *stream)) {
      return refuse(ErrorCode::Unauthorized, message_for(ErrorCode::Unauthorized));
    }
    if (r.version && *r.version != stream->version && !options.relax_version_check) {
      return refuse(ErrorCode::VersionMismatch,
                    "stream version is " + std::to_string(stream->version));
    }
    const io::StoredFile* file = find_file(*stream, r.file_id);
    if (file == nullptr) {
      return refuse(ErrorCode::ResourceNotFound,
                    "no file " + std::to_string(r.file_id) + " in the stream");
    }
    BlockJob job;
    if (auto code = protocol::select_blocks(r, file->size_bytes, job.blocks)) {
      return refuse(*code, message_for(*code));
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
    admitted(RequestVerb::Get, t, token, scheduler.submit(std::move(job), tag));
  }

  // Whether the request's thing is in the stream's allowedThings (or the stream has none). A
  // refusal is device-caused and may be frequent: a debug line only.
  static bool may_read(const protocol::ParsedTopic& t, const io::StoredStream& stream) {
    if (protocol::thing_allowed(stream.allowed_things, t.thing)) return true;
    LOG_DEBUG("delivery", "thing %.*s is not in the allowedThings of stream %.*s",
              static_cast<int>(t.thing.size()), t.thing.data(), static_cast<int>(t.stream.size()),
              t.stream.data());
    return false;
  }

  // Counts a request the scheduler admitted or refused; a refused one is answered
  // RequestThrottled at once. A GetStream job is counted when it ends (BlockServer).
  void admitted(RequestVerb verb, const protocol::ParsedTopic& t,
                std::optional<std::string_view> token, Scheduler::Admit admit) {
    switch (admit) {
      case Scheduler::Admit::Ok:
        if (verb == RequestVerb::Describe) metrics.request(verb, RequestEnd::Ok);
        return;
      case Scheduler::Admit::Merged:  // counted when the job it joined ends
        return;
      case Scheduler::Admit::Throttled: {
        metrics.request(verb, ErrorCode::RequestThrottled);
        auto body = protocol::encode_rejected(t.format, token, ErrorCode::RequestThrottled,
                                              message_for(ErrorCode::RequestThrottled));
        codec.reply_topic(topic, t.thing, t.stream, protocol::ReplyKind::Rejected, t.format);
        server.send_now(t.thing, topic, body);
        finished();
        return;
      }
      case Scheduler::Admit::Stopped:
        metrics.requests_dropped.inc();
        return;
    }
  }

  // Queues a rejection behind the thing's earlier replies (or sends it at once when the queue
  // is full).
  void reject(RequestVerb verb, std::string_view thing, std::string_view stream, Format format,
              std::optional<std::string_view> token, ErrorCode code, std::string_view message) {
    metrics.request(verb, code);
    auto body = protocol::encode_rejected(format, token, code, message);
    codec.reply_topic(topic, thing, stream, protocol::ReplyKind::Rejected, format);
    switch (scheduler.post(thing, topic, body, tag)) {
      case Scheduler::Admit::Ok:
      case Scheduler::Admit::Merged:  // post() never merges
        return;
      case Scheduler::Admit::Throttled:
        server.send_now(thing, topic, body);
        finished();
        return;
      case Scheduler::Admit::Stopped:
        metrics.replies_dropped.inc();
        return;
    }
  }

  // The request being handled got its reply at once (or none is due).
  void finished() {
    if (tag != Transport::kNoRequestTag) transport.finished(tag);
    tag = Transport::kNoRequestTag;
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
                   DeliveryOptions options, StreamHealth* health)
    : impl_(std::make_unique<Impl>(loop, catalog, reader, transport, metrics, clock,
                                   std::move(options), health)) {}

Delivery::~Delivery() = default;

void Delivery::on_message(std::string_view topic, std::span<const std::byte> payload,
                          Transport::RequestTag tag) {
  impl_->tag = tag;
  impl_->on_message(topic, payload);
  impl_->tag = Transport::kNoRequestTag;
}

void Delivery::stop(int timeout_ms, std::function<void()> done) {
  impl_->stop(timeout_ms, std::move(done));
}

void Delivery::set_limits(const SchedulerOptions& options) { impl_->scheduler.set_limits(options); }

std::size_t Delivery::queued_requests() const { return impl_->scheduler.queued_requests(); }

}  // namespace chunkd::engine

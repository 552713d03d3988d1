#include "engine/block_server.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "base/assert.hpp"
#include "engine/reply_errors.hpp"
#include "protocol/reply.hpp"
#include "protocol/request.hpp"

namespace chunkd::engine {
namespace {

using protocol::Format;
using Parts = std::span<const std::span<const std::byte>>;

std::optional<std::string_view> view(const std::optional<std::string>& s) {
  if (!s) return std::nullopt;
  return std::string_view(*s);
}

// Where block `item.next` of a job lies: its bytes and the extents covering them.
struct BlockSpan {
  std::uint32_t block = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t extent_size = 0;
  std::uint32_t first = 0;  // first extent covered
  std::uint32_t last = 0;   // last extent covered
  std::size_t count() const { return std::size_t{last} - first + 1; }
};

BlockSpan span_of(const WorkItem& item) {
  const BlockJob& job = item.job;
  CHUNKD_ASSERT(item.next < job.blocks.size());
  BlockSpan s;
  s.block = job.blocks[item.next];
  s.offset = std::uint64_t{s.block} * job.block_size;
  CHUNKD_ASSERT(s.offset < job.file->size_bytes);
  s.length = std::min<std::uint64_t>(job.block_size, job.file->size_bytes - s.offset);
  s.extent_size = BlockCache::extent_bytes(*job.file);
  s.first = static_cast<std::uint32_t>(s.offset / s.extent_size);
  s.last = static_cast<std::uint32_t>((s.offset + s.length - 1) / s.extent_size);
  return s;
}

}  // namespace

struct BlockServer::Impl {
  Impl(BlockCache& c, Transport& t, DeliveryMetrics& m, const Clock& clk, int q, StreamHealth* h)
      : cache(c), transport(t), metrics(m), clock(clk), qos(q), health(h) {
    const std::size_t reply_bytes =
        std::max(protocol::data_reply_max_bytes(Format::Json, protocol::kMaxBlockSize,
                                                protocol::kMaxClientTokenBytes),
                 protocol::data_reply_max_bytes(Format::Cbor, protocol::kMaxBlockSize,
                                                protocol::kMaxClientTokenBytes));
    encode_buffer.resize(reply_bytes);
    stitch_buffer.resize(protocol::kMaxBlockSize);
  }

  BlockCache& cache;
  Transport& transport;
  DeliveryMetrics& metrics;
  const Clock& clock;
  int qos;
  StreamHealth* health;  // may be null
  ReadDone read_done;
  std::shared_ptr<char> alive = std::make_shared<char>(0);
  // Scratch reused for every block: no allocation per block once warm.
  std::vector<std::byte> encode_buffer;
  std::vector<std::byte> stitch_buffer;
  std::vector<std::span<const std::byte>> pieces;       // the block's slices of its extents
  std::vector<std::span<const std::byte>> reply_parts;  // what goes to the transport

  // The one call site of Transport::send.
  Transport::SendResult send(std::string_view thing, std::string_view topic, Parts parts) {
    return transport.send(thing, topic, parts, qos);
  }

  ServeResult serve_message(std::string_view thing, WorkItem& item) {
    const std::span<const std::byte> parts[] = {item.payload};
    const Transport::SendResult r = send(thing, item.topic, parts);
    ServeResult out{Served::Sent, item.payload.size(), 0};
    if (r == Transport::SendResult::Ok) return out;
    metrics.refused(r);
    if (r == Transport::SendResult::Backpressure) {
      out.served = Served::Backpressure;
      return out;
    }
    metrics.replies_dropped.inc();
    out.served = Served::Lost;
    return out;
  }

  // Ends the job with `error` (reading `extent`): counted, reported to the StreamHealth unless
  // transient, and the item becomes its rejection.
  ServeResult fail(WorkItem& item, std::error_code error, std::uint32_t extent) {
    const ReplyError mapped = classify(error);
    metrics.request(RequestVerb::Get, mapped.code);
    if (health != nullptr && !mapped.transient && error != CacheError::Closed) {
      health->failed(*item.job.stream, *item.job.file, extent, error);
    }
    auto body = protocol::encode_rejected(item.job.format, view(item.job.client_token), mapped.code,
                                          message_for(mapped.code));
    item.pins.release();
    item.become_message(std::move(item.job.rejected_topic), std::move(body));
    return {Served::Failed, 0, 0};
  }

  // Starts (or joins) the read of `extent` for `item`, reporting to read_done when it lands.
  BlockCache::Handle start_read(std::string_view thing, const WorkItem& item, std::uint32_t extent,
                                std::error_code& error) {
    std::weak_ptr<char> weak = alive;
    return cache.get(*item.job.file, extent, error,
                     [weak, this, name = std::string(thing), id = item.id, extent](
                         std::error_code e, BlockCache::Handle got) {
                       if (weak.expired() || !read_done) return;
                       read_done(name, id, extent, e, std::move(got));
                     });
  }

  // Pins every extent of the block, starting reads for the missing ones within `bounds`.
  // Returns the result to hand back when the block cannot be sent now.
  std::optional<ServeResult> pin_extents(std::string_view thing, WorkItem& item, const BlockSpan& s,
                                         const ReadBounds& bounds) {
    BlockPins& pins = item.pins;
    if (pins.first != s.first || pins.handles.size() != s.count()) {
      pins.handles.clear();
      pins.handles.resize(s.count());
      pins.first = s.first;
    }
    bool need_slot = false;
    std::error_code hard_error;
    std::uint32_t hard_extent = 0;
    std::error_code soft_error;
    std::size_t started = 0;
    for (std::size_t i = 0; i < s.count(); ++i) {
      if (pins.handles[i]) continue;
      const auto extent = static_cast<std::uint32_t>(s.first + i);
      pins.handles[i] = cache.lookup(*item.job.file, extent);
      if (pins.handles[i]) continue;
      if (!cache.reading(*item.job.file, extent) &&
          cache.reads_in_flight() >= bounds.max_extent_reads) {
        need_slot = true;
        continue;
      }
      std::error_code error;
      BlockCache::Handle h = start_read(thing, item, extent, error);
      if (h) {
        pins.handles[i] = std::move(h);
      } else if (!error) {
        pins.reads_waiting++;
        started++;
      } else if (classify(error).transient) {
        soft_error = error;
      } else {
        hard_error = error;
        hard_extent = extent;
      }
    }
    if (pins.reads_waiting > 0) {
      if (hard_error && !pins.failure) {
        pins.failure = hard_error;
        pins.failed_extent = hard_extent;
      }
      return ServeResult{Served::WaitRead, 0, started};
    }
    if (hard_error) return fail(item, hard_error, hard_extent);
    if (need_slot || soft_error) {
      if (cache.reads_in_flight() > 0) return ServeResult{Served::WaitSlot, 0, 0};
      return fail(item, soft_error ? soft_error : std::make_error_code(std::errc::no_buffer_space),
                  s.first);
    }
    return std::nullopt;
  }

  // The reply for block `block` of `job`, whose bytes are the concatenation of `pieces`. CBOR: a
  // header, then the pieces uncopied (the transport gathers them into one write). JSON: base64
  // needs the block in one piece, so a block spanning extents is stitched first.
  Parts encode(const BlockJob& job, std::uint32_t block, Parts block_pieces) {
    std::size_t payload_bytes = 0;
    for (auto p : block_pieces) payload_bytes += p.size();
    reply_parts.clear();
    if (job.format == Format::Cbor) {
      const std::size_t n = protocol::encode_cbor_data_header(
          encode_buffer, view(job.client_token), job.file->file_id, block, payload_bytes);
      CHUNKD_ASSERT(n > 0);  // encode_buffer is sized by data_reply_max_bytes
      reply_parts.emplace_back(encode_buffer.data(), n);
      reply_parts.insert(reply_parts.end(), block_pieces.begin(), block_pieces.end());
      return reply_parts;
    }
    std::span<const std::byte> payload;
    if (block_pieces.size() == 1) {
      payload = block_pieces[0];
    } else {
      std::size_t at = 0;
      for (auto p : block_pieces) {
        CHUNKD_ASSERT(at + p.size() <= stitch_buffer.size());
        std::memcpy(stitch_buffer.data() + at, p.data(), p.size());
        at += p.size();
      }
      payload = std::span<const std::byte>(stitch_buffer.data(), at);
    }
    const std::size_t n = protocol::encode_data_reply(
        job.format, encode_buffer, view(job.client_token), job.file->file_id, block, payload);
    CHUNKD_ASSERT(n > 0);  // encode_buffer is sized by data_reply_max_bytes
    reply_parts.emplace_back(encode_buffer.data(), n);
    return reply_parts;
  }

  // The block's slices of its pinned extents, in order.
  Parts slice(const WorkItem& item, const BlockSpan& s) {
    pieces.clear();
    for (std::size_t i = 0; i < s.count(); ++i) {
      const std::uint64_t extent_start = (std::uint64_t{s.first} + i) * s.extent_size;
      const std::uint64_t from = std::max(s.offset, extent_start) - extent_start;
      const std::uint64_t to =
          std::min(s.offset + s.length, extent_start + s.extent_size) - extent_start;
      auto bytes = item.pins.handles[i].bytes();
      CHUNKD_ASSERT(to <= bytes.size());
      pieces.push_back(
          bytes.subspan(static_cast<std::size_t>(from), static_cast<std::size_t>(to - from)));
    }
    return pieces;
  }

  ServeResult serve_block(std::string_view thing, WorkItem& item, const ReadBounds& bounds) {
    if (item.failed()) return fail(item, item.pins.failure, item.pins.failed_extent);
    const BlockSpan s = span_of(item);
    if (auto wait = pin_extents(thing, item, s, bounds)) return *wait;
    const BlockJob& job = item.job;
    const Parts reply = encode(job, s.block, slice(item, s));
    std::size_t reply_bytes = 0;
    for (auto part : reply) reply_bytes += part.size();
    const Transport::SendResult r = send(thing, job.data_topic, reply);
    item.pins.release();
    ServeResult out{Served::Sent, reply_bytes, 0};
    if (r != Transport::SendResult::Ok) {
      metrics.refused(r);
      if (r == Transport::SendResult::Backpressure) {
        out.served = Served::Backpressure;
        return out;
      }
      metrics.jobs_dropped.inc();
      metrics.request(RequestVerb::Get, RequestEnd::Aborted);
      out.served = Served::Lost;
      return out;
    }
    metrics.block_sent(job.format, reply_bytes);
    if (item.last_block()) {
      metrics.request(RequestVerb::Get, RequestEnd::Ok);
      metrics.latency.observe(static_cast<double>(clock.now_ms() - job.received_ms) / 1000.0);
    } else {
      prefetch_ahead(item, s.last, bounds);
    }
    return out;
  }

  // After block `item.next` was sent: prefetches the first extent past `current` that a later
  // block of the job starts in.
  void prefetch_ahead(WorkItem& item, std::uint32_t current, const ReadBounds& bounds) {
    if (std::int64_t{current} < item.prefetched_through) return;
    if (cache.reads_in_flight() >= bounds.max_prefetch_reads) return;
    const BlockJob& job = item.job;
    const std::uint64_t extent_size = BlockCache::extent_bytes(*job.file);
    const std::uint64_t boundary = (std::uint64_t{current} + 1) * extent_size;
    const std::uint64_t first_block = (boundary + job.block_size - 1) / job.block_size;
    auto it = std::lower_bound(job.blocks.begin() + static_cast<std::ptrdiff_t>(item.next + 1),
                               job.blocks.end(), first_block);
    if (it == job.blocks.end()) {
      item.prefetched_through = std::int64_t{current} + 1;  // nothing ahead: stop looking
      return;
    }
    const auto target =
        static_cast<std::uint32_t>(std::uint64_t{*it} * job.block_size / extent_size);
    if (!cache.prefetch(*job.file, target)) item.prefetched_through = target;
  }
};

BlockServer::BlockServer(BlockCache& cache, Transport& transport, DeliveryMetrics& metrics,
                         const Clock& clock, int qos, StreamHealth* health)
    : impl_(std::make_unique<Impl>(cache, transport, metrics, clock, qos, health)) {}

BlockServer::~BlockServer() = default;

void BlockServer::on_read_done(ReadDone done) { impl_->read_done = std::move(done); }

ServeResult BlockServer::serve(std::string_view thing, WorkItem& item, const ReadBounds& bounds) {
  if (!item.is_job) return impl_->serve_message(thing, item);
  return impl_->serve_block(thing, item, bounds);
}

void BlockServer::queued(const WorkItem& item, const ReadBounds& bounds) {
  CHUNKD_ASSERT(item.is_job && !item.job.blocks.empty());
  if (impl_->cache.reads_in_flight() >= bounds.max_prefetch_reads) return;
  const BlockJob& job = item.job;
  const std::uint64_t extent_size = BlockCache::extent_bytes(*job.file);
  const auto e =
      static_cast<std::uint32_t>(std::uint64_t{job.blocks.front()} * job.block_size / extent_size);
  (void)impl_->cache.prefetch(*job.file, e);
}

void BlockServer::dropped(const WorkItem& item) {
  if (item.is_job) {
    impl_->metrics.jobs_dropped.inc();
    impl_->metrics.request(RequestVerb::Get, RequestEnd::Dropped);
  } else {
    impl_->metrics.replies_dropped.inc();
  }
}

void BlockServer::send_now(std::string_view thing, std::string_view topic,
                           std::span<const std::byte> body) {
  const std::span<const std::byte> parts[] = {body};
  if (impl_->send(thing, topic, parts) != Transport::SendResult::Ok) {
    impl_->metrics.replies_dropped.inc();
  }
}

// ---- work.hpp ----

bool BlockPins::landed(std::uint32_t extent, std::error_code error, BlockCache::Handle handle) {
  if (reads_waiting > 0) reads_waiting--;
  if (error) {
    if (!failure) {
      failure = error;
      failed_extent = extent;
    }
  } else if (extent >= first && extent - first < handles.size()) {
    handles[extent - first] = std::move(handle);
  }
  return reads_waiting == 0;
}

void WorkItem::become_message(std::string reply_topic, std::vector<std::byte> reply) {
  CHUNKD_ASSERT(is_job);
  pins.release();
  is_job = false;
  job = BlockJob{};
  topic = std::move(reply_topic);
  payload = std::move(reply);
}

}  // namespace chunkd::engine

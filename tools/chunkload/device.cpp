#include "tools/chunkload/device.hpp"

#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "protocol/device.hpp"
#include "protocol/request.hpp"
#include "tools/chunkload/device_file.hpp"

namespace chunkd::chunkload {
namespace {

using device_detail::clear_bit;
using device_detail::extract_bits;
using device_detail::HashState;
using device_detail::kNoOwner;
using device_detail::set_bit;
using device_detail::test_bit;

constexpr std::uint32_t kBitmapBits = static_cast<std::uint32_t>(protocol::kMaxBitmapBytes) * 8;
// Window requests start at any missing block, so every block index must be a valid `o`.
constexpr std::uint64_t kMaxWindowBlocks = std::uint64_t{protocol::kMaxOffset} + 1;
// Bitmap requests start at most at kMaxOffset and cover kBitmapBits blocks from there.
constexpr std::uint64_t kMaxBitmapBlocks = std::uint64_t{protocol::kMaxOffset} + kBitmapBits;
// Hashed bytes are returned to the kernel in steps of at least this much.
constexpr std::uint64_t kReleaseStepBytes = 256u << 10;
constexpr std::int64_t kBackoffBaseMs = 50;
constexpr std::int64_t kBackoffCapMs = 5000;

std::optional<std::uint32_t> parse_u32(std::string_view s) {
  std::uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::string describe_blocks(const std::vector<std::uint32_t>& blocks) {
  if (blocks.empty()) return "no blocks";
  std::string s = "blocks " + std::to_string(blocks.front());
  if (blocks.size() > 1) s += ".." + std::to_string(blocks.back());
  return s;
}

Outgoing request(protocol::Verb verb, std::vector<std::byte> payload) {
  Outgoing o;
  o.verb = verb;
  o.payload = std::move(payload);
  return o;
}

}  // namespace

std::size_t rejection_index(std::string_view code) {
  for (int i = 0; i < protocol::kErrorCodeCount; ++i) {
    if (protocol::to_string(static_cast<protocol::ErrorCode>(i)) == code) {
      return static_cast<std::size_t>(i);
    }
  }
  return static_cast<std::size_t>(protocol::kErrorCodeCount);
}

std::string_view rejection_name(std::size_t index) {
  if (index >= static_cast<std::size_t>(protocol::kErrorCodeCount)) return "other";
  return protocol::to_string(static_cast<protocol::ErrorCode>(index));
}

Device::Device(const DeviceConfig& config, std::uint32_t seed)
    : config_(config), rng_(seed + 1), slots_(config.in_flight) {}

Device::~Device() = default;

std::string Device::token_for(std::uint32_t slot_index) const {
  return config_.client_token_prefix + std::to_string(slot_index) + "." +
         std::to_string(slots_[slot_index].generation);
}

std::chrono::milliseconds Device::next_backoff() {
  const std::int64_t base =
      std::min(kBackoffCapMs, kBackoffBaseMs << std::min<std::uint32_t>(throttle_streak_, 7));
  ++throttle_streak_;
  std::uniform_int_distribution<std::int64_t> jitter(base * 8 / 10, base * 12 / 10);
  return std::chrono::milliseconds(jitter(rng_));
}

void Device::start(TimePoint now, Outbox& out) {
  if (state_ != DeviceState::Waiting) return;
  stats_.started = now;
  if (config_.describe) {
    state_ = DeviceState::Describing;
    send_describe(now, out);
    return;
  }
  // Sizes and version from the control API (main() guarantees it was fetched).
  std::vector<protocol::FileEntry> available;
  if (config_.control) {
    version_ = config_.control->version;
    for (const StreamFile& f : config_.control->files) {
      available.push_back(protocol::FileEntry{f.file_id, f.size_bytes});
    }
  }
  if (!plan_files(available, now)) return;
  state_ = DeviceState::Downloading;
  begin_next_file(now, out);
}

void Device::start_file(std::uint32_t file_id, std::uint64_t size_bytes, PrefixSink* sink,
                        TimePoint now, Outbox& out) {
  if (state_ != DeviceState::Waiting) return;
  stats_.started = now;
  sink_ = sink;
  plan_.assign(1, PlannedFile{file_id, size_bytes, std::nullopt});
  next_file_ = 0;
  state_ = DeviceState::Downloading;
  begin_next_file(now, out);
}

void Device::send_describe(TimePoint now, Outbox& out) {
  out.push_back(request(
      protocol::Verb::Describe,
      protocol::encode_describe_request(config_.format, config_.client_token_prefix + "d")));
  describe_sent_ = now;
  describe_resend_at_.reset();
}

bool Device::plan_files(const std::vector<protocol::FileEntry>& available, TimePoint now) {
  plan_.clear();
  std::vector<std::uint32_t> ids;
  if (config_.files) {
    ids = *config_.files;
  } else {
    for (const protocol::FileEntry& f : available) ids.push_back(f.file_id);
  }
  if (ids.empty()) {
    fail("the stream lists no files", now);
    return false;
  }
  for (std::uint32_t id : ids) {
    auto it = std::find_if(available.begin(), available.end(),
                           [id](const protocol::FileEntry& f) { return f.file_id == id; });
    if (it == available.end()) {
      fail("file " + std::to_string(id) + " is not in the stream", now);
      return false;
    }
    PlannedFile pf{id, it->size_bytes, std::nullopt};
    if (config_.verify) {
      const StreamFile* known = config_.control ? config_.control->find(id) : nullptr;
      if (known == nullptr || !known->digest) {
        fail("the control API lists no digest for file " + std::to_string(id) +
                 " (use --no-verify to skip verification)",
             now);
        return false;
      }
      if (known->size_bytes != it->size_bytes) {
        fail("file " + std::to_string(id) + ": the description says " +
                 std::to_string(it->size_bytes) + " bytes, the control API " +
                 std::to_string(known->size_bytes),
             now);
        return false;
      }
      pf.digest = known->digest;
    }
    plan_.push_back(pf);
  }
  next_file_ = 0;
  return true;
}

void Device::begin_next_file(TimePoint now, Outbox& out) {
  file_.reset();
  if (next_file_ == plan_.size()) {
    finish(now);
    return;
  }
  const PlannedFile& pf = plan_[next_file_++];
  const std::uint64_t nblocks = protocol::block_count(pf.size_bytes, config_.block_size_bytes);
  const std::uint64_t limit = config_.mode == Mode::Window ? kMaxWindowBlocks : kMaxBitmapBlocks;
  if (nblocks > limit) {
    fail("file " + std::to_string(pf.file_id) + " has " + std::to_string(nblocks) + " blocks of " +
             std::to_string(config_.block_size_bytes) + " bytes; " +
             (config_.mode == Mode::Window ? "window" : "bitmap") + " mode addresses at most " +
             std::to_string(limit) + " (use a larger --block-size)",
         now);
    return;
  }
  auto f = std::make_unique<FileState>();
  f->spec = pf;
  f->nblocks = static_cast<std::uint32_t>(nblocks);
  f->have.assign(f->nblocks, 0);
  f->owner.assign(f->nblocks, kNoOwner);
  f->unrequested.assign((std::size_t{f->nblocks} + 7) / 8, 0);
  for (std::uint32_t b = 0; b < f->nblocks; ++b) set_bit(f->unrequested, b);
  f->keep = config_.verify || sink_ != nullptr;
  if (config_.verify) f->hash = std::make_unique<HashState>();
  if (f->keep) {
    if (pf.size_bytes > 0 && !f->buffer.map(static_cast<std::size_t>(pf.size_bytes))) {
      fail("cannot map " + std::to_string(pf.size_bytes) + " bytes for file " +
               std::to_string(pf.file_id),
           now);
      return;
    }
  }
  file_ = std::move(f);
  if (file_->nblocks == 0) {
    finish_file(now, out);  // verifies the empty file, then the next one (recursion ≤ 256 files)
    return;
  }
  if (!stats_.first_request) stats_.first_request = now;
  fill_slots(now, out);
}

void Device::fill_slots(TimePoint now, Outbox& out) {
  for (std::uint32_t s = 0; s < slots_.size() && state_ == DeviceState::Downloading; ++s) {
    if (slots_[s].active) continue;
    FileState& f = *file_;
    while (f.first_unrequested < f.nblocks && !test_bit(f.unrequested, f.first_unrequested)) {
      ++f.first_unrequested;
    }
    if (f.first_unrequested == f.nblocks) return;
    issue_request(s, now, out);
  }
}

void Device::issue_request(std::uint32_t slot_index, TimePoint now, Outbox& out) {
  FileState& f = *file_;
  Slot& slot = slots_[slot_index];
  ++slot.generation;

  protocol::GetStreamRequest req;
  req.client_token = token_for(slot_index);
  req.version = version_;
  req.file_id = f.spec.file_id;
  req.block_size = config_.block_size_bytes;
  req.count = config_.blocks_per_request;
  if (config_.mode == Mode::Window) {
    req.offset = f.first_unrequested;
  } else {
    const std::uint32_t base =
        f.nblocks <= kBitmapBits ? 0 : std::min(f.first_unrequested, protocol::kMaxOffset);
    req.offset = base;
    req.bitmap = extract_bits(f.unrequested, base, std::min(f.nblocks - base, kBitmapBits));
  }
  std::vector<std::uint32_t> blocks;
  if (auto err = protocol::select_blocks(req, f.spec.size_bytes, blocks)) {
    fail("internal: request for file " + std::to_string(f.spec.file_id) + " selects no block", now);
    return;
  }
  for (std::uint32_t b : blocks) {
    f.owner[b] = static_cast<std::uint16_t>(slot_index);
    clear_bit(f.unrequested, b);
  }
  slot.active = true;
  slot.remaining = static_cast<std::uint32_t>(blocks.size());
  slot.blocks = std::move(blocks);
  slot.sent = slot.progress = now;
  slot.stalls = 0;
  slot.resend_at.reset();

  protocol::GetStreamArgs args;
  args.client_token = std::move(req.client_token);
  args.version = req.version;
  args.file_id = req.file_id;
  args.block_size = req.block_size;
  args.offset = req.offset;
  if (req.count != 0) args.count = req.count;
  args.bitmap = std::move(req.bitmap);
  out.push_back(request(protocol::Verb::Get, protocol::encode_get_request(config_.format, args)));
  ++stats_.requests;
}

void Device::resend(std::uint32_t slot_index, bool throttled, TimePoint now, Outbox& out) {
  FileState& f = *file_;
  Slot& slot = slots_[slot_index];
  std::vector<std::uint32_t> missing;
  for (std::uint32_t b : slot.blocks) {
    if (f.have[b] == 0) missing.push_back(b);
  }
  if (missing.empty()) {  // cannot happen while remaining > 0; keep the slot consistent anyway
    slot.active = false;
    fill_slots(now, out);
    return;
  }
  ++slot.generation;
  protocol::GetStreamArgs args;
  args.client_token = token_for(slot_index);
  args.version = version_;
  args.file_id = f.spec.file_id;
  args.block_size = config_.block_size_bytes;
  if (config_.mode == Mode::Window) {
    // o/n spanning the missing blocks; stored blocks inside the span come back as duplicates.
    args.offset = missing.front();
    args.count = missing.back() - missing.front() + 1;
  } else {
    // As the first request: o = 0 whenever the whole file fits one bitmap.
    const std::uint32_t base =
        f.nblocks <= kBitmapBits ? 0 : std::min(missing.front(), protocol::kMaxOffset);
    std::vector<std::uint8_t> bits((std::size_t{missing.back() - base} + 8) / 8, 0);
    for (std::uint32_t b : missing) set_bit(bits, b - base);
    args.offset = base;
    args.count = static_cast<std::uint32_t>(missing.size());
    args.bitmap = std::move(bits);
  }
  slot.remaining = static_cast<std::uint32_t>(missing.size());
  slot.blocks = std::move(missing);
  slot.progress = now;
  slot.resend_at.reset();
  out.push_back(request(protocol::Verb::Get, protocol::encode_get_request(config_.format, args)));
  if (throttled) {
    ++stats_.throttle_retries;
  } else {
    ++stats_.re_requests;
  }
}

void Device::on_data(std::span<const std::byte> payload, TimePoint now, Outbox& out) {
  if (terminal()) return;
  if (state_ != DeviceState::Downloading || !file_) {
    ++stats_.stray;
    return;
  }
  auto reply = protocol::decode_data_reply(config_.format, payload);
  if (!reply) {
    ++stats_.decode_errors;
    return;
  }
  FileState& f = *file_;
  if (reply->file_id != f.spec.file_id) {
    ++stats_.stray;
    return;
  }
  const std::uint32_t idx = reply->block_index;
  if (idx >= f.nblocks) {
    ++stats_.out_of_range;
    return;
  }
  const std::uint64_t offset = std::uint64_t{idx} * config_.block_size_bytes;
  const std::uint64_t expected_len =
      std::min<std::uint64_t>(config_.block_size_bytes, f.spec.size_bytes - offset);
  if (reply->length != expected_len || reply->payload.size() != expected_len) {
    ++stats_.bad_length;
    return;
  }
  if (f.have[idx] != 0) {
    ++stats_.duplicates;
    return;
  }
  const std::uint16_t owner = f.owner[idx];
  if (owner == kNoOwner) {
    ++stats_.unsolicited;
    clear_bit(f.unrequested, idx);
  }
  f.have[idx] = 1;
  ++f.received;
  ++stats_.blocks;
  stats_.bytes += expected_len;
  if (config_.bytes_stored != nullptr) {
    config_.bytes_stored->fetch_add(expected_len, std::memory_order_relaxed);
  }
  throttle_streak_ = 0;

  if (f.keep) keep_block(idx, offset, reply->payload);

  if (owner != kNoOwner) {
    Slot& slot = slots_[owner];
    if (slot.active && slot.remaining > 0) {
      slot.progress = now;
      slot.stalls = 0;
      if (--slot.remaining == 0) {
        slot.active = false;
        if (config_.latency != nullptr) {
          const auto us =
              std::chrono::duration_cast<std::chrono::microseconds>(now - slot.sent).count();
          config_.latency->record(static_cast<std::uint64_t>(std::max<std::int64_t>(us, 0)));
        }
      }
    }
  }
  if (f.received == f.nblocks) {
    finish_file(now, out);
  } else {
    fill_slots(now, out);
  }
}

void Device::keep_block(std::uint32_t idx, std::uint64_t offset,
                        std::span<const std::byte> payload) {
  FileState& f = *file_;
  const std::uint64_t expected_len = payload.size();
  if (idx == f.hashed_blocks) {
    // The next block of the prefix: hashed straight from the reply, so the mapping's page is
    // never touched (no copy, no page fault).
    const std::span<const std::byte> bytes(payload);
    if (f.hash) XXH3_128bits_update(f.hash->state, bytes.data(), bytes.size());
    if (sink_ != nullptr) sink_->consume(bytes);
    ++f.hashed_blocks;
    f.hashed_bytes = offset + expected_len;
  } else {
    std::memcpy(f.buffer.data() + offset, payload.data(), payload.size());
  }
  while (f.hashed_blocks < f.nblocks && f.have[f.hashed_blocks] != 0) {
    const std::uint64_t at = std::uint64_t{f.hashed_blocks} * config_.block_size_bytes;
    const std::uint64_t len =
        std::min<std::uint64_t>(config_.block_size_bytes, f.spec.size_bytes - at);
    const std::span<const std::byte> bytes(f.buffer.data() + at, static_cast<std::size_t>(len));
    if (f.hash) XXH3_128bits_update(f.hash->state, bytes.data(), bytes.size());
    if (sink_ != nullptr) sink_->consume(bytes);
    ++f.hashed_blocks;
    f.hashed_bytes = at + len;
  }
  if (f.hashed_bytes - f.released_bytes >= kReleaseStepBytes) {
    f.buffer.release(f.released_bytes, f.hashed_bytes);
    f.released_bytes = f.hashed_bytes;
  }
}

void Device::finish_file(TimePoint now, Outbox& out) {
  FileState& f = *file_;
  for (Slot& s : slots_) s.active = false;
  if (config_.verify && f.spec.digest) {
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(f.hash->state));
    Digest got{};
    std::memcpy(got.data(), canonical.digest, got.size());
    if (got != *f.spec.digest) {
      fail("file " + std::to_string(f.spec.file_id) + ": digest " + digest_hex(got) +
               " does not match the stream's " + digest_hex(*f.spec.digest),
           now);
      return;
    }
  }
  ++stats_.files_done;
  begin_next_file(now, out);
}

void Device::finish(TimePoint now) {
  file_.reset();
  for (Slot& s : slots_) s.active = false;
  state_ = DeviceState::Done;
  stats_.finished = now;
}

void Device::fail(std::string reason, TimePoint now) {
  if (terminal()) return;
  file_.reset();
  for (Slot& s : slots_) s.active = false;
  state_ = DeviceState::Failed;
  failure_ = std::move(reason);
  stats_.finished = now;
}

void Device::on_description(std::span<const std::byte> payload, TimePoint now, Outbox& out) {
  if (terminal()) return;
  if (state_ != DeviceState::Describing) {
    ++stats_.stray;  // a late answer to a repeated describe
    return;
  }
  auto reply = protocol::decode_description(config_.format, payload);
  if (!reply) {
    ++stats_.decode_errors;
    return;
  }
  if (config_.verify && config_.control && config_.control->version != reply->version) {
    fail("the stream is at version " + std::to_string(reply->version) +
             " but the control API described version " + std::to_string(config_.control->version) +
             " (was it updated during the run?)",
         now);
    return;
  }
  version_ = reply->version;
  if (!plan_files(reply->files, now)) return;
  state_ = DeviceState::Downloading;
  begin_next_file(now, out);
}

void Device::on_rejected(std::span<const std::byte> payload, TimePoint now, Outbox& out) {
  (void)out;
  auto reply = protocol::decode_rejected(config_.format, payload);
  if (!reply) {
    ++stats_.decode_errors;
    return;
  }
  const std::size_t kind = rejection_index(reply->code);
  ++stats_.rejections[kind];
  if (terminal()) return;

  if (kind != static_cast<std::size_t>(protocol::ErrorCode::RequestThrottled)) {
    std::string what = "rejected " + reply->code;
    if (!reply->message.empty()) what += ": " + reply->message;
    if (state_ == DeviceState::Describing) what += " (describe)";
    fail(std::move(what), now);
    return;
  }
  // Throttled: find the request by its token and send it again after a backoff.
  if (!reply->client_token) return;
  std::string_view token = *reply->client_token;
  const std::string& prefix = config_.client_token_prefix;
  if (token.substr(0, prefix.size()) != prefix) return;
  token.remove_prefix(prefix.size());
  if (token == "d") {
    if (state_ == DeviceState::Describing) describe_resend_at_ = now + next_backoff();
    return;
  }
  const auto dot = token.find('.');
  if (dot == std::string_view::npos || state_ != DeviceState::Downloading) return;
  auto slot_index = parse_u32(token.substr(0, dot));
  auto generation = parse_u32(token.substr(dot + 1));
  if (!slot_index || !generation || *slot_index >= slots_.size()) return;
  Slot& slot = slots_[*slot_index];
  if (!slot.active || slot.generation != *generation) return;  // stale
  slot.resend_at = now + next_backoff();
}

void Device::on_tick(TimePoint now, Outbox& out) {
  if (state_ == DeviceState::Describing) {
    if (describe_resend_at_) {
      if (now >= *describe_resend_at_) {
        ++stats_.throttle_retries;
        send_describe(now, out);
      }
    } else if (now - describe_sent_ >= config_.timeout) {
      if (++describe_stalls_ > config_.max_retries) {
        fail("no description after " + std::to_string(config_.max_retries) + " re-requests", now);
        return;
      }
      ++stats_.re_requests;
      send_describe(now, out);
    }
    return;
  }
  if (state_ != DeviceState::Downloading || !file_) return;
  for (std::uint32_t s = 0; s < slots_.size(); ++s) {
    Slot& slot = slots_[s];
    if (!slot.active) continue;
    if (slot.resend_at) {
      if (now >= *slot.resend_at) resend(s, true, now, out);
    } else if (now - slot.progress >= config_.timeout) {
      if (++slot.stalls > config_.max_retries) {
        fail("file " + std::to_string(file_->spec.file_id) + ": " + describe_blocks(slot.blocks) +
                 " still missing after " + std::to_string(config_.max_retries) + " re-requests",
             now);
        return;
      }
      resend(s, false, now, out);  // keeps slot.stalls: only a stored block resets it
    }
    if (state_ != DeviceState::Downloading) return;
  }
}

}  // namespace chunkd::chunkload

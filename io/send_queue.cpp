#include "io/send_queue.hpp"

#include <algorithm>
#include <cstring>

#include "base/assert.hpp"

namespace chunkd::io {

void SendQueue::append(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    if (chunks_.empty() || chunks_.back().end == kChunkBytes) {
      chunks_.push_back(Chunk{take_chunk(), 0, 0});
    }
    Chunk& tail = chunks_.back();
    const std::size_t n = std::min(bytes.size(), kChunkBytes - tail.end);
    std::memcpy(tail.data.get() + tail.end, bytes.data(), n);
    tail.end += n;
    size_ += n;
    bytes = bytes.subspan(n);
  }
}

std::size_t SendQueue::gather(iovec* iov, std::size_t max) const {
  std::size_t n = 0;
  std::size_t bytes = 0;
  auto it = chunks_.begin();
  for (; it != chunks_.end() && n < max; ++it) {
    CHUNKD_ASSERT(it->begin <= it->end && it->end <= kChunkBytes);
    if (it->end == it->begin) continue;
    iov[n++] = iovec{it->data.get() + it->begin, it->end - it->begin};
    bytes += it->end - it->begin;
  }
  // Accounting: the bytes waiting are exactly the chunks' bytes (checked when all were seen).
  CHUNKD_ASSERT(it != chunks_.end() ? bytes <= size_ : bytes == size_);
  return n;
}

void SendQueue::consume(std::size_t n) {
  CHUNKD_ASSERT(n <= size_);
  size_ -= n;
  while (n > 0) {
    CHUNKD_ASSERT(!chunks_.empty());
    Chunk& head = chunks_.front();
    const std::size_t take = std::min(n, head.end - head.begin);
    head.begin += take;
    n -= take;
    // A drained chunk goes back, unless it is the tail that appends still fill.
    if (head.begin == head.end && (chunks_.size() > 1 || head.end == kChunkBytes)) {
      recycle(std::move(head.data));
      chunks_.pop_front();
    }
  }
  CHUNKD_ASSERT(size_ > 0 || chunks_.empty() || chunks_.front().begin == chunks_.front().end);
  if (size_ == 0 && chunks_.size() == 1) {
    chunks_.front().begin = 0;  // an empty tail starts over at its beginning
    chunks_.front().end = 0;
  }
}

void SendQueue::clear() {
  while (!chunks_.empty()) {
    recycle(std::move(chunks_.front().data));
    chunks_.pop_front();
  }
  size_ = 0;
}

std::unique_ptr<std::byte[]> SendQueue::take_chunk() {
  if (!spare_.empty()) {
    auto data = std::move(spare_.back());
    spare_.pop_back();
    return data;
  }
  // Not value-initialised: every byte is written before it is sent.
  return std::unique_ptr<std::byte[]>(new std::byte[kChunkBytes]);
}

void SendQueue::recycle(std::unique_ptr<std::byte[]> data) {
  if (spare_.size() < kMaxSpareChunks) spare_.push_back(std::move(data));
}

}  // namespace chunkd::io

// Bytes waiting for a non-blocking socket, in order: a FIFO of fixed-size chunks.
//
// Appending copies into the tail chunk (taking a fresh one when it is full); written bytes are
// dropped from the front and whole chunks go back to a small spare list. Nothing is ever moved
// once written, so a socket that takes a little at a time costs one copy per byte, not one per
// partial write (a contiguous buffer compacted on every partial write cost chunkd 15 % of its CPU
// on a busy broker connection). gather() hands the waiting bytes to sendmsg() as iovecs.
//
// Invariant (asserted): size() == the bytes between begin and end of every chunk.
// Bound: the owner bounds size() (MqttPool: max_queued_bytes per connection); at most
// kMaxSpareChunks drained chunks are kept.
//
// Thread: not thread-safe; one owner.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <deque>
#include <memory>
#include <span>
#include <vector>

namespace chunkd::io {

class SendQueue {
 public:
  static constexpr std::size_t kChunkBytes = 64u << 10;
  static constexpr std::size_t kMaxSpareChunks = 4;  // kept for reuse once drained

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  void append(std::span<const std::byte> bytes);
  // Fills up to `max` iovecs with the first waiting bytes, in order; returns how many it filled.
  std::size_t gather(iovec* iov, std::size_t max) const;
  // Drops the first `n` waiting bytes. REQUIRES: n <= size().
  void consume(std::size_t n);
  void clear();

 private:
  struct Chunk {
    std::unique_ptr<std::byte[]> data;
    std::size_t begin = 0;  // first waiting byte
    std::size_t end = 0;    // one past the last byte written into the chunk
  };
  std::unique_ptr<std::byte[]> take_chunk();
  void recycle(std::unique_ptr<std::byte[]> data);

  std::deque<Chunk> chunks_;
  std::vector<std::unique_ptr<std::byte[]>> spare_;
  std::size_t size_ = 0;
};

}  // namespace chunkd::io

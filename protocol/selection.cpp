// Block selection of a decoded GetStream request (SPEC.md §1.1 rules 1-3). Rules and decisions:
// protocol/request.hpp.
#include <algorithm>
#include <limits>

#include "protocol/request.hpp"

namespace chunkd::protocol {
namespace {

// Appends blocks in ascending order while the request's payload budget lasts.
class Selector {
 public:
  Selector(std::uint64_t file_size_bytes, std::uint32_t block_size, std::vector<std::uint32_t>& out)
      : file_size_bytes_(file_size_bytes), block_size_(block_size), out_(out) {}

  // false: the budget is spent (or the index does not fit), stop selecting.
  bool take(std::uint64_t block) {
    if (block > std::numeric_limits<std::uint32_t>::max()) return false;
    const std::uint64_t start = block * block_size_;
    const std::uint64_t length = std::min<std::uint64_t>(block_size_, file_size_bytes_ - start);
    if (length > budget_bytes_) return false;
    budget_bytes_ -= length;
    out_.push_back(static_cast<std::uint32_t>(block));
    return true;
  }

 private:
  std::uint64_t file_size_bytes_;
  std::uint32_t block_size_;
  std::uint64_t budget_bytes_ = kMaxRequestPayloadBytes;
  std::vector<std::uint32_t>& out_;
};

}  // namespace

std::uint64_t block_count(std::uint64_t file_size_bytes, std::uint32_t block_size) {
  if (block_size == 0) return 0;
  return file_size_bytes / block_size + (file_size_bytes % block_size != 0 ? 1 : 0);
}

std::optional<ErrorCode> select_blocks(const GetStreamRequest& request,
                                       std::uint64_t file_size_bytes,
                                       std::vector<std::uint32_t>& blocks) {
  blocks.clear();
  const std::uint32_t block_size = request.block_size;
  if (block_size < kMinBlockSize || block_size > kMaxBlockSize) {
    return ErrorCode::BlockSizeOutOfBounds;
  }
  const std::uint64_t total = block_count(file_size_bytes, block_size);
  const std::uint64_t offset = request.offset;
  Selector selector(file_size_bytes, block_size, blocks);

  if (!request.bitmap) {
    const std::uint64_t wanted =
        request.count != 0 ? request.count : kMaxRequestPayloadBytes / block_size;
    const std::uint64_t end = std::min(total, offset + wanted);
    for (std::uint64_t block = offset; block < end; ++block) {
      if (!selector.take(block)) break;
    }
  } else {
    const std::vector<std::uint8_t>& bitmap = *request.bitmap;
    std::uint64_t bits_left =
        request.count != 0 ? request.count : std::numeric_limits<std::uint64_t>::max();
    bool more = true;
    for (std::size_t byte = 0; more && byte < bitmap.size(); ++byte) {
      const std::uint64_t first = offset + std::uint64_t{byte} * 8;
      if (first >= total) break;
      const std::uint8_t bits = bitmap[byte];
      for (unsigned bit = 0; more && bit < 8; ++bit) {
        if ((bits & (1U << bit)) == 0) continue;
        const std::uint64_t block = first + bit;
        more = block < total && bits_left > 0 && selector.take(block);
        if (more) --bits_left;
      }
    }
  }
  if (blocks.empty()) return ErrorCode::OffsetOutOfBounds;
  return std::nullopt;
}

}  // namespace chunkd::protocol

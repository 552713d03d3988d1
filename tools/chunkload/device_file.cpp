// Device::FileState's pieces (tools/chunkload/device_file.hpp).
#include "tools/chunkload/device_file.hpp"

#include <sys/mman.h>
#include <unistd.h>

namespace chunkd::chunkload::device_detail {

// Bits [base, base + width) of `src` as a bitmap relative to `base`.
std::vector<std::uint8_t> extract_bits(const std::vector<std::uint8_t>& src, std::uint32_t base,
                                       std::uint32_t width) {
  std::vector<std::uint8_t> out((std::size_t{width} + 7) / 8, 0);
  const std::size_t first = base >> 3;
  const unsigned shift = base & 7;
  for (std::size_t j = 0; j < out.size(); ++j) {
    const std::size_t k = first + j;
    unsigned v = k < src.size() ? unsigned{src[k]} >> shift : 0u;
    if (shift != 0 && k + 1 < src.size()) v |= unsigned{src[k + 1]} << (8 - shift);
    out[j] = static_cast<std::uint8_t>(v);
  }
  if ((width & 7) != 0)
    out.back() = static_cast<std::uint8_t>(out.back() & ((1u << (width & 7)) - 1));
  return out;
}

Mapping::~Mapping() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

bool Mapping::map(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  data_ = static_cast<std::byte*>(p);
  size_ = bytes;
  return true;
}

void Mapping::release(std::uint64_t from, std::uint64_t to) {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t a = (from + page - 1) / page * page;
  const std::uint64_t b = to / page * page;
  if (data_ != nullptr && b > a) {
    ::madvise(data_ + a, static_cast<std::size_t>(b - a), MADV_DONTNEED);
  }
}

}  // namespace chunkd::chunkload::device_detail

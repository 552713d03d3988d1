// Private to chunkload's Device (tools/chunkload/device.cpp): the state of the file a device is
// downloading — which blocks are stored, asked for or still to ask for (per-block owners and
// bitmaps), and with --verify or a PrefixSink the file itself, in an anonymous mapping, hashed in
// order as its blocks arrive.
#pragma once

#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "tools/chunkload/device.hpp"

namespace chunkd::chunkload {
namespace device_detail {

// Device::FileState::owner of a block no request waits for.
inline constexpr std::uint16_t kNoOwner = std::numeric_limits<std::uint16_t>::max();

// Bit i of a bitmap: `bits[i >> 3] & (1 << (i & 7))`, the order of the `b` field (docs/SPEC.md).
inline bool test_bit(const std::vector<std::uint8_t>& bits, std::uint32_t i) {
  return (bits[i >> 3] & (1u << (i & 7))) != 0;
}
inline void clear_bit(std::vector<std::uint8_t>& bits, std::uint32_t i) {
  bits[i >> 3] = static_cast<std::uint8_t>(bits[i >> 3] & ~(1u << (i & 7)));
}
inline void set_bit(std::vector<std::uint8_t>& bits, std::uint32_t i) {
  bits[i >> 3] = static_cast<std::uint8_t>(bits[i >> 3] | (1u << (i & 7)));
}

// Bits [base, base + width) of `src` as a bitmap relative to `base`.
std::vector<std::uint8_t> extract_bits(const std::vector<std::uint8_t>& src, std::uint32_t base,
                                       std::uint32_t width);

// An anonymous, lazily committed mapping the size of a file.
class Mapping {
 public:
  Mapping() = default;
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  bool map(std::size_t bytes);
  std::byte* data() { return data_; }
  // Gives the whole pages inside [from, to) back to the kernel.
  void release(std::uint64_t from, std::uint64_t to);

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

struct HashState {
  XXH3_state_t* state = XXH3_createState();
  HashState() { XXH3_128bits_reset(state); }
  ~HashState() { XXH3_freeState(state); }
  HashState(const HashState&) = delete;
  HashState& operator=(const HashState&) = delete;
};

}  // namespace device_detail

struct Device::FileState {
  PlannedFile spec;
  std::uint32_t nblocks = 0;
  std::vector<std::uint8_t> have;         // per block: stored
  std::vector<std::uint16_t> owner;       // per block: slot that asked for it, or kNoOwner
  std::vector<std::uint8_t> unrequested;  // bitmap: neither stored nor asked for
  std::uint32_t first_unrequested = 0;    // no unrequested block below this
  std::uint32_t received = 0;
  // Verification (with --verify) or a PrefixSink: the file in order.
  bool keep = false;
  device_detail::Mapping buffer;
  std::unique_ptr<device_detail::HashState> hash;
  std::uint32_t hashed_blocks = 0;
  std::uint64_t hashed_bytes = 0;
  std::uint64_t released_bytes = 0;
};

}  // namespace chunkd::chunkload

// The server-wide HTTP limits of io/http_limits.hpp: the byte budget and the rate-limited warnings.
#include "io/http_limits.hpp"

#include <iterator>

#include "base/assert.hpp"

namespace chunkd::io::detail {

bool ByteBudget::try_reserve(std::size_t bytes) {
  if (bytes > max_bytes_ || used_bytes_ > max_bytes_ - bytes) return false;
  charge(bytes);
  return true;
}

void ByteBudget::release(std::size_t bytes) {
  CHUNKD_ASSERT(bytes <= used_bytes_ && "released more than was reserved");
  used_bytes_ -= bytes;
}

bool PeerWarnings::should_warn(std::string_view address, std::uint64_t now_ms) {
  auto it = last_ms_.find(std::string(address));
  if (it != last_ms_.end()) {
    if (now_ms - it->second < kIntervalMs) return false;
    it->second = now_ms;
    return true;
  }
  if (last_ms_.size() >= kMaxAddresses) {
    for (auto old = last_ms_.begin(); old != last_ms_.end();) {
      old = now_ms - old->second >= kIntervalMs ? last_ms_.erase(old) : std::next(old);
    }
    if (last_ms_.size() >= kMaxAddresses) last_ms_.clear();
  }
  last_ms_.emplace(std::string(address), now_ms);
  return true;
}

std::string peer_address(std::string_view peer) {
  const std::size_t colon = peer.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::string(peer);
  return std::string(peer.substr(0, colon));
}

}  // namespace chunkd::io::detail

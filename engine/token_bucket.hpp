// A token bucket of blocks/s, refilled from the Clock's milliseconds: the scheduler's rate
// limits (per thing and global). Burst max(1, rate); a rate <= 0 means unlimited.
// Plain value type; no thread of its own.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace chunkd::engine {

class RateLimit {
 public:
  struct Bucket {
    double tokens = 0;
    std::uint64_t last_ms = 0;
  };

  explicit RateLimit(double blocks_per_s) : rate_(blocks_per_s) {}

  bool on() const { return rate_ > 0; }
  double burst() const { return std::max(1.0, rate_); }
  Bucket full(std::uint64_t now_ms) const { return Bucket{burst(), now_ms}; }

  void refill(Bucket& b, std::uint64_t now_ms) const {
    if (!on()) return;
    if (now_ms > b.last_ms) {
      b.tokens =
          std::min(burst(), b.tokens + static_cast<double>(now_ms - b.last_ms) * rate_ / 1000.0);
    }
    b.last_ms = now_ms;
  }

  // Milliseconds until the bucket holds one token. REQUIRES: on().
  std::uint64_t wait_ms(const Bucket& b) const {
    if (b.tokens >= 1.0) return 0;
    return static_cast<std::uint64_t>(std::ceil((1.0 - b.tokens) * 1000.0 / rate_));
  }

  // Milliseconds until the bucket is full again; 0 when it is (within rounding).
  std::uint64_t full_in_ms(const Bucket& b) const {
    const double missing = burst() - b.tokens;
    if (!on() || missing <= 1e-9) return 0;
    return std::max<std::uint64_t>(1,
                                   static_cast<std::uint64_t>(std::ceil(missing * 1000.0 / rate_)));
  }

 private:
  double rate_;
};

}  // namespace chunkd::engine

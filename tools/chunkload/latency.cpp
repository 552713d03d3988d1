#include "tools/chunkload/latency.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace chunkd::chunkload {

std::size_t LatencyHistogram::bucket_of(std::uint64_t us) {
  us = std::min<std::uint64_t>(us, 0xffffffffu);
  if (us < kLinear) return static_cast<std::size_t>(us);
  const auto e = static_cast<unsigned>(std::bit_width(us) - 1);  // 7..31
  const auto sub = static_cast<std::size_t>((us >> (e - 6)) & (kSubBuckets - 1));
  return kLinear + (e - 7) * kSubBuckets + sub;
}

std::uint64_t LatencyHistogram::value_of(std::size_t bucket) {
  if (bucket < kLinear) return bucket;
  const std::size_t e = 7 + (bucket - kLinear) / kSubBuckets;
  const std::size_t sub = (bucket - kLinear) % kSubBuckets;
  const std::uint64_t lo = static_cast<std::uint64_t>(kSubBuckets + sub) << (e - 6);
  const std::uint64_t width = std::uint64_t{1} << (e - 6);
  return lo + width / 2;  // the bucket's midpoint
}

void LatencyHistogram::record(std::uint64_t latency_us) {
  counts_[bucket_of(latency_us)].fetch_add(1, std::memory_order_relaxed);
  std::uint64_t seen = max_us_.load(std::memory_order_relaxed);
  while (latency_us > seen &&
         !max_us_.compare_exchange_weak(seen, latency_us, std::memory_order_relaxed)) {
  }
}

double LatencyHistogram::percentile_ms(double p, std::uint64_t count) const {
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(p * static_cast<double>(count))));
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < kBuckets; ++b) {
    seen += counts_[b].load(std::memory_order_relaxed);
    if (seen >= rank) {
      const std::uint64_t v = std::min(value_of(b), max_us_.load(std::memory_order_relaxed));
      return static_cast<double>(v) / 1000.0;
    }
  }
  return static_cast<double>(max_us_.load(std::memory_order_relaxed)) / 1000.0;
}

LatencyHistogram::Summary LatencyHistogram::summarize() const {
  Summary s;
  std::uint64_t count = 0;
  for (const auto& c : counts_) count += c.load(std::memory_order_relaxed);
  s.count = count;
  if (count == 0) return s;
  s.p50_ms = percentile_ms(0.50, count);
  s.p99_ms = percentile_ms(0.99, count);
  s.max_ms = static_cast<double>(max_us_.load(std::memory_order_relaxed)) / 1000.0;
  return s;
}

}  // namespace chunkd::chunkload

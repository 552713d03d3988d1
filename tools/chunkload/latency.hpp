// Request latency (request sent → its last block stored), recorded by every device on paho's
// threads and summarised once at the end. Lock-free: a fixed log-linear histogram of atomic
// counters (exact below 128 us, then 64 sub-buckets per power of two: under 1.6% error), so
// memory stays constant however many requests a run makes.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace chunkd::chunkload {

class LatencyHistogram {
 public:
  // Thread-safe. Values over ~71 minutes are clamped.
  void record(std::uint64_t latency_us);

  struct Summary {
    std::uint64_t count = 0;
    double p50_ms = 0;
    double p99_ms = 0;
    double max_ms = 0;
  };
  // Call once recording has stopped (or accept a slightly torn view).
  Summary summarize() const;

 private:
  static constexpr std::size_t kLinear = 128;
  static constexpr std::size_t kSubBuckets = 64;
  static constexpr std::size_t kBuckets = kLinear + (32 - 7) * kSubBuckets;
  static std::size_t bucket_of(std::uint64_t us);
  static std::uint64_t value_of(std::size_t bucket);
  double percentile_ms(double p, std::uint64_t count) const;

  std::array<std::atomic<std::uint64_t>, kBuckets> counts_{};
  std::atomic<std::uint64_t> max_us_{0};
};

}  // namespace chunkd::chunkload

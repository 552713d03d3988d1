// Time as the engine sees it: a seam so tests drive time without sleeping.
#pragma once

#include <cstdint>
#include <string>

namespace chunkd::engine {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::uint64_t now_ms() const = 0;  // monotonic milliseconds
  virtual std::int64_t unix_ms() const = 0;  // wall clock, for timestamps
};

// The real clocks (CLOCK_MONOTONIC, CLOCK_REALTIME).
class SystemClock final : public Clock {
 public:
  std::uint64_t now_ms() const override;
  std::int64_t unix_ms() const override;
};

// A clock tests set by hand.
class ManualClock final : public Clock {
 public:
  std::uint64_t now_ms() const override { return now_ms_; }
  std::int64_t unix_ms() const override { return unix_ms_; }
  void advance_ms(std::uint64_t ms) {
    now_ms_ += ms;
    unix_ms_ += static_cast<std::int64_t>(ms);
  }
  void set_unix_ms(std::int64_t ms) { unix_ms_ = ms; }

 private:
  std::uint64_t now_ms_ = 1000;
  std::int64_t unix_ms_ = 1'798'000'000'000;
};

// "2026-11-27T10:00:00Z" (RFC 3339, UTC, second precision).
std::string rfc3339_utc(std::int64_t unix_ms);

}  // namespace chunkd::engine

// Private to io/: the server-wide limits of the HTTP server that are not one connection's business.
//
// - ByteBudget: one byte count for every request body being buffered and every response not yet
//   written, across all connections (HttpLimits::max_buffered_bytes). A body reserves its
//   Content-Length before its first byte is buffered and is refused when that would exceed the
//   budget; a response is always charged (the handler's work is done) but then counts against
//   later bodies.
// - PeerWarnings: at most one warning line per peer address per interval, so a client opening a
//   thousand connections costs one line a minute, not a thousand.
// - peer_address(): "127.0.0.1:5000" → "127.0.0.1", "[::1]:5000" → "[::1]" (the per-client key).
//
// Thread: the loop thread, like the rest of the server.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace chunkd::io::detail {

class ByteBudget {
 public:
  explicit ByteBudget(std::size_t max_bytes) : max_bytes_(max_bytes) {}

  // Reserves `bytes` if they fit under the maximum; false (nothing reserved) if not.
  bool try_reserve(std::size_t bytes);
  // Charges `bytes` whether or not they fit.
  void charge(std::size_t bytes) {
    used_bytes_ += bytes;
    if (used_bytes_ > peak_bytes_) peak_bytes_ = used_bytes_;
  }
  // REQUIRES: `bytes` were reserved or charged and not released yet.
  void release(std::size_t bytes);

  std::size_t used_bytes() const { return used_bytes_; }
  std::size_t peak_bytes() const { return peak_bytes_; }  // the most used_bytes() ever was
  std::size_t max_bytes() const { return max_bytes_; }

 private:
  std::size_t max_bytes_;
  std::size_t used_bytes_ = 0;
  std::size_t peak_bytes_ = 0;
};

class PeerWarnings {
 public:
  static constexpr std::uint64_t kIntervalMs = 60'000;
  // Addresses remembered at most; past it, entries older than the interval are forgotten, and if
  // all are recent the table is cleared (a warning may then repeat early; memory stays bounded).
  static constexpr std::size_t kMaxAddresses = 4096;

  // True when a warning about `address` may be logged at `now_ms` (and records it).
  bool should_warn(std::string_view address, std::uint64_t now_ms);
  std::size_t size() const { return last_ms_.size(); }

 private:
  std::unordered_map<std::string, std::uint64_t> last_ms_;
};

std::string peer_address(std::string_view peer);

}  // namespace chunkd::io::detail

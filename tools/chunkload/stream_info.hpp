// What chunkload learns about a stream from the control API before any device starts
// (GET /streams/{id}): the version, and per file its size and content digest, so every download
// can be verified. Blocking; called once on the main thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"

namespace chunkd::chunkload {

// XXH3-128 of a whole file in canonical (big-endian) byte order; printed as 32 lowercase hex.
using Digest = std::array<std::uint8_t, 16>;

struct StreamFile {
  std::uint32_t file_id = 0;
  std::uint64_t size_bytes = 0;
  std::optional<Digest> digest;
};

struct StreamInfo {
  std::uint64_t version = 0;
  std::vector<StreamFile> files;
  const StreamFile* find(std::uint32_t file_id) const;
};

Expected<StreamInfo, std::string> fetch_stream_info(const std::string& control_url,
                                                    const std::string& token,
                                                    const std::string& stream_id, int timeout_ms);

// Parses the body of a describe response ({"success":true,"data":{...}}); exposed for tests.
Expected<StreamInfo, std::string> parse_stream_info(std::string_view body);

// 32 hex digits (either case) → 16 bytes.
std::optional<Digest> parse_digest(std::string_view hex);
std::string digest_hex(const Digest& d);

}  // namespace chunkd::chunkload

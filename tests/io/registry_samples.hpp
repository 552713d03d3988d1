// Streams for the registry store tests (SQLite and PostgreSQL): every field filled in, unsigned
// values with the high bit set, quotes, backslashes and UTF-8, and a field-by-field comparison.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/registry_store.hpp"

namespace chunkd::io {

inline bool same_file(const StoredFile& a, const StoredFile& b) {
  return a.file_id == b.file_id && a.bucket == b.bucket && a.key == b.key &&
         a.size_bytes == b.size_bytes && a.digest == b.digest && a.extent_bytes == b.extent_bytes &&
         a.manifest == b.manifest && a.source_etag == b.source_etag &&
         a.source_version == b.source_version;
}

inline bool same_stream(const StoredStream& a, const StoredStream& b) {
  if (a.id != b.id || a.version != b.version || a.description != b.description ||
      a.role_arn != b.role_arn || a.tags != b.tags || a.created_at != b.created_at ||
      a.updated_at != b.updated_at || a.files.size() != b.files.size() ||
      a.allowed_things != b.allowed_things) {
    return false;
  }
  for (std::size_t i = 0; i < a.files.size(); ++i) {
    if (!same_file(a.files[i], b.files[i])) return false;
  }
  return true;
}

inline std::vector<std::uint64_t> make_manifest(std::size_t entries, std::uint64_t seed) {
  std::vector<std::uint64_t> manifest(entries);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& value : manifest) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    value = x;  // high bits set about half the time: exercises the unsigned round trip
  }
  return manifest;
}

// A deterministic stream for id number `n` (used by the crash test on both sides of the fork).
inline StoredStream numbered_stream(int n) {
  StoredStream s;
  s.id = "stream-" + std::to_string(n);
  s.version = static_cast<std::uint64_t>(n) + 1;
  s.description = "stream number " + std::to_string(n);
  s.role_arn = "arn:aws:iam::123456789012:role/chunkd";
  s.tags = {{"n", std::to_string(n)}, {"kind", "crash-test"}};
  s.created_at = "2026-11-27T10:00:00Z";
  s.updated_at = "2026-11-27T10:00:01Z";
  const int files = 1 + n % 3;
  for (int f = 0; f < files; ++f) {
    StoredFile file;
    file.file_id = static_cast<std::uint32_t>(f);
    file.bucket = "bucket";
    file.key = s.id + "/file-" + std::to_string(f);
    file.size_bytes = static_cast<std::uint64_t>(n) * 1000 + static_cast<std::uint64_t>(f);
    file.digest = "0123456789abcdef0123456789abcdef";
    file.extent_bytes = 262144;
    if (f == 1) {  // as if fetched from an S3 bucket
      file.source_etag = "\"9b2cf535f27731c974343645a3985328\"";
      file.source_version = n % 2 == 0 ? "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY" : "";
    }
    file.manifest =
        make_manifest(64 + static_cast<std::size_t>(n % 50),
                      static_cast<std::uint64_t>(n) * 16 + static_cast<std::uint64_t>(f));
    s.files.push_back(std::move(file));
  }
  return s;
}

inline StoredStream rich_stream() {
  StoredStream s;
  s.id = "firmware-v2";
  s.version = (std::uint64_t{1} << 63) + 5;
  s.description = "Firmware \xE2\x80\x94 with \"quotes\", ' and a backslash \\";
  s.role_arn = "arn:aws:iam::123456789012:role/streams";
  s.tags = {{"env", "prod"}, {"empty", ""}, {"unicode", "\xC3\xA9t\xC3\xA9"}, {"env", "dup key"}};
  s.created_at = "2026-11-27T10:00:00Z";
  s.updated_at = "2026-11-27T11:30:00Z";
  StoredFile a;
  a.file_id = 0;
  a.bucket = "fw";
  a.key = "images/v2.bin";
  a.size_bytes = 4096ull * 262144;
  a.digest = "00112233445566778899aabbccddeeff";
  a.extent_bytes = 262144;
  a.manifest = make_manifest(4096, 1);
  StoredFile b;
  b.file_id = 7;
  b.bucket = "fw";
  b.key = "images/v2.sig";
  b.size_bytes = 256;
  b.digest = "ffeeddccbbaa99887766554433221100";
  b.extent_bytes = 262144;
  b.manifest = {~std::uint64_t{0}};
  StoredFile c;
  c.file_id = 3;
  c.bucket = "other";
  c.key = "empty.txt";
  c.size_bytes = 0;
  c.digest = "99aa99aa99aa99aa99aa99aa99aa99aa";
  c.extent_bytes = 65536;
  s.files = {a, b, c};  // not sorted by file_id: the order must survive
  s.allowed_things = std::vector<std::string>{"sensor-*", "gw-0?", "exact:thing_1", "*"};
  return s;
}

}  // namespace chunkd::io

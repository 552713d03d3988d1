// Data-plane failures made visible. The BlockServer reports every GetStream job that ends on a
// failed extent read (engine/block_server.cpp); this object turns those reports into what an
// operator sees, so a corrupt or missing blob is never only an ETagMismatch on some device:
// - chunkd_block_failures_total{cause}: every report, by cause (manifest_mismatch, short_read,
//   no_manifest_entry: the bytes fail verification; missing: the blob is gone; read_error: any
//   other read failure);
// - a warning naming stream, version, file, extent, blob and cause, at most one per (stream, file)
//   per `log_interval_ms`; the reports in between are counted and the next line says how many;
// - the stream marked unhealthy while its current version is the one that failed verification
//   ("corrupt", or "missing"; a read_error does not mark it): GET /streams/{id} shows the first
//   such failure (health()), chunkd_streams_unhealthy counts the streams so marked. An update (a
//   new version) starts healthy; a deleted stream is forgotten.
//
// Bounded: one entry per stream that failed, pruned against the Catalog whenever an entry is
// added and whenever /metrics is rendered. Thread: loop thread only. REQUIRES: catalog, metrics
// and clock outlive it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/metrics.hpp"

namespace chunkd::engine {

class StreamHealth {
 public:
  struct Failure {
    std::string state;  // "corrupt" or "missing"
    std::uint32_t file_id = 0;
    std::uint32_t extent = 0;
    std::string cause;  // the metric's label, e.g. "manifest_mismatch"
  };
  static constexpr std::uint64_t kDefaultLogIntervalMs = 60000;

  StreamHealth(const Catalog& catalog, Metrics& metrics, const Clock& clock,
               std::uint64_t log_interval_ms = kDefaultLogIntervalMs);
  StreamHealth(const StreamHealth&) = delete;
  StreamHealth& operator=(const StreamHealth&) = delete;

  // Extent `extent` of `file` (a file of `stream`) could not be served: `error` is the read's.
  // REQUIRES: a failure, not a transient refusal (engine/reply_errors.hpp says which).
  void failed(const io::StoredStream& stream, const io::StoredFile& file, std::uint32_t extent,
              std::error_code error);

  // The failure marking `stream` (this version) unhealthy, or nullopt while it is healthy.
  std::optional<Failure> health(const io::StoredStream& stream) const;
  // Streams whose current version is marked (drops the entries of gone or replaced versions).
  std::size_t unhealthy_streams();

  // The metric label for `error` (see above).
  static std::string_view cause_of(const std::error_code& error);

 private:
  struct FileLog {
    std::uint64_t last_logged_ms = 0;
    std::uint64_t unlogged = 0;  // reports since the last line
  };
  struct Entry {
    std::uint64_t version = 0;
    std::optional<Failure> failure;
    std::map<std::uint32_t, FileLog> logs;  // by file id
  };
  void prune();
  void log_failure(Entry& entry, const io::StoredStream& stream, const io::StoredFile& file,
                   std::uint32_t extent, std::string_view cause, const std::error_code& error);

  const Catalog& catalog_;
  Metrics& metrics_;
  const Clock& clock_;
  std::uint64_t log_interval_ms_;
  std::map<std::string, Entry, std::less<>> streams_;
};

}  // namespace chunkd::engine

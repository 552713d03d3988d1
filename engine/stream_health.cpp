#include "engine/stream_health.hpp"

#include <cerrno>
#include <string>

#include "engine/block_cache.hpp"
#include "io/log.hpp"

namespace chunkd::engine {

StreamHealth::StreamHealth(const Catalog& catalog, Metrics& metrics, const Clock& clock,
                           std::uint64_t log_interval_ms)
    : catalog_(catalog), metrics_(metrics), clock_(clock), log_interval_ms_(log_interval_ms) {
  metrics_.gauge_fn("chunkd_streams_unhealthy",
                    "Streams whose current version failed content verification.", "",
                    [this] { return static_cast<double>(unhealthy_streams()); });
}

std::string_view StreamHealth::cause_of(const std::error_code& error) {
  if (error == CacheError::ManifestMismatch) return "manifest_mismatch";
  if (error == CacheError::ShortRead) return "short_read";
  if (error == CacheError::NoManifestEntry) return "no_manifest_entry";
  if (error == std::errc::no_such_file_or_directory) return "missing";
  return "read_error";
}

void StreamHealth::failed(const io::StoredStream& stream, const io::StoredFile& file,
                          std::uint32_t extent, std::error_code error) {
  const std::string_view cause = cause_of(error);
  metrics_
      .counter("chunkd_block_failures_total",
               "GetStream jobs that ended on a failed extent read, by cause.",
               "cause=\"" + std::string(cause) + "\"")
      .inc();
  auto it = streams_.find(stream.id);
  if (it == streams_.end() || it->second.version != stream.version) {
    if (it == streams_.end()) prune();  // a new entry: drop those of gone streams first
    it = streams_.insert_or_assign(stream.id, Entry{stream.version, std::nullopt, {}}).first;
  }
  Entry& entry = it->second;
  if (cause != "read_error" && !entry.failure) {
    entry.failure = Failure{cause == "missing" ? "missing" : "corrupt", file.file_id, extent,
                            std::string(cause)};
  }
  log_failure(entry, stream, file, extent, cause, error);
}

void StreamHealth::log_failure(Entry& entry, const io::StoredStream& stream,
                               const io::StoredFile& file, std::uint32_t extent,
                               std::string_view cause, const std::error_code& error) {
  const std::uint64_t now = clock_.now_ms();
  auto [log, first] = entry.logs.try_emplace(file.file_id);
  if (!first && now - log->second.last_logged_ms < log_interval_ms_) {
    log->second.unlogged++;
    return;
  }
  const std::uint64_t unlogged = log->second.unlogged;
  log->second = FileLog{now, 0};
  std::string more;
  if (unlogged != 0) {
    more = "; " + std::to_string(unlogged) + " more failures of this file since the last report";
  }
  LOG_WARN("data", "stream %s version %llu file %u extent %u: %.*s (%s; blob %s)%s",
           stream.id.c_str(), static_cast<unsigned long long>(stream.version),
           static_cast<unsigned>(file.file_id), static_cast<unsigned>(extent),
           static_cast<int>(cause.size()), cause.data(), error.message().c_str(),
           file.digest.c_str(), more.c_str());
}

std::optional<StreamHealth::Failure> StreamHealth::health(const io::StoredStream& stream) const {
  auto it = streams_.find(stream.id);
  if (it == streams_.end() || it->second.version != stream.version) return std::nullopt;
  return it->second.failure;
}

std::size_t StreamHealth::unhealthy_streams() {
  prune();
  std::size_t n = 0;
  for (const auto& [id, entry] : streams_) n += entry.failure ? 1u : 0u;
  return n;
}

void StreamHealth::prune() {
  for (auto it = streams_.begin(); it != streams_.end();) {
    StreamSnapshot current = catalog_.find(it->first);
    if (!current || current->version != it->second.version) {
      it = streams_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace chunkd::engine

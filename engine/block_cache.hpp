// The block cache: verified extents of content-store blobs, shared by every request for them.
//
// An extent is the piece of a file the ingest manifest hashed: extent `i` of a file covers bytes
// [i * extent_bytes, min(size, (i + 1) * extent_bytes)) and its XXH3-64 is `manifest[i]`
// (io::StoredFile; extent_bytes 0 means kDefaultExtentBytes). Entries are keyed by
// (digest, extent index), so streams and versions sharing content share cached bytes, and
// devices using different block sizes slice the same extents.
//
// Model: LevelDB's Cache. get() returns a pinned, ref-counted Handle; the bytes stay valid and
// unevictable while any Handle to them lives. Unpinned entries sit in an LRU bounded by
// `capacity_bytes` (each entry is charged its buffer size, extent_bytes). A miss reads the extent
// with the io::FileReader into a buffer taken from a free list (no malloc per miss once warm);
// concurrent misses on one extent share that read (a waiter list). A completed read is checked
// against the manifest: a mismatch (or the blob being shorter than recorded) fails every waiter
// with CacheError::ManifestMismatch / ShortRead, is counted, and is not cached. A read error fails
// every waiter with the reader's error; nothing is cached.
//
// Memory bound (decision): a miss first evicts unpinned entries to fit within `capacity_bytes`.
// When pinned and reading entries alone fill the capacity, the miss may still allocate up to
// `overcommit_bytes` beyond it (the scheduler pins only a bounded number of extents); past that,
// get()/prefetch() fail at once with std::errc::no_buffer_space and the caller retries once a pin
// is released (or answers RequestThrottled). Bytes allocated, cached plus free-listed plus
// reading, never exceed capacity_bytes + overcommit_bytes.
//
// Blob files: opened lazily (O_RDONLY | O_CLOEXEC) at blob_path(data_dir, digest) and kept in an
// LRU of at most `max_open_files` descriptors. open() runs on the loop thread: it is one local
// open per cold blob, cached afterwards. A descriptor evicted while a read uses it is closed when
// that read completes, so at most max_open_files + reads in flight descriptors are open. A blob
// that is absent while options.missing_blob says it is being filled (the content bucket) fails
// the miss with resource_unavailable_try_again (transient), never with wrong bytes.
//
// Thread: loop thread only; callbacks run on the loop thread, never inside get()/prefetch().
// Handles must be released before the cache is destroyed. Destroying the cache with reads in
// flight is safe: their callbacks are dropped and their buffers freed when the reader reports.
// REQUIRES: options.max_open_files >= 1 (engine/delivery_options.hpp); asserted at construction.
//
// Metrics: chunkd_cache_hits_total, chunkd_cache_misses_total (get() calls that found the extent
// absent), chunkd_cache_evictions_total, chunkd_cache_bytes (bytes charged to cached and reading
// entries), chunkd_cache_manifest_mismatch_total, chunkd_cache_read_errors_total,
// chunkd_cache_prefetches_total (reads started by prefetch()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>

#include "engine/delivery_options.hpp"
#include "engine/metrics.hpp"
#include "io/file_reader.hpp"
#include "io/registry_store.hpp"

namespace chunkd::engine {

inline constexpr std::uint32_t kDefaultExtentBytes = 256u << 10;

enum class CacheError {
  ManifestMismatch = 1,  // the bytes read do not hash to the manifest entry
  ShortRead,             // the blob ended before the extent did
  NoManifestEntry,       // extent index past the manifest or past the file
  Closed,                // the cache was shut down
};
const std::error_category& cache_error_category();
std::error_code make_error_code(CacheError e);

class BlockCache {
  struct Entry;
  struct ReadState;

 public:
  // A pinned extent. Copying adds a pin; destroying or reset() releases it. Empty when default
  // constructed or moved from.
  class Handle {
   public:
    Handle() = default;
    Handle(const Handle& other);
    Handle(Handle&& other) noexcept;
    Handle& operator=(Handle other) noexcept;
    ~Handle() { reset(); }

    explicit operator bool() const { return entry_ != nullptr; }
    std::span<const std::byte> bytes() const;  // the extent (short for a file's last extent)
    std::uint32_t extent_index() const;
    void reset();

   private:
    friend class BlockCache;
    Handle(BlockCache* cache, Entry* entry);
    BlockCache* cache_ = nullptr;
    Entry* entry_ = nullptr;
  };

  using Callback = std::function<void(std::error_code error, Handle handle)>;

  BlockCache(io::FileReader& reader, Metrics& metrics, BlockCacheOptions options);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // Extent geometry of `file` (its extent size, never 0; and its extent count).
  static std::uint32_t extent_bytes(const io::StoredFile& file);
  static std::uint64_t extent_count(const io::StoredFile& file);

  // Hit: returns a pinned handle; `done` is dropped. Miss: returns an empty handle and either
  // starts or joins the read (`error` cleared; `done` runs later with the handle or the error) or
  // cannot start it (`error` set: no_buffer_space, too_many_files_open, the reader's refusal, an
  // open() error, NoManifestEntry; `done` is dropped).
  Handle get(const io::StoredFile& file, std::uint32_t extent, std::error_code& error,
             Callback done);
  // A pinned handle when cached (counted as a hit), else empty (not counted). Never reads.
  Handle lookup(const io::StoredFile& file, std::uint32_t extent);
  // Starts a read when the extent is neither cached nor being read; the result is cached unpinned.
  // Returns the error that prevented starting it, or {} (also when there was nothing to do).
  std::error_code prefetch(const io::StoredFile& file, std::uint32_t extent);
  bool contains(const io::StoredFile& file, std::uint32_t extent) const;
  bool reading(const io::StoredFile& file, std::uint32_t extent) const;

  // Refuses new reads (CacheError::Closed) and fails every waiter with Closed. Idempotent.
  void close();

  std::size_t reads_in_flight() const { return reads_in_flight_; }
  std::size_t charged_bytes() const { return charged_bytes_; }      // cached + reading
  std::size_t allocated_bytes() const { return allocated_bytes_; }  // + free-listed
  std::size_t pinned_entries() const { return pinned_entries_; }
  std::size_t cached_entries() const;  // ready entries
  std::size_t open_files() const;
  // Recounts every entry (O(entries)) and aborts when the counters above, the LRU or the memory
  // bound disagree with them: charged == sum of cached and reading extents' buffers <= allocated
  // <= capacity_bytes + overcommit_bytes; pinned == entries with refs > 0. For tests and checks.
  void check_invariants() const;

 private:
  struct Impl;
  friend struct Impl;
  void unpin(Entry* entry);
  std::unique_ptr<Impl> impl_;
  std::size_t reads_in_flight_ = 0;
  std::size_t charged_bytes_ = 0;
  std::size_t allocated_bytes_ = 0;
  std::size_t pinned_entries_ = 0;
};

}  // namespace chunkd::engine

template <>
struct std::is_error_code_enum<chunkd::engine::CacheError> : std::true_type {};

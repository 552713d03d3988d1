#include "engine/block_cache.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <list>
#include <map>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/assert.hpp"
#include "engine/content_store.hpp"

namespace chunkd::engine {
namespace {

class CacheErrorCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "chunkd.cache"; }
  std::string message(int value) const override {
    switch (static_cast<CacheError>(value)) {
      case CacheError::ManifestMismatch:
        return "extent does not match the stream's manifest";
      case CacheError::ShortRead:
        return "blob is shorter than the stream recorded";
      case CacheError::NoManifestEntry:
        return "extent index past the file or its manifest";
      case CacheError::Closed:
        return "block cache closed";
    }
    return "unknown block cache error";
  }
};

// The digest (a 32-hex-digit string) is itself hashed to a 128-bit key, so lookups never allocate
// and any digest spelling works.
struct BlobKey {
  std::uint64_t low = 0;
  std::uint64_t high = 0;
  bool operator==(const BlobKey&) const = default;
};

BlobKey blob_key(const std::string& digest) {
  XXH128_hash_t h = XXH3_128bits(digest.data(), digest.size());
  return BlobKey{h.low64, h.high64};
}

struct ExtentKey {
  BlobKey blob;
  std::uint32_t index = 0;
  bool operator==(const ExtentKey&) const = default;
};

struct BlobKeyHash {
  std::size_t operator()(const BlobKey& k) const noexcept {
    return static_cast<std::size_t>(k.low);
  }
};
struct ExtentKeyHash {
  std::size_t operator()(const ExtentKey& k) const noexcept {
    return static_cast<std::size_t>(k.blob.low ^ (k.index * 0x9E3779B97F4A7C15ull));
  }
};

struct OpenFile {
  explicit OpenFile(int descriptor) : fd(descriptor) {}
  ~OpenFile() {
    if (fd >= 0) ::close(fd);
  }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  int fd;
};

using Buffer = std::unique_ptr<std::byte[]>;

}  // namespace

const std::error_category& cache_error_category() {
  static const CacheErrorCategory category;
  return category;
}

std::error_code make_error_code(CacheError e) {
  return {static_cast<int>(e), cache_error_category()};
}

// One read in flight. Co-owned by the entry and the reader's callback, so the buffer and the
// descriptor outlive the cache when it is destroyed first (`cache` is then null).
struct BlockCache::ReadState {
  BlockCache* cache = nullptr;
  Entry* entry = nullptr;
  Buffer buffer;
  std::size_t buffer_bytes = 0;
  std::size_t want_bytes = 0;
  std::shared_ptr<OpenFile> file;
  bool starting = true;  // inside reader.read(): a completion now is synchronous
  bool finished_early = false;
  std::error_code early_error;
  std::size_t early_bytes = 0;
};

namespace {
// Intrusive LRU links: pinning and unpinning move an entry without allocating.
struct LruLink {
  LruLink* prev = this;
  LruLink* next = this;
  void unlink() {
    prev->next = next;
    next->prev = prev;
    prev = next = this;
  }
  void insert_before(LruLink* at) {
    prev = at->prev;
    next = at;
    at->prev->next = this;
    at->prev = this;
  }
};
}  // namespace

struct BlockCache::Entry : LruLink {
  ExtentKey key;
  std::uint64_t expected_hash = 0;
  Buffer buffer;
  std::size_t buffer_bytes = 0;  // charged
  std::size_t length = 0;        // valid bytes
  std::uint32_t refs = 0;
  bool ready = false;
  bool in_lru = false;
  std::vector<Callback> waiters;
  std::shared_ptr<ReadState> read;
};

struct BlockCache::Impl {
  Impl(BlockCache& owner, io::FileReader& file_reader, Metrics& m, BlockCacheOptions o)
      : self(owner),
        reader(file_reader),
        options(std::move(o)),
        hits(m.counter("chunkd_cache_hits_total", "Block cache lookups served from memory")),
        misses(m.counter("chunkd_cache_misses_total",
                         "Block cache lookups that started or joined an extent read")),
        evictions(
            m.counter("chunkd_cache_evictions_total", "Extents evicted from the block cache")),
        mismatches(m.counter("chunkd_cache_manifest_mismatch_total",
                             "Extent reads that did not match the stream's manifest")),
        read_errors(m.counter("chunkd_cache_read_errors_total", "Extent reads that failed")),
        prefetches(m.counter("chunkd_cache_prefetches_total", "Extent reads started ahead of use")),
        bytes(m.gauge("chunkd_cache_bytes", "Bytes held by cached and reading extents")) {
    CHUNKD_ASSERT(options.max_open_files >= 1);
  }

  BlockCache& self;
  io::FileReader& reader;
  BlockCacheOptions options;
  Counter& hits;
  Counter& misses;
  Counter& evictions;
  Counter& mismatches;
  Counter& read_errors;
  Counter& prefetches;
  Gauge& bytes;

  std::unordered_map<ExtentKey, std::unique_ptr<Entry>, ExtentKeyHash> entries;
  LruLink lru;  // unpinned ready entries; lru.next is the least recently used
  std::size_t ready_entries = 0;

  struct FileSlot {
    std::shared_ptr<OpenFile> file;
    std::list<BlobKey>::iterator lru_it;
  };
  std::unordered_map<BlobKey, FileSlot, BlobKeyHash> files;
  std::list<BlobKey> file_lru;  // front is the least recently used

  std::map<std::size_t, std::vector<Buffer>> free_buffers;
  bool closed = false;

  std::size_t limit_bytes() const { return options.capacity_bytes + options.overcommit_bytes; }
  void update_gauge() { bytes.set(static_cast<double>(self.charged_bytes_)); }

  Entry* find(const ExtentKey& key) const {
    auto it = entries.find(key);
    return it == entries.end() ? nullptr : it->second.get();
  }

  void pin(Entry* e) {
    if (e->refs++ == 0) {
      self.pinned_entries_++;
      if (e->in_lru) {
        e->unlink();
        e->in_lru = false;
      }
    }
  }

  void release_buffer(Buffer buffer, std::size_t size) {
    auto& list = free_buffers[size];
    if (list.size() < options.max_free_buffers && self.allocated_bytes_ <= options.capacity_bytes) {
      list.push_back(std::move(buffer));
    } else {
      buffer.reset();
      self.allocated_bytes_ -= size;
    }
  }

  void evict(Entry* e) {
    CHUNKD_ASSERT(e->ready && e->refs == 0 && e->in_lru);
    CHUNKD_ASSERT(self.charged_bytes_ >= e->buffer_bytes);
    e->unlink();
    e->in_lru = false;
    evictions.inc();
    ready_entries--;
    self.charged_bytes_ -= e->buffer_bytes;
    release_buffer(std::move(e->buffer), e->buffer_bytes);
    const ExtentKey key = e->key;
    entries.erase(key);  // destroys e
  }

  void trim(std::size_t need_bytes) {
    while (lru.next != &lru && self.charged_bytes_ + need_bytes > options.capacity_bytes) {
      evict(static_cast<Entry*>(lru.next));
    }
  }

  Buffer take_buffer(std::size_t size, std::error_code& error) {
    trim(size);
    if (self.charged_bytes_ + size > limit_bytes()) {
      error = std::make_error_code(std::errc::no_buffer_space);
      return nullptr;
    }
    auto& same = free_buffers[size];
    if (!same.empty()) {
      Buffer b = std::move(same.back());
      same.pop_back();
      self.charged_bytes_ += size;
      CHUNKD_ASSERT(self.charged_bytes_ <= self.allocated_bytes_);
      return b;
    }
    // Make room among free buffers of other sizes before allocating.
    for (auto it = free_buffers.begin();
         it != free_buffers.end() && self.allocated_bytes_ + size > limit_bytes(); ++it) {
      while (!it->second.empty() && self.allocated_bytes_ + size > limit_bytes()) {
        it->second.pop_back();
        self.allocated_bytes_ -= it->first;
      }
    }
    if (self.allocated_bytes_ + size > limit_bytes()) {
      error = std::make_error_code(std::errc::no_buffer_space);
      return nullptr;
    }
    Buffer b(new (std::nothrow) std::byte[size]);
    if (!b) {
      error = std::make_error_code(std::errc::not_enough_memory);
      return nullptr;
    }
    self.allocated_bytes_ += size;
    self.charged_bytes_ += size;
    CHUNKD_ASSERT(self.charged_bytes_ <= self.allocated_bytes_ &&
                  self.allocated_bytes_ <= limit_bytes());
    return b;
  }

  std::shared_ptr<OpenFile> open_blob(const std::string& digest, const BlobKey& key,
                                      std::error_code& error) {
    auto it = files.find(key);
    if (it != files.end()) {
      file_lru.splice(file_lru.end(), file_lru, it->second.lru_it);
      return it->second.file;
    }
    while (files.size() >= options.max_open_files && !file_lru.empty()) {
      files.erase(file_lru.front());  // a read still using it keeps it open until it completes
      file_lru.pop_front();
    }
    std::string path = blob_path(options.data_dir, digest);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      error = std::error_code(errno, std::generic_category());
      return nullptr;
    }
    auto file = std::make_shared<OpenFile>(fd);
    file_lru.push_back(key);
    files.emplace(key, FileSlot{file, std::prev(file_lru.end())});
    return file;
  }

  // Validates the extent and fills its key; NoManifestEntry when out of range.
  static std::error_code locate(const io::StoredFile& file, std::uint32_t extent, ExtentKey& key) {
    if (extent >= BlockCache::extent_count(file) || extent >= file.manifest.size()) {
      return CacheError::NoManifestEntry;
    }
    key = ExtentKey{blob_key(file.digest), extent};
    return {};
  }

  // Starts reading an extent that has no entry. Returns the new entry (reading, or ready when the
  // reader completed synchronously), or null with `error` set.
  Entry* start_read(const io::StoredFile& file, const ExtentKey& key, std::error_code& error) {
    if (closed) {
      error = CacheError::Closed;
      return nullptr;
    }
    const std::uint64_t extent_size = BlockCache::extent_bytes(file);
    const std::uint64_t offset = std::uint64_t{key.index} * extent_size;
    const std::size_t want =
        static_cast<std::size_t>(std::min(extent_size, file.size_bytes - offset));
    const std::size_t buffer_size = static_cast<std::size_t>(extent_size);

    std::shared_ptr<OpenFile> blob = open_blob(file.digest, key.blob, error);
    if (!blob) {
      if (error == std::errc::no_such_file_or_directory && options.missing_blob &&
          options.missing_blob(file.digest, file.size_bytes)) {
        error = std::make_error_code(std::errc::resource_unavailable_try_again);
      }
      return nullptr;
    }
    Buffer buffer = take_buffer(buffer_size, error);
    if (!buffer) return nullptr;

    auto owned = std::make_unique<Entry>();
    Entry* e = owned.get();
    e->key = key;
    e->expected_hash = file.manifest[key.index];
    e->buffer_bytes = buffer_size;
    auto read = std::make_shared<ReadState>();
    read->cache = &self;
    read->entry = e;
    read->buffer = std::move(buffer);
    read->buffer_bytes = buffer_size;
    read->want_bytes = want;
    read->file = blob;
    e->read = read;
    entries.emplace(key, std::move(owned));
    self.reads_in_flight_++;
    update_gauge();

    std::span<std::byte> target(read->buffer.get(), want);
    reader.read(blob->fd, offset, target, [read](std::error_code err, std::size_t n) {
      if (read->starting) {
        read->finished_early = true;
        read->early_error = err;
        read->early_bytes = n;
        return;
      }
      if (read->cache == nullptr) return;  // the cache is gone: drop buffer and descriptor
      read->cache->impl_->complete(read, err, n);
    });
    read->starting = false;
    if (read->finished_early) {
      // The reader answered inside read(): there are no waiters yet, so the caller gets the
      // outcome directly.
      error = complete(read, read->early_error, read->early_bytes);
      if (error) return nullptr;
      Entry* now = find(key);
      if (now == nullptr) error = std::make_error_code(std::errc::no_buffer_space);
      return now;
    }
    return e;
  }

  std::error_code complete(const std::shared_ptr<ReadState>& read, std::error_code err,
                           std::size_t n) {
    Entry* e = read->entry;
    CHUNKD_ASSERT(e != nullptr && !e->ready && self.reads_in_flight_ > 0);
    self.reads_in_flight_--;
    read->file.reset();
    e->read.reset();
    if (!err && n < read->want_bytes) {
      err = CacheError::ShortRead;
      mismatches.inc();
    } else if (!err && XXH3_64bits(read->buffer.get(), n) != e->expected_hash) {
      err = CacheError::ManifestMismatch;
      mismatches.inc();
    } else if (err) {
      read_errors.inc();
    }
    if (err) {
      std::vector<Callback> waiters = std::move(e->waiters);
      self.charged_bytes_ -= e->buffer_bytes;
      release_buffer(std::move(read->buffer), read->buffer_bytes);
      const ExtentKey key = e->key;
      entries.erase(key);  // before the callbacks, so a retry starts a fresh read
      update_gauge();
      for (auto& w : waiters) w(err, Handle());
      return err;
    }
    e->buffer = std::move(read->buffer);
    e->length = n;
    e->ready = true;
    ready_entries++;
    std::vector<Callback> waiters = std::move(e->waiters);
    Handle guard(&self, e);  // keeps the entry while callbacks run; then it joins the LRU
    for (auto& w : waiters) w({}, guard);
    return {};
  }
};

// ---- Handle ----

BlockCache::Handle::Handle(BlockCache* cache, Entry* entry) : cache_(cache), entry_(entry) {
  cache_->impl_->pin(entry_);
}

BlockCache::Handle::Handle(const Handle& other) : cache_(other.cache_), entry_(other.entry_) {
  if (entry_ != nullptr) {
    CHUNKD_ASSERT(entry_->refs > 0);  // a live handle already pins it
    entry_->refs++;
  }
}

BlockCache::Handle::Handle(Handle&& other) noexcept
    : cache_(std::exchange(other.cache_, nullptr)), entry_(std::exchange(other.entry_, nullptr)) {}

BlockCache::Handle& BlockCache::Handle::operator=(Handle other) noexcept {
  std::swap(cache_, other.cache_);
  std::swap(entry_, other.entry_);
  return *this;
}

std::span<const std::byte> BlockCache::Handle::bytes() const {
  CHUNKD_ASSERT(entry_ != nullptr && entry_->ready);
  return {entry_->buffer.get(), entry_->length};
}

std::uint32_t BlockCache::Handle::extent_index() const {
  CHUNKD_ASSERT(entry_ != nullptr);
  return entry_->key.index;
}

void BlockCache::Handle::reset() {
  if (entry_ != nullptr) {
    cache_->unpin(entry_);
    entry_ = nullptr;
    cache_ = nullptr;
  }
}

// ---- BlockCache ----

BlockCache::BlockCache(io::FileReader& reader, Metrics& metrics, BlockCacheOptions options)
    : impl_(std::make_unique<Impl>(*this, reader, metrics, std::move(options))) {}

BlockCache::~BlockCache() {
  CHUNKD_ASSERT(pinned_entries_ == 0);  // every Handle is released before the cache goes
  for (auto& [key, e] : impl_->entries) {
    if (e->read) {
      e->read->cache = nullptr;  // the callback frees buffer and descriptor when it runs
      e->read->entry = nullptr;
    }
  }
  impl_->bytes.set(0);
}

std::uint32_t BlockCache::extent_bytes(const io::StoredFile& file) {
  return file.extent_bytes == 0 ? kDefaultExtentBytes : file.extent_bytes;
}

std::uint64_t BlockCache::extent_count(const io::StoredFile& file) {
  const std::uint64_t e = extent_bytes(file);
  return (file.size_bytes + e - 1) / e;
}

void BlockCache::unpin(Entry* e) {
  CHUNKD_ASSERT(e->refs > 0 && pinned_entries_ > 0);
  if (--e->refs > 0) return;
  pinned_entries_--;
  e->insert_before(&impl_->lru);  // most recently used at the back
  e->in_lru = true;
  impl_->trim(0);
  impl_->update_gauge();
}

BlockCache::Handle BlockCache::get(const io::StoredFile& file, std::uint32_t extent,
                                   std::error_code& error, Callback done) {
  error.clear();
  ExtentKey key;
  if ((error = Impl::locate(file, extent, key))) return {};
  if (Entry* e = impl_->find(key)) {
    if (e->ready) {
      impl_->hits.inc();
      return Handle(this, e);
    }
    impl_->misses.inc();
    e->waiters.push_back(std::move(done));
    return {};
  }
  impl_->misses.inc();
  Entry* e = impl_->start_read(file, key, error);
  if (e == nullptr) return {};
  if (e->ready) return Handle(this, e);  // the reader completed synchronously
  e->waiters.push_back(std::move(done));
  return {};
}

BlockCache::Handle BlockCache::lookup(const io::StoredFile& file, std::uint32_t extent) {
  ExtentKey key;
  if (Impl::locate(file, extent, key)) return {};
  Entry* e = impl_->find(key);
  if (e == nullptr || !e->ready) return {};
  impl_->hits.inc();
  return Handle(this, e);
}

std::error_code BlockCache::prefetch(const io::StoredFile& file, std::uint32_t extent) {
  ExtentKey key;
  if (auto error = Impl::locate(file, extent, key)) return error;
  if (impl_->find(key) != nullptr) return {};
  std::error_code error;
  if (impl_->start_read(file, key, error) != nullptr) impl_->prefetches.inc();
  return error;
}

bool BlockCache::contains(const io::StoredFile& file, std::uint32_t extent) const {
  ExtentKey key;
  if (Impl::locate(file, extent, key)) return false;
  Entry* e = impl_->find(key);
  return e != nullptr && e->ready;
}

bool BlockCache::reading(const io::StoredFile& file, std::uint32_t extent) const {
  ExtentKey key;
  if (Impl::locate(file, extent, key)) return false;
  Entry* e = impl_->find(key);
  return e != nullptr && !e->ready;
}

void BlockCache::close() {
  if (impl_->closed) return;
  impl_->closed = true;
  std::vector<Callback> failed;
  for (auto& [key, e] : impl_->entries) {
    for (auto& w : e->waiters) failed.push_back(std::move(w));
    e->waiters.clear();
  }
  for (auto& w : failed) w(CacheError::Closed, Handle());
}

std::size_t BlockCache::cached_entries() const { return impl_->ready_entries; }

void BlockCache::check_invariants() const {
  std::size_t charged = 0;
  std::size_t pinned = 0;
  std::size_t ready = 0;
  std::size_t reading = 0;
  for (const auto& [key, e] : impl_->entries) {
    CHUNKD_ASSERT(key == e->key);
    charged += e->buffer_bytes;
    if (e->refs > 0) pinned++;
    CHUNKD_ASSERT(e->in_lru == (e->ready && e->refs == 0));
    if (e->ready) {
      ready++;
      CHUNKD_ASSERT(e->buffer != nullptr && e->length <= e->buffer_bytes && !e->read);
    } else {
      reading++;
      CHUNKD_ASSERT(e->refs == 0 && e->read != nullptr);
    }
  }
  CHUNKD_ASSERT(charged == charged_bytes_);
  CHUNKD_ASSERT(pinned == pinned_entries_);
  CHUNKD_ASSERT(ready == impl_->ready_entries);
  CHUNKD_ASSERT(reading == reads_in_flight_);
  CHUNKD_ASSERT(charged_bytes_ <= allocated_bytes_ && allocated_bytes_ <= impl_->limit_bytes());
  std::size_t unpinned = 0;
  for (const LruLink* l = impl_->lru.next; l != &impl_->lru; l = l->next) unpinned++;
  CHUNKD_ASSERT(unpinned + pinned == ready);
}
std::size_t BlockCache::open_files() const { return impl_->files.size(); }

}  // namespace chunkd::engine

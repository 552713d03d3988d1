#include "engine/block_cache.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "engine/metrics.hpp"
#include "engine/reply_errors.hpp"
#include "tests/engine/fakes.hpp"

namespace chunkd::engine {
namespace {

using testing::FakeReader;
using testing::TempDir;

constexpr std::uint32_t kExtent = 4096;

struct Result {
  bool called = false;
  std::error_code error;
  BlockCache::Handle handle;
};

class BlockCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    reader_ = std::make_unique<FakeReader>(&loop_);
    content_ = testing::pattern_bytes(8 * kExtent + 1000, 7);  // 9 extents, the last short
    file_ = testing::make_blob(dir_.path(), content_, kExtent);
  }
  void TearDown() override {
    cache_.reset();
    bool closed = false;
    reader_->close([&] { closed = true; });
    EXPECT_TRUE(testing::run_until(&loop_, [&] { return closed; }));
    reader_.reset();
    EXPECT_EQ(testing::drain_and_close(&loop_), 0);
  }

  BlockCache& make_cache(std::size_t capacity_extents, std::size_t overcommit_extents = 0,
                         std::size_t max_open_files = 8) {
    BlockCacheOptions o;
    o.data_dir = dir_.path();
    o.capacity_bytes = capacity_extents * kExtent;
    o.overcommit_bytes = overcommit_extents * kExtent;
    o.max_open_files = max_open_files;
    cache_ = std::make_unique<BlockCache>(*reader_, metrics_, o);
    return *cache_;
  }

  // get() that records the callback's outcome into `r`.
  BlockCache::Handle get(std::uint32_t extent, Result& r, std::error_code& error,
                         const io::StoredFile* file = nullptr) {
    return cache_->get(file != nullptr ? *file : file_, extent, error,
                       [&r](std::error_code e, BlockCache::Handle h) {
                         r.called = true;
                         r.error = e;
                         r.handle = std::move(h);
                       });
  }

  // Reads extent `i` to completion and returns its handle.
  BlockCache::Handle load(std::uint32_t extent) {
    Result r;
    std::error_code error;
    BlockCache::Handle h = get(extent, r, error);
    if (h) return h;
    EXPECT_FALSE(error) << error.message();
    EXPECT_TRUE(testing::run_until(&loop_, [&] { return r.called; }));
    EXPECT_FALSE(r.error) << r.error.message();
    return std::move(r.handle);
  }

  std::span<const std::byte> expected(std::uint32_t extent) const {
    std::size_t off = std::size_t{extent} * kExtent;
    return std::span<const std::byte>(content_).subspan(
        off, std::min<std::size_t>(kExtent, content_.size() - off));
  }

  std::uint64_t counter(const char* name) const { return metrics_.counter_value(name); }

  uv_loop_t loop_{};
  TempDir dir_;
  Metrics metrics_;
  std::unique_ptr<FakeReader> reader_;
  std::unique_ptr<BlockCache> cache_;
  std::vector<std::byte> content_;
  io::StoredFile file_;
};

bool same(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

TEST_F(BlockCacheTest, MissReadsThenHitServesFromMemory) {
  auto& cache = make_cache(4);
  Result r;
  std::error_code error;
  EXPECT_FALSE(get(2, r, error));
  EXPECT_FALSE(error);
  EXPECT_FALSE(r.called) << "callbacks never run inside get()";
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return r.called; }));
  ASSERT_FALSE(r.error);
  ASSERT_TRUE(r.handle);
  EXPECT_EQ(r.handle.extent_index(), 2u);
  EXPECT_TRUE(same(r.handle.bytes(), expected(2)));
  r.handle.reset();

  Result unused;
  BlockCache::Handle hit = get(2, unused, error);
  ASSERT_TRUE(hit);
  EXPECT_TRUE(same(hit.bytes(), expected(2)));
  EXPECT_EQ(reader_->reads_started, 1u);
  EXPECT_EQ(counter("chunkd_cache_misses_total"), 1u);
  EXPECT_EQ(counter("chunkd_cache_hits_total"), 1u);
  EXPECT_EQ(cache.charged_bytes(), kExtent);
  EXPECT_EQ(metrics_.gauge("chunkd_cache_bytes", "").value(), kExtent);
}

TEST_F(BlockCacheTest, ConcurrentMissesShareOneRead) {
  make_cache(4);
  reader_->hold = true;
  Result a, b, c;
  std::error_code error;
  EXPECT_FALSE(get(1, a, error));
  EXPECT_FALSE(get(1, b, error));
  EXPECT_FALSE(get(1, c, error));
  EXPECT_TRUE(cache_->reading(file_, 1));
  EXPECT_EQ(reader_->reads_started, 1u);
  reader_->release();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return a.called && b.called && c.called; }));
  for (Result* r : {&a, &b, &c}) {
    ASSERT_FALSE(r->error);
    EXPECT_TRUE(same(r->handle.bytes(), expected(1)));
  }
  EXPECT_EQ(reader_->reads_started, 1u);
  EXPECT_EQ(counter("chunkd_cache_misses_total"), 3u);
  EXPECT_EQ(cache_->pinned_entries(), 1u);
}

TEST_F(BlockCacheTest, EvictsLeastRecentlyUsedFirst) {
  auto& cache = make_cache(3);
  load(0).reset();
  load(1).reset();
  load(2).reset();
  cache.lookup(file_, 0).reset();  // 0 becomes the most recently used: LRU order 1, 2, 0
  load(3).reset();
  EXPECT_FALSE(cache.contains(file_, 1));
  EXPECT_TRUE(cache.contains(file_, 2));
  EXPECT_TRUE(cache.contains(file_, 0));
  EXPECT_TRUE(cache.contains(file_, 3));
  load(4).reset();
  EXPECT_FALSE(cache.contains(file_, 2));
  EXPECT_EQ(counter("chunkd_cache_evictions_total"), 2u);
  EXPECT_EQ(cache.cached_entries(), 3u);
  EXPECT_EQ(cache.charged_bytes(), 3 * kExtent);
}

TEST_F(BlockCacheTest, PinnedExtentsAreNeverEvictedAndOvercommitIsBounded) {
  auto& cache = make_cache(2, 1);
  BlockCache::Handle h0 = load(0);
  BlockCache::Handle h1 = load(1);
  BlockCache::Handle h2 = load(2);  // everything pinned: allowed into the overcommit
  EXPECT_EQ(cache.charged_bytes(), 3 * kExtent);
  Result r;
  std::error_code error;
  EXPECT_FALSE(get(3, r, error));
  EXPECT_EQ(error, std::errc::no_buffer_space);
  EXPECT_FALSE(cache.reading(file_, 3));
  EXPECT_TRUE(same(h0.bytes(), expected(0)));
  EXPECT_TRUE(same(h1.bytes(), expected(1)));

  h0.reset();  // over capacity: released at once
  EXPECT_FALSE(cache.contains(file_, 0));
  EXPECT_EQ(cache.charged_bytes(), 2 * kExtent);
  EXPECT_LE(cache.allocated_bytes(), 3 * kExtent);
  h1.reset();
  BlockCache::Handle h3 = load(3);  // evicts 1, the only unpinned entry
  EXPECT_FALSE(cache.contains(file_, 1));
  EXPECT_TRUE(cache.contains(file_, 2));
  EXPECT_TRUE(same(h3.bytes(), expected(3)));
  EXPECT_TRUE(same(h2.bytes(), expected(2)));
}

TEST_F(BlockCacheTest, CopiedHandlesKeepThePin) {
  auto& cache = make_cache(1);
  BlockCache::Handle a = load(0);
  BlockCache::Handle b = a;
  a.reset();
  EXPECT_EQ(cache.pinned_entries(), 1u);
  BlockCache::Handle moved = std::move(b);
  EXPECT_FALSE(b);  // NOLINT(bugprone-use-after-move): moved-from handles are empty
  EXPECT_EQ(cache.pinned_entries(), 1u);
  moved.reset();
  EXPECT_EQ(cache.pinned_entries(), 0u);
  EXPECT_TRUE(cache.contains(file_, 0));
}

TEST_F(BlockCacheTest, ManifestMismatchFailsEveryWaiterAndIsNotCached) {
  auto& cache = make_cache(4);
  reader_->corrupt_next();
  Result a, b;
  std::error_code error;
  get(5, a, error);
  get(5, b, error);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return a.called && b.called; }));
  EXPECT_EQ(a.error, CacheError::ManifestMismatch);
  EXPECT_EQ(b.error, CacheError::ManifestMismatch);
  EXPECT_FALSE(a.handle);
  EXPECT_FALSE(cache.contains(file_, 5));
  EXPECT_EQ(cache.charged_bytes(), 0u);
  EXPECT_EQ(counter("chunkd_cache_manifest_mismatch_total"), 1u);
  // The next request reads again (and, the disk being fine, succeeds).
  BlockCache::Handle h = load(5);
  EXPECT_TRUE(same(h.bytes(), expected(5)));
  EXPECT_EQ(reader_->reads_started, 2u);
}

TEST_F(BlockCacheTest, ShortBlobIsAMismatch) {
  make_cache(4);
  reader_->short_next(100);
  Result r;
  std::error_code error;
  get(0, r, error);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return r.called; }));
  EXPECT_EQ(r.error, CacheError::ShortRead);
  EXPECT_FALSE(cache_->contains(file_, 0));
  EXPECT_EQ(counter("chunkd_cache_manifest_mismatch_total"), 1u);
}

TEST_F(BlockCacheTest, ReadErrorReachesEveryWaiter) {
  make_cache(4);
  reader_->fail_next(std::make_error_code(std::errc::io_error));
  Result a, b;
  std::error_code error;
  get(3, a, error);
  get(3, b, error);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return a.called && b.called; }));
  EXPECT_EQ(a.error, std::errc::io_error);
  EXPECT_EQ(b.error, std::errc::io_error);
  EXPECT_FALSE(cache_->contains(file_, 3));
  EXPECT_FALSE(cache_->reading(file_, 3));
  EXPECT_EQ(counter("chunkd_cache_read_errors_total"), 1u);
  EXPECT_EQ(cache_->charged_bytes(), 0u);
}

TEST_F(BlockCacheTest, LastExtentIsShortAndIndexPastEndIsRefused) {
  make_cache(4);
  BlockCache::Handle last = load(8);
  EXPECT_EQ(last.bytes().size(), 1000u);
  EXPECT_TRUE(same(last.bytes(), expected(8)));
  Result r;
  std::error_code error;
  EXPECT_FALSE(get(9, r, error));
  EXPECT_EQ(error, CacheError::NoManifestEntry);
  EXPECT_EQ(BlockCache::extent_count(file_), 9u);
}

TEST_F(BlockCacheTest, MissingBlobFailsAtOnce) {
  make_cache(4);
  io::StoredFile ghost = file_;
  ghost.digest = "00000000000000000000000000000000";
  Result r;
  std::error_code error;
  EXPECT_FALSE(get(0, r, error, &ghost));
  EXPECT_EQ(error, std::errc::no_such_file_or_directory);
  EXPECT_EQ(reader_->reads_started, 0u);
  EXPECT_EQ(cache_->charged_bytes(), 0u);
}

TEST_F(BlockCacheTest, MissingBlobBeingFilledIsTransientThenRead) {
  BlockCacheOptions o;
  o.data_dir = dir_.path();
  o.capacity_bytes = 4 * kExtent;
  std::vector<std::pair<std::string, std::uint64_t>> asked;
  bool filling = true;
  o.missing_blob = [&](const std::string& digest, std::uint64_t size) {
    asked.emplace_back(digest, size);
    return filling;
  };
  cache_ = std::make_unique<BlockCache>(*reader_, metrics_, o);
  io::StoredFile ghost = file_;
  ghost.digest = "0123456789abcdef0123456789abcdef";
  Result r;
  std::error_code error;
  EXPECT_FALSE(get(1, r, error, &ghost));
  EXPECT_EQ(error, std::errc::resource_unavailable_try_again);
  EXPECT_TRUE(classify(error).transient) << "devices are told to retry, not failed";
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].first, ghost.digest);
  EXPECT_EQ(asked[0].second, ghost.size_bytes);
  EXPECT_EQ(reader_->reads_started, 0u);
  EXPECT_EQ(cache_->charged_bytes(), 0u);

  // Nobody fills it: the plain error.
  filling = false;
  EXPECT_FALSE(get(1, r, error, &ghost));
  EXPECT_EQ(error, std::errc::no_such_file_or_directory);

  // Filled: the next miss reads it like any blob, checked against the manifest.
  const std::string path = blob_path(dir_.path(), ghost.digest);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::filesystem::copy_file(blob_path(dir_.path(), file_.digest), path);
  EXPECT_FALSE(get(1, r, error, &ghost));
  EXPECT_FALSE(error) << error.message();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return r.called; }));
  ASSERT_FALSE(r.error) << r.error.message();
  EXPECT_TRUE(same(r.handle.bytes(), expected(1)));
  EXPECT_EQ(asked.size(), 2u);
}

TEST_F(BlockCacheTest, OpenDescriptorsStayBounded) {
  make_cache(16, 0, 2);
  std::vector<io::StoredFile> files;
  for (std::uint32_t i = 0; i < 5; ++i) {
    auto bytes = testing::pattern_bytes(kExtent, 100 + i);
    files.push_back(testing::make_blob(dir_.path(), bytes, kExtent, i));
  }
  for (auto& f : files) {
    Result r;
    std::error_code error;
    get(0, r, error, &f);
    ASSERT_FALSE(error);
    ASSERT_TRUE(testing::run_until(&loop_, [&] { return r.called; }));
    ASSERT_FALSE(r.error) << r.error.message();
    EXPECT_LE(cache_->open_files(), 2u);
  }
}

TEST_F(BlockCacheTest, BuffersAreRecycledOnceWarm) {
  auto& cache = make_cache(2);
  for (int round = 0; round < 3; ++round) {
    for (std::uint32_t i = 0; i < 9; ++i) load(i).reset();
  }
  EXPECT_EQ(cache.allocated_bytes(), 2 * kExtent);
  EXPECT_EQ(cache.charged_bytes(), 2 * kExtent);
}

TEST_F(BlockCacheTest, PrefetchCachesUnpinnedWithoutCallback) {
  auto& cache = make_cache(4);
  EXPECT_FALSE(cache.prefetch(file_, 6));
  EXPECT_FALSE(cache.prefetch(file_, 6));  // already reading: nothing to do
  EXPECT_EQ(reader_->reads_started, 1u);
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return cache.contains(file_, 6); }));
  EXPECT_EQ(cache.pinned_entries(), 0u);
  EXPECT_EQ(counter("chunkd_cache_prefetches_total"), 1u);
}

TEST_F(BlockCacheTest, CloseFailsWaitersAndRefusesReads) {
  auto& cache = make_cache(4);
  reader_->hold = true;
  Result r;
  std::error_code error;
  get(0, r, error);
  cache.close();
  EXPECT_TRUE(r.called);
  EXPECT_EQ(r.error, CacheError::Closed);
  Result s;
  get(1, s, error);
  EXPECT_EQ(error, CacheError::Closed);
  reader_->release();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return cache.reads_in_flight() == 0; }));
}

TEST_F(BlockCacheTest, DestroyingWithReadsInFlightDropsTheirCallbacks) {
  make_cache(4);
  reader_->hold = true;
  bool called = false;
  std::error_code error;
  cache_->get(file_, 0, error, [&](std::error_code, BlockCache::Handle) { called = true; });
  cache_.reset();
  reader_->release();
  ASSERT_TRUE(testing::run_until(&loop_, [&] { return reader_->reads_completed == 1; }));
  EXPECT_FALSE(called);
}

// The same contract over the real thread-pool reader (reads complete on libuv's pool).
TEST(BlockCacheThreadPoolTest, SharedMissesAndVerifiedBytes) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  io::FileReaderOptions ro;
  ro.backend = io::FileReaderOptions::Backend::ThreadPool;
  std::error_code error;
  auto setup = io::make_file_reader(&loop, ro);
  ASSERT_TRUE(setup) << setup.error().message();
  auto reader = std::move(setup->reader);
  TempDir dir;
  auto content = testing::pattern_bytes(3 * kExtent + 17, 9);
  io::StoredFile file = testing::make_blob(dir.path(), content, kExtent);
  Metrics metrics;
  {
    BlockCacheOptions o;
    o.data_dir = dir.path();
    o.capacity_bytes = 2 * kExtent;
    BlockCache cache(*reader, metrics, o);
    std::vector<Result> results(8);
    for (std::size_t i = 0; i < results.size(); ++i) {
      Result* r = &results[i];
      EXPECT_FALSE(cache.get(file, static_cast<std::uint32_t>(i % 4), error,
                             [r](std::error_code e, BlockCache::Handle h) {
                               r->called = true;
                               r->error = e;
                               r->handle = std::move(h);
                             }));
      ASSERT_FALSE(error) << error.message();
    }
    EXPECT_EQ(cache.reads_in_flight(), 4u) << "two waiters per extent, one read each";
    ASSERT_TRUE(testing::run_until(&loop, [&] {
      return std::all_of(results.begin(), results.end(), [](const Result& r) { return r.called; });
    }));
    for (std::size_t i = 0; i < results.size(); ++i) {
      ASSERT_FALSE(results[i].error) << results[i].error.message();
      const std::size_t off = (i % 4) * kExtent;
      const std::size_t n = std::min<std::size_t>(kExtent, content.size() - off);
      ASSERT_EQ(results[i].handle.bytes().size(), n);
      EXPECT_EQ(0, std::memcmp(results[i].handle.bytes().data(), content.data() + off, n));
    }
    EXPECT_EQ(cache.charged_bytes(), 4 * kExtent) << "all pinned: within the overcommit";
    results.clear();
    EXPECT_EQ(cache.charged_bytes(), 2 * kExtent) << "back to capacity once unpinned";
  }
  bool closed = false;
  reader->close([&] { closed = true; });
  ASSERT_TRUE(testing::run_until(&loop, [&] { return closed; }));
  reader.reset();
  EXPECT_EQ(testing::drain_and_close(&loop), 0);
}

}  // namespace
}  // namespace chunkd::engine

// Design questions about the block cache (engine/block_cache.hpp):
//  - Hit: what does serving a block from a cached extent cost (hash lookup, pin, unpin)?
//  - Miss, thread-pool reader: what does a cold extent cost end to end on this machine class
//    (uv_fs_read hand-off to the libuv thread pool, completion on the loop, XXH3-64 check), with
//    the blob on tmpfs so the disk is out of the picture?
//  - Eviction churn: with an inline (synchronous pread) reader, what does a miss cost when every
//    miss evicts the least recently used extent and recycles its buffer? Run at a 4 KiB and at the
//    default 256 KiB extent to separate bookkeeping from bytes.
// Reports items/s (extents) and bytes/s (extent bytes).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/content_store.hpp"
#include "engine/metrics.hpp"
#include "io/file_reader.hpp"

namespace {

using chunkd::engine::BlockCache;
using chunkd::engine::BlockCacheOptions;
using chunkd::engine::Metrics;

constexpr std::uint32_t kExtents = 32;

// A data_dir on tmpfs (or TMPDIR) holding one blob of kExtents extents.
struct Store {
  explicit Store(std::uint32_t extent_bytes) {
    std::string base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string pattern = base + "/chunkd-bench-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) std::abort();
    dir = buf.data();
    std::vector<unsigned char> bytes(std::size_t{extent_bytes} * kExtents);
    std::uint64_t x = 0x9E3779B97F4A7C15ull;
    for (auto& b : bytes) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      b = static_cast<unsigned char>(x);
    }
    file.size_bytes = bytes.size();
    file.digest = "0123456789abcdef0123456789abcdef";
    file.extent_bytes = extent_bytes;
    for (std::size_t off = 0; off < bytes.size(); off += extent_bytes) {
      file.manifest.push_back(XXH3_64bits(bytes.data() + off, extent_bytes));
    }
    std::string path = chunkd::engine::blob_path(dir, file.digest);
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    FILE* fp = std::fopen(path.c_str(), "wb");
    if (fp == nullptr) std::abort();
    std::fwrite(bytes.data(), 1, bytes.size(), fp);
    std::fclose(fp);
  }
  ~Store() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  std::string dir;
  chunkd::io::StoredFile file;
};

// Completes every read inside read() with pread: no hand-off, so the numbers are the cache's own.
class InlineReader final : public chunkd::io::FileReader {
 public:
  void read(int fd, std::uint64_t offset, std::span<std::byte> buffer, Callback done) override {
    std::size_t got = 0;
    while (got < buffer.size()) {
      ssize_t r =
          ::pread(fd, buffer.data() + got, buffer.size() - got, static_cast<off_t>(offset + got));
      if (r < 0) {
        done(std::error_code(errno, std::generic_category()), 0);
        return;
      }
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    done({}, got);
  }
  void close(std::function<void()> done) override { done(); }
  const char* backend_name() const override { return "inline"; }
  std::size_t in_flight() const override { return 0; }
  std::size_t queued() const override { return 0; }
};

BlockCacheOptions options(const Store& store, std::size_t capacity_extents) {
  BlockCacheOptions o;
  o.data_dir = store.dir;
  o.capacity_bytes = capacity_extents * store.file.extent_bytes;
  o.overcommit_bytes = 0;
  return o;
}

void BM_CacheHit(benchmark::State& state) {
  Store store(static_cast<std::uint32_t>(state.range(0)));
  InlineReader reader;
  Metrics metrics;
  BlockCache cache(reader, metrics, options(store, kExtents));
  std::error_code error;
  for (std::uint32_t i = 0; i < kExtents; ++i) cache.get(store.file, i, error, {}).reset();
  std::uint32_t i = 0;
  for (auto _ : state) {
    BlockCache::Handle h = cache.lookup(store.file, i++ % kExtents);
    benchmark::DoNotOptimize(h.bytes().data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}

void BM_CacheMissThreadPool(benchmark::State& state) {
  Store store(static_cast<std::uint32_t>(state.range(0)));
  uv_loop_t loop;
  uv_loop_init(&loop);
  chunkd::io::FileReaderOptions ro;
  ro.backend = chunkd::io::FileReaderOptions::Backend::ThreadPool;
  std::error_code error;
  auto setup = chunkd::io::make_file_reader(&loop, ro);
  auto reader = setup ? std::move(setup->reader) : nullptr;
  if (!reader) {
    state.SkipWithError("no thread-pool reader");
    return;
  }
  Metrics metrics;
  {
    BlockCache cache(*reader, metrics, options(store, 2));
    std::uint32_t i = 0;
    for (auto _ : state) {
      bool done = false;
      BlockCache::Handle h = cache.get(store.file, i++ % kExtents, error,
                                       [&](std::error_code, BlockCache::Handle) { done = true; });
      while (!h && !done) uv_run(&loop, UV_RUN_ONCE);
    }
    if (metrics.counter_value("chunkd_cache_hits_total") != 0)
      state.SkipWithError("unexpected hit");
  }
  reader->close([] {});
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}

void BM_CacheEvictionChurn(benchmark::State& state) {
  Store store(static_cast<std::uint32_t>(state.range(0)));
  InlineReader reader;
  Metrics metrics;
  BlockCache cache(reader, metrics, options(store, 8));
  std::error_code error;
  std::uint32_t i = 0;
  for (auto _ : state) {
    BlockCache::Handle h = cache.get(store.file, i++ % kExtents, error, {});
    benchmark::DoNotOptimize(h.bytes().data());
  }
  state.counters["evictions_per_miss"] = benchmark::Counter(
      static_cast<double>(metrics.counter_value("chunkd_cache_evictions_total")) /
      static_cast<double>(
          std::max<std::uint64_t>(1, metrics.counter_value("chunkd_cache_misses_total"))));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}

}  // namespace

BENCHMARK(BM_CacheHit)->Arg(4 << 10)->Arg(256 << 10);
BENCHMARK(BM_CacheMissThreadPool)->Arg(4 << 10)->Arg(256 << 10)->UseRealTime();
BENCHMARK(BM_CacheEvictionChurn)->Arg(4 << 10)->Arg(256 << 10);

BENCHMARK_MAIN();

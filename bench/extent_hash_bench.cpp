// Design question: which hash should the extent manifest use? Every cache miss hashes one extent
// (256 KiB by default) on the loop thread before its bytes may be served, so the hash's speed is
// part of the miss cost. Candidates: XXH3-64 (the choice), XXH3-128 (the whole-file digest), and
// the older XXH64. Reports bytes/s over one extent that stays in L2/L3, as a miss's would.
#include <benchmark/benchmark.h>
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

std::vector<unsigned char> extent(std::size_t n) {
  std::vector<unsigned char> v(n);
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<unsigned char>(x);
  }
  return v;
}

void BM_Xxh3_64(benchmark::State& state) {
  auto data = extent(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(XXH3_64bits(data.data(), data.size()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}

void BM_Xxh3_128(benchmark::State& state) {
  auto data = extent(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
    benchmark::DoNotOptimize(h.low64);
    benchmark::DoNotOptimize(h.high64);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}

void BM_Xxh64(benchmark::State& state) {
  auto data = extent(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(XXH64(data.data(), data.size(), 0));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
}

}  // namespace

BENCHMARK(BM_Xxh3_64)->Arg(256 << 10);
BENCHMARK(BM_Xxh3_128)->Arg(256 << 10);
BENCHMARK(BM_Xxh64)->Arg(256 << 10);

BENCHMARK_MAIN();

// Design question: how much faster than OpenSSL's EVP_EncodeBlock is chunkd's own base64 encoder,
// on each of its paths? JSON data replies carry the block as base64, so this is most of what a
// JSON reply costs beyond a CBOR one. Reports bytes/s of input (the block), at a common block size
// (4 KiB) and the largest (128 KiB), from a page-aligned block into a page-aligned buffer as on
// the block path. bench/README.md has the numbers.
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

#include "protocol/base64.hpp"

namespace {

namespace base64 = chunkd::protocol::base64;

constexpr std::size_t kPage = 4096;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

template <typename T>
std::unique_ptr<T[], FreeDeleter> page_buffer(std::size_t size) {
  const std::size_t rounded = (size + kPage - 1) / kPage * kPage;
  return std::unique_ptr<T[], FreeDeleter>(static_cast<T*>(std::aligned_alloc(kPage, rounded)));
}

struct Buffers {
  explicit Buffers(std::size_t size)
      : block(page_buffer<std::byte>(size)),
        text(page_buffer<char>(base64::encoded_length(size) + 1)),
        in(block.get(), size),
        out(text.get(), base64::encoded_length(size) + 1) {
    std::uint32_t x = 0x9e3779b9u;
    for (std::byte& b : in) {
      x = x * 1664525u + 1013904223u;
      b = std::byte(x >> 24);
    }
    std::memset(out.data(), 0, out.size());
  }
  std::unique_ptr<std::byte[], FreeDeleter> block;
  std::unique_ptr<char[], FreeDeleter> text;
  std::span<std::byte> in;
  std::span<char> out;
};

void finish(benchmark::State& state, std::size_t bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(bytes));
}

void BM_OpenSsl(benchmark::State& state) {
  const Buffers b(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(b.in.data());
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b.out.data()),
                                  reinterpret_cast<const unsigned char*>(b.in.data()),
                                  static_cast<int>(b.in.size()));
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, b.in.size());
}

void encode_with(benchmark::State& state, base64::Encoder encoder) {
  if (!base64::encoder_supported(encoder)) {
    state.SkipWithError("this CPU cannot run this encoder");
    return;
  }
  const Buffers b(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(b.in.data());
    const std::size_t n = base64::encode_with(encoder, b.in, b.out);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, b.in.size());
}

void BM_Scalar(benchmark::State& state) { encode_with(state, base64::Encoder::Scalar); }
void BM_Avx2(benchmark::State& state) { encode_with(state, base64::Encoder::Avx2); }

BENCHMARK(BM_OpenSsl)->Arg(4096)->Arg(131072);
BENCHMARK(BM_Scalar)->Arg(4096)->Arg(131072);
BENCHMARK(BM_Avx2)->Arg(4096)->Arg(131072);

}  // namespace

BENCHMARK_MAIN();

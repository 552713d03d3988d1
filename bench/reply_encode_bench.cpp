// Design question: does encoding a data reply cost more than moving the block's bytes?
// CBOR encode (a few header bytes + memcpy) is set beside a plain memcpy of the same block, and
// JSON encode (header + base64) beside a bare EVP_EncodeBlock of the same block. Targets: CBOR
// within 1.5x of memcpy, JSON within 1.5x of bare base64 (bench/README.md has the numbers).
// All report bytes/s of block payload.
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "protocol/base64.hpp"
#include "protocol/reply.hpp"

namespace {

using chunkd::protocol::data_reply_max_bytes;
using chunkd::protocol::encode_data_reply;
using chunkd::protocol::Format;

constexpr std::string_view kToken = "device-42-req-0001";

std::vector<std::byte> block_of(std::size_t size) {
  std::vector<std::byte> block(size);
  std::uint32_t x = 0x9e3779b9u;
  for (auto& b : block) {
    x = x * 1664525u + 1013904223u;
    b = std::byte(x >> 24);
  }
  return block;
}

void finish(benchmark::State& state, std::size_t block_bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(block_bytes));
}

// The block copied to where encode_data_reply puts it: just after the CBOR header, in the same
// buffer. (Where the copy lands matters on some CPUs: see BM_MemcpyPageAliased.)
void BM_Memcpy(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto block = block_of(size);
  std::vector<std::byte> out(data_reply_max_bytes(Format::Cbor, size, kToken.size()));
  const std::size_t header = encode_data_reply(Format::Cbor, out, kToken, 3, 0, block) - size;
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.data());
    std::memcpy(out.data() + header, block.data(), size);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

// The same copy to a destination 16 bytes past the source's offset within a 4 KiB page. Not a
// target: it shows the penalty the memcpy of some CPUs (AMD Zen with ERMS/FSRM among them) pays
// when the destination trails the source closely modulo 4 KiB, which a payload copied straight
// into a reply buffer could hit by bad luck of placement.
void BM_MemcpyPageAliased(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto block = block_of(size);
  std::vector<std::byte> buffer(size + 8192);
  const auto src = reinterpret_cast<std::uintptr_t>(block.data());
  const auto base = reinterpret_cast<std::uintptr_t>(buffer.data());
  const std::size_t skip = (src + 16 - base) & 4095u;  // (base + skip - src) % 4096 == 16
  std::byte* const dst = buffer.data() + skip;
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.data());
    std::memcpy(dst, block.data(), size);
    benchmark::DoNotOptimize(dst);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

void BM_EncodeDataCbor(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto block = block_of(size);
  std::vector<std::byte> out(data_reply_max_bytes(Format::Cbor, size, kToken.size()));
  std::uint32_t index = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.data());
    const std::size_t n = encode_data_reply(Format::Cbor, out, kToken, 3, index++ & 0xffff, block);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

void BM_Base64Bare(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto block = block_of(size);
  std::vector<std::byte> out(data_reply_max_bytes(Format::Json, size, kToken.size()));
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.data());
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(block.data()),
                                  static_cast<int>(size));
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

void BM_EncodeDataJson(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto block = block_of(size);
  std::vector<std::byte> out(data_reply_max_bytes(Format::Json, size, kToken.size()));
  std::uint32_t index = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.data());
    const std::size_t n = encode_data_reply(Format::Json, out, kToken, 3, index++ & 0xffff, block);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

// 4 KiB and 128 KiB: a common block size and the largest; 256 B, the smallest block, shows the
// fixed cost per reply.
BENCHMARK(BM_Memcpy)->Arg(256)->Arg(4096)->Arg(131072);
BENCHMARK(BM_MemcpyPageAliased)->Arg(4096)->Arg(131072);
BENCHMARK(BM_EncodeDataCbor)->Arg(256)->Arg(4096)->Arg(131072);
BENCHMARK(BM_Base64Bare)->Arg(256)->Arg(4096)->Arg(131072);
BENCHMARK(BM_EncodeDataJson)->Arg(256)->Arg(4096)->Arg(131072);

}  // namespace

BENCHMARK_MAIN();

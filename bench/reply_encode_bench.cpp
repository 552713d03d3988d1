// Design question: does encoding a data reply cost more than moving the block's bytes?
// CBOR encode (a few header bytes + memcpy) is set beside a plain memcpy of the same block to the
// same place, and JSON encode (header + base64) beside a bare base64 encode of the same block
// (chunkd's encoder; OpenSSL's EVP_EncodeBlock, which JSON replies used before, beside it).
// Targets: CBOR within 1.5x of memcpy, JSON within 1.5x of bare base64 (bench/README.md has the
// numbers). All report bytes/s of block payload.
//
// Placement is fixed, as on the block path: the source block is page-aligned (a cache extent
// slice) and the reply buffer is page-aligned (a pooled buffer). The CBOR payload is placed at
// buffer + 128 by starting the reply cbor_data_header_bytes() earlier; BM_EncodeDataCborNaive shows
// what happens when the reply simply starts at the buffer (see reply.hpp).
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>

#include "protocol/base64.hpp"
#include "protocol/reply.hpp"

namespace {

using chunkd::protocol::cbor_data_header_bytes;
using chunkd::protocol::data_reply_max_bytes;
using chunkd::protocol::encode_data_reply;
using chunkd::protocol::Format;

constexpr std::string_view kToken = "device-42-req-0001";
// The token argument, built once per request as the block path does. (Building the optional in
// the loop costs a store-forwarding stall per call with GCC 12, which copies it through the stack
// with a 1-byte store of the flag and a wider reload: about 5 ns.)
const std::optional<std::string_view> kTokenArg = kToken;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kPayloadSlot = 128;  // where the CBOR payload lands in the reply buffer

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};
using PageBuffer = std::unique_ptr<std::byte[], FreeDeleter>;

// A page-aligned buffer of at least `size` bytes.
PageBuffer page_buffer(std::size_t size) {
  const std::size_t rounded = (size + kPage - 1) / kPage * kPage;
  return PageBuffer(static_cast<std::byte*>(std::aligned_alloc(kPage, rounded)));
}

PageBuffer block_of(std::size_t size) {
  PageBuffer block = page_buffer(size);
  std::uint32_t x = 0x9e3779b9u;
  for (std::size_t k = 0; k < size; ++k) {
    x = x * 1664525u + 1013904223u;
    block[k] = std::byte(x >> 24);
  }
  return block;
}

// Room for any reply of `size` payload bytes, starting anywhere in the first kPayloadSlot bytes.
std::size_t reply_buffer_bytes(std::size_t size) {
  return kPayloadSlot + data_reply_max_bytes(Format::Json, size, kToken.size());
}

void finish(benchmark::State& state, std::size_t block_bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(block_bytes));
}

// The block copied to where the CBOR encoder below puts its payload.
void BM_Memcpy(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const PageBuffer block = block_of(size);
  const PageBuffer buffer = page_buffer(reply_buffer_bytes(size));
  std::memset(buffer.get(), 0, reply_buffer_bytes(size));
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.get());
    std::memcpy(buffer.get() + kPayloadSlot, block.get(), size);
    benchmark::DoNotOptimize(buffer.get());
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

void BM_EncodeDataCbor(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const PageBuffer block = block_of(size);
  const std::size_t buffer_bytes = reply_buffer_bytes(size);
  const PageBuffer buffer = page_buffer(buffer_bytes);
  std::memset(buffer.get(), 0, buffer_bytes);
  const std::span<const std::byte> payload(block.get(), size);
  std::uint32_t index = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.get());
    const std::uint32_t i = index++ & 0xffff;
    const std::size_t header = cbor_data_header_bytes(kTokenArg, 3, i, size);
    const std::size_t skip = kPayloadSlot - header;
    const std::size_t n =
        encode_data_reply(Format::Cbor, std::span(buffer.get() + skip, buffer_bytes - skip),
                          kTokenArg, 3, i, payload);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

// Not a target: the reply starts at the page-aligned buffer and has no token, so the payload lands
// 17-19 bytes past the source's page offset.
void BM_EncodeDataCborNaive(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const PageBuffer block = block_of(size);
  const std::size_t buffer_bytes = reply_buffer_bytes(size);
  const PageBuffer buffer = page_buffer(buffer_bytes);
  std::memset(buffer.get(), 0, buffer_bytes);
  const std::span<const std::byte> payload(block.get(), size);
  std::uint32_t index = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.get());
    const std::size_t n = encode_data_reply(Format::Cbor, std::span(buffer.get(), buffer_bytes),
                                            std::nullopt, 3, index++ & 0xffff, payload);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

void BM_Base64Bare(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const PageBuffer block = block_of(size);
  const PageBuffer buffer = page_buffer(reply_buffer_bytes(size));
  std::memset(buffer.get(), 0, reply_buffer_bytes(size));
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.get());
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(buffer.get()),
                                  reinterpret_cast<const unsigned char*>(block.get()),
                                  static_cast<int>(size));
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

// chunkd's encoder (base64::encode, the path encode_data_reply takes) into the same buffer.
void BM_Base64Chunkd(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const PageBuffer block = block_of(size);
  const PageBuffer buffer = page_buffer(reply_buffer_bytes(size));
  std::memset(buffer.get(), 0, reply_buffer_bytes(size));
  const std::span<const std::byte> payload(block.get(), size);
  const std::span<char> text(reinterpret_cast<char*>(buffer.get()), reply_buffer_bytes(size));
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.get());
    const std::size_t n = chunkd::protocol::base64::encode(payload, text);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

void BM_EncodeDataJson(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const PageBuffer block = block_of(size);
  const std::size_t buffer_bytes = reply_buffer_bytes(size);
  const PageBuffer buffer = page_buffer(buffer_bytes);
  std::memset(buffer.get(), 0, buffer_bytes);
  const std::span<const std::byte> payload(block.get(), size);
  std::uint32_t index = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(block.get());
    const std::size_t n = encode_data_reply(Format::Json, std::span(buffer.get(), buffer_bytes),
                                            kTokenArg, 3, index++ & 0xffff, payload);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
  finish(state, size);
}

// 4 KiB and 128 KiB: a common block size and the largest; 256 B, the smallest block, shows the
// fixed cost per reply.
BENCHMARK(BM_Memcpy)->Arg(256)->Arg(4096)->Arg(131072);
BENCHMARK(BM_EncodeDataCbor)->Arg(256)->Arg(4096)->Arg(131072);
BENCHMARK(BM_EncodeDataCborNaive)->Arg(4096)->Arg(131072);
BENCHMARK(BM_Base64Bare)->Arg(256)->Arg(4096)->Arg(131072);
BENCHMARK(BM_Base64Chunkd)->Arg(256)->Arg(4096)->Arg(131072);
BENCHMARK(BM_EncodeDataJson)->Arg(256)->Arg(4096)->Arg(131072);

}  // namespace

BENCHMARK_MAIN();

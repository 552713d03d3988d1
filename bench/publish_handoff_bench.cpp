// Design question: what does the payload copy an MQTT client makes at publish time cost, and is a
// reused packet buffer worth having? libmosquitto copies every payload into a freshly malloc'd
// packet; chunkd encodes replies into a reused buffer. This measures both hand-offs for the two
// reply sizes that matter: a 4 KiB block and a 128 KiB block (the largest), encoded as CBOR
// (header + raw bytes). Reports bytes/s of payload copied.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "protocol/reply.hpp"

namespace {

std::vector<std::byte> encoded_reply(std::size_t block_bytes) {
  std::vector<std::byte> block(block_bytes, std::byte{0x5a});
  std::vector<std::byte> out(
      chunkd::protocol::data_reply_max_bytes(chunkd::protocol::Format::Cbor, block_bytes, 16));
  std::size_t n = chunkd::protocol::encode_data_reply(chunkd::protocol::Format::Cbor, out,
                                                      "token-123", 0, 7, block);
  out.resize(n);
  return out;
}

constexpr std::size_t kPacketHeaderBytes = 128;  // fixed header + topic, roughly

void BM_CopyIntoFreshMalloc(benchmark::State& state) {
  auto reply = encoded_reply(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    auto* packet = static_cast<std::byte*>(std::malloc(kPacketHeaderBytes + reply.size()));
    std::memcpy(packet + kPacketHeaderBytes, reply.data(), reply.size());
    benchmark::DoNotOptimize(packet);
    benchmark::ClobberMemory();
    std::free(packet);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(reply.size()));
}

void BM_CopyIntoReusedBuffer(benchmark::State& state) {
  auto reply = encoded_reply(static_cast<std::size_t>(state.range(0)));
  std::vector<std::byte> packet(kPacketHeaderBytes + reply.size());
  for (auto _ : state) {
    std::memcpy(packet.data() + kPacketHeaderBytes, reply.data(), reply.size());
    benchmark::DoNotOptimize(packet.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(reply.size()));
}

}  // namespace

BENCHMARK(BM_CopyIntoFreshMalloc)->Arg(4 << 10)->Arg(128 << 10);
BENCHMARK(BM_CopyIntoReusedBuffer)->Arg(4 << 10)->Arg(128 << 10);

BENCHMARK_MAIN();

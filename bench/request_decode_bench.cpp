// Question: how much of a loop-thread's time does decoding a GetStream request cost, in JSON
// (simdjson, payload copied into a padded buffer) and in CBOR (libcbor's streaming decoder)?
// Every request yields up to 131072 bytes of blocks, so decoding should be far below the cost of
// publishing them. Reports requests/s (items) and payload bytes/s.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string_view>
#include <vector>

#include "protocol/request.hpp"

namespace {

using chunkd::protocol::decode_get_request;
using chunkd::protocol::Format;

std::vector<std::byte> bytes_of(std::string_view text) {
  std::vector<std::byte> out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

// A device library's request: no bitmap, spaces after the colons.
const std::vector<std::byte> kJsonPlain =
    bytes_of(R"({"c":"rdy-00042","s": 1,"f": 0,"l": 4096,"o": 128,"n": 32})");
// The OTA agent's request: o=0, a bitmap of the missing blocks of a 1 MiB file, n=1.
const std::vector<std::byte> kJsonBitmap =
    bytes_of(R"({"c":"rdy","f":0,"l":4096,"o":0,"n":1,"b":"0x00000000000000000000000000000000)"
             R"(f0ffffffffffffffffffffffffffffff"})");

std::vector<std::byte> cbor(std::initializer_list<unsigned> items) {
  std::vector<std::byte> out;
  for (unsigned b : items) out.push_back(static_cast<std::byte>(b));
  return out;
}

// {"c":"rdy-00042","s":1,"f":0,"l":4096,"o":128,"n":32}
const std::vector<std::byte> kCborPlain = cbor(
    {0xa6, 0x61, 'c',  0x69, 'r', 'd',  'y',  '-',  '0',  '0', '0',  '4',  '2',  0x61, 's',  0x01,
     0x61, 'f',  0x00, 0x61, 'l', 0x19, 0x10, 0x00, 0x61, 'o', 0x18, 0x80, 0x61, 'n',  0x18, 0x20});

std::vector<std::byte> cbor_with_bitmap() {
  // {"c":"rdy","f":0,"l":4096,"o":0,"n":1,"b":h'00*16 f0 ff*15'}
  std::vector<std::byte> out =
      cbor({0xa6, 0x61, 'c',  0x63, 'r',  'd',  'y', 0x61, 'f',  0x00, 0x61, 'l', 0x19,
            0x10, 0x00, 0x61, 'o',  0x00, 0x61, 'n', 0x01, 0x61, 'b',  0x58, 32});
  for (int i = 0; i < 16; ++i) out.push_back(std::byte{0x00});
  out.push_back(std::byte{0xf0});
  for (int i = 0; i < 15; ++i) out.push_back(std::byte{0xff});
  return out;
}
const std::vector<std::byte> kCborBitmap = cbor_with_bitmap();

void run(benchmark::State& state, Format format, const std::vector<std::byte>& payload) {
  if (!decode_get_request(format, payload)) {
    state.SkipWithError("the benchmark request does not decode");
    return;
  }
  for (auto _ : state) {
    auto request = decode_get_request(format, payload);
    benchmark::DoNotOptimize(request);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(payload.size()));
}

void BM_DecodeGetJson(benchmark::State& state) { run(state, Format::Json, kJsonPlain); }
void BM_DecodeGetJsonBitmap(benchmark::State& state) { run(state, Format::Json, kJsonBitmap); }
void BM_DecodeGetCbor(benchmark::State& state) { run(state, Format::Cbor, kCborPlain); }
void BM_DecodeGetCborBitmap(benchmark::State& state) { run(state, Format::Cbor, kCborBitmap); }

BENCHMARK(BM_DecodeGetJson);
BENCHMARK(BM_DecodeGetJsonBitmap);
BENCHMARK(BM_DecodeGetCbor);
BENCHMARK(BM_DecodeGetCborBitmap);

}  // namespace

BENCHMARK_MAIN();

// Fuzzes decode_get_request(Format::Json) on arbitrary bytes; the invariants are in
// get_request_fuzz.hpp.
#include "tests/fuzz/get_request_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return chunkd::fuzz::fuzz_get_request(chunkd::protocol::Format::Json, data, size);
}

// Fuzzes the device-side reply decoders (data, description, rejected; JSON and CBOR) on arbitrary
// bytes: no crash, no read past the input, no unbounded allocation. Whatever decodes must survive
// a trip through chunkd's encoders unchanged (encode → decode gives the same reply).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "protocol/device.hpp"
#include "protocol/reply.hpp"

namespace {

using namespace chunkd::protocol;

void check(bool condition) {
  if (!condition) std::abort();
}

void data_round_trip(Format format, const DataReply& reply) {
  std::optional<std::string_view> token;
  if (reply.client_token) token = *reply.client_token;
  std::vector<std::byte> out(
      data_reply_max_bytes(format, reply.payload.size(), token ? token->size() : 0));
  out.resize(
      encode_data_reply(format, out, token, reply.file_id, reply.block_index, reply.payload));
  check(!out.empty());
  const auto again = decode_data_reply(format, out);
  check(again.has_value());
  check(again->client_token == reply.client_token);
  check(again->file_id == reply.file_id && again->block_index == reply.block_index);
  check(again->length == reply.length && again->payload == reply.payload);
}

void description_round_trip(Format format, const DescriptionReply& reply) {
  std::optional<std::string_view> token;
  if (reply.client_token) token = *reply.client_token;
  const auto out = encode_description(format, token, reply.version, reply.description, reply.files);
  const auto again = decode_description(format, out);
  check(again.has_value());
  check(again->client_token == reply.client_token && again->version == reply.version);
  check(again->description == reply.description && again->files.size() == reply.files.size());
  for (std::size_t k = 0; k < reply.files.size(); ++k) {
    check(again->files[k].file_id == reply.files[k].file_id);
    check(again->files[k].size_bytes == reply.files[k].size_bytes);
  }
}

// A rejected reply whose code chunkd knows re-encodes to the same reply.
void rejected_round_trip(Format format, const RejectedReply& reply) {
  for (int c = 0; c < kErrorCodeCount; ++c) {
    const auto code = static_cast<ErrorCode>(c);
    if (to_string(code) != reply.code) continue;
    std::optional<std::string_view> token;
    if (reply.client_token) token = *reply.client_token;
    const auto again = decode_rejected(format, encode_rejected(format, token, code, reply.message));
    check(again.has_value());
    check(again->client_token == reply.client_token && again->code == reply.code);
    check(again->message == reply.message);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  for (const Format format : {Format::Json, Format::Cbor}) {
    if (const auto reply = decode_data_reply(format, in)) data_round_trip(format, *reply);
    if (const auto reply = decode_description(format, in)) description_round_trip(format, *reply);
    if (const auto reply = decode_rejected(format, in)) rejected_round_trip(format, *reply);
  }
  return 0;
}

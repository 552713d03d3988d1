// JSON requests with simdjson's DOM API and one parser per thread. simdjson reads up to
// SIMDJSON_PADDING bytes past the document, so the payload is first copied into a padded buffer
// of fixed size (kMaxRequestMessageBytes + padding, allocated once per thread).
#include <cstring>
#include <memory>
#include <string>

#include "protocol/request_internal.hpp"
#include "simdjson.h"

namespace chunkd::protocol::detail {
namespace {

constexpr std::size_t kMaxJsonDepth = 32;

struct JsonState {
  simdjson::dom::parser parser{kMaxRequestMessageBytes};
  std::unique_ptr<char[]> buffer;
  bool ready = false;
};

Value to_value(simdjson::dom::element element) {
  Value value;
  switch (element.type()) {
    case simdjson::dom::element_type::INT64: {
      std::int64_t number = 0;
      if (element.get_int64().get(number) == simdjson::SUCCESS && number >= 0) {
        value.kind = ValueKind::Unsigned;
        value.number = static_cast<std::uint64_t>(number);
      } else {
        value.kind = ValueKind::Negative;
      }
      break;
    }
    case simdjson::dom::element_type::UINT64:
      value.kind = ValueKind::Unsigned;
      if (element.get_uint64().get(value.number) != simdjson::SUCCESS) {
        value.kind = ValueKind::Float;  // unreachable: the type says uint64
      }
      break;
    case simdjson::dom::element_type::DOUBLE:
      value.kind = ValueKind::Float;
      break;
    case simdjson::dom::element_type::STRING:
      value.kind = ValueKind::Text;
      if (element.get_string().get(value.bytes) != simdjson::SUCCESS) value.kind = ValueKind::Null;
      break;
    case simdjson::dom::element_type::BOOL:
      value.kind = ValueKind::Bool;
      break;
    case simdjson::dom::element_type::NULL_VALUE:
      value.kind = ValueKind::Null;
      break;
    case simdjson::dom::element_type::ARRAY:
    case simdjson::dom::element_type::OBJECT:
      value.kind = ValueKind::Container;
      break;
  }
  return value;
}

}  // namespace

std::optional<RequestError> walk_json(std::span<const std::byte> payload, RequestBuilder& builder) {
  thread_local JsonState state;
  if (!state.ready) {
    state.buffer = std::make_unique<char[]>(kMaxRequestMessageBytes + simdjson::SIMDJSON_PADDING);
    if (state.parser.allocate(kMaxRequestMessageBytes, kMaxJsonDepth) != simdjson::SUCCESS) {
      return make_error(ErrorCode::InternalError, "JSON parser out of memory");
    }
    state.ready = true;
  }
  if (payload.size() > kMaxRequestMessageBytes) {  // the caller checks; never overrun the buffer
    return make_error(ErrorCode::InvalidRequest, "payload over 32768 bytes");
  }
  std::memcpy(state.buffer.get(), payload.data(), payload.size());
  std::memset(state.buffer.get() + payload.size(), 0, simdjson::SIMDJSON_PADDING);

  simdjson::dom::element document;
  const simdjson::error_code parse_error =
      state.parser.parse(state.buffer.get(), payload.size(), /*realloc_if_needed=*/false)
          .get(document);
  if (parse_error != simdjson::SUCCESS) {
    std::string message = "payload is not valid JSON: ";
    message.append(simdjson::error_message(parse_error));
    return make_error(ErrorCode::InvalidJson, std::move(message));
  }
  simdjson::dom::object object;
  if (document.get_object().get(object) != simdjson::SUCCESS) {
    return make_error(ErrorCode::InvalidJson, "payload is not a JSON object");
  }
  for (simdjson::dom::key_value_pair field : object) {
    builder.on_field(field_from_key(field.key), to_value(field.value));
  }
  return std::nullopt;
}

}  // namespace chunkd::protocol::detail

// CBOR requests with libcbor's streaming decoder. cbor_load() is not used on purpose: it allocates
// a tree, sizes arrays from their declared length before reading them, and frees nested items
// recursively. The streaming decoder reads one item head at a time with no allocation; this walker
// keeps a fixed-size stack of open containers, so memory is bounded whatever the input, and a
// declared length larger than the rest of the payload is rejected up front.
//
// Only the items directly inside the top-level map are interpreted (keys and values); anything
// nested deeper is checked for well-formedness and skipped. Indefinite-length strings at the top
// level of the map are concatenated (bounded by the payload size) so `c` and `b` may be chunked.
#include <cbor.h>

#include <array>
#include <string>
#include <string_view>

#include "protocol/request_internal.hpp"

namespace chunkd::protocol::detail {
namespace {

constexpr std::size_t kMaxCborDepth = 16;
constexpr std::uint64_t kSelfDescribeTag = 55799;

enum class FrameKind : std::uint8_t { Array, Map, Bytes, Text };

struct Frame {
  FrameKind kind = FrameKind::Array;
  bool indefinite = false;
  bool tagged = false;          // the container itself carried a tag
  std::uint64_t remaining = 0;  // definite containers: items still expected (a map counts 2/pair)
  std::uint64_t seen = 0;       // items completed inside this frame
};

class CborWalker {
 public:
  CborWalker(std::span<const std::byte> payload, RequestBuilder& builder)
      : payload_(payload), builder_(builder) {}

  std::optional<RequestError> run();

  // Events from the streaming decoder's callbacks.
  void on_unsigned(std::uint64_t number) {
    Value value;
    value.kind = ValueKind::Unsigned;
    value.number = number;
    scalar(value);
  }
  void on_kind(ValueKind kind) {
    Value value;
    value.kind = kind;
    scalar(value);
  }
  void on_string(FrameKind kind, const unsigned char* data, std::size_t size);
  void on_string_start(FrameKind kind) { open(kind, /*indefinite=*/true, 0); }
  void on_container(FrameKind kind, std::size_t items);
  void on_indefinite_container(FrameKind kind) { open(kind, /*indefinite=*/true, 0); }
  void on_tag(std::uint64_t tag);
  void on_break();

 private:
  void fail(const char* message) {
    if (error_ == nullptr) error_ = message;
  }
  bool in_top_map() const { return depth_ == 1; }
  void scalar(const Value& value);
  void open(FrameKind kind, bool indefinite, std::uint64_t items);
  void complete(const Value& value, bool tagged);
  bool take_tag() {
    const bool tagged = tag_pending_;
    tag_pending_ = false;
    return tagged;
  }

  std::span<const std::byte> payload_;
  RequestBuilder& builder_;
  std::array<Frame, kMaxCborDepth> stack_{};
  std::size_t depth_ = 0;
  std::size_t bytes_left_ = 0;  // payload bytes from the current item head to the end
  bool tag_pending_ = false;
  bool done_ = false;  // the top-level map is complete
  const char* error_ = nullptr;
  Field field_ = Field::Other;  // key of the value being read in the top-level map
  std::string chunks_;          // indefinite string being concatenated (top-map level only)
};

CborWalker& as_walker(void* context) { return *static_cast<CborWalker*>(context); }

cbor_callbacks make_callbacks() {
  cbor_callbacks cb{};  // every member is set below
  cb.uint8 = [](void* c, std::uint8_t v) { as_walker(c).on_unsigned(v); };
  cb.uint16 = [](void* c, std::uint16_t v) { as_walker(c).on_unsigned(v); };
  cb.uint32 = [](void* c, std::uint32_t v) { as_walker(c).on_unsigned(v); };
  cb.uint64 = [](void* c, std::uint64_t v) { as_walker(c).on_unsigned(v); };
  cb.negint8 = [](void* c, std::uint8_t) { as_walker(c).on_kind(ValueKind::Negative); };
  cb.negint16 = [](void* c, std::uint16_t) { as_walker(c).on_kind(ValueKind::Negative); };
  cb.negint32 = [](void* c, std::uint32_t) { as_walker(c).on_kind(ValueKind::Negative); };
  cb.negint64 = [](void* c, std::uint64_t) { as_walker(c).on_kind(ValueKind::Negative); };
  // libcbor: byte_string / string are definite strings, *_start open indefinite ones.
  cb.byte_string = [](void* c, cbor_data d, std::size_t n) {
    as_walker(c).on_string(FrameKind::Bytes, d, n);
  };
  cb.byte_string_start = [](void* c) { as_walker(c).on_string_start(FrameKind::Bytes); };
  cb.string = [](void* c, cbor_data d, std::size_t n) {
    as_walker(c).on_string(FrameKind::Text, d, n);
  };
  cb.string_start = [](void* c) { as_walker(c).on_string_start(FrameKind::Text); };
  cb.array_start = [](void* c, std::size_t n) { as_walker(c).on_container(FrameKind::Array, n); };
  cb.indef_array_start = [](void* c) { as_walker(c).on_indefinite_container(FrameKind::Array); };
  cb.map_start = [](void* c, std::size_t n) { as_walker(c).on_container(FrameKind::Map, n); };
  cb.indef_map_start = [](void* c) { as_walker(c).on_indefinite_container(FrameKind::Map); };
  cb.tag = [](void* c, std::uint64_t v) { as_walker(c).on_tag(v); };
  cb.float2 = [](void* c, float) { as_walker(c).on_kind(ValueKind::Float); };
  cb.float4 = [](void* c, float) { as_walker(c).on_kind(ValueKind::Float); };
  cb.float8 = [](void* c, double) { as_walker(c).on_kind(ValueKind::Float); };
  cb.undefined = [](void* c) { as_walker(c).on_kind(ValueKind::Null); };
  cb.null = [](void* c) { as_walker(c).on_kind(ValueKind::Null); };
  cb.boolean = [](void* c, bool) { as_walker(c).on_kind(ValueKind::Bool); };
  cb.indef_break = [](void* c) { as_walker(c).on_break(); };
  return cb;
}

const cbor_callbacks kCallbacks = make_callbacks();

void CborWalker::on_string(FrameKind kind, const unsigned char* data, std::size_t size) {
  if (error_ != nullptr) return;
  if (depth_ > 0) {
    Frame& top = stack_[depth_ - 1];
    if (top.kind == FrameKind::Bytes || top.kind == FrameKind::Text) {  // a chunk
      if (tag_pending_ || kind != top.kind) return fail("bad chunk in an indefinite-length string");
      if (depth_ == 2) chunks_.append(reinterpret_cast<const char*>(data), size);
      ++top.seen;
      return;
    }
  }
  Value value;
  value.kind = kind == FrameKind::Bytes ? ValueKind::Bytes : ValueKind::Text;
  value.bytes = std::string_view(reinterpret_cast<const char*>(data), size);
  scalar(value);
}

void CborWalker::on_container(FrameKind kind, std::size_t items) {
  if (error_ != nullptr) return;
  // Every item takes at least one byte: a longer declared length cannot be honest.
  const std::uint64_t limit = kind == FrameKind::Map ? bytes_left_ / 2 : bytes_left_;
  if (items > limit) return fail("declared length larger than the payload");
  const std::uint64_t count = kind == FrameKind::Map ? 2 * std::uint64_t{items} : items;
  open(kind, /*indefinite=*/false, count);
}

void CborWalker::on_tag(std::uint64_t tag) {
  if (error_ != nullptr) return;
  if (depth_ > 0) {
    const FrameKind kind = stack_[depth_ - 1].kind;
    if (kind == FrameKind::Bytes || kind == FrameKind::Text) {
      return fail("tag inside an indefinite-length string");
    }
  } else if (tag != kSelfDescribeTag) {
    return fail("payload is not a CBOR map");
  }
  tag_pending_ = true;
}

void CborWalker::scalar(const Value& value) {
  if (error_ != nullptr) return;
  if (depth_ == 0) return fail("payload is not a CBOR map");
  const FrameKind kind = stack_[depth_ - 1].kind;
  if (kind == FrameKind::Bytes || kind == FrameKind::Text) {
    return fail("bad chunk in an indefinite-length string");
  }
  complete(value, take_tag());
}

void CborWalker::open(FrameKind kind, bool indefinite, std::uint64_t items) {
  if (error_ != nullptr) return;
  if (depth_ == 0 && kind != FrameKind::Map) return fail("payload is not a CBOR map");
  if (depth_ > 0) {
    const FrameKind parent = stack_[depth_ - 1].kind;
    if (parent == FrameKind::Bytes || parent == FrameKind::Text) {
      return fail("bad chunk in an indefinite-length string");
    }
  }
  const bool tagged = take_tag();
  if (!indefinite && items == 0) {  // empty: complete at once
    if (depth_ == 0) {
      done_ = true;
      return;
    }
    Value value;
    value.kind = ValueKind::Container;
    if (kind == FrameKind::Bytes) value.kind = ValueKind::Bytes;
    if (kind == FrameKind::Text) value.kind = ValueKind::Text;
    return complete(value, tagged);
  }
  if (depth_ == kMaxCborDepth) return fail("CBOR nesting too deep");
  if (depth_ == 1 && (kind == FrameKind::Bytes || kind == FrameKind::Text)) chunks_.clear();
  stack_[depth_++] = Frame{kind, indefinite, tagged, items, 0};
}

void CborWalker::on_break() {
  if (error_ != nullptr) return;
  if (depth_ == 0 || !stack_[depth_ - 1].indefinite || tag_pending_) {
    return fail("unexpected CBOR break");
  }
  const Frame frame = stack_[--depth_];
  if (frame.kind == FrameKind::Map && frame.seen % 2 != 0)
    return fail("CBOR map key without value");
  if (depth_ == 0) {
    done_ = true;
    return;
  }
  Value value;
  value.kind = ValueKind::Container;
  if (frame.kind == FrameKind::Bytes || frame.kind == FrameKind::Text) {
    value.kind = frame.kind == FrameKind::Bytes ? ValueKind::Bytes : ValueKind::Text;
    if (depth_ == 1) value.bytes = chunks_;
  }
  complete(value, frame.tagged);
}

// An item ended inside stack_[depth_ - 1]. Interpret it when that frame is the top-level map,
// then close every definite container it fills up.
void CborWalker::complete(const Value& value, bool tagged) {
  static constexpr Value kContainer{ValueKind::Container, 0, {}};
  static constexpr Value kTagged{ValueKind::Tagged, 0, {}};
  const Value* item = &value;
  bool item_tagged = tagged;
  while (depth_ > 0) {
    Frame& parent = stack_[depth_ - 1];
    if (in_top_map()) {
      if (parent.seen % 2 == 0) {  // a key
        field_ = (item->kind == ValueKind::Text && !item_tagged) ? field_from_key(item->bytes)
                                                                 : Field::Other;
      } else {  // its value
        builder_.on_field(field_, item_tagged ? kTagged : *item);
      }
    }
    ++parent.seen;
    if (parent.indefinite || --parent.remaining > 0) return;
    // The definite container is full: it completes as an item of its own parent.
    item_tagged = parent.tagged;
    --depth_;
    item = &kContainer;
  }
  done_ = true;
}

std::optional<RequestError> CborWalker::run() {
  const auto* data = reinterpret_cast<cbor_data>(payload_.data());
  const std::size_t size = payload_.size();
  std::size_t position = 0;
  while (position < size) {
    if (done_) return make_error(ErrorCode::InvalidCbor, "bytes after the CBOR map");
    bytes_left_ = size - position;
    const cbor_decoder_result result =
        cbor_stream_decode(data + position, size - position, &kCallbacks, this);
    if (error_ != nullptr) return make_error(ErrorCode::InvalidCbor, error_);
    if (result.status == CBOR_DECODER_NEDATA) {
      return make_error(ErrorCode::InvalidCbor, "truncated CBOR");
    }
    if (result.status != CBOR_DECODER_FINISHED || result.read == 0) {
      return make_error(ErrorCode::InvalidCbor, "malformed CBOR");
    }
    position += result.read;
  }
  if (!done_) return make_error(ErrorCode::InvalidCbor, "truncated CBOR");
  return std::nullopt;
}

}  // namespace

std::optional<RequestError> walk_cbor(std::span<const std::byte> payload, RequestBuilder& builder) {
  CborWalker walker(payload, builder);
  return walker.run();
}

}  // namespace chunkd::protocol::detail

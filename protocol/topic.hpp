// MQTT topics of the stream protocol (SPEC.md §1):
//   <prefix>/<thing>/streams/<streamId>/{get,describe}/<fmt>          (device → chunkd)
//   <prefix>/<thing>/streams/<streamId>/{data,description,rejected}/<fmt> (chunkd → device)
// The default prefix "$aws/things" is byte-exact with what device libraries compare.
// Pure and thread-compatible; a TopicCodec is immutable after construction.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace chunkd::protocol {

enum class Format : std::uint8_t { Json, Cbor };
enum class Verb : std::uint8_t { Get, Describe };
enum class ReplyKind : std::uint8_t { Data, Description, Rejected };

std::string_view to_string(Format f);  // "json" / "cbor"

inline constexpr std::size_t kMaxThingNameBytes = 128;
inline constexpr std::size_t kMaxStreamIdBytes = 128;
inline constexpr std::size_t kMaxTopicPrefixBytes = 1024;  // a sane bound for configured prefixes

bool valid_thing_name(std::string_view name);  // 1..128 of [a-zA-Z0-9:_-]
bool valid_stream_id(std::string_view id);     // 1..128 of [a-zA-Z0-9_-]

struct ParsedTopic {
  enum class Status : std::uint8_t {
    Ok,            // thing, stream, verb and format all valid
    InvalidTopic,  // thing and stream valid (a reply can be addressed) but verb/format unknown:
                   // answer InvalidTopic on rejected/json
    Drop,          // cannot address a reply: drop and count
  };
  Status status = Status::Drop;
  std::string_view thing;  // views into the parsed topic; valid unless status == Drop
  std::string_view stream;
  Verb verb = Verb::Get;
  Format format = Format::Json;
};

class TopicCodec {
 public:
  // `prefix` has no trailing slash, e.g. "$aws/things" or "chunkd/things". Must be non-empty,
  // contain no '+', '#' or NUL; check with valid_prefix() first (which also requires valid UTF-8
  // and at most kMaxTopicPrefixBytes).
  // parse(): Ok only for exactly <prefix>/<thing>/streams/<stream>/{get,describe}/{json,cbor}.
  // Valid thing and stream with anything else after them (unknown verb or format, missing or
  // extra level, trailing slash) → InvalidTopic; a reply verb (data, description, rejected) or an
  // unaddressable topic → Drop.
  explicit TopicCodec(std::string prefix = "$aws/things");
  static bool valid_prefix(std::string_view prefix);

  const std::string& prefix() const { return prefix_; }
  ParsedTopic parse(std::string_view topic) const;

  // The two subscription filters: "<prefix>/+/streams/+/get/+" and ".../describe/+".
  std::string subscription(Verb verb) const;

  // Writes the reply topic into `out` (cleared first; capacity reused, so no allocation once warm).
  void reply_topic(std::string& out, std::string_view thing, std::string_view stream,
                   ReplyKind kind, Format format) const;
  // Request topic, for device simulators and tests.
  void request_topic(std::string& out, std::string_view thing, std::string_view stream, Verb verb,
                     Format format) const;

 private:
  std::string prefix_;
};

}  // namespace chunkd::protocol

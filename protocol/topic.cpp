// Topic parsing and formatting (SPEC.md §1). Decisions written down here and tested in
// tests/protocol/topic_test.cpp:
// - A topic is Ok only when it is exactly "<prefix>/<thing>/streams/<stream>/<verb>/<fmt>" with a
//   request verb (get, describe) and a known format (json, cbor).
// - Thing and stream valid, but the rest is anything else (unknown verb, unknown or empty format,
//   missing verb, an extra level, a trailing slash) → InvalidTopic, so the device gets a
//   rejected/json reply it can match.
// - The verb is one of our own reply kinds (data, description, rejected) → Drop, never answered:
//   answering a reply topic on rejected/json could feed a loop through a broad subscription.
// - Anything that does not address a thing and a stream (other prefix, no "streams" level, a bad
//   thing name or stream id, names over 128 bytes) → Drop.
#include "protocol/topic.hpp"

#include "base/assert.hpp"
#include "simdjson.h"

namespace chunkd::protocol {
namespace {

constexpr std::string_view kStreamsLevel = "streams";

constexpr bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

std::string_view verb_name(Verb verb) { return verb == Verb::Get ? "get" : "describe"; }

std::string_view reply_name(ReplyKind kind) {
  switch (kind) {
    case ReplyKind::Data:
      return "data";
    case ReplyKind::Description:
      return "description";
    case ReplyKind::Rejected:
      return "rejected";
  }
  return "rejected";
}

void append_topic(std::string& out, const std::string& prefix, std::string_view thing,
                  std::string_view stream, std::string_view verb, std::string_view format) {
  out.clear();
  out.append(prefix)
      .append(1, '/')
      .append(thing)
      .append(1, '/')
      .append(kStreamsLevel)
      .append(1, '/')
      .append(stream)
      .append(1, '/')
      .append(verb)
      .append(1, '/')
      .append(format);
}

}  // namespace

std::string_view to_string(Format f) { return f == Format::Json ? "json" : "cbor"; }

bool valid_thing_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxThingNameBytes) return false;
  for (char c : name) {
    if (!is_name_char(c) && c != ':') return false;
  }
  return true;
}

bool valid_stream_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxStreamIdBytes) return false;
  for (char c : id) {
    if (!is_name_char(c)) return false;
  }
  return true;
}

TopicCodec::TopicCodec(std::string prefix) : prefix_(std::move(prefix)) {
  CHUNKD_ASSERT(valid_prefix(prefix_));  // REQUIRES: the config loader checked it
}

bool TopicCodec::valid_prefix(std::string_view prefix) {
  if (prefix.empty() || prefix.size() > kMaxTopicPrefixBytes || prefix.back() == '/') return false;
  for (char c : prefix) {
    if (c == '+' || c == '#' || c == '\0') return false;
  }
  return simdjson::validate_utf8(prefix.data(), prefix.size());
}

ParsedTopic TopicCodec::parse(std::string_view topic) const {
  ParsedTopic result;  // status Drop
  if (topic.size() <= prefix_.size() || topic.substr(0, prefix_.size()) != prefix_ ||
      topic[prefix_.size()] != '/') {
    return result;
  }
  std::string_view rest = topic.substr(prefix_.size() + 1);

  const std::size_t thing_end = rest.find('/');
  if (thing_end == std::string_view::npos) return result;
  const std::string_view thing = rest.substr(0, thing_end);
  if (!valid_thing_name(thing)) return result;
  rest.remove_prefix(thing_end + 1);

  if (rest.substr(0, kStreamsLevel.size()) != kStreamsLevel ||
      rest.size() == kStreamsLevel.size() || rest[kStreamsLevel.size()] != '/') {
    return result;
  }
  rest.remove_prefix(kStreamsLevel.size() + 1);

  const std::size_t stream_end = rest.find('/');
  const std::string_view stream = rest.substr(0, stream_end);
  if (!valid_stream_id(stream)) return result;
  const std::string_view tail =
      stream_end == std::string_view::npos ? std::string_view{} : rest.substr(stream_end + 1);

  const std::size_t verb_end = tail.find('/');
  const std::string_view verb = tail.substr(0, verb_end);
  if (verb == "data" || verb == "description" || verb == "rejected") return result;  // ours: Drop

  result.status = ParsedTopic::Status::InvalidTopic;
  result.thing = thing;
  result.stream = stream;
  if (stream_end == std::string_view::npos || verb_end == std::string_view::npos) return result;

  if (verb == "get") {
    result.verb = Verb::Get;
  } else if (verb == "describe") {
    result.verb = Verb::Describe;
  } else {
    return result;
  }
  const std::string_view format = tail.substr(verb_end + 1);
  if (format == "json") {
    result.format = Format::Json;
  } else if (format == "cbor") {
    result.format = Format::Cbor;
  } else {
    return result;  // unknown format, empty level, extra level or trailing slash
  }
  result.status = ParsedTopic::Status::Ok;
  return result;
}

std::string TopicCodec::subscription(Verb verb) const {
  std::string out;
  append_topic(out, prefix_, "+", "+", verb_name(verb), "+");
  return out;
}

void TopicCodec::reply_topic(std::string& out, std::string_view thing, std::string_view stream,
                             ReplyKind kind, Format format) const {
  append_topic(out, prefix_, thing, stream, reply_name(kind), to_string(format));
}

void TopicCodec::request_topic(std::string& out, std::string_view thing, std::string_view stream,
                               Verb verb, Format format) const {
  append_topic(out, prefix_, thing, stream, verb_name(verb), to_string(format));
}

}  // namespace chunkd::protocol

// Fuzzes TopicCodec::parse with the default and a custom prefix. Invariants: parse never reads
// out of bounds (ASan), an Ok topic formats back to the same bytes, an InvalidTopic one names a
// valid thing and stream that lie inside the input, and our own reply topics never parse Ok.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/topic.hpp"

namespace {

using chunkd::protocol::ParsedTopic;
using chunkd::protocol::ReplyKind;
using chunkd::protocol::TopicCodec;

void check(bool condition) {
  if (!condition) std::abort();
}

bool inside(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

void check_codec(const TopicCodec& codec, std::string_view topic, std::string& scratch) {
  const ParsedTopic parsed = codec.parse(topic);
  if (parsed.status == ParsedTopic::Status::Drop) return;
  check(chunkd::protocol::valid_thing_name(parsed.thing));
  check(chunkd::protocol::valid_stream_id(parsed.stream));
  check(inside(parsed.thing, topic) && inside(parsed.stream, topic));
  if (parsed.status == ParsedTopic::Status::Ok) {
    codec.request_topic(scratch, parsed.thing, parsed.stream, parsed.verb, parsed.format);
    check(scratch == topic);
  }
  for (ReplyKind kind : {ReplyKind::Data, ReplyKind::Description, ReplyKind::Rejected}) {
    codec.reply_topic(scratch, parsed.thing, parsed.stream, kind, parsed.format);
    check(codec.parse(scratch).status == ParsedTopic::Status::Drop);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const TopicCodec default_codec;
  static const TopicCodec custom_codec("chunkd/$sys/things");
  static std::string scratch;
  const std::string_view topic(reinterpret_cast<const char*>(data), size);
  check_codec(default_codec, topic, scratch);
  check_codec(custom_codec, topic, scratch);
  return 0;
}

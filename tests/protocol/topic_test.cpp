// Topic parsing and formatting (SPEC.md §1, protocol/topic.hpp).
#include "protocol/topic.hpp"

#include <gtest/gtest.h>

#include <string>

namespace chunkd::protocol {
namespace {

using Status = ParsedTopic::Status;

const TopicCodec& codec() {
  static const TopicCodec instance;
  return instance;
}

std::string topic(std::string_view thing, std::string_view stream, std::string_view tail) {
  std::string out = "$aws/things/";
  out.append(thing).append("/streams/").append(stream).append("/").append(tail);
  return out;
}

TEST(Topic, DefaultPrefixIsByteExact) {
  EXPECT_EQ(codec().prefix(), "$aws/things");
  EXPECT_EQ(TopicCodec("$aws/things").prefix(), "$aws/things");
}

TEST(Topic, ParsesEveryRequestVerbAndFormat) {
  struct Case {
    const char* tail;
    Verb verb;
    Format format;
  };
  for (const Case& c :
       {Case{"get/json", Verb::Get, Format::Json}, Case{"get/cbor", Verb::Get, Format::Cbor},
        Case{"describe/json", Verb::Describe, Format::Json},
        Case{"describe/cbor", Verb::Describe, Format::Cbor}}) {
    const std::string t = topic("dev-1", "fw_1", c.tail);
    const ParsedTopic parsed = codec().parse(t);
    EXPECT_EQ(parsed.status, Status::Ok) << t;
    EXPECT_EQ(parsed.thing, "dev-1");
    EXPECT_EQ(parsed.stream, "fw_1");
    EXPECT_EQ(parsed.verb, c.verb) << t;
    EXPECT_EQ(parsed.format, c.format) << t;
  }
}

TEST(Topic, ParsedViewsPointIntoTheTopic) {
  const std::string t = topic("thing", "stream", "get/cbor");
  const ParsedTopic parsed = codec().parse(t);
  ASSERT_EQ(parsed.status, Status::Ok);
  EXPECT_EQ(parsed.thing.data(), t.data() + 12);
  EXPECT_EQ(parsed.stream.data(), t.data() + 12 + 5 + 9);
}

TEST(Topic, ThingNameAllowsColonStreamIdDoesNot) {
  EXPECT_EQ(codec().parse(topic("arn:thing:1", "s", "get/json")).status, Status::Ok);
  EXPECT_EQ(codec().parse(topic("thing", "a:b", "get/json")).status, Status::Drop);
}

TEST(Topic, AllowedCharacterSets) {
  const std::string all = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
  EXPECT_EQ(codec().parse(topic(all + ":", all, "get/json")).status, Status::Ok);
}

TEST(Topic, ThingName128IsOk129IsDropped) {
  EXPECT_EQ(codec().parse(topic(std::string(128, 't'), "s", "get/json")).status, Status::Ok);
  EXPECT_EQ(codec().parse(topic(std::string(129, 't'), "s", "get/json")).status, Status::Drop);
  EXPECT_EQ(codec().parse(topic(std::string(129, 't'), "s", "get/xml")).status, Status::Drop);
}

TEST(Topic, StreamId128IsOk129IsDropped) {
  EXPECT_EQ(codec().parse(topic("t", std::string(128, 's'), "get/json")).status, Status::Ok);
  EXPECT_EQ(codec().parse(topic("t", std::string(129, 's'), "get/json")).status, Status::Drop);
}

TEST(Topic, EmptyNamesAreDropped) {
  EXPECT_EQ(codec().parse(topic("", "s", "get/json")).status, Status::Drop);
  EXPECT_EQ(codec().parse(topic("t", "", "get/json")).status, Status::Drop);
}

TEST(Topic, BadCharactersAreDropped) {
  for (const char* bad : {"a b", "a.b", "a+b", "a#b", "a$b", "caf\xc3\xa9", "a\tb", "a*b"}) {
    EXPECT_EQ(codec().parse(topic(bad, "s", "get/json")).status, Status::Drop) << bad;
    EXPECT_EQ(codec().parse(topic("t", bad, "get/json")).status, Status::Drop) << bad;
  }
  const std::string with_nul("$aws/things/a\0b/streams/s/get/json", 34);
  EXPECT_EQ(codec().parse(with_nul).status, Status::Drop);
}

TEST(Topic, UnknownFormatIsInvalidTopicWithAddress) {
  const std::string t = topic("dev", "fw", "get/xml");
  const ParsedTopic parsed = codec().parse(t);
  EXPECT_EQ(parsed.status, Status::InvalidTopic);
  EXPECT_EQ(parsed.thing, "dev");
  EXPECT_EQ(parsed.stream, "fw");
  EXPECT_EQ(codec().parse(topic("dev", "fw", "describe/xml")).status, Status::InvalidTopic);
}

TEST(Topic, UnknownVerbIsInvalidTopic) {
  EXPECT_EQ(codec().parse(topic("dev", "fw", "put/json")).status, Status::InvalidTopic);
  EXPECT_EQ(codec().parse(topic("dev", "fw", "list/cbor")).status, Status::InvalidTopic);
}

TEST(Topic, VerbAndFormatAreCaseSensitive) {
  EXPECT_EQ(codec().parse(topic("dev", "fw", "GET/json")).status, Status::InvalidTopic);
  EXPECT_EQ(codec().parse(topic("dev", "fw", "get/JSON")).status, Status::InvalidTopic);
  EXPECT_EQ(codec().parse(topic("dev", "fw", "get/Cbor")).status, Status::InvalidTopic);
}

TEST(Topic, ExtraLevelIsInvalidTopic) {
  EXPECT_EQ(codec().parse(topic("dev", "fw", "get/json/extra")).status, Status::InvalidTopic);
  EXPECT_EQ(codec().parse(topic("dev", "fw", "get/json/cbor")).status, Status::InvalidTopic);
}

TEST(Topic, TrailingSlashIsInvalidTopic) {
  EXPECT_EQ(codec().parse(topic("dev", "fw", "get/json/")).status, Status::InvalidTopic);
  EXPECT_EQ(codec().parse(topic("dev", "fw", "describe/cbor/")).status, Status::InvalidTopic);
}

TEST(Topic, MissingFormatOrVerbIsInvalidTopic) {
  EXPECT_EQ(codec().parse(topic("dev", "fw", "get")).status, Status::InvalidTopic);
  EXPECT_EQ(codec().parse(topic("dev", "fw", "get/")).status, Status::InvalidTopic);
  EXPECT_EQ(codec().parse(topic("dev", "fw", "")).status, Status::InvalidTopic);
  const ParsedTopic no_verb = codec().parse("$aws/things/dev/streams/fw");
  EXPECT_EQ(no_verb.status, Status::InvalidTopic);
  EXPECT_EQ(no_verb.stream, "fw");
  EXPECT_EQ(codec().parse(topic("dev", "fw", "/json")).status, Status::InvalidTopic);
}

TEST(Topic, OwnReplyTopicsAreDroppedNotAnswered) {
  for (const char* tail : {"data/json", "data/cbor", "description/json", "description/cbor",
                           "rejected/json", "rejected/cbor", "rejected/xml", "data/json/x"}) {
    EXPECT_EQ(codec().parse(topic("dev", "fw", tail)).status, Status::Drop) << tail;
  }
}

TEST(Topic, OtherPrefixesAreDropped) {
  EXPECT_EQ(codec().parse("$aws/thing/dev/streams/fw/get/json").status, Status::Drop);
  EXPECT_EQ(codec().parse("$aws/thingsX/dev/streams/fw/get/json").status, Status::Drop);
  EXPECT_EQ(codec().parse("aws/things/dev/streams/fw/get/json").status, Status::Drop);
  EXPECT_EQ(codec().parse("/$aws/things/dev/streams/fw/get/json").status, Status::Drop);
  EXPECT_EQ(codec().parse("$AWS/things/dev/streams/fw/get/json").status, Status::Drop);
}

TEST(Topic, ShortTopicsAreDropped) {
  for (const char* t :
       {"", "$", "$aws/things", "$aws/things/", "$aws/things/dev", "$aws/things/dev/",
        "$aws/things/dev/streams", "$aws/things/dev/streams/"}) {
    EXPECT_EQ(codec().parse(t).status, Status::Drop) << t;
  }
}

TEST(Topic, MissingStreamsLevelIsDropped) {
  EXPECT_EQ(codec().parse("$aws/things/dev/stream/fw/get/json").status, Status::Drop);
  EXPECT_EQ(codec().parse("$aws/things/dev/streamsX/fw/get/json").status, Status::Drop);
  EXPECT_EQ(codec().parse("$aws/things/dev/jobs/fw/get/json").status, Status::Drop);
  EXPECT_EQ(codec().parse("$aws/things/dev//streams/fw/get/json").status, Status::Drop);
}

TEST(Topic, CustomPrefixWithSlashesAndDollar) {
  const TopicCodec custom("chunkd/$sys/things");
  const ParsedTopic parsed = custom.parse("chunkd/$sys/things/dev/streams/fw/describe/cbor");
  EXPECT_EQ(parsed.status, Status::Ok);
  EXPECT_EQ(parsed.thing, "dev");
  EXPECT_EQ(parsed.verb, Verb::Describe);
  EXPECT_EQ(parsed.format, Format::Cbor);
  EXPECT_EQ(custom.parse("$aws/things/dev/streams/fw/get/json").status, Status::Drop);
  EXPECT_EQ(codec().parse("chunkd/$sys/things/dev/streams/fw/get/json").status, Status::Drop);
}

TEST(Topic, SingleLevelPrefix) {
  const TopicCodec custom("t");
  EXPECT_EQ(custom.parse("t/dev/streams/fw/get/json").status, Status::Ok);
  EXPECT_EQ(custom.parse("tt/dev/streams/fw/get/json").status, Status::Drop);
}

TEST(Topic, SubscriptionFilters) {
  EXPECT_EQ(codec().subscription(Verb::Get), "$aws/things/+/streams/+/get/+");
  EXPECT_EQ(codec().subscription(Verb::Describe), "$aws/things/+/streams/+/describe/+");
  const TopicCodec custom("fleet/a$b");
  EXPECT_EQ(custom.subscription(Verb::Get), "fleet/a$b/+/streams/+/get/+");
  EXPECT_EQ(custom.subscription(Verb::Describe), "fleet/a$b/+/streams/+/describe/+");
}

TEST(Topic, ReplyTopicsAreByteExact) {
  std::string out;
  codec().reply_topic(out, "dev-1", "fw", ReplyKind::Data, Format::Json);
  EXPECT_EQ(out, "$aws/things/dev-1/streams/fw/data/json");
  codec().reply_topic(out, "dev-1", "fw", ReplyKind::Data, Format::Cbor);
  EXPECT_EQ(out, "$aws/things/dev-1/streams/fw/data/cbor");
  codec().reply_topic(out, "dev-1", "fw", ReplyKind::Description, Format::Json);
  EXPECT_EQ(out, "$aws/things/dev-1/streams/fw/description/json");
  codec().reply_topic(out, "dev-1", "fw", ReplyKind::Description, Format::Cbor);
  EXPECT_EQ(out, "$aws/things/dev-1/streams/fw/description/cbor");
  codec().reply_topic(out, "dev-1", "fw", ReplyKind::Rejected, Format::Json);
  EXPECT_EQ(out, "$aws/things/dev-1/streams/fw/rejected/json");
  codec().reply_topic(out, "dev-1", "fw", ReplyKind::Rejected, Format::Cbor);
  EXPECT_EQ(out, "$aws/things/dev-1/streams/fw/rejected/cbor");
}

TEST(Topic, ReplyTopicReplacesPreviousContent) {
  std::string out = "leftover content that is longer than the topic itself, much longer";
  codec().reply_topic(out, "a", "b", ReplyKind::Data, Format::Json);
  EXPECT_EQ(out, "$aws/things/a/streams/b/data/json");
}

TEST(Topic, ReplyAndRequestTopicsReuseCapacity) {
  std::string out;
  out.reserve(512);
  const char* const data = out.data();
  const std::size_t capacity = out.capacity();
  const std::string thing(128, 't');
  const std::string stream(128, 's');
  for (int i = 0; i < 100; ++i) {
    codec().reply_topic(out, thing, stream, ReplyKind::Description, Format::Cbor);
    codec().request_topic(out, "x", "y", Verb::Describe, Format::Json);
  }
  EXPECT_EQ(out.data(), data);
  EXPECT_EQ(out.capacity(), capacity);
}

TEST(Topic, RequestTopicRoundTripsThroughParse) {
  std::string out;
  for (Verb verb : {Verb::Get, Verb::Describe}) {
    for (Format format : {Format::Json, Format::Cbor}) {
      codec().request_topic(out, "thing:1", "stream-2", verb, format);
      const ParsedTopic parsed = codec().parse(out);
      ASSERT_EQ(parsed.status, Status::Ok) << out;
      EXPECT_EQ(parsed.thing, "thing:1");
      EXPECT_EQ(parsed.stream, "stream-2");
      EXPECT_EQ(parsed.verb, verb);
      EXPECT_EQ(parsed.format, format);
    }
  }
  codec().request_topic(out, "dev", "fw", Verb::Get, Format::Cbor);
  EXPECT_EQ(out, "$aws/things/dev/streams/fw/get/cbor");
}

TEST(Topic, ValidPrefix) {
  EXPECT_TRUE(TopicCodec::valid_prefix("$aws/things"));
  EXPECT_TRUE(TopicCodec::valid_prefix("chunkd/things"));
  EXPECT_TRUE(TopicCodec::valid_prefix("a"));
  EXPECT_TRUE(TopicCodec::valid_prefix("/leading/slash"));
  EXPECT_TRUE(TopicCodec::valid_prefix("caf\xc3\xa9"));
  EXPECT_TRUE(TopicCodec::valid_prefix(std::string(kMaxTopicPrefixBytes, 'p')));
  EXPECT_FALSE(TopicCodec::valid_prefix(""));
  EXPECT_FALSE(TopicCodec::valid_prefix("a/+/b"));
  EXPECT_FALSE(TopicCodec::valid_prefix("a/#"));
  EXPECT_FALSE(TopicCodec::valid_prefix(std::string("a\0b", 3)));
  EXPECT_FALSE(TopicCodec::valid_prefix("$aws/things/"));
  EXPECT_FALSE(TopicCodec::valid_prefix("/"));
  EXPECT_FALSE(TopicCodec::valid_prefix("bad\xff"));
  EXPECT_FALSE(TopicCodec::valid_prefix(std::string(kMaxTopicPrefixBytes + 1, 'p')));
}

TEST(Topic, ValidNames) {
  EXPECT_TRUE(valid_thing_name("a"));
  EXPECT_TRUE(valid_thing_name("A:b_c-9"));
  EXPECT_TRUE(valid_thing_name(std::string(kMaxThingNameBytes, 'x')));
  EXPECT_FALSE(valid_thing_name(std::string(kMaxThingNameBytes + 1, 'x')));
  EXPECT_FALSE(valid_thing_name(""));
  EXPECT_FALSE(valid_thing_name("a/b"));
  EXPECT_TRUE(valid_stream_id("fw_1-B"));
  EXPECT_TRUE(valid_stream_id(std::string(kMaxStreamIdBytes, 'x')));
  EXPECT_FALSE(valid_stream_id(std::string(kMaxStreamIdBytes + 1, 'x')));
  EXPECT_FALSE(valid_stream_id(""));
  EXPECT_FALSE(valid_stream_id("a:b"));
  EXPECT_FALSE(valid_stream_id("a/b"));
}

TEST(Topic, FormatNames) {
  EXPECT_EQ(to_string(Format::Json), "json");
  EXPECT_EQ(to_string(Format::Cbor), "cbor");
}

}  // namespace
}  // namespace chunkd::protocol

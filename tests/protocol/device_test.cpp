// The device codec: golden request bytes, reply round trips (chunkd's encoders → device decoders)
// in both formats, and the strictness of the decoders on malformed replies.
#include "protocol/device.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "protocol/request.hpp"
#include "tests/protocol/bytes.hpp"

namespace chunkd::protocol {
namespace {

using test_bytes::as_text;
using test_bytes::ascii;
using test_bytes::Bytes;
using test_bytes::cat;
using test_bytes::hex;
using test_bytes::random_bytes;

Bytes encode_data(Format format, std::optional<std::string_view> token, std::uint32_t file_id,
                  std::uint32_t block_index, std::span<const std::byte> payload) {
  Bytes out(data_reply_max_bytes(format, payload.size(), token ? token->size() : 0));
  out.resize(encode_data_reply(format, out, token, file_id, block_index, payload));
  return out;
}

const Format kFormats[] = {Format::Json, Format::Cbor};

// ---------------------------------------------------------------------------------------------
// Request encoders: golden bytes.

GetStreamArgs full_args() {
  GetStreamArgs args;
  args.client_token = "t";
  args.version = 1;
  args.file_id = 2;
  args.block_size = 4096;
  args.offset = 10;
  args.count = 3;
  args.bitmap = std::vector<std::uint8_t>{0x0f, 0xa0};
  return args;
}

TEST(GetRequestJson, AllKeys) {
  EXPECT_EQ(as_text(encode_get_request(Format::Json, full_args())),
            R"({"c":"t","s":1,"f":2,"l":4096,"o":10,"n":3,"b":"0fa0"})");
}

TEST(GetRequestJson, RequiredKeysOnly) {
  GetStreamArgs args;
  args.block_size = 256;
  EXPECT_EQ(as_text(encode_get_request(Format::Json, args)), R"({"f":0,"l":256})");
}

TEST(GetRequestJson, TokenIsEscapedAndZeroValuesAreSent) {
  GetStreamArgs args;
  args.client_token = "a\"/\n";
  args.file_id = 255;
  args.block_size = 131072;
  args.offset = 0;
  args.count = 0;
  args.bitmap = std::vector<std::uint8_t>{};
  EXPECT_EQ(as_text(encode_get_request(Format::Json, args)),
            R"({"c":"a\"/\n","f":255,"l":131072,"o":0,"n":0,"b":""})");
}

TEST(GetRequestCbor, AllKeys) {
  EXPECT_EQ(encode_get_request(Format::Cbor, full_args()),
            hex("a7 6163 6174 6173 01 6166 02 616c 191000 616f 0a 616e 03 6162 42 0fa0"));
}

TEST(GetRequestCbor, RequiredKeysOnly) {
  GetStreamArgs args;
  args.block_size = 256;
  EXPECT_EQ(encode_get_request(Format::Cbor, args), hex("a2 6166 00 616c 190100"));
}

TEST(GetRequestCbor, WideIntegers) {
  GetStreamArgs args;
  args.version = 5000000000ull;
  args.file_id = 24;
  args.block_size = 131072;
  args.offset = 98304;
  EXPECT_EQ(encode_get_request(Format::Cbor, args),
            hex("a4 6173 1b000000012a05f200 6166 1818 616c 1a00020000 616f 1a00018000"));
}

TEST(DescribeRequest, GoldenBytes) {
  EXPECT_EQ(as_text(encode_describe_request(Format::Json, "x")), R"({"c":"x"})");
  EXPECT_EQ(as_text(encode_describe_request(Format::Json, std::nullopt)), "{}");
  EXPECT_EQ(encode_describe_request(Format::Cbor, "x"), hex("a1 6163 6178"));
  EXPECT_EQ(encode_describe_request(Format::Cbor, std::nullopt), hex("a0"));
}

// The daemon's request decoders read what the device encoders write.
TEST(RequestRoundTrip, GetRequestThroughTheDaemonDecoder) {
  for (const Format format : kFormats) {
    const GetStreamArgs args = full_args();
    const auto decoded = decode_get_request(format, encode_get_request(format, args));
    ASSERT_TRUE(decoded.has_value()) << decoded.error().message;
    EXPECT_EQ(decoded->client_token, args.client_token);
    EXPECT_EQ(decoded->version, args.version);
    EXPECT_EQ(decoded->file_id, args.file_id);
    EXPECT_EQ(decoded->block_size, args.block_size);
    EXPECT_EQ(decoded->offset, *args.offset);
    EXPECT_EQ(decoded->count, *args.count);
    EXPECT_EQ(decoded->bitmap, args.bitmap);
  }
}

TEST(RequestRoundTrip, DescribeRequestThroughTheDaemonDecoder) {
  for (const Format format : kFormats) {
    const auto with = decode_describe_request(format, encode_describe_request(format, "tok"));
    ASSERT_TRUE(with.has_value()) << with.error().message;
    EXPECT_EQ(with->client_token, "tok");
    const auto without =
        decode_describe_request(format, encode_describe_request(format, std::nullopt));
    ASSERT_TRUE(without.has_value()) << without.error().message;
    EXPECT_FALSE(without->client_token.has_value());
  }
}

// ---------------------------------------------------------------------------------------------
// Reply round trips: encode (chunkd) → decode (device).

TEST(DataReplyRoundTrip, SmallPayloadsBothFormats) {
  for (const Format format : kFormats) {
    for (std::size_t size : {1u, 2u, 3u, 4u, 255u, 256u, 257u}) {
      const Bytes payload = random_bytes(size, static_cast<unsigned>(size));
      for (const auto token : {std::optional<std::string_view>{},
                               std::optional<std::string_view>{"tok-\"\\/\n\x01"}}) {
        const auto decoded =
            decode_data_reply(format, encode_data(format, token, 9, 70000, payload));
        ASSERT_TRUE(decoded.has_value()) << decoded.error();
        EXPECT_EQ(decoded->client_token.has_value(), token.has_value());
        if (token) EXPECT_EQ(*decoded->client_token, *token);
        EXPECT_EQ(decoded->file_id, 9u);
        EXPECT_EQ(decoded->block_index, 70000u);
        EXPECT_EQ(decoded->length, size);
        EXPECT_EQ(decoded->payload, payload);
      }
    }
  }
}

TEST(DataReplyRoundTrip, FourKibAndOneHundredTwentyEightKibBlocksByteForByte) {
  for (const Format format : kFormats) {
    for (std::size_t size : {std::size_t{4096}, std::size_t{131072}}) {
      const Bytes payload = random_bytes(size, 42);
      const auto decoded =
          decode_data_reply(format, encode_data(format, "token", 255, 98303, payload));
      ASSERT_TRUE(decoded.has_value()) << decoded.error();
      EXPECT_EQ(decoded->client_token, "token");
      EXPECT_EQ(decoded->file_id, 255u);
      EXPECT_EQ(decoded->block_index, 98303u);
      EXPECT_EQ(decoded->length, size);
      ASSERT_EQ(decoded->payload.size(), size);
      EXPECT_TRUE(decoded->payload == payload);
    }
  }
}

TEST(DataReplyRoundTrip, Utf8TokenSurvivesJson) {
  const Bytes payload = random_bytes(10, 3);
  const std::string token = "gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x98\x80";
  for (const Format format : kFormats) {
    const auto decoded = decode_data_reply(format, encode_data(format, token, 0, 0, payload));
    ASSERT_TRUE(decoded.has_value()) << decoded.error();
    EXPECT_EQ(decoded->client_token, token);
  }
}

TEST(DataReplyRoundTrip, NonUtf8TokenSurvivesCborOnly) {
  // chunkd passes the bytes through (reply.hpp); simdjson, the JSON device decoder here, refuses
  // a document that is not UTF-8, while the CBOR decoder does not look inside text strings.
  const Bytes payload = random_bytes(10, 4);
  const std::string token = "\xff\xfe";
  EXPECT_FALSE(
      decode_data_reply(Format::Json, encode_data(Format::Json, token, 0, 0, payload)).has_value());
  const auto cbor =
      decode_data_reply(Format::Cbor, encode_data(Format::Cbor, token, 0, 0, payload));
  ASSERT_TRUE(cbor.has_value()) << cbor.error();
  EXPECT_EQ(cbor->client_token, token);
}

TEST(DescriptionRoundTrip, BothFormats) {
  std::vector<FileEntry> files;
  for (std::uint32_t f = 0; f < 50; ++f) files.push_back({f * 5, std::uint64_t{f} << 33});
  for (const Format format : kFormats) {
    for (const auto token :
         {std::optional<std::string_view>{}, std::optional<std::string_view>{"t\"1"}}) {
      const auto decoded =
          decode_description(format, encode_description(format, token, 18446744073709551615ull,
                                                        "firmware \"v2\" / \n", files));
      ASSERT_TRUE(decoded.has_value()) << decoded.error();
      EXPECT_EQ(decoded->client_token.has_value(), token.has_value());
      if (token) EXPECT_EQ(*decoded->client_token, *token);
      EXPECT_EQ(decoded->version, 18446744073709551615ull);
      EXPECT_EQ(decoded->description, "firmware \"v2\" / \n");
      ASSERT_EQ(decoded->files.size(), files.size());
      for (std::size_t k = 0; k < files.size(); ++k) {
        EXPECT_EQ(decoded->files[k].file_id, files[k].file_id);
        EXPECT_EQ(decoded->files[k].size_bytes, files[k].size_bytes);
      }
    }
    const auto empty =
        decode_description(format, encode_description(format, std::nullopt, 1, "", {}));
    ASSERT_TRUE(empty.has_value()) << empty.error();
    EXPECT_TRUE(empty->files.empty());
  }
}

TEST(RejectedRoundTrip, EveryCodeBothFormats) {
  for (const Format format : kFormats) {
    for (int c = 0; c < kErrorCodeCount; ++c) {
      const auto code = static_cast<ErrorCode>(c);
      const auto decoded =
          decode_rejected(format, encode_rejected(format, "tok", code, "why \"not\"\t"));
      ASSERT_TRUE(decoded.has_value()) << decoded.error();
      EXPECT_EQ(decoded->client_token, "tok");
      EXPECT_EQ(decoded->code, to_string(code));
      EXPECT_EQ(decoded->message, "why \"not\"\t");
    }
    const auto no_token =
        decode_rejected(format, encode_rejected(format, std::nullopt, ErrorCode::InvalidTopic, ""));
    ASSERT_TRUE(no_token.has_value()) << no_token.error();
    EXPECT_FALSE(no_token->client_token.has_value());
    EXPECT_EQ(no_token->code, "InvalidTopic");
  }
}

// ---------------------------------------------------------------------------------------------
// Decoders: strictness.

bool data_ok(Format format, const Bytes& in) { return decode_data_reply(format, in).has_value(); }
bool data_json_ok(std::string_view in) { return data_ok(Format::Json, ascii(in)); }

TEST(DataReplyDecodeJson, AcceptsWhatDevicesAccept) {
  EXPECT_TRUE(data_json_ok(R"({"f":0,"l":1,"i":0,"p":"QQ=="})"));
  EXPECT_TRUE(data_json_ok(R"( { "p" : "QQ==" , "i":0, "l":1, "f":0, "x":[1,{"y":null}] } )"));
  EXPECT_TRUE(data_json_ok(R"({"f":0,"l":3,"i":0,"p":"\/\/\/\/"})"));  // escaped '/' unescapes
}

TEST(DataReplyDecodeJson, RejectsMalformedReplies) {
  const char* bad[] = {
      "",
      "null",
      "[]",
      R"({"f":0,"l":1,"i":0})",                      // no p
      R"({"l":1,"i":0,"p":"QQ=="})",                 // no f
      R"({"f":0,"i":0,"p":"QQ=="})",                 // no l
      R"({"f":0,"l":1,"p":"QQ=="})",                 // no i
      R"({"f":0,"l":2,"i":0,"p":"QQ=="})",           // l != payload length
      R"({"f":-1,"l":1,"i":0,"p":"QQ=="})",          // negative
      R"({"f":1.0,"l":1,"i":0,"p":"QQ=="})",         // not an integer
      R"({"f":"0","l":1,"i":0,"p":"QQ=="})",         // quoted number
      R"({"f":4294967296,"l":1,"i":0,"p":"QQ=="})",  // over uint32
      R"({"f":0,"l":1,"i":0,"p":"QQ="})",            // bad base64
      R"({"f":0,"l":1,"i":0,"p":"QQ==\n"})",         // line break in base64
      R"({"f":0,"l":1,"i":0,"p":1})",                // p not a string
      R"({"c":1,"f":0,"l":1,"i":0,"p":"QQ=="})",     // token not a string
      R"({"f":0,"f":0,"l":1,"i":0,"p":"QQ=="})",     // duplicate key
      R"({"f":0,"l":1,"i":0,"p":"QQ=="} {})",        // trailing content
      R"({"f":0,"l":1,"i":0,"p":"QQ==")",            // truncated
  };
  for (const char* in : bad) EXPECT_FALSE(data_json_ok(in)) << in;
}

TEST(DataReplyDecodeCbor, AcceptsLongerIntegerEncodingsAndUnknownKeys) {
  // f, l, i as 8-byte integers; an unknown text key; a non-text key with a nested value.
  const Bytes in =
      hex("a6 6166 1b0000000000000001 616c 1a00000001 6169 1900ff 6170 41 aa"
          "   6178 83 01 a1 6179 f6 fb3ff0000000000000"
          "   01 c1 1a00000000");
  const auto decoded = decode_data_reply(Format::Cbor, in);
  ASSERT_TRUE(decoded.has_value()) << decoded.error();
  EXPECT_EQ(decoded->file_id, 1u);
  EXPECT_EQ(decoded->block_index, 255u);
  EXPECT_EQ(decoded->payload, hex("aa"));
}

TEST(DataReplyDecodeCbor, RejectsMalformedReplies) {
  const char* bad[] = {
      "",
      "80",                                                     // array, not a map
      "a3 6166 00 616c 01 6169 00",                             // no p
      "a4 6166 00 616c 02 6169 00 6170 41 aa",                  // l != payload length
      "a4 6166 00 616c 01 6169 00 6170 61 61",                  // p is text, not bytes
      "a4 6166 20 616c 01 6169 00 6170 41 aa",                  // f negative
      "a4 6166 1b0000000100000000 616c 01 6169 00 6170 41 aa",  // f over uint32
      "a4 6166 c1 00 616c 01 6169 00 6170 41 aa",               // f tagged
      "a4 6166 f93c00 616c 01 6169 00 6170 41 aa",              // f a float
      "a5 6163 01 6166 00 616c 01 6169 00 6170 41 aa",          // token not text
      "a5 6166 00 6166 00 616c 01 6169 00 6170 41 aa",          // duplicate key
      "a4 6166 00 616c 01 6169 00 6170 41 aa 00",               // trailing byte
      "bf 6166 00 616c 01 6169 00 6170 41 aa ff",               // indefinite map
      "a4 6166 00 616c 01 6169 00 6170 5f 41 aa ff",            // indefinite byte string
      "a4 6166 00 616c 01 6169 00 6170 42 aa",                  // truncated payload
      "a4 6166 00 616c 01 6169 00 6170 5b ffffffffffffffff",    // absurd length
      "a4 6166 1c 616c 01 6169 00 6170 41 aa",                  // reserved additional info
      "bb ffffffffffffffff 6166 00",                            // absurd pair count
  };
  for (const char* in : bad) EXPECT_FALSE(data_ok(Format::Cbor, hex(in))) << in;
}

TEST(DataReplyDecodeCbor, DeepNestingInAnUnknownValueIsRefused) {
  Bytes in = hex("a5 6166 00 616c 01 6169 00 6170 41 aa 6178");
  for (int k = 0; k < 10000; ++k) in.push_back(std::byte{0x81});
  in.push_back(std::byte{0x00});
  EXPECT_FALSE(data_ok(Format::Cbor, in));
}

TEST(DataReplyDecode, EveryPrefixOfAValidReplyIsRefused) {
  for (const Format format : kFormats) {
    const Bytes payload = random_bytes(40, 5);
    const Bytes full = encode_data(format, "tok", 1, 2, payload);
    ASSERT_TRUE(data_ok(format, full));
    for (std::size_t n = 0; n < full.size(); ++n) {
      EXPECT_FALSE(data_ok(format, Bytes(full.begin(), full.begin() + static_cast<long>(n)))) << n;
    }
  }
}

TEST(DescriptionDecode, RejectsMalformedReplies) {
  const char* json_bad[] = {
      R"({"d":"x","r":[]})",                   // no s
      R"({"s":1,"d":"x"})",                    // no r
      R"({"s":1,"r":{}})",                     // r not an array
      R"({"s":1,"r":[1]})",                    // entry not an object
      R"({"s":1,"r":[{"f":1}]})",              // entry without z
      R"({"s":1,"r":[{"f":1,"z":-2}]})",       // negative size
      R"({"s":1,"r":[{"f":1,"z":2,"z":2}]})",  // duplicate key in an entry
      R"({"s":1,"d":5,"r":[]})",               // d not a string
      R"({"s":1.5,"r":[]})",                   // s not an integer
  };
  for (const char* in : json_bad) {
    EXPECT_FALSE(decode_description(Format::Json, ascii(in)).has_value()) << in;
  }
  const char* cbor_bad[] = {
      "a2 6164 60 6172 80",                        // no s
      "a2 6173 01 6164 60",                        // no r
      "a2 6173 01 6172 a0",                        // r a map
      "a2 6173 01 6172 81 01",                     // entry not a map
      "a2 6173 01 6172 81 a1 6166 01",             // entry without z
      "a2 6173 01 6172 81 a2 6166 01 617a 41 00",  // z bytes
      "a2 6173 01 6172 9b ffffffffffffffff",       // absurd array length
      "a3 6173 01 6164 40 6172 80",                // d bytes, not text
  };
  for (const char* in : cbor_bad) {
    EXPECT_FALSE(decode_description(Format::Cbor, hex(in)).has_value()) << in;
  }
  // d is optional; unknown keys in entries are ignored.
  const auto ok =
      decode_description(Format::Cbor, hex("a2 6173 01 6172 81 a3 6166 01 6178 f5 617a 02"));
  ASSERT_TRUE(ok.has_value()) << ok.error();
  EXPECT_EQ(ok->files.size(), 1u);
  EXPECT_EQ(ok->files[0].size_bytes, 2u);
}

TEST(RejectedDecode, RejectsMalformedReplies) {
  const char* json_bad[] = {
      R"({"message":"x"})",                         // no code
      R"({"code":"A","o":"B"})",                    // long and short keys differ
      R"({"code":"A","clientToken":"t","c":"u"})",  // token keys differ
      R"({"code":1})",                              // not text
      R"({"code":"A","code":"A"})",                 // duplicate
  };
  for (const char* in : json_bad) {
    EXPECT_FALSE(decode_rejected(Format::Json, ascii(in)).has_value()) << in;
  }
  // Either key alone is enough.
  const auto short_only = decode_rejected(Format::Json, ascii(R"({"o":"X","m":"y","c":"t"})"));
  ASSERT_TRUE(short_only.has_value()) << short_only.error();
  EXPECT_EQ(short_only->code, "X");
  EXPECT_EQ(short_only->message, "y");
  EXPECT_EQ(short_only->client_token, "t");

  const Bytes cbor_bad[] = {
      hex("a1 61 6d 61 78"),                                      // no code
      cat({hex("a1 64"), ascii("code"), hex("41 41")}),           // code bytes
      cat({hex("a2 64"), ascii("code"), hex("6141 616f 6142")}),  // differ
      cat({hex("a1 64"), ascii("code"), hex("6141 00")}),         // trailing byte
  };
  for (const Bytes& in : cbor_bad) EXPECT_FALSE(decode_rejected(Format::Cbor, in).has_value());
}

}  // namespace
}  // namespace chunkd::protocol

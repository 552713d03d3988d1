// GetStream / DescribeStream requests in JSON (SPEC.md §1.1, §1.3, §1.4; rules in
// protocol/request.hpp).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "protocol/device.hpp"
#include "protocol/request.hpp"

namespace chunkd::protocol {
namespace {

// The decoder gets an exactly sized heap copy, so ASan catches any read past the payload.
Expected<GetStreamRequest, RequestError> get(std::string_view json) {
  std::vector<std::byte> copy(json.size());
  if (!json.empty()) std::memcpy(copy.data(), json.data(), json.size());
  return decode_get_request(Format::Json, copy);
}

Expected<DescribeStreamRequest, RequestError> describe(std::string_view json) {
  std::vector<std::byte> copy(json.size());
  if (!json.empty()) std::memcpy(copy.data(), json.data(), json.size());
  return decode_describe_request(Format::Json, copy);
}

// The error code of a request expected to fail (InternalError marks "unexpectedly decoded").
ErrorCode code(std::string_view json) {
  auto result = get(json);
  return result ? ErrorCode::InternalError : result.error().code;
}

std::string with(std::string_view extra) {
  std::string json = R"({"f":1,"l":1024)";
  json.append(extra).append("}");
  return json;
}

std::string hex_bitmap(std::size_t bytes, std::string_view prefix = "0x") {
  std::string hex(prefix);
  hex.append(bytes * 2, 'f');
  return hex;
}

// --- valid requests -------------------------------------------------------------------------

TEST(RequestJson, MinimalRequestHasDefaults) {
  auto r = get(R"({"f":0,"l":256})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->client_token);
  EXPECT_FALSE(r->version);
  EXPECT_EQ(r->file_id, 0u);
  EXPECT_EQ(r->block_size, 256u);
  EXPECT_EQ(r->offset, 0u);
  EXPECT_EQ(r->count, 0u);
  EXPECT_FALSE(r->bitmap);
}

TEST(RequestJson, FullRequest) {
  auto r = get(R"({"c":"tok-1","s":3,"f":7,"l":4096,"o":12,"n":5,"b":"0x0f01"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->client_token, "tok-1");
  EXPECT_EQ(r->version, 3u);
  EXPECT_EQ(r->file_id, 7u);
  EXPECT_EQ(r->block_size, 4096u);
  EXPECT_EQ(r->offset, 12u);
  EXPECT_EQ(r->count, 5u);
  EXPECT_EQ(r->bitmap, (std::vector<std::uint8_t>{0x0f, 0x01}));
}

TEST(RequestJson, DeviceLibrarySpacingParses) {
  // The exact request a widely used device library sends: the spaces must not matter. l=3 is
  // then out of bounds, which proves every key before it was read.
  auto r = get(R"({"s": 1,"f": 4,"l": 3,"o": 2,"n": 1})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::BlockSizeOutOfBounds);
  EXPECT_FALSE(r.error().client_token);

  auto ok = get(R"({"s": 1,"f": 4,"l": 1024,"o": 2,"n": 1})");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->version, 1u);
  EXPECT_EQ(ok->file_id, 4u);
  EXPECT_EQ(ok->block_size, 1024u);
  EXPECT_EQ(ok->offset, 2u);
  EXPECT_EQ(ok->count, 1u);
}

TEST(RequestJson, WhitespaceEverywhere) {
  auto r = get(" \n\t{ \"f\" :\t1 ,\r\n \"l\" : 512 } \n");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->block_size, 512u);
}

TEST(RequestJson, KeyOrderDoesNotMatter) {
  auto r = get(R"({"n":2,"l":2048,"o":1,"f":9,"c":"x"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->file_id, 9u);
  EXPECT_EQ(r->block_size, 2048u);
  EXPECT_EQ(r->count, 2u);
}

TEST(RequestJson, QuotedNumbersAreAccepted) {
  auto r = get(R"({"s":"7","f":"4","l":"1024","o":"2","n":"3"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->version, 7u);
  EXPECT_EQ(r->file_id, 4u);
  EXPECT_EQ(r->block_size, 1024u);
  EXPECT_EQ(r->offset, 2u);
  EXPECT_EQ(r->count, 3u);
}

TEST(RequestJson, QuotedNumbersWithLeadingZeros) {
  auto r = get(R"({"f":"007","l":"0512"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->file_id, 7u);
  EXPECT_EQ(r->block_size, 512u);
}

TEST(RequestJson, QuotedNonNumbersAreInvalidRequest) {
  for (const char* bad : {R"("4.0")", R"("-1")", R"(" 4")", R"("4 ")", R"("")", R"("0x10")",
                          R"("1e3")", R"("+4")", R"("four")", R"("18446744073709551616")"}) {
    const std::string json = std::string(R"({"l":1024,"f":)") + bad + "}";
    EXPECT_EQ(code(json), ErrorCode::InvalidRequest) << json;
  }
}

TEST(RequestJson, LargestVersion) {
  auto r = get(with(R"(,"s":18446744073709551615)"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->version, 18446744073709551615u);
  auto quoted = get(with(R"(,"s":"18446744073709551615")"));
  ASSERT_TRUE(quoted);
  EXPECT_EQ(quoted->version, 18446744073709551615u);
}

TEST(RequestJson, IntegerBeyond64BitsIsInvalidJson) {
  // simdjson refuses integers that do not fit 64 bits: documented as InvalidJson.
  EXPECT_EQ(code(with(R"(,"s":18446744073709551616)")), ErrorCode::InvalidJson);
}

TEST(RequestJson, MinusZeroIsZero) {
  auto r = get(R"({"f":-0,"l":256})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->file_id, 0u);
}

TEST(RequestJson, NegativeIntegersAreInvalidRequest) {
  for (const char* key : {"s", "f", "l", "o", "n"}) {
    std::string json = R"({"f":1,"l":1024,")";
    json.append(key).append(R"(":-1})");
    EXPECT_EQ(code(json), ErrorCode::InvalidRequest) << json;
  }
  EXPECT_EQ(code(with(R"(,"o":-9223372036854775808)")), ErrorCode::InvalidRequest);
}

TEST(RequestJson, FloatsAreInvalidRequestEvenIntegral) {
  EXPECT_EQ(code(R"({"f":3.0,"l":1024})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(R"({"f":1,"l":1024.0})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(R"({"f":1,"l":1e3})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(with(R"(,"o":0.5)")), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(with(R"(,"n":1E1)")), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(with(R"(,"s":2.0)")), ErrorCode::InvalidRequest);
}

TEST(RequestJson, OtherTypesAreInvalidRequest) {
  for (const char* value : {"true", "false", "null", "[]", "[1]", "{}", R"({"v":1})"}) {
    for (const char* key : {"s", "f", "l", "o", "n", "b", "c"}) {
      std::string json = R"({"f":1,"l":1024,")";
      json.append(key).append("\":").append(value).append("}");
      EXPECT_EQ(code(json), ErrorCode::InvalidRequest) << json;
    }
  }
}

TEST(RequestJson, MissingFileIdOrBlockSize) {
  auto no_f = get(R"({"l":1024,"c":"tok"})");
  ASSERT_FALSE(no_f);
  EXPECT_EQ(no_f.error().code, ErrorCode::InvalidRequest);
  EXPECT_EQ(no_f.error().client_token, "tok");
  EXPECT_EQ(code(R"({"f":1})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(R"({})"), ErrorCode::InvalidRequest);
}

TEST(RequestJson, FileIdRange) {
  auto r = get(R"({"f":255,"l":1024})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->file_id, 255u);
  EXPECT_EQ(code(R"({"f":256,"l":1024})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(R"({"f":"256","l":1024})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(R"({"f":4294967296,"l":1024})"), ErrorCode::InvalidRequest);
}

TEST(RequestJson, BlockSizeBounds) {
  EXPECT_EQ(code(R"({"f":1,"l":255})"), ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(code(R"({"f":1,"l":0})"), ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(code(R"({"f":1,"l":131073})"), ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(code(R"({"f":1,"l":4294967552})"), ErrorCode::BlockSizeOutOfBounds);  // 2^32 + 256
  EXPECT_EQ(code(R"({"f":1,"l":18446744073709551615})"), ErrorCode::BlockSizeOutOfBounds);
  ASSERT_TRUE(get(R"({"f":1,"l":256})"));
  auto max = get(R"({"f":1,"l":131072})");
  ASSERT_TRUE(max);
  EXPECT_EQ(max->block_size, 131072u);
}

TEST(RequestJson, OffsetBounds) {
  auto r = get(with(R"(,"o":98304)"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->offset, 98304u);
  EXPECT_EQ(code(with(R"(,"o":98305)")), ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(code(with(R"(,"o":4294967296)")), ErrorCode::OffsetOutOfBounds);
}

TEST(RequestJson, CountBounds) {
  auto r = get(with(R"(,"n":98304)"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->count, 98304u);
  auto zero = get(with(R"(,"n":0)"));
  ASSERT_TRUE(zero);
  EXPECT_EQ(zero->count, 0u);
  EXPECT_EQ(code(with(R"(,"n":98305)")), ErrorCode::BlockCountLimitExceeded);
  EXPECT_EQ(code(with(R"(,"n":"4294967297")")), ErrorCode::BlockCountLimitExceeded);
}

// --- client token ---------------------------------------------------------------------------

TEST(RequestJson, TokenOf64BytesIsEchoed) {
  const std::string token(64, 'k');
  auto r = get(with(R"(,"c":")" + token + "\""));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->client_token, token);
}

TEST(RequestJson, TokenOver64BytesIsInvalidRequestWithoutToken) {
  auto r = get(with(R"(,"c":")" + std::string(65, 'k') + "\""));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::InvalidRequest);
  EXPECT_FALSE(r.error().client_token);
  EXPECT_EQ(r.error().message.find("kkkk"), std::string::npos);  // not echoed in the message
}

TEST(RequestJson, NonStringTokenIsInvalidRequestWithoutToken) {
  for (const char* value : {"5", "true", "null", "[]", "{}", "1.5"}) {
    auto r = get(with(std::string(R"(,"c":)") + value));
    ASSERT_FALSE(r) << value;
    EXPECT_EQ(r.error().code, ErrorCode::InvalidRequest);
    EXPECT_FALSE(r.error().client_token);
  }
}

TEST(RequestJson, EmptyTokenIsAToken) {
  auto r = get(with(R"(,"c":"")"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->client_token, "");
}

TEST(RequestJson, TokenLengthCountsUnescapedBytes) {
  // "\u00e9" is 6 characters on the wire and 2 bytes decoded.
  std::string escaped;
  for (int i = 0; i < 32; ++i) escaped += "\\u00e9";
  auto r = get(with(R"(,"c":")" + escaped + "\""));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->client_token->size(), 64u);
  auto over = get(with(R"(,"c":")" + escaped + "x\""));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::InvalidRequest);
  auto quote = get(with(R"(,"c":"a\"b\\c")"));
  ASSERT_TRUE(quote);
  EXPECT_EQ(quote->client_token, "a\"b\\c");
}

TEST(RequestJson, ValidTokenIsEchoedInEveryBoundsError) {
  struct Case {
    const char* extra;
    ErrorCode code;
  };
  for (const Case& c : {Case{R"(,"l":3)", ErrorCode::BlockSizeOutOfBounds},
                        Case{R"(,"o":98305)", ErrorCode::OffsetOutOfBounds},
                        Case{R"(,"n":98305)", ErrorCode::BlockCountLimitExceeded},
                        Case{R"(,"f":"x")", ErrorCode::InvalidRequest},
                        Case{R"(,"b":"0x1")", ErrorCode::InvalidRequest}}) {
    auto r = get(std::string(R"({"c":"rdy","f":1,"l":1024)") + c.extra + "}");
    ASSERT_FALSE(r) << c.extra;
    EXPECT_EQ(r.error().code, c.code) << c.extra;
    EXPECT_EQ(r.error().client_token, "rdy") << c.extra;
  }
  auto bitmap = get(R"({"c":"rdy","f":1,"l":1024,"b":")" + hex_bitmap(12288) + "\"}");
  ASSERT_FALSE(bitmap);
  EXPECT_EQ(bitmap.error().code, ErrorCode::BlockBitmapLimitExceeded);
  EXPECT_EQ(bitmap.error().client_token, "rdy");
}

TEST(RequestJson, SyntaxErrorsCarryNoToken) {
  auto r = get(R"({"c":"rdy","f":1,"l":1024)");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::InvalidJson);
  EXPECT_FALSE(r.error().client_token);
}

// --- check order ----------------------------------------------------------------------------

TEST(RequestJson, TypeErrorsComeBeforeBounds) {
  EXPECT_EQ(code(R"({"l":3,"o":99999,"n":99999,"f":"x"})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(R"({"l":3,"o":99999})"), ErrorCode::InvalidRequest);  // missing f
  EXPECT_EQ(code(R"({"f":1,"l":3,"c":5})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(R"({"f":300,"l":3})"), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(R"({"f":1,"l":3,"b":"xyz"})"), ErrorCode::InvalidRequest);
}

TEST(RequestJson, BoundsAreCheckedInOrderLOffsetCountBitmap) {
  const std::string big = R"(,"b":")" + hex_bitmap(12288) + "\"";
  EXPECT_EQ(code(R"({"f":1,"l":3,"o":98305,"n":98305)" + big + "}"),
            ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(code(R"({"f":1,"l":1024,"o":98305,"n":98305)" + big + "}"),
            ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(code(R"({"f":1,"l":1024,"n":98305)" + big + "}"), ErrorCode::BlockCountLimitExceeded);
  EXPECT_EQ(code(R"({"f":1,"l":1024)" + big + "}"), ErrorCode::BlockBitmapLimitExceeded);
}

// --- keys -----------------------------------------------------------------------------------

TEST(RequestJson, UnknownKeysAreIgnored) {
  auto r = get(R"({"F":"x","cc":1,"x":{"deep":[1,2,{"a":null}]},"f":2,"l":512,"":0,"ln":-5})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->file_id, 2u);
  EXPECT_EQ(r->block_size, 512u);
}

TEST(RequestJson, EscapedKeyIsTheSameKey) {
  auto r = get(R"({"\u0066":3,"l":512})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->file_id, 3u);
}

TEST(RequestJson, DuplicateKeysLastOneWins) {
  auto r = get(R"({"f":1,"l":512,"f":2,"c":"a","c":"b"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->file_id, 2u);
  EXPECT_EQ(r->client_token, "b");
}

TEST(RequestJson, DuplicateKeyWithABadOccurrenceIsInvalid) {
  EXPECT_EQ(code(R"({"f":"x","f":1,"l":512})"), ErrorCode::InvalidRequest);
  auto r = get(R"({"c":"good","c":7,"f":1,"l":512})");
  ASSERT_FALSE(r);
  EXPECT_FALSE(r.error().client_token);  // the last c was not a valid token
  auto last_good = get(R"({"c":7,"c":"good","f":1,"l":512})");
  ASSERT_FALSE(last_good);
  EXPECT_EQ(last_good.error().code, ErrorCode::InvalidRequest);
  EXPECT_EQ(last_good.error().client_token, "good");  // the last c is valid: echoed
}

// --- bitmap ---------------------------------------------------------------------------------

TEST(RequestJson, BitmapHexForms) {
  const std::vector<std::uint8_t> expected{0x3f, 0xff, 0xa0, 0x0b};
  for (const char* hex : {"0x3fffa00b", "0X3FFFA00B", "3fffa00b", "3FffA00b", "0x3FFFa00B"}) {
    auto r = get(with(std::string(R"(,"b":")") + hex + "\""));
    ASSERT_TRUE(r) << hex;
    EXPECT_EQ(r->bitmap, expected) << hex;
  }
}

TEST(RequestJson, FixedThirtyBitBitmap) {
  auto r = get(with(R"(,"b":"0xffffff3f")"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->bitmap, (std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0x3f}));
}

TEST(RequestJson, EmptyBitmapIsPresentAndEmpty) {
  for (const char* hex : {"", "0x", "0X"}) {
    auto r = get(with(std::string(R"(,"b":")") + hex + "\""));
    ASSERT_TRUE(r) << hex;
    ASSERT_TRUE(r->bitmap);
    EXPECT_TRUE(r->bitmap->empty());
  }
}

TEST(RequestJson, MalformedBitmapIsInvalidRequest) {
  for (const char* hex :
       {"0x1", "abc", "0", "0xzz", "0x0x12", "x12", "12 34", "0x12-3", "g0", "0x\u00e9"}) {
    EXPECT_EQ(code(with(std::string(R"(,"b":")") + hex + "\"")), ErrorCode::InvalidRequest) << hex;
  }
  EXPECT_EQ(code(with(R"(,"b":1234)")), ErrorCode::InvalidRequest);
}

TEST(RequestJson, BitmapSizeLimit) {
  auto ok = get(with(R"(,"b":")" + hex_bitmap(12287) + "\""));
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->bitmap->size(), 12287u);
  auto no_prefix = get(with(R"(,"b":")" + hex_bitmap(12287, "") + "\""));
  ASSERT_TRUE(no_prefix);
  EXPECT_EQ(code(with(R"(,"b":")" + hex_bitmap(12288) + "\"")),
            ErrorCode::BlockBitmapLimitExceeded);
  EXPECT_EQ(code(with(R"(,"b":")" + hex_bitmap(12288, "") + "\"")),
            ErrorCode::BlockBitmapLimitExceeded);
  EXPECT_EQ(code(with(R"(,"b":")" + hex_bitmap(16000) + "\"")),
            ErrorCode::BlockBitmapLimitExceeded);
}

TEST(RequestJson, OversizedBitmapThenSmallOneLastWins) {
  auto r = get(with(R"(,"b":")" + hex_bitmap(12288) + R"(","b":"01")"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->bitmap, (std::vector<std::uint8_t>{0x01}));
}

// --- not a JSON object ----------------------------------------------------------------------

TEST(RequestJson, NotAnObjectIsInvalidJson) {
  for (const char* json : {"[]", "[1,2]", "1", "\"x\"", "null", "true", "\"{}\""}) {
    EXPECT_EQ(code(json), ErrorCode::InvalidJson) << json;
  }
}

TEST(RequestJson, MalformedJsonIsInvalidJson) {
  for (const char* json : {"{", "}", R"({"f":})", R"({"f":1,})", R"({"f" 1})", R"({f:1})", "{} x",
                           "{}{}", R"({"f":1,"l":256}})", R"({"f":01,"l":256})", R"({'f':1})",
                           R"({"f":1,"l":256,"c":"\x"})", "{\"c\":\"a\nb\"}"}) {
    EXPECT_EQ(code(json), ErrorCode::InvalidJson) << json;
  }
}

TEST(RequestJson, InvalidUtf8IsInvalidJson) {
  EXPECT_EQ(code("{\"c\":\"\xff\xfe\",\"f\":1,\"l\":256}"), ErrorCode::InvalidJson);
  EXPECT_EQ(code("{\"\xc3\":1}"), ErrorCode::InvalidJson);
}

TEST(RequestJson, EmptyOrBlankPayloadIsInvalidJson) {
  EXPECT_EQ(code(""), ErrorCode::InvalidJson);
  EXPECT_EQ(code("   \n"), ErrorCode::InvalidJson);
}

TEST(RequestJson, NestingLimit) {
  std::string shallow = R"({"f":1,"l":256,"x":)";
  shallow.append(30, '[').append(30, ']').append("}");
  EXPECT_TRUE(get(shallow));
  std::string deep = R"({"f":1,"l":256,"x":)";
  deep.append(40, '[').append(40, ']').append("}");
  EXPECT_EQ(code(deep), ErrorCode::InvalidJson);
  std::string very_deep(20000, '[');
  EXPECT_EQ(code(very_deep), ErrorCode::InvalidJson);
}

TEST(RequestJson, PayloadSizeLimit) {
  std::string exact = R"({"f":1,"l":256})";
  exact.append(kMaxRequestMessageBytes - exact.size(), ' ');
  ASSERT_EQ(exact.size(), kMaxRequestMessageBytes);
  EXPECT_TRUE(get(exact));
  auto over = get(exact + " ");
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::InvalidRequest);
  EXPECT_FALSE(over.error().client_token);
}

TEST(RequestJson, DecodesOnlyTheGivenBytes) {
  const std::string buffer = R"({"f":1,"l":256}{"garbage")";
  std::vector<std::byte> bytes(buffer.size());
  std::memcpy(bytes.data(), buffer.data(), buffer.size());
  auto r = decode_get_request(Format::Json, std::span<const std::byte>(bytes).first(15));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->block_size, 256u);
}

TEST(RequestJson, RepeatedDecodingIsIndependent) {
  for (int i = 0; i < 200; ++i) {
    auto good = get(R"({"c":"a","f":1,"l":256,"b":"0x01"})");
    ASSERT_TRUE(good);
    EXPECT_EQ(good->bitmap, (std::vector<std::uint8_t>{0x01}));
    EXPECT_EQ(code("{"), ErrorCode::InvalidJson);
  }
}

TEST(RequestJson, DecodesWhatTheDeviceEncoderWrites) {
  GetStreamArgs args;
  args.client_token = "rdy";
  args.version = 2;
  args.file_id = 3;
  args.block_size = 4096;
  args.offset = 10;
  args.count = 4;
  args.bitmap = std::vector<std::uint8_t>{0x0f, 0x80};
  const std::vector<std::byte> payload = encode_get_request(Format::Json, args);
  auto r = decode_get_request(Format::Json, payload);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->client_token, "rdy");
  EXPECT_EQ(r->version, 2u);
  EXPECT_EQ(r->file_id, 3u);
  EXPECT_EQ(r->block_size, 4096u);
  EXPECT_EQ(r->offset, 10u);
  EXPECT_EQ(r->count, 4u);
  EXPECT_EQ(r->bitmap, args.bitmap);
}

// --- DescribeStream -------------------------------------------------------------------------

TEST(DescribeJson, EmptyPayloadIsAnEmptyObject) {
  auto r = describe("");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->client_token);
}

TEST(DescribeJson, TokenIsEchoed) {
  auto r = describe(R"({"c":"abc"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->client_token, "abc");
  auto none = describe("{}");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->client_token);
}

TEST(DescribeJson, BadTokenIsInvalidRequest) {
  for (const std::string& json : {std::string(R"({"c":5})"), std::string(R"({"c":null})"),
                                  R"({"c":")" + std::string(65, 'x') + "\"}"}) {
    auto r = describe(json);
    ASSERT_FALSE(r) << json;
    EXPECT_EQ(r.error().code, ErrorCode::InvalidRequest);
    EXPECT_FALSE(r.error().client_token);
  }
  auto max = describe(R"({"c":")" + std::string(64, 'x') + "\"}");
  ASSERT_TRUE(max);
}

TEST(DescribeJson, OtherKeysAreIgnoredWhateverTheirType) {
  auto r = describe(R"({"f":"x","l":-1,"b":"zz","n":1.5,"c":"t"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->client_token, "t");
}

TEST(DescribeJson, NotAnObjectIsInvalidJson) {
  for (const char* json : {"[]", "1", "{", "   ", "{} {}"}) {
    auto r = describe(json);
    ASSERT_FALSE(r) << json;
    EXPECT_EQ(r.error().code, ErrorCode::InvalidJson) << json;
  }
}

TEST(DescribeJson, PayloadSizeLimit) {
  std::string big = "{}";
  big.append(kMaxRequestMessageBytes, ' ');
  auto r = describe(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::InvalidRequest);
}

}  // namespace
}  // namespace chunkd::protocol

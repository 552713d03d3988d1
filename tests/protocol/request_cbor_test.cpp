// GetStream / DescribeStream request values in CBOR (SPEC.md §1.1, §1.3, §1.4; rules in
// protocol/request.hpp): defaults and every field, integer widths and the value kinds refused,
// bounds and their check order, the client token, the bitmap, what the device libraries send, and
// DescribeStream. The CBOR structure itself (maps, keys, malformed and oversized payloads) is in
// request_cbor_structure_test.cpp.
#include <cbor.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "protocol/device.hpp"
#include "protocol/request.hpp"
#include "tests/protocol/request_cbor_fixture.hpp"

namespace chunkd::protocol {
namespace {

using namespace testing;

// --- valid requests -------------------------------------------------------------------------

TEST(RequestCbor, MinimalRequestHasDefaults) {
  auto r = get(Cbor().map(2).kv("f", 0).kv("l", 256));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->client_token);
  EXPECT_FALSE(r->version);
  EXPECT_EQ(r->file_id, 0u);
  EXPECT_EQ(r->block_size, 256u);
  EXPECT_EQ(r->offset, 0u);
  EXPECT_EQ(r->count, 0u);
  EXPECT_FALSE(r->bitmap);
}

TEST(RequestCbor, FullRequest) {
  auto r = get(Cbor()
                   .map(7)
                   .kv("c", "tok")
                   .kv("s", 9)
                   .kv("f", 3)
                   .kv("l", 2048)
                   .kv("o", 4)
                   .kv("n", 6)
                   .text("b")
                   .bytes(std::vector<std::uint8_t>{0x01, 0x80}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->client_token, "tok");
  EXPECT_EQ(r->version, 9u);
  EXPECT_EQ(r->file_id, 3u);
  EXPECT_EQ(r->block_size, 2048u);
  EXPECT_EQ(r->offset, 4u);
  EXPECT_EQ(r->count, 6u);
  EXPECT_EQ(r->bitmap, (std::vector<std::uint8_t>{0x01, 0x80}));
}

TEST(RequestCbor, EveryUnsignedWidthIsAccepted) {
  // Small values in wide encodings: each key in a different width.
  auto r = get(Cbor()
                   .map(5)
                   .text("f")
                   .u8(4)
                   .text("l")
                   .u16(1024)
                   .text("o")
                   .u32(7)
                   .text("n")
                   .u64(2)
                   .text("s")
                   .u64(18446744073709551615u));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->file_id, 4u);
  EXPECT_EQ(r->block_size, 1024u);
  EXPECT_EQ(r->offset, 7u);
  EXPECT_EQ(r->count, 2u);
  EXPECT_EQ(r->version, 18446744073709551615u);

  for (int width = 0; width < 4; ++width) {
    Cbor cbor;
    cbor.map(2).text("f").u8(1).text("l");
    if (width == 0) cbor.u8(255);  // below 256: out of bounds on purpose
    if (width == 1) cbor.u16(512);
    if (width == 2) cbor.u32(512);
    if (width == 3) cbor.u64(512);
    auto decoded = get(cbor);
    if (width == 0) {
      ASSERT_FALSE(decoded);
      EXPECT_EQ(decoded.error().code, ErrorCode::BlockSizeOutOfBounds);
    } else {
      ASSERT_TRUE(decoded) << width;
      EXPECT_EQ(decoded->block_size, 512u);
    }
  }
}

TEST(RequestCbor, EmbeddedAndOneByteIntegers) {
  auto r = get(Cbor().map(3).text("f").u8(23).text("l").u16(256).text("o").u8(24));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->file_id, 23u);
  EXPECT_EQ(r->offset, 24u);
}

TEST(RequestCbor, NegativeIntegersOfEveryWidthAreInvalidRequest) {
  for (int width = 0; width < 4; ++width) {
    for (const char* key : {"s", "f", "l", "o", "n"}) {
      Cbor cbor = base_plus_one();
      cbor.text(key);
      if (width == 0) cbor.neg8(0);  // -1
      if (width == 1) cbor.neg16(1000);
      if (width == 2) cbor.neg32(100000);
      if (width == 3) cbor.neg64(1u << 20);
      EXPECT_EQ(code(cbor), ErrorCode::InvalidRequest) << key << " width " << width;
    }
  }
}

TEST(RequestCbor, FloatsAreInvalidRequestEvenIntegral) {
  EXPECT_EQ(code(Cbor().map(2).text("f").half(3.0f).kv("l", 1024)), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(Cbor().map(2).text("f").single(3.0f).kv("l", 1024)), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(Cbor().map(2).text("f").dbl(3.0).kv("l", 1024)), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(Cbor().map(2).kv("f", 1).text("l").dbl(1024.0)), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(base_plus_one().text("n").single(1.0f)), ErrorCode::InvalidRequest);
}

TEST(RequestCbor, BoolNullUndefinedAreInvalidRequest) {
  for (const char* key : {"s", "f", "l", "o", "n", "b", "c"}) {
    EXPECT_EQ(code(base_plus_one().text(key).boolean(true)), ErrorCode::InvalidRequest) << key;
    EXPECT_EQ(code(base_plus_one().text(key).boolean(false)), ErrorCode::InvalidRequest) << key;
    EXPECT_EQ(code(base_plus_one().text(key).null()), ErrorCode::InvalidRequest) << key;
    EXPECT_EQ(code(base_plus_one().text(key).undef()), ErrorCode::InvalidRequest) << key;
  }
}

TEST(RequestCbor, ContainersAsValuesAreInvalidRequest) {
  for (const char* key : {"s", "f", "l", "o", "n", "b", "c"}) {
    EXPECT_EQ(code(base_plus_one().text(key).array(1).u8(1)), ErrorCode::InvalidRequest) << key;
    EXPECT_EQ(code(base_plus_one().text(key).map(0)), ErrorCode::InvalidRequest) << key;
    EXPECT_EQ(code(base_plus_one().text(key).indef_array().brk()), ErrorCode::InvalidRequest)
        << key;
  }
}

TEST(RequestCbor, ByteStringIsNotANumber) {
  EXPECT_EQ(code(Cbor().map(2).text("f").bytes("4").kv("l", 1024)), ErrorCode::InvalidRequest);
}

TEST(RequestCbor, TextNumbersAreAcceptedLikeJson) {
  auto r = get(Cbor().map(4).kv("f", "4").kv("l", "1024").kv("o", "0002").kv("s", "1"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->file_id, 4u);
  EXPECT_EQ(r->block_size, 1024u);
  EXPECT_EQ(r->offset, 2u);
  EXPECT_EQ(r->version, 1u);
  for (const char* bad : {"4.0", "-4", " 4", "", "0x4", "4a"}) {
    EXPECT_EQ(code(Cbor().map(2).kv("f", bad).kv("l", 1024)), ErrorCode::InvalidRequest) << bad;
  }
}

TEST(RequestCbor, TaggedValuesAreInvalidRequest) {
  // Tag 2 (positive bignum) around a byte string, and tag 0 around a number.
  EXPECT_EQ(code(base_plus_one().text("o").tag(2).bytes("\x01")), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(base_plus_one().text("n").tag(1).u8(1)), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(base_plus_one().text("b").tag(24).bytes("\x01")), ErrorCode::InvalidRequest);
}

TEST(RequestCbor, TaggedItemsUnderUnknownKeysAreIgnored) {
  auto r = get(base_plus_one().text("x").tag(1).array(2).tag(2).bytes("ab").u8(3));
  ASSERT_TRUE(r) << r.error().message;
}

TEST(RequestCbor, MissingFileIdOrBlockSize) {
  EXPECT_EQ(code(Cbor().map(1).kv("l", 1024)), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(Cbor().map(1).kv("f", 1)), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(Cbor().map(0)), ErrorCode::InvalidRequest);
  auto r = get(Cbor().map(2).kv("c", "rdy").kv("l", 1024));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().client_token, "rdy");
}

TEST(RequestCbor, Bounds) {
  EXPECT_EQ(code(Cbor().map(2).kv("f", 256).kv("l", 1024)), ErrorCode::InvalidRequest);
  EXPECT_TRUE(get(Cbor().map(2).kv("f", 255).kv("l", 1024)));
  EXPECT_EQ(code(Cbor().map(2).kv("f", 1).kv("l", 255)), ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(code(Cbor().map(2).kv("f", 1).kv("l", 131073)), ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(code(Cbor().map(2).kv("f", 1).text("l").u64(1ull << 40)),
            ErrorCode::BlockSizeOutOfBounds);
  EXPECT_TRUE(get(Cbor().map(2).kv("f", 1).kv("l", 131072)));
  EXPECT_EQ(code(base_plus_one().kv("o", 98305)), ErrorCode::OffsetOutOfBounds);
  EXPECT_TRUE(get(base_plus_one().kv("o", 98304)));
  EXPECT_EQ(code(base_plus_one().kv("n", 98305)), ErrorCode::BlockCountLimitExceeded);
  EXPECT_TRUE(get(base_plus_one().kv("n", 98304)));
  EXPECT_EQ(code(base_plus_one().text("n").u64(1ull << 33)), ErrorCode::BlockCountLimitExceeded);
}

TEST(RequestCbor, CheckOrder) {
  const std::vector<std::uint8_t> big(12288, 0xff);
  auto all_bad = [&](bool f_bad, bool l_bad, bool o_bad, bool n_bad) {
    Cbor cbor;
    cbor.map(5);
    if (f_bad) {
      cbor.text("f").neg8(0);
    } else {
      cbor.kv("f", 1);
    }
    cbor.kv("l", l_bad ? 100 : 1024).kv("o", o_bad ? 98305 : 0).kv("n", n_bad ? 98305 : 0);
    cbor.text("b").bytes(big);
    return code(cbor);
  };
  EXPECT_EQ(all_bad(true, true, true, true), ErrorCode::InvalidRequest);
  EXPECT_EQ(all_bad(false, true, true, true), ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(all_bad(false, false, true, true), ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(all_bad(false, false, false, true), ErrorCode::BlockCountLimitExceeded);
  EXPECT_EQ(all_bad(false, false, false, false), ErrorCode::BlockBitmapLimitExceeded);
}

// --- client token ---------------------------------------------------------------------------

TEST(RequestCbor, Token64IsEchoed65IsInvalidWithoutToken) {
  const std::string max(64, 't');
  auto ok = get(base_plus_one().kv("c", max));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->client_token, max);
  auto over = get(base_plus_one().kv("c", std::string(65, 't')));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::InvalidRequest);
  EXPECT_FALSE(over.error().client_token);
}

TEST(RequestCbor, TokenMustBeValidUtf8Text) {
  EXPECT_EQ(code(base_plus_one().text("c").bytes("rdy")), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(base_plus_one().text("c").u8(5)), ErrorCode::InvalidRequest);
  auto bad_utf8 = get(base_plus_one().kv("c", "\xff\xfe"));
  ASSERT_FALSE(bad_utf8);
  EXPECT_EQ(bad_utf8.error().code, ErrorCode::InvalidRequest);
  EXPECT_FALSE(bad_utf8.error().client_token);
  auto utf8 = get(base_plus_one().kv("c", "caf\xc3\xa9"));
  ASSERT_TRUE(utf8);
  EXPECT_EQ(utf8->client_token, "caf\xc3\xa9");
}

TEST(RequestCbor, TokenIsEchoedInBoundsErrors) {
  auto r = get(Cbor().map(3).kv("c", "rdy").kv("f", 1).kv("l", 3));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(r.error().client_token, "rdy");
  auto typed = get(Cbor().map(3).kv("c", "rdy").text("f").dbl(1.0).kv("l", 1024));
  ASSERT_FALSE(typed);
  EXPECT_EQ(typed.error().code, ErrorCode::InvalidRequest);
  EXPECT_EQ(typed.error().client_token, "rdy");
}

TEST(RequestCbor, IndefiniteTextTokenIsConcatenated) {
  auto r = get(base_plus_one().text("c").indef_text().text("rd").text("").text("y").brk());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->client_token, "rdy");
  auto over = get(base_plus_one()
                      .text("c")
                      .indef_text()
                      .text(std::string(40, 'a'))
                      .text(std::string(25, 'b'))
                      .brk());
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::InvalidRequest);
}

// --- bitmap ---------------------------------------------------------------------------------

TEST(RequestCbor, BitmapAsByteString) {
  auto r = get(base_plus_one().text("b").bytes(std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0x3f}));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->bitmap, (std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0x3f}));
}

TEST(RequestCbor, BitmapAsHexText) {
  for (const char* hex : {"0xffffff3f", "FFFFFF3F", "0XffFFff3F"}) {
    auto r = get(base_plus_one().kv("b", hex));
    ASSERT_TRUE(r) << hex;
    EXPECT_EQ(r->bitmap, (std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0x3f})) << hex;
  }
  EXPECT_EQ(code(base_plus_one().kv("b", "0xfff")), ErrorCode::InvalidRequest);
  EXPECT_EQ(code(base_plus_one().kv("b", "0xgg")), ErrorCode::InvalidRequest);
}

TEST(RequestCbor, EmptyBitmaps) {
  auto bytes = get(base_plus_one().text("b").bytes(""));
  ASSERT_TRUE(bytes);
  ASSERT_TRUE(bytes->bitmap);
  EXPECT_TRUE(bytes->bitmap->empty());
  auto text = get(base_plus_one().kv("b", "0x"));
  ASSERT_TRUE(text);
  ASSERT_TRUE(text->bitmap);
  EXPECT_TRUE(text->bitmap->empty());
}

TEST(RequestCbor, BitmapAsNumberIsInvalidRequest) {
  EXPECT_EQ(code(base_plus_one().kv("b", 0x3fffffff)), ErrorCode::InvalidRequest);
}

TEST(RequestCbor, BitmapSizeLimit) {
  auto ok = get(base_plus_one().text("b").bytes(std::vector<std::uint8_t>(12287, 0x01)));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->bitmap->size(), 12287u);
  EXPECT_EQ(code(base_plus_one().text("b").bytes(std::vector<std::uint8_t>(12288, 0x01))),
            ErrorCode::BlockBitmapLimitExceeded);
  // Hex text: 12288 bytes are 24576 digits, still under the payload limit.
  EXPECT_EQ(code(base_plus_one().kv("b", std::string(2 * 12288, 'a'))),
            ErrorCode::BlockBitmapLimitExceeded);
  auto hex_ok = get(base_plus_one().kv("b", std::string(2 * 12287, 'a')));
  ASSERT_TRUE(hex_ok);
  EXPECT_EQ(hex_ok->bitmap->size(), 12287u);
}

TEST(RequestCbor, IndefiniteByteStringBitmapIsConcatenated) {
  auto r = get(base_plus_one()
                   .text("b")
                   .indef_bytes()
                   .bytes(std::vector<std::uint8_t>{0x01})
                   .bytes(std::vector<std::uint8_t>{0x02, 0x03})
                   .brk());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->bitmap, (std::vector<std::uint8_t>{0x01, 0x02, 0x03}));
}

// --- device libraries -----------------------------------------------------------------------

TEST(RequestCbor, FileStreamsLibraryRequest) {
  // What a widely used device library publishes: token "rdy" and a fixed 4-byte bitmap "MQ==".
  auto r = get(Cbor()
                   .map(6)
                   .kv("c", "rdy")
                   .kv("f", 0)
                   .kv("l", 1024)
                   .kv("o", 5)
                   .text("b")
                   .bytes("MQ==")
                   .kv("n", 1));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->client_token, "rdy");
  EXPECT_EQ(r->offset, 5u);
  EXPECT_EQ(r->count, 1u);
  EXPECT_EQ(r->bitmap, (std::vector<std::uint8_t>{'M', 'Q', '=', '='}));
}

TEST(RequestCbor, OtaAgentRequest) {
  std::vector<std::uint8_t> missing(13, 0xff);  // 100 blocks, bitmap of the whole file
  missing[0] = 0x00;                            // blocks 0..7 received
  auto r = get(Cbor()
                   .map(6)
                   .kv("c", "rdy")
                   .kv("f", 0)
                   .kv("l", 4096)
                   .kv("o", 0)
                   .text("b")
                   .bytes(missing)
                   .kv("n", 1));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->bitmap, missing);
  EXPECT_EQ(r->count, 1u);
}

TEST(RequestCbor, DecodesWhatTheDeviceEncoderWrites) {
  GetStreamArgs args;
  args.client_token = "rdy";
  args.file_id = 1;
  args.block_size = 256;
  args.offset = 0;
  args.count = 1;
  args.bitmap = std::vector<std::uint8_t>{0xfe, 0xff, 0x01};
  const std::vector<std::byte> payload = encode_get_request(Format::Cbor, args);
  auto r = decode_get_request(Format::Cbor, payload);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->client_token, "rdy");
  EXPECT_FALSE(r->version);
  EXPECT_EQ(r->file_id, 1u);
  EXPECT_EQ(r->block_size, 256u);
  EXPECT_EQ(r->count, 1u);
  EXPECT_EQ(r->bitmap, args.bitmap);
}

// --- DescribeStream -------------------------------------------------------------------------

TEST(DescribeCbor, EmptyPayloadIsAnEmptyMap) {
  auto r = describe(Cbor());
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->client_token);
  auto empty_map = describe(Cbor().map(0));
  ASSERT_TRUE(empty_map);
  EXPECT_FALSE(empty_map->client_token);
}

TEST(DescribeCbor, TokenIsEchoed) {
  auto r = describe(Cbor().map(1).kv("c", "abc"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->client_token, "abc");
}

TEST(DescribeCbor, BadTokenIsInvalidRequest) {
  for (const Cbor& cbor : {Cbor().map(1).kv("c", 5), Cbor().map(1).text("c").bytes("abc"),
                           Cbor().map(1).kv("c", std::string(65, 'x'))}) {
    auto r = describe(cbor);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::InvalidRequest);
    EXPECT_FALSE(r.error().client_token);
  }
}

TEST(DescribeCbor, OtherKeysAreIgnored) {
  auto r = describe(Cbor().map(3).text("f").neg8(0).text("l").dbl(1.5).kv("c", "t"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->client_token, "t");
}

TEST(DescribeCbor, NotAMapIsInvalidCbor) {
  for (const Cbor& cbor :
       {Cbor().array(0), Cbor().u8(0), Cbor().map(1).text("c"), Cbor().map(0).u8(0)}) {
    auto r = describe(cbor);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::InvalidCbor);
  }
}

}  // namespace
}  // namespace chunkd::protocol

// The CBOR structure of GetStream requests (SPEC.md §1.1; rules in protocol/request.hpp):
// indefinite maps and keys, unknown, non-text and duplicate keys, the self-describe tag, and what
// is invalid CBOR (not a map, JSON, truncated, trailing bytes, huge declared lengths, nesting,
// reserved bytes) or too large. Payloads built item by item with libcbor's encoders.
#include <cbor.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "protocol/request.hpp"
#include "tests/protocol/request_cbor_fixture.hpp"

namespace chunkd::protocol {
namespace {

using namespace testing;

// --- map structure --------------------------------------------------------------------------

TEST(RequestCbor, IndefiniteMapIsAccepted) {
  auto r = get(Cbor().indef_map().kv("f", 2).kv("l", 512).brk());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->file_id, 2u);
}

TEST(RequestCbor, IndefiniteMapKeyWithoutValueIsInvalidCbor) {
  EXPECT_EQ(code(Cbor().indef_map().kv("f", 2).kv("l", 512).text("o").brk()),
            ErrorCode::InvalidCbor);
}

TEST(RequestCbor, IndefiniteKeyIsAKey) {
  auto r = get(Cbor().map(2).indef_text().text("f").brk().u8(9).kv("l", 512));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->file_id, 9u);
}

TEST(RequestCbor, UnknownAndNonTextKeysAreIgnored) {
  auto r = get(Cbor()
                   .map(7)
                   .u8(1)
                   .text("x")
                   .bytes("f")
                   .u8(200)
                   .text("ff")
                   .neg8(3)
                   .text("nested")
                   .map(2)
                   .kv("f", "not this one")
                   .text("arr")
                   .indef_array()
                   .u8(1)
                   .indef_bytes()
                   .bytes("z")
                   .brk()
                   .brk()
                   .text("F")
                   .dbl(1.5)
                   .kv("f", 2)
                   .kv("l", 512));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->file_id, 2u);
  EXPECT_EQ(r->block_size, 512u);
}

TEST(RequestCbor, DuplicateKeysLastOneWins) {
  auto r = get(Cbor().map(3).kv("f", 1).kv("l", 512).kv("f", 7));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->file_id, 7u);
  EXPECT_EQ(code(Cbor().map(3).text("f").neg8(1).kv("l", 512).kv("f", 7)),
            ErrorCode::InvalidRequest);
}

TEST(RequestCbor, SelfDescribeTagIsAccepted) {
  auto r = get(Cbor().tag(55799).map(2).kv("f", 1).kv("l", 512));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(code(Cbor().tag(1).map(2).kv("f", 1).kv("l", 512)), ErrorCode::InvalidCbor);
}

TEST(RequestCbor, NotAMapIsInvalidCbor) {
  EXPECT_EQ(code(Cbor().array(2).u8(1).u8(2)), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().indef_array().brk()), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().u8(1)), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().text("{\"f\":1,\"l\":256}")), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().bytes("x")), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().null()), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().brk()), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor()), ErrorCode::InvalidCbor);  // empty payload
}

TEST(RequestCbor, JsonOnTheCborTopicIsInvalidCbor) {
  EXPECT_EQ(code(Cbor().raw(R"({"f":1,"l":256})")), ErrorCode::InvalidCbor);
}

TEST(RequestCbor, TruncatedPayloadsAreInvalidCbor) {
  const std::vector<std::byte> full = Cbor()
                                          .map(4)
                                          .kv("c", "rdy")
                                          .kv("f", 1)
                                          .text("l")
                                          .u32(1024)
                                          .text("b")
                                          .bytes("abcd")
                                          .bytes_out();
  for (std::size_t size = 1; size < full.size(); ++size) {
    std::vector<std::byte> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(size));
    auto r = decode_get_request(Format::Cbor, prefix);
    ASSERT_FALSE(r) << size;
    EXPECT_EQ(r.error().code, ErrorCode::InvalidCbor) << size;
  }
  EXPECT_TRUE(decode_get_request(Format::Cbor, full));
}

TEST(RequestCbor, TrailingBytesAreInvalidCbor) {
  EXPECT_EQ(code(Cbor().map(2).kv("f", 1).kv("l", 512).u8(0)), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().map(2).kv("f", 1).kv("l", 512).map(0)), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().indef_map().kv("f", 1).kv("l", 512).brk().brk()), ErrorCode::InvalidCbor);
}

TEST(RequestCbor, HugeDeclaredLengthsAreInvalidCbor) {
  EXPECT_EQ(code(Cbor().map(1ull << 32).kv("f", 1)), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(Cbor().map(SIZE_MAX)), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(base_plus_one().text("x").array(1ull << 62)), ErrorCode::InvalidCbor);
  // A byte string declaring 2^64-1 bytes: the decoder must not read past the payload.
  EXPECT_EQ(code(base_plus_one().text("b").raw_byte(0x5b).raw(std::string(8, '\xff'))),
            ErrorCode::InvalidCbor);
  EXPECT_EQ(code(base_plus_one().text("c").raw_byte(0x7a).raw("\x7f\xff\xff\xff")),
            ErrorCode::InvalidCbor);
}

TEST(RequestCbor, NestingLimit) {
  Cbor ok = base_plus_one();
  ok.text("x");
  for (int i = 0; i < 15; ++i) ok.array(1);  // the top map plus 15 arrays: 16 levels
  ok.u8(0);
  EXPECT_TRUE(get(ok));

  Cbor deep = base_plus_one();
  deep.text("x");
  for (int i = 0; i < 16; ++i) deep.array(1);
  deep.u8(0);
  EXPECT_EQ(code(deep), ErrorCode::InvalidCbor);

  Cbor very_deep = base_plus_one();
  very_deep.text("x");
  for (int i = 0; i < 20000; ++i) very_deep.indef_array();
  EXPECT_EQ(code(very_deep), ErrorCode::InvalidCbor);
}

TEST(RequestCbor, ReservedAndUnexpectedBytesAreInvalidCbor) {
  for (unsigned reserved : {0x1cu, 0x3cu, 0x5cu, 0x7cu, 0x9cu, 0xbcu, 0xdcu, 0xf8u, 0xfcu, 0xe0u}) {
    EXPECT_EQ(code(base_plus_one().text("x").raw_byte(static_cast<std::uint8_t>(reserved))),
              ErrorCode::InvalidCbor)
        << reserved;
  }
  // A break inside a definite map, and chunks of the wrong kind inside indefinite strings.
  EXPECT_EQ(code(Cbor().map(2).kv("f", 1).brk()), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(base_plus_one().text("c").indef_text().bytes("x").brk()), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(base_plus_one().text("b").indef_bytes().text("x").brk()), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(base_plus_one().text("b").indef_bytes().indef_bytes().brk().brk()),
            ErrorCode::InvalidCbor);
  EXPECT_EQ(code(base_plus_one().text("b").indef_bytes().u8(1).brk()), ErrorCode::InvalidCbor);
  EXPECT_EQ(code(base_plus_one().text("x").tag(1).brk()), ErrorCode::InvalidCbor);
}

TEST(RequestCbor, PayloadSizeLimit) {
  // An unknown key carrying a byte string pads the payload to the limit exactly.
  Cbor exact = Cbor().map(3).kv("f", 1).kv("l", 512).text("x");
  const std::size_t used = exact.bytes_out().size() + 3;  // 0x59 + 2-byte length
  exact.bytes(std::string(kMaxRequestMessageBytes - used, 'p'));
  ASSERT_EQ(exact.bytes_out().size(), kMaxRequestMessageBytes);
  EXPECT_TRUE(get(exact));

  Cbor over = Cbor().map(3).kv("c", "rdy").kv("f", 1).text("x");
  over.bytes(std::string(kMaxRequestMessageBytes, 'p'));
  auto r = get(over);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::InvalidRequest);
  EXPECT_FALSE(r.error().client_token);
}

}  // namespace
}  // namespace chunkd::protocol

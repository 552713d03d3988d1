// Golden bytes of every reply chunkd publishes (SPEC.md §1.2-§1.4), the exact-size buffer contract
// of encode_data_reply, and the base64 helpers. The CBOR replies are also read back with libcbor,
// an independent decoder, to check the item types device decoders require.
#include "protocol/reply.hpp"

#include <cbor.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "protocol/base64.hpp"
#include "tests/protocol/bytes.hpp"

namespace chunkd::protocol {
namespace {

using test_bytes::as_text;
using test_bytes::ascii;
using test_bytes::Bytes;
using test_bytes::cat;
using test_bytes::hex;
using test_bytes::random_bytes;

Bytes sequence(std::size_t size) {
  Bytes out(size);
  for (std::size_t k = 0; k < size; ++k) out[k] = std::byte(k & 0xff);
  return out;
}

// Encodes a data reply into a buffer of exactly the right size (so ASan sees any overflow) and
// checks that one byte less is refused with 0 and that data_reply_max_bytes is an upper bound.
Bytes encode_data(Format format, std::optional<std::string_view> token, std::uint32_t file_id,
                  std::uint32_t block_index, std::span<const std::byte> payload) {
  const std::size_t bound = data_reply_max_bytes(format, payload.size(), token ? token->size() : 0);
  Bytes big(bound);
  const std::size_t size = encode_data_reply(format, big, token, file_id, block_index, payload);
  EXPECT_GT(size, 0u);
  EXPECT_LE(size, bound);
  Bytes exact(size);
  EXPECT_EQ(encode_data_reply(format, exact, token, file_id, block_index, payload), size);
  EXPECT_EQ(exact, Bytes(big.begin(), big.begin() + static_cast<std::ptrdiff_t>(size)));
  Bytes short_by_one(size - 1);
  EXPECT_EQ(encode_data_reply(format, short_by_one, token, file_id, block_index, payload), 0u);
  return exact;
}

// base64 of the bytes 0..255 (RFC 4648 standard alphabet), computed independently.
const std::string kBase64Of0To255 =
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BB"
    "QkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKD"
    "hIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TF"
    "xsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w==";

// ---------------------------------------------------------------------------------------------
// Data reply, JSON.

TEST(DataReplyJson, OneByteNoTokenBlockZero) {
  const Bytes payload = hex("41");
  EXPECT_EQ(as_text(encode_data(Format::Json, std::nullopt, 0, 0, payload)),
            R"({"f":0,"l":1,"i":0,"p":"QQ=="})");
}

TEST(DataReplyJson, ThreeBytesWithTokenLargeIndex) {
  const Bytes payload = hex("01 02 03");
  EXPECT_EQ(as_text(encode_data(Format::Json, "abc", 3, 70000, payload)),
            R"({"c":"abc","f":3,"l":3,"i":70000,"p":"AQID"})");
}

TEST(DataReplyJson, TwoHundredFiftySixBytesMaxIndex) {
  const Bytes payload = sequence(256);
  const std::string expected =
      R"({"f":255,"l":256,"i":4294967295,"p":")" + kBase64Of0To255 + R"("})";
  EXPECT_EQ(as_text(encode_data(Format::Json, std::nullopt, 255, 4294967295u, payload)), expected);
  // '/' and '+' appear verbatim: no "\/" escaping, no line breaks.
  EXPECT_NE(expected.find('/'), std::string::npos);
  EXPECT_EQ(expected.find("\\/"), std::string::npos);
  EXPECT_EQ(expected.find('\n'), std::string::npos);
}

TEST(DataReplyJson, TwoBytesHaveOnePaddingChar) {
  const Bytes payload = hex("ff fe");
  EXPECT_EQ(as_text(encode_data(Format::Json, "", 1, 2, payload)),
            R"({"c":"","f":1,"l":2,"i":2,"p":"//4="})");
}

TEST(DataReplyJson, TokenEscapingIsExact) {
  // quote, backslash, newline, tab, '/', control chars 0x01 and 0x1f, DEL, UTF-8 "é" and "€",
  // backspace, form feed, carriage return.
  const std::string token =
      "a\"b\\c\nd\te/f\x01\x1f\x7f"
      "\xc3\xa9\xe2\x82\xac\b\f\r";
  const std::string expected_token =
      "a\\\"b\\\\c\\nd\\te/f\\u0001\\u001f\x7f"
      "\xc3\xa9\xe2\x82\xac\\b\\f\\r";
  const Bytes payload = hex("00");
  EXPECT_EQ(as_text(encode_data(Format::Json, token, 0, 0, payload)),
            R"({"c":")" + expected_token + R"(","f":0,"l":1,"i":0,"p":"AA=="})");
}

TEST(DataReplyJson, InvalidUtf8TokenBytesPassThrough) {
  // Bytes >= 0x80 that are not UTF-8 are echoed unchanged (see reply.hpp).
  const std::string token = "\xff\xc3x\x80";
  const Bytes payload = hex("00");
  EXPECT_EQ(as_text(encode_data(Format::Json, token, 0, 0, payload)),
            "{\"c\":\"\xff\xc3x\x80\",\"f\":0,\"l\":1,\"i\":0,\"p\":\"AA==\"}");
}

TEST(DataReplyJson, AllControlCharactersEscape) {
  for (int c = 0; c < 0x20; ++c) {
    const std::string token(1, static_cast<char>(c));
    std::string escaped;
    switch (c) {
      case '\b':
        escaped = "\\b";
        break;
      case '\f':
        escaped = "\\f";
        break;
      case '\n':
        escaped = "\\n";
        break;
      case '\r':
        escaped = "\\r";
        break;
      case '\t':
        escaped = "\\t";
        break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        escaped = buf;
      }
    }
    EXPECT_EQ(wire::json_escaped_length(token), escaped.size()) << c;
    std::string out(escaped.size(), '?');
    EXPECT_EQ(wire::write_json_escaped(out.data(), token), out.data() + out.size());
    EXPECT_EQ(out, escaped) << c;
  }
}

TEST(DataReplyJson, WorstCaseTokenFitsTheBound) {
  const std::string token(64, '\x01');  // every byte becomes \u0001
  const Bytes payload = sequence(131072);
  const Bytes out = encode_data(Format::Json, token, 4294967295u, 4294967295u, payload);
  EXPECT_EQ(out.size(), 30 + 6 * 64 + 10 + 6 + 10 + base64::encoded_length(payload.size()));
}

TEST(DataReply, EmptyPayloadBothFormats) {
  // Never sent (an empty file has no block), but well-formed if asked for.
  EXPECT_EQ(as_text(encode_data(Format::Json, std::nullopt, 0, 0, {})),
            R"({"f":0,"l":0,"i":0,"p":""})");
  EXPECT_EQ(encode_data(Format::Cbor, std::nullopt, 0, 0, {}),
            hex("a4 6166 00 616c 00 6169 00 6170 40"));
}

TEST(DataReply, BoundHoldsForEveryTokenByteAndPayloadSize) {
  for (int byte = 0; byte < 256; ++byte) {
    const std::string token(64, static_cast<char>(byte));
    for (const Format format : {Format::Json, Format::Cbor}) {
      for (std::size_t size : {1u, 2u, 3u, 23u, 24u, 255u, 256u, 65536u}) {
        const Bytes payload(size, std::byte{0x5a});
        encode_data(format, token, 4294967295u, 4294967295u, payload);  // checks the bound
      }
    }
  }
}

TEST(DataReplyJson, EmptyOutputBufferIsRefused) {
  const Bytes payload = hex("41");
  EXPECT_EQ(encode_data_reply(Format::Json, {}, std::nullopt, 0, 0, payload), 0u);
  EXPECT_EQ(encode_data_reply(Format::Cbor, {}, std::nullopt, 0, 0, payload), 0u);
}

// ---------------------------------------------------------------------------------------------
// Data reply, CBOR.

TEST(DataReplyCbor, OneByteNoTokenBlockZero) {
  const Bytes payload = hex("41");
  EXPECT_EQ(encode_data(Format::Cbor, std::nullopt, 0, 0, payload),
            hex("a4 6166 00 616c 01 6169 00 6170 41 41"));
}

TEST(DataReplyCbor, ThreeBytesWithTokenLargeIndex) {
  const Bytes payload = hex("01 02 03");
  EXPECT_EQ(encode_data(Format::Cbor, "abc", 3, 70000, payload),
            hex("a5 6163 63616263 6166 03 616c 03 6169 1a00011170 6170 43 010203"));
}

TEST(DataReplyCbor, TwoHundredFiftySixBytes) {
  const Bytes payload = sequence(256);
  EXPECT_EQ(encode_data(Format::Cbor, std::nullopt, 24, 65535, payload),
            cat({hex("a4 6166 1818 616c 190100 6169 19ffff 6170 590100"), payload}));
}

TEST(DataReplyCbor, MaxIndexAndTokenBoundaries) {
  const Bytes payload = hex("aa");
  const std::string token(24, 't');  // 24 bytes: the first length needing a 1-byte argument
  EXPECT_EQ(
      encode_data(Format::Cbor, token, 23, 4294967295u, payload),
      cat({hex("a5 6163 7818"), ascii(token), hex("6166 17 616c 01 6169 1affffffff 6170 41 aa")}));
}

TEST(DataReplyCbor, TokenBytesAreCopiedVerbatim) {
  const std::string token = "q\"\\\n/\xff";
  const Bytes payload = hex("00");
  EXPECT_EQ(encode_data(Format::Cbor, token, 0, 0, payload),
            cat({hex("a5 6163 66"), ascii(token), hex("6166 00 616c 01 6169 00 6170 41 00")}));
}

TEST(DataReplyCbor, WorstCaseFitsTheBound) {
  const std::string token(64, 'x');
  const Bytes payload = sequence(131072);
  const Bytes out = encode_data(Format::Cbor, token, 4294967295u, 4294967295u, payload);
  EXPECT_EQ(out.size(), 1 + 2 + 2 + 64 + 2 + 5 + 2 + 5 + 2 + 5 + 2 + 5 + 131072);
}

TEST(DataReplyCbor, HeaderBytesPrecedeThePayloadExactly) {
  const Bytes payload = random_bytes(300, 9);
  for (const auto token :
       {std::optional<std::string_view>{}, std::optional<std::string_view>{"t"},
        std::optional<std::string_view>{std::string_view("0123456789012345678901234")}}) {
    for (const std::uint32_t value : {0u, 23u, 24u, 255u, 256u, 65535u, 65536u, 4294967295u}) {
      for (const std::size_t size : {std::size_t{1}, std::size_t{24}, std::size_t{300}}) {
        const auto part = std::span<const std::byte>(payload).first(size);
        const Bytes out = encode_data(Format::Cbor, token, value, value, part);
        const std::size_t header = cbor_data_header_bytes(token, value, value, size);
        ASSERT_EQ(header + size, out.size());
        EXPECT_TRUE(std::equal(part.begin(), part.end(), out.begin() + static_cast<long>(header)));
        // The header alone is the same bytes, for a payload sent from where it lies.
        Bytes alone(header + 8);
        ASSERT_EQ(encode_cbor_data_header(alone, token, value, value, size), header);
        EXPECT_TRUE(
            std::equal(out.begin(), out.begin() + static_cast<long>(header), alone.begin()));
        EXPECT_EQ(encode_cbor_data_header(std::span<std::byte>(alone).first(header - 1), token,
                                          value, value, size),
                  0u);
      }
    }
  }
}

// libcbor's view of a reply: every key a text string, f/l/i unsigned, p a byte string.
TEST(DataReplyCbor, LibcborSeesTheDeviceTypes) {
  const Bytes payload = random_bytes(4096, 1);
  const Bytes out = encode_data(Format::Cbor, "tok", 7, 98303, payload);
  cbor_load_result result{};
  cbor_item_t* item =
      cbor_load(reinterpret_cast<const unsigned char*>(out.data()), out.size(), &result);
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(result.error.code, CBOR_ERR_NONE);
  EXPECT_EQ(result.read, out.size());
  ASSERT_TRUE(cbor_isa_map(item));
  ASSERT_TRUE(cbor_map_is_definite(item));
  ASSERT_EQ(cbor_map_size(item), 5u);
  const cbor_pair* pairs = cbor_map_handle(item);
  const char* keys[] = {"c", "f", "l", "i", "p"};
  for (std::size_t k = 0; k < 5; ++k) {
    ASSERT_TRUE(cbor_isa_string(pairs[k].key));
    ASSERT_EQ(cbor_string_length(pairs[k].key), 1u);
    EXPECT_EQ(std::memcmp(cbor_string_handle(pairs[k].key), keys[k], 1), 0);
  }
  EXPECT_TRUE(cbor_isa_string(pairs[0].value));
  EXPECT_TRUE(cbor_isa_uint(pairs[1].value));
  EXPECT_EQ(cbor_get_int(pairs[1].value), 7u);
  EXPECT_TRUE(cbor_isa_uint(pairs[2].value));
  EXPECT_EQ(cbor_get_int(pairs[2].value), 4096u);
  EXPECT_EQ(cbor_int_get_width(pairs[2].value), CBOR_INT_16);  // shortest
  EXPECT_TRUE(cbor_isa_uint(pairs[3].value));
  EXPECT_EQ(cbor_get_int(pairs[3].value), 98303u);
  EXPECT_EQ(cbor_int_get_width(pairs[3].value), CBOR_INT_32);
  ASSERT_TRUE(cbor_isa_bytestring(pairs[4].value));
  ASSERT_TRUE(cbor_bytestring_is_definite(pairs[4].value));
  ASSERT_EQ(cbor_bytestring_length(pairs[4].value), payload.size());
  EXPECT_EQ(std::memcmp(cbor_bytestring_handle(pairs[4].value), payload.data(), payload.size()), 0);
  cbor_decref(&item);
}

// ---------------------------------------------------------------------------------------------
// Description.

TEST(DescriptionJson, WithTokenAndFiles) {
  const FileEntry files[] = {{0, 1048576}, {7, 0}};
  EXPECT_EQ(as_text(encode_description(Format::Json, "t1", 3, "fw \"v2\"/beta", files)),
            R"({"c":"t1","s":3,"d":"fw \"v2\"/beta","r":[{"f":0,"z":1048576},{"f":7,"z":0}]})");
}

TEST(DescriptionJson, NoTokenNoFiles) {
  EXPECT_EQ(as_text(encode_description(Format::Json, std::nullopt, 1, "", {})),
            R"({"s":1,"d":"","r":[]})");
}

TEST(DescriptionJson, LargeNumbers) {
  const FileEntry files[] = {{255, 18446744073709551615ull}};
  EXPECT_EQ(
      as_text(encode_description(Format::Json, "\n", 18446744073709551615ull, "\t", files)),
      R"({"c":"\n","s":18446744073709551615,"d":"\t","r":[{"f":255,"z":18446744073709551615}]})");
}

TEST(DescriptionCbor, WithTokenAndFiles) {
  const FileEntry files[] = {{0, 1048576}, {7, 0}};
  EXPECT_EQ(encode_description(Format::Cbor, "t1", 3, "fw", files),
            hex("a4 6163 627431 6173 03 6164 626677 6172 82"
                "   a2 6166 00 617a 1a00100000"
                "   a2 6166 07 617a 00"));
}

TEST(DescriptionCbor, NoTokenNoFilesEightByteVersion) {
  EXPECT_EQ(encode_description(Format::Cbor, std::nullopt, 5000000000ull, "", {}),
            hex("a3 6173 1b000000012a05f200 6164 60 6172 80"));
}

TEST(DescriptionCbor, LibcborSeesTheTypes) {
  std::vector<FileEntry> files;
  for (std::uint32_t f = 0; f < 30; ++f) files.push_back({f, std::uint64_t{f} * 100000});
  const Bytes out = encode_description(Format::Cbor, "tok", 2, "a description", files);
  cbor_load_result result{};
  cbor_item_t* item =
      cbor_load(reinterpret_cast<const unsigned char*>(out.data()), out.size(), &result);
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(result.read, out.size());
  ASSERT_TRUE(cbor_isa_map(item));
  ASSERT_EQ(cbor_map_size(item), 4u);
  const cbor_pair* pairs = cbor_map_handle(item);
  EXPECT_TRUE(cbor_isa_string(pairs[0].value));
  EXPECT_TRUE(cbor_isa_uint(pairs[1].value));
  EXPECT_TRUE(cbor_isa_string(pairs[2].value));
  ASSERT_TRUE(cbor_isa_array(pairs[3].value));
  ASSERT_EQ(cbor_array_size(pairs[3].value), files.size());
  for (std::size_t k = 0; k < files.size(); ++k) {
    cbor_item_t* entry = cbor_array_handle(pairs[3].value)[k];
    ASSERT_TRUE(cbor_isa_map(entry));
    ASSERT_EQ(cbor_map_size(entry), 2u);
    EXPECT_EQ(cbor_get_int(cbor_map_handle(entry)[0].value), files[k].file_id);
    EXPECT_EQ(cbor_get_int(cbor_map_handle(entry)[1].value), files[k].size_bytes);
  }
  cbor_decref(&item);
}

TEST(Replies, DefaultConstructedViewsAreEmptyTexts) {
  // std::string_view{} has a null data(): nothing may pass it to memcpy.
  EXPECT_EQ(as_text(encode_description(Format::Json, std::string_view{}, 1, {}, {})),
            R"({"c":"","s":1,"d":"","r":[]})");
  EXPECT_EQ(encode_description(Format::Cbor, std::string_view{}, 1, {}, {}),
            hex("a4 6163 60 6173 01 6164 60 6172 80"));
  EXPECT_EQ(
      as_text(encode_rejected(Format::Json, std::string_view{}, ErrorCode::InternalError, {})),
      R"({"clientToken":"","c":"","code":"InternalError","o":"InternalError",)"
      R"("message":"","m":""})");
  const Bytes payload = hex("00");
  EXPECT_EQ(as_text(encode_data(Format::Json, std::string_view{}, 0, 0, payload)),
            R"({"c":"","f":0,"l":1,"i":0,"p":"AA=="})");
  EXPECT_EQ(encode_data(Format::Cbor, std::string_view{}, 0, 0, payload),
            hex("a5 6163 60 6166 00 616c 01 6169 00 6170 41 00"));
}

// ---------------------------------------------------------------------------------------------
// Rejected.

TEST(RejectedJson, WithToken) {
  EXPECT_EQ(as_text(encode_rejected(Format::Json, "tok", ErrorCode::VersionMismatch,
                                    "stream version is 2")),
            R"({"clientToken":"tok","c":"tok","code":"VersionMismatch","o":"VersionMismatch",)"
            R"("message":"stream version is 2","m":"stream version is 2"})");
}

TEST(RejectedJson, NoTokenEscapedMessage) {
  EXPECT_EQ(as_text(encode_rejected(Format::Json, std::nullopt, ErrorCode::InvalidTopic,
                                    "bad \"topic\"\n")),
            R"({"code":"InvalidTopic","o":"InvalidTopic","message":"bad \"topic\"\n",)"
            R"("m":"bad \"topic\"\n"})");
}

TEST(RejectedJson, EveryCodeIsSpelledOnTheWire) {
  for (int c = 0; c < kErrorCodeCount; ++c) {
    const auto code = static_cast<ErrorCode>(c);
    const std::string name(to_string(code));
    EXPECT_EQ(as_text(encode_rejected(Format::Json, std::nullopt, code, "")),
              R"({"code":")" + name + R"(","o":")" + name + R"(","message":"","m":""})");
  }
}

TEST(RejectedCbor, NoToken) {
  EXPECT_EQ(encode_rejected(Format::Cbor, std::nullopt, ErrorCode::InvalidCbor, "x"),
            cat({hex("a4 64"), ascii("code"), hex("6b"), ascii("InvalidCbor"), hex("616f 6b"),
                 ascii("InvalidCbor"), hex("67"), ascii("message"), hex("6178 616d 6178")}));
}

TEST(RejectedCbor, WithToken) {
  EXPECT_EQ(encode_rejected(Format::Cbor, "tk", ErrorCode::ETagMismatch, ""),
            cat({hex("a6 6b"), ascii("clientToken"), hex("62746b 6163 62746b 64"), ascii("code"),
                 hex("6c"), ascii("ETagMismatch"), hex("616f 6c"), ascii("ETagMismatch"), hex("67"),
                 ascii("message"), hex("60 616d 60")}));
}

TEST(RejectedCbor, LongMessageUsesTwoByteLength) {
  const std::string message(300, 'm');
  const Bytes out = encode_rejected(Format::Cbor, std::nullopt, ErrorCode::InternalError, message);
  const Bytes expected_message_item = cat({hex("79012c"), ascii(message)});
  EXPECT_NE(std::search(out.begin(), out.end(), expected_message_item.begin(),
                        expected_message_item.end()),
            out.end());
  EXPECT_EQ(out.size(), 1 + 5 + 14 + 2 + 14 + 8 + 303 + 2 + 303);
}

// ---------------------------------------------------------------------------------------------
// CBOR heads.

TEST(CborHead, ShortestEncodingAtEveryBoundary) {
  struct Case {
    std::uint64_t value;
    const char* bytes;
  };
  const Case cases[] = {
      {0, "00"},
      {23, "17"},
      {24, "1818"},
      {255, "18ff"},
      {256, "190100"},
      {65535, "19ffff"},
      {65536, "1a00010000"},
      {4294967295ull, "1affffffff"},
      {4294967296ull, "1b0000000100000000"},
      {18446744073709551615ull, "1bffffffffffffffff"},
  };
  for (const Case& c : cases) {
    const Bytes expected = hex(c.bytes);
    EXPECT_EQ(wire::cbor_head_length(c.value), expected.size()) << c.value;
    Bytes out(expected.size());
    EXPECT_EQ(wire::write_cbor_head(out.data(), 0, c.value), out.data() + out.size());
    EXPECT_EQ(out, expected) << c.value;
  }
  Bytes out(3);
  wire::write_cbor_head(out.data(), 2, 256);  // byte string of 256
  EXPECT_EQ(out, hex("590100"));
}

// ---------------------------------------------------------------------------------------------
// base64.

TEST(Base64, KnownVectors) {
  // RFC 4648 §10.
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"f", "Zg=="},        {"fo", "Zm8="},        {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    const Bytes in = ascii(plain);
    std::string out(base64::encoded_length(in.size()), '?');
    ASSERT_EQ(out.size(), encoded.size());
    EXPECT_EQ(base64::encode(in, out), encoded.size());
    EXPECT_EQ(out, encoded);
    Bytes back(in.size());
    EXPECT_EQ(base64::decode(encoded, back), in.size());
    EXPECT_EQ(back, in);
  }
}

TEST(Base64, EncodeRefusesASmallBufferAndLeavesTheRestAlone) {
  const Bytes in = ascii("foob");
  std::string out(7, '?');
  EXPECT_EQ(base64::encode(in, out), 0u);
  out.assign(10, '?');
  EXPECT_EQ(base64::encode(in, out), 8u);
  EXPECT_EQ(out, "Zm9vYg==??");  // no NUL written past the encoding
  EXPECT_EQ(base64::encode({}, out), 0u);
}

TEST(Base64, EncodeWithSpareNeedsOneMoreChar) {
  const Bytes in = ascii("foob");
  std::string out(8, '?');
  EXPECT_EQ(base64::encode_with_spare(in, out), 0u);
  out.assign(10, '?');
  EXPECT_EQ(base64::encode_with_spare(in, out), 8u);
  EXPECT_EQ(out, std::string("Zm9vYg==\0?", 10));
  EXPECT_EQ(base64::encode_with_spare({}, out), 0u);
}

TEST(Base64, RoundTripsEveryLengthUpTo300) {
  for (std::size_t size = 1; size <= 300; ++size) {
    const Bytes in = random_bytes(size, static_cast<unsigned>(size));
    std::string text(base64::encoded_length(size), '?');
    ASSERT_EQ(base64::encode(in, text), text.size());
    Bytes back(size);
    ASSERT_EQ(base64::decode(text, back), size);
    EXPECT_EQ(back, in);
    Bytes too_small(size - 1);
    EXPECT_FALSE(base64::decode(text, too_small).has_value());
  }
}

TEST(Base64, DecodeIsStrict) {
  Bytes out(16);
  EXPECT_EQ(base64::decode("", out), 0u);
  const std::string_view bad_inputs[] = {
      "Zg=",        "Zg",           "Z===",     "====",     "Zg==Zg==",
      "Z=g=",       "Zm9v\n",       " Zm9v",    "Zm9v ",    "Zm 9",
      "Zm-v",       "Zm_v",         "Zm9v====", "Zm9=Zm9v", std::string_view("Zm\0v", 4),
      "Zm\xc3\xa9", "Zm9v\r\nZm9v", "\tZm9"};
  for (const std::string_view bad : bad_inputs) {
    EXPECT_FALSE(base64::decode(bad, out).has_value()) << bad;
  }
}

}  // namespace
}  // namespace chunkd::protocol

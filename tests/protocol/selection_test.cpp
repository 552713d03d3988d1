// Block selection (SPEC.md §1.1 selection rules; protocol/request.hpp select_blocks()).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <vector>

#include "protocol/request.hpp"

namespace chunkd::protocol {
namespace {

using Blocks = std::vector<std::uint32_t>;

GetStreamRequest request(std::uint32_t block_size, std::uint32_t offset = 0,
                         std::uint32_t count = 0,
                         std::optional<std::vector<std::uint8_t>> bitmap = std::nullopt) {
  GetStreamRequest r;
  r.file_id = 0;
  r.block_size = block_size;
  r.offset = offset;
  r.count = count;
  r.bitmap = std::move(bitmap);
  return r;
}

Blocks select(const GetStreamRequest& r, std::uint64_t file_size) {
  Blocks blocks;
  const std::optional<ErrorCode> error = select_blocks(r, file_size, blocks);
  EXPECT_FALSE(error) << to_string(*error);
  return blocks;
}

std::optional<ErrorCode> select_error(const GetStreamRequest& r, std::uint64_t file_size) {
  Blocks blocks;
  const std::optional<ErrorCode> error = select_blocks(r, file_size, blocks);
  EXPECT_TRUE(blocks.empty());
  return error;
}

Blocks range(std::uint32_t first, std::uint32_t end) {
  Blocks out(end - first);
  std::iota(out.begin(), out.end(), first);
  return out;
}

std::uint64_t payload_bytes(const Blocks& blocks, std::uint32_t block_size, std::uint64_t file) {
  std::uint64_t total = 0;
  for (std::uint32_t b : blocks) {
    const std::uint64_t start = std::uint64_t{b} * block_size;
    total += std::min<std::uint64_t>(block_size, file - start);
  }
  return total;
}

constexpr std::uint64_t kMiB = 1024 * 1024;

// --- block_count ----------------------------------------------------------------------------

TEST(BlockCount, CountsTheShortLastBlock) {
  EXPECT_EQ(block_count(0, 256), 0u);
  EXPECT_EQ(block_count(1, 256), 1u);
  EXPECT_EQ(block_count(256, 256), 1u);
  EXPECT_EQ(block_count(257, 256), 2u);
  EXPECT_EQ(block_count(10 * kMiB, 4096), 2560u);
  EXPECT_EQ(block_count(10 * kMiB + 1, 4096), 2561u);
  EXPECT_EQ(block_count(UINT64_MAX, 256), UINT64_MAX / 256 + 1);
  EXPECT_EQ(block_count(100, 0), 0u);
}

// --- without a bitmap -----------------------------------------------------------------------

TEST(Selection, DefaultCountIsOneRequestWorthOfBlocks) {
  EXPECT_EQ(select(request(256), kMiB), range(0, 512));
  EXPECT_EQ(select(request(1024), kMiB), range(0, 128));
  EXPECT_EQ(select(request(4096, 10), kMiB), range(10, 42));
  EXPECT_EQ(select(request(131072), kMiB), Blocks{0});
}

TEST(Selection, ExplicitCount) {
  EXPECT_EQ(select(request(1024, 5, 3), kMiB), (Blocks{5, 6, 7}));
  EXPECT_EQ(select(request(1024, 0, 1), kMiB), Blocks{0});
}

TEST(Selection, CountIsCappedByPayload) {
  EXPECT_EQ(select(request(1024, 0, 200), kMiB), range(0, 128));
  EXPECT_EQ(select(request(131072, 0, 4), kMiB), Blocks{0});
  EXPECT_EQ(select(request(65536, 3, 98304), kMiB), (Blocks{3, 4}));
  EXPECT_EQ(select(request(100000, 0, 2), kMiB), Blocks{0});  // 200000 bytes > 131072
}

TEST(Selection, BlocksPastEndOfFileAreDropped) {
  const std::uint64_t file = 10 * 1024;  // 10 blocks of 1024
  EXPECT_EQ(select(request(1024, 8, 5), file), (Blocks{8, 9}));
  EXPECT_EQ(select(request(1024, 0, 0), file), range(0, 10));
  EXPECT_EQ(select(request(1024, 9, 0), file + 1), (Blocks{9, 10}));
}

TEST(Selection, OffsetAtOrPastEndOfFileIsOffsetOutOfBounds) {
  EXPECT_EQ(select_error(request(1024, 10, 1), 10 * 1024), ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(select_error(request(1024, 11, 0), 10 * 1024), ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(select_error(request(256, 98304, 0), 256 * 98304), ErrorCode::OffsetOutOfBounds);
}

TEST(Selection, EmptyFileHasNoBlocks) {
  EXPECT_EQ(select_error(request(1024), 0), ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(select_error(request(1024, 0, 1), 0), ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(select_error(request(1024, 0, 0, std::vector<std::uint8_t>{0xff}), 0),
            ErrorCode::OffsetOutOfBounds);
}

TEST(Selection, OneByteFile) {
  EXPECT_EQ(select(request(131072), 1), Blocks{0});
  EXPECT_EQ(select(request(256, 0, 0, std::vector<std::uint8_t>{0xff}), 1), Blocks{0});
}

TEST(Selection, OffsetNearTheLimit) {
  const std::uint64_t file = std::uint64_t{256} * 98305;  // blocks 0..98304
  EXPECT_EQ(select(request(256, 98304, 0), file), Blocks{98304});
  EXPECT_EQ(select(request(256, 98300, 0), file), range(98300, 98305));
  EXPECT_EQ(select(request(256, 98304, 0, std::vector<std::uint8_t>{0x01}), file), Blocks{98304});
  EXPECT_EQ(select(request(256, 98304, 0, std::vector<std::uint8_t>{0x01}), 200 * kMiB),
            Blocks{98304});
  // Bit 1 is block 98305, past the end.
  EXPECT_EQ(select_error(request(256, 98304, 0, std::vector<std::uint8_t>{0x02}), file),
            ErrorCode::OffsetOutOfBounds);
}

// --- payload cap counts real lengths --------------------------------------------------------

TEST(Selection, ShortLastBlockIsSentWhenItFits) {
  // 131 full blocks of 1000 bytes = 131000; a 72-byte last block brings it to exactly 131072.
  const std::uint64_t fits = 131 * 1000 + 72;
  EXPECT_EQ(select(request(1000, 0, 132), fits), range(0, 132));
  // One byte more and the last block does not fit.
  EXPECT_EQ(select(request(1000, 0, 132), fits + 1), range(0, 131));
  // Without n only 131072/1000 = 131 blocks are asked for.
  EXPECT_EQ(select(request(1000, 0, 0), fits), range(0, 131));
}

TEST(Selection, ShortLastBlockWithLargeBlocks) {
  const std::uint64_t file = 131072 + 10;
  EXPECT_EQ(select(request(131072, 0, 2), file), Blocks{0});
  EXPECT_EQ(select(request(131072, 1, 2), file), Blocks{1});
  EXPECT_EQ(select(request(65536, 0, 0), 65536 + 1000), (Blocks{0, 1}));
  EXPECT_EQ(select(request(100000, 1, 2), 150000), Blocks{1});
}

// --- with a bitmap --------------------------------------------------------------------------

TEST(Selection, BitmapByteAndBitOrder) {
  // b[k >> 3] & (1 << (k & 7)) selects block o + k.
  EXPECT_EQ(select(request(1024, 0, 0, std::vector<std::uint8_t>{0x01}), kMiB), Blocks{0});
  EXPECT_EQ(select(request(1024, 0, 0, std::vector<std::uint8_t>{0x80}), kMiB), Blocks{7});
  EXPECT_EQ(select(request(1024, 0, 0, std::vector<std::uint8_t>{0x00, 0x01}), kMiB), Blocks{8});
  EXPECT_EQ(select(request(1024, 0, 0, std::vector<std::uint8_t>{0x05, 0x02}), kMiB),
            (Blocks{0, 2, 9}));
}

TEST(Selection, BitmapIsRelativeToOffset) {
  EXPECT_EQ(select(request(1024, 10, 0, std::vector<std::uint8_t>{0x05, 0x02}), kMiB),
            (Blocks{10, 12, 19}));
}

TEST(Selection, BitmapWithCountTakesTheFirstSetBits) {
  const std::vector<std::uint8_t> bits{0xaa, 0xaa};  // blocks 1,3,5,...,15
  EXPECT_EQ(select(request(1024, 0, 3, bits), kMiB), (Blocks{1, 3, 5}));
  EXPECT_EQ(select(request(1024, 0, 1, bits), kMiB), Blocks{1});
  EXPECT_EQ(select(request(1024, 0, 0, bits), kMiB), (Blocks{1, 3, 5, 7, 9, 11, 13, 15}));
  EXPECT_EQ(select(request(1024, 0, 100, bits), kMiB), (Blocks{1, 3, 5, 7, 9, 11, 13, 15}));
}

TEST(Selection, EmptyOrZeroBitmapSelectsNothing) {
  EXPECT_EQ(select_error(request(1024, 0, 0, std::vector<std::uint8_t>{}), kMiB),
            ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(select_error(request(1024, 0, 5, std::vector<std::uint8_t>(100, 0)), kMiB),
            ErrorCode::OffsetOutOfBounds);
}

TEST(Selection, BitmapIsCappedByPayload) {
  const std::vector<std::uint8_t> all(12287, 0xff);
  EXPECT_EQ(select(request(256, 0, 0, all), 200 * kMiB), range(0, 512));
  EXPECT_EQ(select(request(256, 100, 0, all), 200 * kMiB), range(100, 612));
  EXPECT_EQ(select(request(4096, 0, 98304, all), 200 * kMiB), range(0, 32));
}

TEST(Selection, SparseBitmapAcrossTheCap) {
  std::vector<std::uint8_t> bits(100, 0);
  bits[0] = 0x01;   // block 0
  bits[50] = 0x01;  // block 400
  bits[99] = 0x80;  // block 799
  EXPECT_EQ(select(request(65536, 0, 0, bits), 100 * kMiB), (Blocks{0, 400}));
}

TEST(Selection, BitsPastEndOfFileAreDroppedSilently) {
  const std::vector<std::uint8_t> bits{0xff, 0xff};
  EXPECT_EQ(select(request(1024, 0, 0, bits), 5 * 1024), range(0, 5));
  EXPECT_EQ(select(request(1024, 3, 0, bits), 5 * 1024), (Blocks{3, 4}));
  EXPECT_EQ(select_error(request(1024, 5, 0, bits), 5 * 1024), ErrorCode::OffsetOutOfBounds);
  EXPECT_EQ(select_error(request(1024, 0, 0, std::vector<std::uint8_t>{0x00, 0xff}), 5 * 1024),
            ErrorCode::OffsetOutOfBounds);
}

// --- device-library quirks ------------------------------------------------------------------

TEST(Selection, FixedThirtyBitBitmapNearEndOfFile) {
  const std::vector<std::uint8_t> thirty{0xff, 0xff, 0xff, 0x3f};  // bits 0..29
  const std::uint64_t file = 20 * 1024;                            // blocks 0..19
  EXPECT_EQ(select(request(1024, 0, 0, thirty), file), range(0, 20));
  EXPECT_EQ(select(request(1024, 10, 0, thirty), file), range(10, 20));
  EXPECT_EQ(select(request(1024, 18, 0, thirty), file), (Blocks{18, 19}));
  EXPECT_EQ(select(request(1024, 19, 1, thirty), file + 5), Blocks{19});
  EXPECT_EQ(select(request(1024, 20, 1, thirty), file + 5), Blocks{20});  // 5-byte last block
  EXPECT_EQ(select(request(1024, 0, 0, thirty), 64 * 1024), range(0, 30));
}

TEST(Selection, FileStreamsLibraryBitmapWithCountOne) {
  // The library sends the 4 bytes "MQ==" as bitmap with n=1: bit 0 is set, so it gets block o.
  const std::vector<std::uint8_t> mq{'M', 'Q', '=', '='};
  const std::uint64_t file = 120 * 1024;  // blocks 0..119
  for (std::uint32_t o : {0u, 1u, 57u, 119u}) {
    EXPECT_EQ(select(request(1024, o, 1, mq), file), Blocks{o}) << o;
  }
  // Without n its set bits (0,2,3,6,8,12,14,16,18,19,20,21,24,26-29) count, past EOF dropped.
  EXPECT_EQ(select(request(1024, 100, 0, mq), file),
            (Blocks{100, 102, 103, 106, 108, 112, 114, 116, 118, 119}));
}

TEST(Selection, OtaAgentGetsExactlyTheFirstMissingBlock) {
  // The OTA agent asks from o=0 with a bitmap of the whole file where set bits are the blocks it
  // still misses, and n=1.
  const std::uint64_t file = 100 * 4096 - 17;  // 100 blocks, short last one
  std::vector<std::uint8_t> missing(13, 0xff);
  missing[12] = 0x0f;  // blocks 96..99; the bits past block 99 are clear
  for (unsigned b = 0; b < 41; ++b) missing[b >> 3] &= static_cast<std::uint8_t>(~(1u << (b & 7)));
  EXPECT_EQ(select(request(4096, 0, 1, missing), file), Blocks{41});

  missing[41 >> 3] &= static_cast<std::uint8_t>(~(1u << (41 & 7)));
  missing[43 >> 3] &= static_cast<std::uint8_t>(~(1u << (43 & 7)));
  EXPECT_EQ(select(request(4096, 0, 1, missing), file), Blocks{42});
  EXPECT_EQ(select(request(4096, 0, 4, missing), file), (Blocks{42, 44, 45, 46}));

  std::vector<std::uint8_t> last_only(13, 0);
  last_only[99 >> 3] = static_cast<std::uint8_t>(1u << (99 & 7));
  EXPECT_EQ(select(request(4096, 0, 1, last_only), file), Blocks{99});
}

// --- output vector --------------------------------------------------------------------------

TEST(Selection, OutputIsClearedAndItsCapacityReused) {
  Blocks blocks(1000, 7);
  blocks.reserve(4096);
  const std::uint32_t* const data = blocks.data();
  const std::size_t capacity = blocks.capacity();
  ASSERT_FALSE(select_blocks(request(1024, 5, 3), kMiB, blocks));
  EXPECT_EQ(blocks, (Blocks{5, 6, 7}));
  ASSERT_FALSE(select_blocks(request(256), 200 * kMiB, blocks));
  EXPECT_EQ(blocks.size(), 512u);
  EXPECT_EQ(select_blocks(request(1024, 10), 1024, blocks), ErrorCode::OffsetOutOfBounds);
  EXPECT_TRUE(blocks.empty());
  EXPECT_EQ(blocks.data(), data);
  EXPECT_EQ(blocks.capacity(), capacity);
}

TEST(Selection, BlockSizeOutsideBoundsIsRefusedDefensively) {
  Blocks blocks{1, 2};
  EXPECT_EQ(select_blocks(request(0), kMiB, blocks), ErrorCode::BlockSizeOutOfBounds);
  EXPECT_TRUE(blocks.empty());
  EXPECT_EQ(select_blocks(request(255), kMiB, blocks), ErrorCode::BlockSizeOutOfBounds);
  EXPECT_EQ(select_blocks(request(131073), kMiB, blocks), ErrorCode::BlockSizeOutOfBounds);
}

TEST(Selection, InvariantsOverManyRequests) {
  // A deterministic sweep: whatever the request, blocks are ascending, inside the file, within
  // the payload cap, and at most n of them when n is given.
  std::uint64_t state = 0x9e3779b97f4a7c15u;
  auto next = [&state]() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const std::uint32_t sizes[] = {256, 300, 1000, 1024, 4096, 65536, 100000, 131072};
  Blocks blocks;
  for (int i = 0; i < 3000; ++i) {
    GetStreamRequest r = request(sizes[next() % 8], static_cast<std::uint32_t>(next() % 200),
                                 static_cast<std::uint32_t>(next() % 4 == 0 ? 0 : next() % 300));
    if (next() % 2 == 0) {
      std::vector<std::uint8_t> bits(next() % 64);
      for (auto& byte : bits) byte = static_cast<std::uint8_t>(next());
      r.bitmap = std::move(bits);
    }
    const std::uint64_t file = next() % (4 * kMiB);
    const std::optional<ErrorCode> error = select_blocks(r, file, blocks);
    if (error) {
      EXPECT_EQ(*error, ErrorCode::OffsetOutOfBounds);
      EXPECT_TRUE(blocks.empty());
      continue;
    }
    ASSERT_FALSE(blocks.empty());
    EXPECT_TRUE(std::is_sorted(blocks.begin(), blocks.end()));
    EXPECT_EQ(std::adjacent_find(blocks.begin(), blocks.end()), blocks.end());
    EXPECT_GE(blocks.front(), r.offset);
    EXPECT_LT(blocks.back(), block_count(file, r.block_size));
    EXPECT_LE(payload_bytes(blocks, r.block_size, file), kMaxRequestPayloadBytes);
    if (r.count != 0) {
      EXPECT_LE(blocks.size(), r.count);
    }
  }
}

}  // namespace
}  // namespace chunkd::protocol

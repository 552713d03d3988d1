#include "io/send_queue.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace chunkd::io {
namespace {

std::vector<std::byte> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::byte> out(n);
  std::minstd_rand rng(seed);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xff);
  return out;
}

// What gather() offers, concatenated: the bytes a sendmsg() taking everything would write.
std::vector<std::byte> gathered(const SendQueue& q, std::size_t max_iov = 1024) {
  std::vector<iovec> iov(max_iov);
  const std::size_t n = q.gather(iov.data(), iov.size());
  std::vector<std::byte> out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto* p = static_cast<const std::byte*>(iov[i].iov_base);
    out.insert(out.end(), p, p + iov[i].iov_len);
  }
  return out;
}

TEST(SendQueue, StartsEmpty) {
  SendQueue q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.size(), 0u);
  std::array<iovec, 4> iov{};
  EXPECT_EQ(q.gather(iov.data(), iov.size()), 0u);
}

TEST(SendQueue, AppendsAcrossChunksInOrder) {
  SendQueue q;
  const auto a = pattern(10, 1);
  const auto b = pattern(SendQueue::kChunkBytes * 2 + 17, 2);  // spans three chunks
  const auto c = pattern(5, 3);
  q.append(a);
  q.append(b);
  q.append(c);
  EXPECT_EQ(q.size(), a.size() + b.size() + c.size());
  std::vector<std::byte> expect = a;
  expect.insert(expect.end(), b.begin(), b.end());
  expect.insert(expect.end(), c.begin(), c.end());
  EXPECT_EQ(gathered(q), expect);
  std::array<iovec, 8> iov{};
  EXPECT_EQ(q.gather(iov.data(), iov.size()), 3u);  // 10 + 131072 + 17 + 5 bytes: 3 chunks
  EXPECT_EQ(iov[0].iov_len, SendQueue::kChunkBytes);
}

TEST(SendQueue, GatherStopsAtMaxIovecs) {
  SendQueue q;
  q.append(pattern(SendQueue::kChunkBytes * 3, 4));
  std::array<iovec, 2> iov{};
  ASSERT_EQ(q.gather(iov.data(), iov.size()), 2u);
  EXPECT_EQ(iov[0].iov_len + iov[1].iov_len, SendQueue::kChunkBytes * 2);
}

// Partial writes of every size: what is left is always the rest of the stream, in order.
TEST(SendQueue, ConsumeInUnevenStepsKeepsTheRest) {
  SendQueue q;
  std::vector<std::byte> stream;
  std::minstd_rand rng(7);
  std::size_t consumed = 0;
  for (int round = 0; round < 200; ++round) {
    const auto more = pattern(rng() % 20000, static_cast<std::uint32_t>(round));
    q.append(more);
    stream.insert(stream.end(), more.begin(), more.end());
    const std::size_t take = q.size() == 0 ? 0 : rng() % (q.size() + 1);
    q.consume(take);
    consumed += take;
    ASSERT_EQ(q.size(), stream.size() - consumed);
    const std::vector<std::byte> rest(stream.begin() + static_cast<std::ptrdiff_t>(consumed),
                                      stream.end());
    ASSERT_EQ(gathered(q), rest) << "round " << round;
  }
  q.consume(q.size());
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(gathered(q).empty());
  // Usable again after draining.
  const auto again = pattern(100, 99);
  q.append(again);
  EXPECT_EQ(gathered(q), again);
}

TEST(SendQueue, ClearDropsEverything) {
  SendQueue q;
  q.append(pattern(SendQueue::kChunkBytes + 1, 5));
  q.clear();
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(gathered(q).empty());
  const auto after = pattern(3, 6);
  q.append(after);
  EXPECT_EQ(gathered(q), after);
}

}  // namespace
}  // namespace chunkd::io

// ThingQueues' own data structures: the per-thing Fifo (engine/thing_queues_fifo.hpp) and the
// reuse of forgotten thing records (engine/thing_queues.hpp).
#include "engine/thing_queues.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/clock.hpp"
#include "engine/metrics.hpp"
#include "engine/thing_queues_fifo.hpp"

namespace chunkd::engine {
namespace {

TEST(FifoTest, KeepsOrderAcrossWrapAndGrowth) {
  Fifo<int> q;
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.capacity(), 0u);
  int next_in = 0;
  int next_out = 0;
  // Interleaved pushes and pops wrap the ring; a push into a full ring doubles it.
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 3; ++i) q.push_back(next_in++);
    for (int i = 0; i < 2; ++i) {
      ASSERT_EQ(q.front(), next_out++);
      q.pop_front();
    }
  }
  EXPECT_EQ(q.size(), 50u);
  EXPECT_EQ(q.capacity(), 64u);
  for (std::size_t i = 0; i < q.size(); ++i) EXPECT_EQ(q[i], next_out + static_cast<int>(i));
  EXPECT_EQ(q.back(), next_in - 1);
  q.pop_back();
  EXPECT_EQ(q.back(), next_in - 2);
  while (!q.empty()) {
    ASSERT_EQ(q.front(), next_out++);
    q.pop_front();
  }
  EXPECT_EQ(next_out, next_in - 1);
  EXPECT_EQ(q.capacity(), 64u) << "storage is kept for the next items";
}

TEST(FifoTest, APoppedItemIsReleasedAtOnce) {
  Fifo<std::shared_ptr<int>> q;
  auto a = std::make_shared<int>(1);
  auto b = std::make_shared<int>(2);
  q.push_back(a);
  q.push_back(b);
  EXPECT_EQ(a.use_count(), 2);
  q.pop_front();
  EXPECT_EQ(a.use_count(), 1);
  q.pop_back();
  EXPECT_EQ(b.use_count(), 1);
}

TEST(FifoTest, AMovedFromFifoIsEmpty) {
  Fifo<int> q;
  q.push_back(1);
  q.push_back(2);
  Fifo<int> r = std::move(q);
  EXPECT_TRUE(q.empty());  // NOLINT(bugprone-use-after-move): the state is specified
  EXPECT_EQ(q.capacity(), 0u);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r.front(), 1);
  q.push_back(3);
  EXPECT_EQ(q.front(), 3);
}

class ThingQueuesTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  Metrics metrics_;
  ThingQueues queues_{clock_, metrics_, RateLimit(0), 4, 100};

  void run_one(ThingQueues::Thing& t) {
    WorkItem item;
    item.topic = "t";
    queues_.push(t, std::move(item));
    queues_.pop_front(t);
    queues_.retire(t);
  }
};

// A thing forgotten when its queue emptied leaves its record for the next new thing, which starts
// as new: its own name, no items, idle.
TEST_F(ThingQueuesTest, AForgottenRecordServesTheNextThingAsNew) {
  ThingQueues::Thing* a = queues_.admit("device-with-a-long-name-0001");
  ASSERT_NE(a, nullptr);
  a->lane = 3;
  a->turn = 99;
  a->state = ThingQueues::State::Serving;
  run_one(*a);
  EXPECT_EQ(queues_.find("device-with-a-long-name-0001"), nullptr);
  ThingQueues::Thing* b = queues_.admit("b");
  ASSERT_EQ(b, a) << "the record was reused";
  EXPECT_EQ(b->name, "b");
  EXPECT_TRUE(b->items.empty());
  EXPECT_EQ(b->state, ThingQueues::State::Idle);
  EXPECT_EQ(b->lane, 0u);
  EXPECT_EQ(b->turn, 0u);
  EXPECT_EQ(queues_.find("b"), b);
  EXPECT_EQ(queues_.find("device-with-a-long-name-0001"), nullptr);
  ThingQueues::Thing* c = queues_.admit("c");
  ASSERT_NE(c, nullptr);
  EXPECT_NE(c, b) << "no spare left: a new record";
  queues_.check_invariants();
}

}  // namespace
}  // namespace chunkd::engine

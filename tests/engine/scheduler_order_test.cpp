// ServeOrder: the scheduler's serving order over per-channel lanes (engine/scheduler_order.hpp).
#include "engine/scheduler_order.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace chunkd::engine {
namespace {

using Thing = ThingQueues::Thing;

class ServeOrderTest : public ::testing::Test {
 protected:
  // Things named by one letter each, on the channel given.
  Thing& thing(const std::string& name, std::size_t channel) {
    things_.push_back(std::make_unique<Thing>());
    Thing& t = *things_.back();
    t.name = name;
    t.lane = order_.lane_of(channel);
    return t;
  }

  // Pops until none is runnable: the names in serving order.
  std::string drain() {
    std::string out;
    while (Thing* t = order_.pop()) out += t->name;
    return out;
  }

  ServeOrder order_;
  std::vector<std::unique_ptr<Thing>> things_;
};

TEST_F(ServeOrderTest, LanesAreFoundByChannel) {
  EXPECT_EQ(order_.lane_of(7), order_.lane_of(7));
  EXPECT_NE(order_.lane_of(7), order_.lane_of(3));
  EXPECT_EQ(order_.lane_of(3), 1u);
}

// With no lane held the order is one ring over all things, whatever their channels.
TEST_F(ServeOrderTest, FreeLanesServeInTurnOrderAcrossChannels) {
  Thing& a = thing("a", 0);
  Thing& b = thing("b", 1);
  Thing& c = thing("c", 0);
  Thing& d = thing("d", 2);
  for (Thing* t : {&a, &b, &c, &d}) order_.push_back(*t);
  EXPECT_EQ(order_.size(), 4u);
  EXPECT_TRUE(order_.runnable());
  Thing* first = order_.pop();
  ASSERT_EQ(first, &a);
  order_.push_back(a);  // a new turn: behind the others
  EXPECT_EQ(drain(), "bcda");
  EXPECT_FALSE(order_.runnable());
  EXPECT_EQ(order_.pop(), nullptr);
}

// A held lane keeps its things, skipped and in order; released, they keep their turns.
TEST_F(ServeOrderTest, AHeldLaneIsSkippedAndKeepsItsTurns) {
  Thing& a = thing("a", 0);
  Thing& b = thing("b", 1);
  Thing& c = thing("c", 0);
  Thing& d = thing("d", 1);
  for (Thing* t : {&a, &b, &c, &d}) order_.push_back(*t);
  ASSERT_EQ(order_.pop(), &a);
  order_.hold(a.lane);
  order_.push_front(a);  // refused: back at the head of its lane with its turn
  EXPECT_EQ(order_.held_back(), 2u);
  EXPECT_TRUE(order_.holding());
  EXPECT_EQ(drain(), "bd");
  EXPECT_FALSE(order_.runnable());
  order_.push_back(b);  // a later turn than a's and c's
  EXPECT_FALSE(order_.release([](std::size_t) { return false; }));
  EXPECT_EQ(order_.held_back(), 2u);
  EXPECT_TRUE(order_.release([](std::size_t channel) { return channel == 0; }));
  EXPECT_EQ(order_.held_back(), 0u);
  EXPECT_FALSE(order_.holding());
  EXPECT_EQ(drain(), "acb");
}

TEST_F(ServeOrderTest, EraseIfAndClear) {
  Thing& a = thing("a", 0);
  Thing& b = thing("b", 1);
  Thing& c = thing("c", 0);
  for (Thing* t : {&a, &b, &c}) order_.push_back(*t);
  order_.erase_if([&](const Thing* t) { return t == &c; });
  EXPECT_EQ(order_.size(), 2u);
  order_.hold(b.lane);
  EXPECT_EQ(order_.held_back(), 1u);
  order_.clear();
  EXPECT_EQ(order_.size(), 0u);
  EXPECT_EQ(order_.held_back(), 0u);
  EXPECT_FALSE(order_.runnable());
  order_.push_back(a);
  EXPECT_EQ(drain(), "a");
}

}  // namespace
}  // namespace chunkd::engine

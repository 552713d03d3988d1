#include "engine/scheduler_order.hpp"

#include <algorithm>

#include "base/assert.hpp"

namespace chunkd::engine {

std::uint32_t ServeOrder::lane_of(std::size_t channel) {
  for (std::size_t i = 0; i < lanes_.size(); ++i) {
    if (lanes_[i].channel == channel) return static_cast<std::uint32_t>(i);
  }
  lanes_.push_back(Lane{channel, false, {}});
  return static_cast<std::uint32_t>(lanes_.size() - 1);
}

void ServeOrder::push_back(Thing& t) {
  CHUNKD_ASSERT(t.lane < lanes_.size());
  t.turn = next_turn_++;
  lanes_[t.lane].queue.push_back(Entry{&t, t.turn});
}

void ServeOrder::push_front(Thing& t) {
  CHUNKD_ASSERT(t.lane < lanes_.size());
  lanes_[t.lane].queue.push_front(Entry{&t, t.turn});
}

ServeOrder::Thing* ServeOrder::pop() {
  Lane* next = nullptr;
  for (Lane& lane : lanes_) {
    if (lane.held || lane.queue.empty()) continue;
    if (next == nullptr || lane.queue.front().turn < next->queue.front().turn) next = &lane;
  }
  if (next == nullptr) return nullptr;
  Thing* t = next->queue.front().thing;
  next->queue.pop_front();
  return t;
}

void ServeOrder::hold(std::uint32_t lane) {
  CHUNKD_ASSERT(lane < lanes_.size());
  lanes_[lane].held = true;
}

bool ServeOrder::release(const std::function<bool(std::size_t channel)>& writable) {
  bool released = false;
  for (Lane& lane : lanes_) {
    if (!lane.held || !writable(lane.channel)) continue;
    lane.held = false;
    released = true;
  }
  return released;
}

bool ServeOrder::runnable() const {
  return std::any_of(lanes_.begin(), lanes_.end(),
                     [](const Lane& l) { return !l.held && !l.queue.empty(); });
}

bool ServeOrder::holding() const { return held_back() > 0; }

std::size_t ServeOrder::held_back() const {
  std::size_t n = 0;
  for (const Lane& lane : lanes_) {
    if (lane.held) n += lane.queue.size();
  }
  return n;
}

std::size_t ServeOrder::size() const {
  std::size_t n = 0;
  for (const Lane& lane : lanes_) n += lane.queue.size();
  return n;
}

void ServeOrder::erase_if(const std::function<bool(const Thing*)>& drop) {
  for (Lane& lane : lanes_) {
    std::erase_if(lane.queue, [&](const Entry& e) { return drop(e.thing); });
  }
}

void ServeOrder::clear() {
  for (Lane& lane : lanes_) lane.queue.clear();
}

}  // namespace chunkd::engine

// The scheduler's serving order: which thing with runnable work is served next.
//
// One FIFO (a lane) per transport channel, each entry stamped with a turn number from one counter:
// the next thing served is the one with the oldest turn among the lanes that are not held. With
// every lane free that is exactly one round-robin ring over all things (fair between things, not
// between channels). A held lane (its channel refused a reply) keeps its things where they are,
// in order, with their turns, until it is released; then they are served before things whose
// turn came later. Holding and releasing a channel cost O(1), whatever the number of things on
// it: the single ring this replaces moved every thing of a full channel to a wait list and back
// on each drain, which at 10,000 things was a quarter of chunkd's CPU (bench/README.md,
// "Per-request cost").
//
// Owns only the lanes (pointers into ThingQueues' records and their turns). Lanes are few (one
// per broker connection), found by a linear search of their channel numbers once per thing
// admitted (ThingQueues::Thing::lane caches it). Thread: loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "engine/thing_queues.hpp"

namespace chunkd::engine {

class ServeOrder {
 public:
  using Thing = ThingQueues::Thing;

  // The lane of transport channel `channel`, created on first use.
  std::uint32_t lane_of(std::size_t channel);
  // Queues `t` on lane t.lane with a new turn, after every thing queued so far.
  // REQUIRES: t.lane came from lane_of().
  void push_back(Thing& t);
  // Puts `t` back at the head of its lane with the turn it had (t.turn): it was taken by pop()
  // and could not be served now.
  void push_front(Thing& t);
  // The thing with the oldest turn among lanes not held, removed from its lane; null when none.
  Thing* pop();

  // `lane`'s channel is full: its things stay queued and pop() skips them until released.
  void hold(std::uint32_t lane);
  // Releases every held lane whose channel `writable` says has room. True if any was released.
  bool release(const std::function<bool(std::size_t channel)>& writable);

  bool runnable() const;          // a lane that is not held has things
  bool holding() const;           // a held lane has things (a backstop should re-check)
  std::size_t held_back() const;  // things queued on held lanes
  std::size_t size() const;       // things queued on every lane
  void erase_if(const std::function<bool(const Thing*)>& drop);
  void clear();  // forgets every thing; lanes and holds stay

 private:
  struct Entry {
    Thing* thing;
    std::uint64_t turn;
  };
  struct Lane {
    std::size_t channel;
    bool held = false;
    std::deque<Entry> queue;
  };

  std::vector<Lane> lanes_;
  std::uint64_t next_turn_ = 0;
};

}  // namespace chunkd::engine

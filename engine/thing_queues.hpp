// The scheduler's queue state: one FIFO of WorkItems per thing with work, their bounds and their
// counts, and the rate bucket each thing keeps while it refills (so a device cannot skip its
// limit by sending requests one at a time).
//
// Owns the Thing records (stable addresses until forgotten) and the gauges chunkd_queue_requests
// and chunkd_things_active. A forgotten record is kept, with its map node, name and FIFO storage,
// for the next new thing (at most kSpareThings of them): a device whose queue empties after each
// request (the 10,000-device fleet) costs no allocation for its record per request. Knows nothing
// of serving order: the Scheduler keeps its ring and wait lists of Thing pointers, and must drop a
// Thing from them before retire() may forget it. Thread: loop thread only. REQUIRES: `clock` and
// `metrics` outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/clock.hpp"
#include "engine/metrics.hpp"
#include "engine/thing_queues_fifo.hpp"
#include "engine/token_bucket.hpp"
#include "engine/work.hpp"

namespace chunkd::engine {

class ThingQueues {
 public:
  // Where a thing is in the scheduler's serving cycle.
  enum class State {
    Idle,
    Ready,
    Serving,
    WaitRead,
    WaitTokens,
    WaitGlobal,
    WaitSlot,
  };

  struct Thing {
    std::string name;
    Fifo<WorkItem> items;
    State state = State::Idle;
    RateLimit::Bucket bucket;
    std::uint64_t ready_at_ms = 0;  // WaitTokens: when the bucket holds a token
    std::uint32_t lane = 0;         // the scheduler's lane (ServeOrder) for its channel
    std::uint64_t turn = 0;         // its place in the serving order (ServeOrder)
    bool in_idle_list = false;      // kept, item-less, until its bucket is full again
  };

  ThingQueues(const Clock& clock, Metrics& metrics, RateLimit per_thing,
              std::size_t per_thing_bound, std::size_t global_bound);

  // The thing's record when one more item fits under both bounds, else null (Throttled).
  Thing* admit(std::string_view name);
  // Appends `item` (numbered here) to `t`'s FIFO. REQUIRES: admit() returned `t` just before.
  WorkItem& push(Thing& t, WorkItem item);
  void pop_front(Thing& t);  // REQUIRES: !t.items.empty()
  void pop_back(Thing& t);   // REQUIRES: !t.items.empty()
  // `t` has no items and sits in no serving list: forgets it, or keeps it until its bucket is
  // full (a later admit finds the bucket as it was).
  void retire(Thing& t);
  Thing* find(std::string_view name);
  // New bounds and per-thing rate (a reload): they apply to the next admit(); items already queued
  // stay, even over a lowered bound. Each thing's bucket is capped at the new burst.
  // REQUIRES: both bounds >= 1.
  void set_limits(RateLimit per_thing, std::size_t per_thing_bound, std::size_t global_bound);
  void for_each(const std::function<void(Thing&)>& fn);
  void clear();  // forgets every thing. REQUIRES: no items queued

  const RateLimit& per_thing() const { return per_thing_; }
  std::size_t total_items() const { return total_items_; }
  std::size_t active_things() const { return active_; }
  // Recounts (O(things)); aborts when total_items/active_things disagree with the FIFOs.
  void check_invariants() const;

 private:
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using Map = std::unordered_map<std::string, std::unique_ptr<Thing>, StringHash, std::equal_to<>>;
  static constexpr std::size_t kSpareThings = 256;

  struct IdleBucket {
    Thing* thing;
    std::uint64_t full_at_ms;
  };

  void sweep_idle_buckets();
  void forget(Thing& t);  // erases `t`, keeping its record as a spare
  void update_gauges();

  const Clock& clock_;
  RateLimit per_thing_;
  std::size_t per_thing_bound_;
  std::size_t global_bound_;
  // The largest bounds set so far: what queued items may reach after a bound was lowered.
  std::size_t per_thing_ceiling_;
  std::size_t global_ceiling_;
  Gauge& queue_gauge_;
  Gauge& things_gauge_;
  Map things_;
  std::vector<Map::node_type> spares_;  // forgotten records, reused by admit()
  std::deque<IdleBucket> idle_buckets_;
  std::size_t total_items_ = 0;
  std::size_t active_ = 0;  // things with items
  std::uint64_t next_id_ = 1;
};

}  // namespace chunkd::engine

#include "engine/thing_queues.hpp"

#include <algorithm>
#include <utility>

#include "base/assert.hpp"

namespace chunkd::engine {

ThingQueues::ThingQueues(const Clock& clock, Metrics& metrics, RateLimit per_thing,
                         std::size_t per_thing_bound, std::size_t global_bound)
    : clock_(clock),
      per_thing_(per_thing),
      per_thing_bound_(per_thing_bound),
      global_bound_(global_bound),
      per_thing_ceiling_(per_thing_bound),
      global_ceiling_(global_bound),
      queue_gauge_(
          metrics.gauge("chunkd_queue_requests", "Requests queued for delivery, all things")),
      things_gauge_(metrics.gauge("chunkd_things_active", "Things with queued requests")) {}

ThingQueues::Thing* ThingQueues::admit(std::string_view name) {
  sweep_idle_buckets();
  auto it = things_.find(name);
  const std::size_t mine = it == things_.end() ? 0 : it->second->items.size();
  if (mine >= per_thing_bound_ || total_items_ >= global_bound_) return nullptr;
  if (it != things_.end()) return it->second.get();
  Thing* ref = nullptr;
  if (spares_.empty()) {
    auto t = std::make_unique<Thing>();
    t->name = std::string(name);
    ref = t.get();
    things_.emplace(ref->name, std::move(t));
  } else {
    Map::node_type node = std::move(spares_.back());
    spares_.pop_back();
    Thing& t = *node.mapped();
    CHUNKD_ASSERT(t.items.empty());
    Thing fresh;  // the name's and FIFO's storage stay
    fresh.name = std::move(t.name);
    fresh.items = std::move(t.items);
    t = std::move(fresh);
    t.name.assign(name);
    node.key().assign(name);
    ref = &t;
    things_.insert(std::move(node));
  }
  ref->bucket = per_thing_.full(clock_.now_ms());
  return ref;
}

void ThingQueues::forget(Thing& t) {
  auto node = things_.extract(t.name);
  CHUNKD_ASSERT(!node.empty());
  if (spares_.size() < kSpareThings) spares_.push_back(std::move(node));
}

WorkItem& ThingQueues::push(Thing& t, WorkItem item) {
  CHUNKD_ASSERT(t.items.size() < per_thing_bound_ && total_items_ < global_bound_);
  item.id = next_id_++;
  t.items.push_back(std::move(item));
  total_items_++;
  if (t.items.size() == 1) active_++;
  CHUNKD_ASSERT(active_ <= total_items_);
  update_gauges();
  return t.items.back();
}

void ThingQueues::pop_front(Thing& t) {
  CHUNKD_ASSERT(!t.items.empty() && total_items_ > 0);
  t.items.pop_front();
  total_items_--;
  if (t.items.empty()) active_--;
  CHUNKD_ASSERT(active_ <= total_items_);
  update_gauges();
}

void ThingQueues::pop_back(Thing& t) {
  CHUNKD_ASSERT(!t.items.empty() && total_items_ > 0);
  t.items.pop_back();
  total_items_--;
  if (t.items.empty()) active_--;
  CHUNKD_ASSERT(active_ <= total_items_);
  update_gauges();
}

void ThingQueues::retire(Thing& t) {
  CHUNKD_ASSERT(t.items.empty());
  t.state = State::Idle;
  if (per_thing_.on()) {
    const std::uint64_t now = clock_.now_ms();
    per_thing_.refill(t.bucket, now);
    if (const std::uint64_t full_in = per_thing_.full_in_ms(t.bucket); full_in > 0) {
      if (!t.in_idle_list) {
        t.in_idle_list = true;
        idle_buckets_.push_back({&t, now + full_in});
      }
      return;
    }
  }
  if (!t.in_idle_list) forget(t);
}

void ThingQueues::sweep_idle_buckets() {
  if (idle_buckets_.empty()) return;
  const std::uint64_t now = clock_.now_ms();
  while (!idle_buckets_.empty() && idle_buckets_.front().full_at_ms <= now) {
    Thing* t = idle_buckets_.front().thing;
    idle_buckets_.pop_front();
    t->in_idle_list = false;
    if (t->state != State::Idle || !t->items.empty()) continue;
    per_thing_.refill(t->bucket, now);
    if (const std::uint64_t full_in = per_thing_.full_in_ms(t->bucket); full_in > 0) {
      t->in_idle_list = true;
      idle_buckets_.push_back({t, now + full_in});
    } else {
      forget(*t);
    }
  }
}

void ThingQueues::set_limits(RateLimit per_thing, std::size_t per_thing_bound,
                             std::size_t global_bound) {
  CHUNKD_ASSERT(per_thing_bound >= 1 && global_bound >= 1);
  per_thing_ = per_thing;
  per_thing_bound_ = per_thing_bound;
  global_bound_ = global_bound;
  per_thing_ceiling_ = std::max(per_thing_ceiling_, per_thing_bound);
  global_ceiling_ = std::max(global_ceiling_, global_bound);
  for (auto& [name, thing] : things_) {
    thing->bucket.tokens = std::min(thing->bucket.tokens, per_thing_.burst());
  }
}

ThingQueues::Thing* ThingQueues::find(std::string_view name) {
  auto it = things_.find(name);
  return it == things_.end() ? nullptr : it->second.get();
}

void ThingQueues::for_each(const std::function<void(Thing&)>& fn) {
  for (auto& [name, thing] : things_) fn(*thing);
}

void ThingQueues::clear() {
  CHUNKD_ASSERT(total_items_ == 0 && active_ == 0);
  idle_buckets_.clear();
  things_.clear();
  spares_.clear();
}

void ThingQueues::update_gauges() {
  queue_gauge_.set(static_cast<double>(total_items_));
  things_gauge_.set(static_cast<double>(active_));
}

void ThingQueues::check_invariants() const {
  std::size_t items = 0;
  std::size_t with_items = 0;
  for (const auto& [name, thing] : things_) {
    CHUNKD_ASSERT(name == thing->name);
    CHUNKD_ASSERT(thing->items.size() <= per_thing_ceiling_);
    items += thing->items.size();
    if (!thing->items.empty()) with_items++;
  }
  CHUNKD_ASSERT(items == total_items_);
  CHUNKD_ASSERT(with_items == active_);
  CHUNKD_ASSERT(total_items_ <= global_ceiling_);
}

}  // namespace chunkd::engine

#include "engine/scheduler.hpp"

#include <algorithm>
#include <deque>
#include <utility>

#include "base/assert.hpp"
#include "engine/scheduler_order.hpp"
#include "engine/thing_queues.hpp"
#include "engine/token_bucket.hpp"

namespace chunkd::engine {
namespace {

constexpr std::uint64_t kBackstopMs = 20;  // re-check paused publishing / read slots

// Handles are heap-allocated and freed in their close callbacks, which may run after the
// Scheduler is gone; `done` runs once the last one closed.
struct CloseGroup {
  int pending = 0;
  std::function<void()> done;
};

void close_handle(uv_handle_t* h, CloseGroup* group) {
  group->pending++;
  h->data = group;
  uv_close(h, [](uv_handle_t* handle) {
    auto* g = static_cast<CloseGroup*>(handle->data);
    if (handle->type == UV_TIMER) {
      delete reinterpret_cast<uv_timer_t*>(handle);
    } else {
      delete reinterpret_cast<uv_idle_t*>(handle);
    }
    CHUNKD_ASSERT(g->pending > 0);
    if (--g->pending == 0) {
      auto done = std::move(g->done);
      delete g;
      if (done) done();
    }
  });
}

// Checks the options' REQUIRES: (engine/delivery_options.hpp) and returns the read bounds.
ReadBounds checked_bounds(const SchedulerOptions& o) {
  CHUNKD_ASSERT(o.blocks_per_turn >= 1);
  CHUNKD_ASSERT(o.per_thing_queue_requests >= 1);
  CHUNKD_ASSERT(o.global_queue_requests >= 1);
  CHUNKD_ASSERT(o.max_extent_reads >= 1);
  CHUNKD_ASSERT(o.max_prefetch_reads < o.max_extent_reads);
  return ReadBounds{o.max_extent_reads, o.max_prefetch_reads};
}

// Whether two GetStream jobs of one thing ask for the same replies (scheduler.hpp: merged
// duplicates); the client token and the arrival time may differ.
bool same_request(const BlockJob& a, const BlockJob& b) {
  return a.stream->id == b.stream->id && a.stream->version == b.stream->version &&
         a.file->file_id == b.file->file_id && a.file->digest == b.file->digest &&
         a.block_size == b.block_size && a.format == b.format && a.data_topic == b.data_topic &&
         a.blocks == b.blocks;
}

}  // namespace

struct Scheduler::Impl {
  using State = ThingQueues::State;
  using Thing = ThingQueues::Thing;

  // How serving a thing's head went, for the round-robin pass.
  enum class Outcome { Progress, Parked, Blocked };

  Impl(uv_loop_t* l, Worker& w, Transport& t, const Clock& clk, Metrics& m, SchedulerOptions o)
      : loop(l),
        worker(w),
        transport(t),
        clock(clk),
        options(o),
        bounds(checked_bounds(options)),
        global(options.global_blocks_per_s),
        queues(clk, m, RateLimit(options.per_thing_blocks_per_s), options.per_thing_queue_requests,
               options.global_queue_requests),
        merged(m.counter("chunkd_requests_merged_total",
                         "GetStream requests merged into an identical queued request")) {
    idle = new uv_idle_t;
    uv_idle_init(loop, idle);
    idle->data = this;
    timer = new uv_timer_t;
    uv_timer_init(loop, timer);
    timer->data = this;
    stop_timer = new uv_timer_t;
    uv_timer_init(loop, stop_timer);
    stop_timer->data = this;
    global_bucket = global.full(clock.now_ms());
    std::weak_ptr<char> weak = alive;
    transport.on_writable([weak, this] {
      if (!weak.expired()) on_writable();
    });
    worker.on_read_done([weak, this](std::string_view name, std::uint64_t id, std::uint32_t extent,
                                     std::error_code error, BlockCache::Handle handle) {
      if (!weak.expired()) read_done(name, id, extent, error, std::move(handle));
    });
  }

  ~Impl() {
    alive.reset();
    transport.on_writable({});
    worker.on_read_done({});
    if (!closed) close_handles({});
  }

  uv_loop_t* loop;
  Worker& worker;
  Transport& transport;  // bytes_in_flight() and on_writable() only: the worker sends
  const Clock& clock;
  SchedulerOptions options;
  ReadBounds bounds;
  RateLimit global;
  ThingQueues queues;
  Counter& merged;

  std::shared_ptr<char> alive = std::make_shared<char>(0);
  uv_idle_t* idle = nullptr;
  uv_timer_t* timer = nullptr;
  uv_timer_t* stop_timer = nullptr;
  bool idle_active = false;
  bool closed = false;
  bool stopping = false;
  std::function<void()> stop_done;

  // Serving order: each thing with items is in exactly one of these, or Serving (or WaitRead).
  ServeOrder order;  // Ready: runnable, or held back on a full channel's lane
  std::vector<Thing*> wait_tokens;
  std::deque<Thing*> wait_global;
  std::deque<Thing*> wait_slot;

  RateLimit::Bucket global_bucket;
  std::size_t demand_reads = 0;
  bool paused = false;  // waiting for on_writable (or the in-flight bound to fall)

  void make_ready(Thing& t) {
    t.state = State::Ready;
    order.push_back(t);
    start_idle();
  }

  // A thing that was idle gets work: its lane is its channel's (stable for a key).
  void activate(Thing& t) {
    t.lane = order.lane_of(transport.channel_of(t.name));
    make_ready(t);
  }

  Admit admit(Thing*& out, std::string_view name) {
    if (stopping || closed) return Admit::Stopped;
    out = queues.admit(name);
    return out == nullptr ? Admit::Throttled : Admit::Ok;
  }

  // Merges `job` into an identical job `job.thing` has queued and not started: the newer client
  // token and arrival time win, the queued job keeps its place. False when there is none.
  bool merge(BlockJob& job, Transport::RequestTag tag) {
    Thing* t = queues.find(job.thing);
    if (t == nullptr) return false;
    for (std::size_t i = 0; i < t->items.size(); ++i) {
      WorkItem& item = t->items[i];
      if (!item.is_job || item.started || item.failed() || !same_request(item.job, job)) continue;
      item.job.client_token = std::move(job.client_token);
      item.job.received_ms = job.received_ms;
      if (tag != Transport::kNoRequestTag) item.tags.push_back(tag);
      merged.inc();
      return true;
    }
    return false;
  }

  // The item ended (its last reply was handed over, or it was lost): the requests it answers are
  // finished. Items dropped by stop() are not (transport.hpp).
  void finish(WorkItem& item) {
    for (Transport::RequestTag tag : item.tags) transport.finished(tag);
    item.tags.clear();
  }

  // After serving `t`'s head: a new turn at the back of the order, or retired.
  void requeue(Thing& t) {
    if (t.items.empty()) {
      queues.retire(t);
    } else {
      make_ready(t);
    }
  }

  // ---- serving ----

  void start_idle() {
    if (idle_active || closed) return;
    idle_active = true;
    uv_idle_start(idle, [](uv_idle_t* h) { static_cast<Impl*>(h->data)->serve_pass(); });
  }

  void stop_idle() {
    if (!idle_active) return;
    idle_active = false;
    uv_idle_stop(idle);
  }

  void serve_pass() {
    std::size_t budget = options.blocks_per_turn;
    while (budget > 0 && !paused) {
      Thing* t = order.pop();
      if (t == nullptr) break;
      CHUNKD_ASSERT(t->state == State::Ready && !t->items.empty());
      t->state = State::Serving;
      // A visit serves up to `quantum_bytes` of the thing's replies in a row: a device's blocks
      // then reach the broker and the device together (a TCP segment and a wake-up for several,
      // not one each). Under a global block rate, one block per visit shares the tokens evenly.
      std::size_t visit_bytes = 0;
      Outcome o = serve_head(*t, visit_bytes);
      while (o == Outcome::Progress && !global.on() && visit_bytes < options.quantum_bytes &&
             budget > 1 && !t->items.empty() && !paused) {
        budget--;
        o = serve_head(*t, visit_bytes);
      }
      if (o == Outcome::Blocked) {
        t->state = State::Ready;
        order.push_front(*t);
        break;
      }
      if (o == Outcome::Progress) requeue(*t);
      budget--;
    }
    if (!order.runnable() || paused) stop_idle();
    arm_timer();
    if (stopping) maybe_finish_stop();
  }

  // Serves `t`'s head item through the worker, adding its reply bytes to `visit_bytes`.
  Outcome serve_head(Thing& t, std::size_t& visit_bytes) {
    WorkItem& item = t.items.front();
    if (item.is_job && !item.failed()) {
      if (park_for_tokens(t, item)) return Outcome::Parked;
    }
    if (transport.bytes_in_flight() >= options.max_publish_bytes_in_flight) {
      paused = true;
      item.pins.release();
      return Outcome::Blocked;
    }
    ServeResult r = worker.serve(t.name, item, bounds);
    if (r.served == Served::Failed) {
      CHUNKD_ASSERT(!item.is_job);
      r = worker.serve(t.name, item, bounds);  // its rejection, in its place
    }
    demand_reads += r.reads_started;
    visit_bytes += r.reply_bytes;
    return apply(t, item, r.served);
  }

  // Parks `t` when a rate limit has no token for its next block.
  bool park_for_tokens(Thing& t, WorkItem& item) {
    const RateLimit& per_thing = queues.per_thing();
    if (!per_thing.on() && !global.on()) return false;  // no clock read per block without limits
    const std::uint64_t now = clock.now_ms();
    if (per_thing.on()) {
      per_thing.refill(t.bucket, now);
      if (t.bucket.tokens < 1.0) {
        item.pins.release();  // parked things hold no extents
        t.ready_at_ms = now + per_thing.wait_ms(t.bucket);
        t.state = State::WaitTokens;
        wait_tokens.push_back(&t);
        return true;
      }
    }
    if (global.on()) {
      global.refill(global_bucket, now);
      if (global_bucket.tokens < 1.0) {
        item.pins.release();
        t.state = State::WaitGlobal;
        wait_global.push_back(&t);
        return true;
      }
    }
    return false;
  }

  Outcome apply(Thing& t, WorkItem& item, Served served) {
    switch (served) {
      case Served::Sent:
        if (item.is_job) {
          if (queues.per_thing().on()) t.bucket.tokens -= 1.0;
          if (global.on()) global_bucket.tokens -= 1.0;
          item.started = true;
          if (++item.next < item.job.blocks.size()) return Outcome::Progress;
        }
        finish(item);
        queues.pop_front(t);
        return Outcome::Progress;
      case Served::Lost:
        finish(item);
        queues.pop_front(t);
        return Outcome::Progress;
      case Served::Backpressure:
        hold_back(t);
        return Outcome::Parked;
      case Served::WaitRead:
        t.state = State::WaitRead;
        return Outcome::Parked;
      case Served::WaitSlot:
        t.state = State::WaitSlot;
        wait_slot.push_back(&t);
        return Outcome::Parked;
      case Served::Failed:
        break;
    }
    CHUNKD_ASSERT(false && "a failed job is served again as its rejection");
    return Outcome::Blocked;
  }

  void read_done(std::string_view name, std::uint64_t id, std::uint32_t extent,
                 std::error_code error, BlockCache::Handle handle) {
    CHUNKD_ASSERT(demand_reads > 0);
    demand_reads--;
    wake_slot_waiters();  // a slot freed: parked things retry
    Thing* t = queues.find(name);
    if (t == nullptr || t->items.empty() || t->items.front().id != id) return;  // item gone
    if (t->items.front().pins.landed(extent, error, std::move(handle)) &&
        t->state == State::WaitRead) {
      make_ready(*t);
    }
  }

  // `t`'s channel is full: it waits for the channel at the head of its lane, its head item as it
  // is, and the lane's other things wait behind it without being offered to the transport.
  void hold_back(Thing& t) {
    t.state = State::Ready;
    order.hold(t.lane);
    order.push_front(t);
  }

  // ---- waking ----

  // Releases the lane of each channel that is writable again.
  void release_channels() {
    order.release([this](std::size_t channel) { return transport.writable(channel); });
  }

  void wake_slot_waiters() {
    while (!wait_slot.empty()) {
      Thing* t = wait_slot.front();
      wait_slot.pop_front();
      make_ready(*t);
    }
  }

  void on_writable() {
    release_channels();
    paused = false;  // a refusal pauses again
    if (order.runnable()) start_idle();
  }

  void on_timer() {
    const std::uint64_t now = clock.now_ms();
    if (paused && transport.bytes_in_flight() < options.max_publish_bytes_in_flight) {
      paused = false;  // backstop: retry; a refusal pauses again
    }
    if (!wait_tokens.empty()) {
      std::vector<Thing*> still;
      for (Thing* t : wait_tokens) {
        if (t->ready_at_ms <= now) {
          make_ready(*t);
        } else {
          still.push_back(t);
        }
      }
      wait_tokens.swap(still);
    }
    if (!wait_global.empty()) {
      global.refill(global_bucket, now);
      if (global_bucket.tokens >= 1.0) {
        while (!wait_global.empty()) {
          Thing* t = wait_global.front();
          wait_global.pop_front();
          make_ready(*t);
        }
      }
    }
    wake_slot_waiters();
    release_channels();
    if (order.runnable() && !paused) start_idle();
    arm_timer();
  }

  void arm_timer() {
    if (closed) return;
    const std::uint64_t now = clock.now_ms();
    std::uint64_t due = UINT64_MAX;
    for (Thing* t : wait_tokens) due = std::min(due, t->ready_at_ms);
    if (!wait_global.empty()) {
      global.refill(global_bucket, now);
      due = std::min(due, now + global.wait_ms(global_bucket));
    }
    if (paused || !wait_slot.empty() || order.holding()) {
      due = std::min(due, now + kBackstopMs);
    }
    if (due == UINT64_MAX) {
      uv_timer_stop(timer);
      return;
    }
    const std::uint64_t delay = due > now ? due - now : 0;
    uv_timer_start(
        timer, [](uv_timer_t* h) { static_cast<Impl*>(h->data)->on_timer(); }, delay, 0);
  }

  void set_limits(const SchedulerOptions& o) {
    checked_bounds(o);
    options.per_thing_queue_requests = o.per_thing_queue_requests;
    options.global_queue_requests = o.global_queue_requests;
    options.per_thing_blocks_per_s = o.per_thing_blocks_per_s;
    options.global_blocks_per_s = o.global_blocks_per_s;
    options.quantum_bytes = o.quantum_bytes;
    options.max_publish_bytes_in_flight = o.max_publish_bytes_in_flight;
    queues.set_limits(RateLimit(o.per_thing_blocks_per_s), o.per_thing_queue_requests,
                      o.global_queue_requests);
    const std::uint64_t now = clock.now_ms();
    const bool was_on = global.on();
    global.refill(global_bucket, now);  // what the old rate earned until now
    global = RateLimit(o.global_blocks_per_s);
    if (was_on) {
      global_bucket.tokens = std::min(global_bucket.tokens, global.burst());
      global_bucket.last_ms = now;
    } else {
      global_bucket = global.full(now);  // as if constructed with this rate
    }
    if (closed) return;
    // Parked for tokens under the old rates: each retries, parking again when still short.
    std::vector<Thing*> parked;
    parked.swap(wait_tokens);
    parked.insert(parked.end(), wait_global.begin(), wait_global.end());
    wait_global.clear();
    for (Thing* t : parked) make_ready(*t);
    on_timer();  // the in-flight bound may have risen: resumes a pause it no longer holds
  }

  // ---- stopping ----

  void stop(int timeout_ms, std::function<void()> done) {
    if (stopping || closed) {
      if (done) done();  // second call: nothing more to wait for
      return;
    }
    stopping = true;
    stop_done = std::move(done);
    queues.for_each([this](Thing& t) {
      std::size_t keep = 0;
      if (!t.items.empty()) {
        const WorkItem& head = t.items.front();
        if (!head.is_job || head.started) keep = 1;
      }
      while (t.items.size() > keep) drop_back(t);
    });
    // Things left without items leave their wait lists lazily: serve_pass skips them.
    purge_empty_from_lists();
    uv_timer_start(
        stop_timer, [](uv_timer_t* h) { static_cast<Impl*>(h->data)->stop_timeout(); },
        static_cast<std::uint64_t>(std::max(0, timeout_ms)), 0);
    maybe_finish_stop();
  }

  void drop_back(Thing& t) {
    CHUNKD_ASSERT(!t.items.empty());
    worker.dropped(t.items.back());
    queues.pop_back(t);
  }

  void purge_empty_from_lists() {
    auto empty = [](const Thing* t) { return t->items.empty(); };
    order.erase_if(empty);
    std::erase_if(wait_tokens, empty);
    std::erase_if(wait_global, empty);
    std::erase_if(wait_slot, empty);
    queues.for_each([](Thing& t) {
      if (t.items.empty()) t.state = State::Idle;
    });
  }

  void stop_timeout() {
    queues.for_each([this](Thing& t) {
      while (!t.items.empty()) drop_back(t);
    });
    purge_empty_from_lists();
    maybe_finish_stop();
  }

  void maybe_finish_stop() {
    if (!stopping || closed || queues.total_items() > 0) return;
    queues.clear();
    order.clear();
    wait_tokens.clear();
    wait_global.clear();
    wait_slot.clear();
    close_handles(std::move(stop_done));
  }

  void close_handles(std::function<void()> done) {
    closed = true;
    stop_idle();
    auto* group = new CloseGroup;
    group->done = std::move(done);
    close_handle(reinterpret_cast<uv_handle_t*>(idle), group);
    close_handle(reinterpret_cast<uv_handle_t*>(timer), group);
    close_handle(reinterpret_cast<uv_handle_t*>(stop_timer), group);
    idle = nullptr;
    timer = nullptr;
    stop_timer = nullptr;
  }

  void check_invariants() const {
    queues.check_invariants();
    const std::size_t listed =
        order.size() + wait_tokens.size() + wait_global.size() + wait_slot.size();
    CHUNKD_ASSERT(listed <= queues.active_things());
  }
};

Scheduler::Scheduler(uv_loop_t* loop, Worker& worker, Transport& transport, const Clock& clock,
                     Metrics& metrics, SchedulerOptions options)
    : impl_(std::make_unique<Impl>(loop, worker, transport, clock, metrics, options)) {}

Scheduler::~Scheduler() = default;

Scheduler::Admit Scheduler::submit(BlockJob job, Transport::RequestTag tag) {
  CHUNKD_ASSERT(job.file != nullptr && job.block_size > 0 && !job.blocks.empty());
  if (impl_->stopping || impl_->closed) return Admit::Stopped;
  if (impl_->merge(job, tag)) return Admit::Merged;
  Impl::Thing* t = nullptr;
  Admit a = impl_->admit(t, job.thing);
  if (a != Admit::Ok) return a;
  WorkItem item;
  item.is_job = true;
  item.job = std::move(job);
  if (tag != Transport::kNoRequestTag) item.tags.push_back(tag);
  const bool was_idle = t->state == Impl::State::Idle;
  WorkItem& queued = impl_->queues.push(*t, std::move(item));
  impl_->worker.queued(queued, impl_->bounds);
  if (was_idle) impl_->activate(*t);
  return Admit::Ok;
}

Scheduler::Admit Scheduler::post(std::string_view thing, std::string topic,
                                 std::vector<std::byte> payload, Transport::RequestTag tag) {
  Impl::Thing* t = nullptr;
  Admit a = impl_->admit(t, thing);
  if (a != Admit::Ok) return a;
  WorkItem item;
  item.topic = std::move(topic);
  item.payload = std::move(payload);
  if (tag != Transport::kNoRequestTag) item.tags.push_back(tag);
  const bool was_idle = t->state == Impl::State::Idle;
  impl_->queues.push(*t, std::move(item));
  if (was_idle) impl_->activate(*t);
  return Admit::Ok;
}

void Scheduler::wake() {
  if (impl_->closed) return;
  impl_->on_timer();
}

void Scheduler::set_limits(const SchedulerOptions& options) { impl_->set_limits(options); }

void Scheduler::stop(int timeout_ms, std::function<void()> done) {
  impl_->stop(timeout_ms, std::move(done));
}

std::size_t Scheduler::queued_requests() const { return impl_->queues.total_items(); }
std::size_t Scheduler::active_things() const { return impl_->queues.active_things(); }
std::size_t Scheduler::reads_in_flight() const { return impl_->demand_reads; }
bool Scheduler::paused() const { return impl_->paused; }
std::size_t Scheduler::held_back() const { return impl_->order.held_back(); }
void Scheduler::check_invariants() const { impl_->check_invariants(); }

}  // namespace chunkd::engine

#include "engine/scheduler.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <deque>
#include <unordered_map>
#include <utility>

namespace chunkd::engine {
namespace {

constexpr std::uint64_t kBackstopMs = 20;  // re-check paused publishing / read slots

struct Bucket {
  double tokens = 0;
  std::uint64_t last_ms = 0;
};

double burst_of(double rate) { return std::max(1.0, rate); }

void refill(Bucket& b, double rate, std::uint64_t now_ms) {
  if (rate <= 0) return;
  if (now_ms > b.last_ms) {
    b.tokens = std::min(burst_of(rate),
                        b.tokens + static_cast<double>(now_ms - b.last_ms) * rate / 1000.0);
  }
  b.last_ms = now_ms;
}

// Milliseconds until the bucket holds one token.
std::uint64_t wait_ms(const Bucket& b, double rate) {
  if (b.tokens >= 1.0) return 0;
  return static_cast<std::uint64_t>(std::ceil((1.0 - b.tokens) * 1000.0 / rate));
}

bool transient(std::error_code e) {
  return e == std::errc::no_buffer_space || e == std::errc::too_many_files_open ||
         e == std::errc::too_many_files_open_in_system ||
         e == std::errc::resource_unavailable_try_again || e == std::errc::not_enough_memory;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

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
    if (--g->pending == 0) {
      auto done = std::move(g->done);
      delete g;
      if (done) done();
    }
  });
}

}  // namespace

struct Scheduler::Impl {
  struct Item {
    bool is_job = false;
    std::uint64_t id = 0;
    // job
    BlockJob job;
    std::size_t next = 0;                  // index into job.blocks
    bool started = false;                  // some block was published
    std::vector<BlockCache::Handle> pins;  // extents of the current block, once read
    std::uint32_t pins_first = 0;
    std::size_t reads_waiting = 0;
    std::error_code failure;
    std::int64_t prefetched_through = -1;  // highest extent prefetched for this job
    // message
    std::string topic;
    std::vector<std::byte> payload;
  };

  enum class State { Idle, Ready, Serving, WaitRead, WaitTokens, WaitGlobal, WaitSlot };

  struct Thing {
    std::string name;
    std::deque<Item> items;
    State state = State::Idle;
    Bucket bucket;
    std::uint64_t ready_at_ms = 0;
    bool in_idle_list = false;
  };

  enum class Outcome { Progress, Parked, Blocked };

  Impl(uv_loop_t* l, BlockCache& c, Transport& p, SchedulerSink& s, const Clock& clk, Metrics& m,
       SchedulerOptions o)
      : loop(l),
        cache(c),
        transport(p),
        sink(s),
        clock(clk),
        options(o),
        queue_gauge(m.gauge("chunkd_queue_requests", "Requests queued for delivery, all things")),
        things_gauge(m.gauge("chunkd_things_active", "Things with queued requests")),
        refused_backpressure(m.counter("chunkd_publish_refused_total",
                                       "Publishes the MQTT side refused",
                                       R"(reason="backpressure")")),
        refused_disconnected(
            m.counter("chunkd_publish_refused_total", "", R"(reason="not_connected")")),
        refused_error(m.counter("chunkd_publish_refused_total", "", R"(reason="error")")),
        jobs_dropped(m.counter("chunkd_jobs_dropped_total",
                               "GetStream jobs dropped unfinished (publish failure or shutdown)")),
        messages_dropped(m.counter("chunkd_replies_dropped_total",
                                   "Descriptions/rejections that could not be published")),
        blocks_json(m.counter("chunkd_blocks_sent_total", "Data blocks handed to the transport",
                              R"(format="json")")),
        blocks_cbor(m.counter("chunkd_blocks_sent_total", "", R"(format="cbor")")),
        bytes_json(m.counter("chunkd_bytes_sent_total",
                             "Encoded data-reply bytes handed to the transport",
                             R"(format="json")")),
        bytes_cbor(m.counter("chunkd_bytes_sent_total", "", R"(format="cbor")")) {
    if (options.blocks_per_turn == 0) options.blocks_per_turn = 1;

    if (options.max_extent_reads < 1) options.max_extent_reads = 1;
    if (options.max_prefetch_reads >= options.max_extent_reads) {
      options.max_prefetch_reads = options.max_extent_reads - 1;
    }
    if (options.per_thing_queue_requests == 0) options.per_thing_queue_requests = 1;
    idle = new uv_idle_t;
    uv_idle_init(loop, idle);
    idle->data = this;
    timer = new uv_timer_t;
    uv_timer_init(loop, timer);
    timer->data = this;
    stop_timer = new uv_timer_t;
    uv_timer_init(loop, stop_timer);
    stop_timer->data = this;
    global_bucket.tokens = burst_of(options.global_blocks_per_s);
    global_bucket.last_ms = clock.now_ms();
    std::weak_ptr<char> weak = alive;
    transport.on_writable([weak, this] {
      if (weak.expired()) return;
      on_writable();
    });
  }

  ~Impl() {
    alive.reset();
    transport.on_writable({});
    if (!closed) close_handles({});
  }

  uv_loop_t* loop;
  BlockCache& cache;
  Transport& transport;
  SchedulerSink& sink;
  const Clock& clock;
  SchedulerOptions options;
  Gauge& queue_gauge;
  Gauge& things_gauge;
  Counter& refused_backpressure;
  Counter& refused_disconnected;
  Counter& refused_error;
  Counter& jobs_dropped;
  Counter& messages_dropped;
  Counter& blocks_json;
  Counter& blocks_cbor;
  Counter& bytes_json;
  Counter& bytes_cbor;

  std::shared_ptr<char> alive = std::make_shared<char>(0);
  uv_idle_t* idle = nullptr;
  uv_timer_t* timer = nullptr;
  uv_timer_t* stop_timer = nullptr;
  bool idle_active = false;
  bool closed = false;
  bool stopping = false;
  std::function<void()> stop_done;

  std::unordered_map<std::string, std::unique_ptr<Thing>, StringHash, std::equal_to<>> things;
  std::deque<Thing*> ring;
  std::vector<Thing*> wait_tokens;
  std::deque<Thing*> wait_global;
  std::deque<Thing*> wait_slot;
  struct IdleBucket {
    Thing* thing;
    std::uint64_t full_at_ms;
  };
  std::deque<IdleBucket> idle_buckets;

  Bucket global_bucket;
  std::size_t total_items = 0;
  std::size_t active = 0;  // things with items
  std::size_t demand_reads = 0;
  std::uint64_t next_id = 1;
  bool paused = false;           // waiting for on_writable (or the in-flight bound to fall)
  std::size_t served_bytes = 0;  // reply bytes of the last item served (serve_pass's quantum)
  std::vector<std::span<const std::byte>> pieces;

  bool per_thing_limited() const { return options.per_thing_blocks_per_s > 0; }
  bool global_limited() const { return options.global_blocks_per_s > 0; }

  void update_gauges() {
    queue_gauge.set(static_cast<double>(total_items));
    things_gauge.set(static_cast<double>(active));
  }

  // ---- things ----

  Thing& thing_for(std::string_view name) {
    auto it = things.find(name);
    if (it != things.end()) return *it->second;
    auto t = std::make_unique<Thing>();
    t->name = std::string(name);
    t->bucket.tokens = burst_of(options.per_thing_blocks_per_s);
    t->bucket.last_ms = clock.now_ms();
    Thing& ref = *t;
    things.emplace(ref.name, std::move(t));
    return ref;
  }

  Admit admit(Thing*& out, std::string_view name) {
    if (stopping || closed) return Admit::Stopped;
    sweep_idle_buckets();
    auto it = things.find(name);
    std::size_t mine = it == things.end() ? 0 : it->second->items.size();
    if (mine >= options.per_thing_queue_requests || total_items >= options.global_queue_requests) {
      return Admit::Throttled;
    }
    out = &thing_for(name);
    return Admit::Ok;
  }

  void pushed(Thing& t) {
    total_items++;
    if (t.items.size() == 1) active++;
    update_gauges();
    if (t.state == State::Idle) make_ready(t);
  }

  void make_ready(Thing& t) {
    t.state = State::Ready;
    ring.push_back(&t);
    start_idle();
  }

  void popped(Thing& t) {
    total_items--;
    if (t.items.empty()) active--;
    update_gauges();
  }

  // After serving `t`'s head: back of the ring, or idle (and forgotten unless its bucket must be
  // remembered).
  void requeue(Thing& t) {
    if (!t.items.empty()) {
      make_ready(t);
      return;
    }
    t.state = State::Idle;
    if (per_thing_limited()) {
      refill(t.bucket, options.per_thing_blocks_per_s, clock.now_ms());
      double missing = burst_of(options.per_thing_blocks_per_s) - t.bucket.tokens;
      if (missing > 1e-9) {
        if (!t.in_idle_list) {
          t.in_idle_list = true;
          auto full_in = static_cast<std::uint64_t>(
              std::ceil(missing * 1000.0 / options.per_thing_blocks_per_s));
          idle_buckets.push_back({&t, clock.now_ms() + full_in});
        }
        return;
      }
    }
    if (!t.in_idle_list) things.erase(things.find(t.name));
  }

  void sweep_idle_buckets() {
    const std::uint64_t now = clock.now_ms();
    while (!idle_buckets.empty() && idle_buckets.front().full_at_ms <= now) {
      Thing* t = idle_buckets.front().thing;
      idle_buckets.pop_front();
      t->in_idle_list = false;
      if (t->state == State::Idle && t->items.empty()) {
        refill(t->bucket, options.per_thing_blocks_per_s, now);
        double missing = burst_of(options.per_thing_blocks_per_s) - t->bucket.tokens;
        if (missing > 1e-9) {
          t->in_idle_list = true;
          idle_buckets.push_back(
              {t, now + static_cast<std::uint64_t>(
                            std::ceil(missing * 1000.0 / options.per_thing_blocks_per_s))});
        } else {
          things.erase(things.find(t->name));
        }
      }
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
    while (budget > 0 && !ring.empty() && !paused) {
      Thing* t = ring.front();
      ring.pop_front();
      t->state = State::Serving;
      // A visit serves up to `quantum_bytes` of the thing's replies in a row: a device's blocks
      // then reach the broker and the device together (a TCP segment and a wake-up for several,
      // not one each). Under a global block rate, one block per visit shares the tokens evenly.
      served_bytes = 0;
      Outcome o = serve_head(*t);
      std::size_t visit_bytes = served_bytes;
      while (o == Outcome::Progress && !global_limited() && visit_bytes < options.quantum_bytes &&
             budget > 1 && !t->items.empty() && !paused) {
        budget--;
        served_bytes = 0;
        o = serve_head(*t);
        visit_bytes += served_bytes;
      }
      if (o == Outcome::Blocked) {
        t->state = State::Ready;
        ring.push_front(t);
        break;
      }
      if (o == Outcome::Progress) requeue(*t);
      budget--;
    }
    if (ring.empty() || paused) stop_idle();
    arm_timer();
    if (stopping) maybe_finish_stop();
  }

  Outcome serve_head(Thing& t) {
    Item& item = t.items.front();
    if (item.is_job && item.failure) fail_job(t, item);
    if (!item.is_job) return serve_message(t, item);
    return serve_block(t, item);
  }

  bool over_in_flight_bound() {
    if (transport.bytes_in_flight() >= options.max_publish_bytes_in_flight) {
      paused = true;
      return true;
    }
    return false;
  }

  Outcome serve_message(Thing& t, Item& item) {
    if (over_in_flight_bound()) return Outcome::Blocked;
    auto r = transport.send(t.name, item.topic, item.payload, options.qos);
    served_bytes = item.payload.size();
    if (r == Transport::SendResult::Backpressure) {
      refused_backpressure.inc();
      paused = true;
      return Outcome::Blocked;
    }
    if (r != Transport::SendResult::Ok) {
      count_refusal(r);
      messages_dropped.inc();
    }
    t.items.pop_front();
    popped(t);
    return Outcome::Progress;
  }

  void count_refusal(Transport::SendResult r) {
    if (r == Transport::SendResult::NotConnected) {
      refused_disconnected.inc();
    } else {
      refused_error.inc();
    }
  }

  // Replaces a failed job by its rejection, in place.
  void fail_job(Thing& t, Item& item) {
    (void)t;
    std::error_code error = item.failure;
    item.pins.clear();
    item.payload = sink.encode_failure(item.job, error);
    item.topic = item.job.rejected_topic;
    item.is_job = false;
    sink.job_ended(item.job, JobEnd::Failed, error);
    item.job = BlockJob{};
  }

  Outcome serve_block(Thing& t, Item& item) {
    BlockJob& job = item.job;
    const std::uint64_t now = clock.now_ms();
    if (per_thing_limited()) {
      refill(t.bucket, options.per_thing_blocks_per_s, now);
      if (t.bucket.tokens < 1.0) {
        item.pins.clear();  // parked things hold no extents
        t.ready_at_ms = now + wait_ms(t.bucket, options.per_thing_blocks_per_s);
        t.state = State::WaitTokens;
        wait_tokens.push_back(&t);
        return Outcome::Parked;
      }
    }
    if (global_limited()) {
      refill(global_bucket, options.global_blocks_per_s, now);
      if (global_bucket.tokens < 1.0) {
        item.pins.clear();
        t.state = State::WaitGlobal;
        wait_global.push_back(&t);
        return Outcome::Parked;
      }
    }

    const io::StoredFile& file = *job.file;
    const std::uint32_t block = job.blocks[item.next];
    const std::uint64_t offset = std::uint64_t{block} * job.block_size;
    const std::uint64_t length = std::min<std::uint64_t>(job.block_size, file.size_bytes - offset);
    const std::uint64_t extent_size = BlockCache::extent_bytes(file);
    const auto first = static_cast<std::uint32_t>(offset / extent_size);
    const auto last = static_cast<std::uint32_t>((offset + length - 1) / extent_size);
    const std::size_t count = std::size_t{last} - first + 1;
    if (item.pins_first != first || item.pins.size() != count) {
      item.pins.clear();
      item.pins.resize(count);
      item.pins_first = first;
    }

    // Collect the extents; start or join reads for the missing ones.
    bool need_slot = false;
    std::error_code hard_error;
    std::error_code soft_error;
    for (std::size_t i = 0; i < count; ++i) {
      if (item.pins[i]) continue;
      const auto extent = static_cast<std::uint32_t>(first + i);
      item.pins[i] = cache.lookup(file, extent);
      if (item.pins[i]) continue;
      if (!cache.reading(file, extent) && cache.reads_in_flight() >= options.max_extent_reads) {
        need_slot = true;
        continue;
      }
      std::error_code error;
      std::weak_ptr<char> weak = alive;
      BlockCache::Handle h = cache.get(file, extent, error,
                                       [weak, this, name = t.name, id = item.id, extent](
                                           std::error_code e, BlockCache::Handle got) {
                                         if (weak.expired()) return;
                                         on_read_done(name, id, extent, e, std::move(got));
                                       });
      if (h) {
        item.pins[i] = std::move(h);
      } else if (!error) {
        item.reads_waiting++;
        demand_reads++;
      } else if (transient(error)) {
        soft_error = error;
      } else {
        hard_error = error;
      }
    }
    if (item.reads_waiting > 0) {
      if (hard_error && !item.failure) item.failure = hard_error;
      t.state = State::WaitRead;
      return Outcome::Parked;
    }
    if (hard_error) {
      item.failure = hard_error;
      fail_job(t, item);
      return serve_message(t, item);
    }
    if (need_slot || soft_error) {
      if (cache.reads_in_flight() > 0) {
        t.state = State::WaitSlot;
        wait_slot.push_back(&t);
        return Outcome::Parked;
      }
      item.failure = soft_error ? soft_error : std::make_error_code(std::errc::no_buffer_space);
      fail_job(t, item);
      return serve_message(t, item);
    }

    if (over_in_flight_bound()) {
      item.pins.clear();
      return Outcome::Blocked;
    }
    pieces.clear();
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint64_t extent_start = (std::uint64_t{first} + i) * extent_size;
      const std::uint64_t from = std::max(offset, extent_start) - extent_start;
      const std::uint64_t to = std::min(offset + length, extent_start + extent_size) - extent_start;
      auto bytes = item.pins[i].bytes();
      assert(to <= bytes.size());
      pieces.push_back(
          bytes.subspan(static_cast<std::size_t>(from), static_cast<std::size_t>(to - from)));
    }
    const std::span<const std::span<const std::byte>> reply = sink.encode_block(job, block, pieces);
    std::size_t reply_bytes = 0;
    for (auto part : reply) reply_bytes += part.size();
    served_bytes = reply_bytes;
    Transport::SendResult r = transport.send(t.name, job.data_topic, reply, options.qos);
    item.pins.clear();
    if (r == Transport::SendResult::Backpressure) {
      refused_backpressure.inc();
      paused = true;
      return Outcome::Blocked;
    }
    if (r != Transport::SendResult::Ok) {
      count_refusal(r);
      jobs_dropped.inc();
      sink.job_ended(job, JobEnd::PublishFailed, {});
      t.items.pop_front();
      popped(t);
      return Outcome::Progress;
    }
    if (per_thing_limited()) t.bucket.tokens -= 1.0;
    if (global_limited()) global_bucket.tokens -= 1.0;
    if (job.format == protocol::Format::Json) {
      blocks_json.inc();
      bytes_json.inc(reply_bytes);
    } else {
      blocks_cbor.inc();
      bytes_cbor.inc(reply_bytes);
    }
    item.started = true;
    item.next++;
    if (item.next == job.blocks.size()) {
      sink.job_ended(job, JobEnd::Completed, {});
      t.items.pop_front();
      popped(t);
    } else {
      prefetch_ahead(item, last);
    }
    return Outcome::Progress;
  }

  // Prefetches the first extent past `current` that a remaining block of the job starts in.
  void prefetch_ahead(Item& item, std::uint32_t current) {
    if (std::int64_t{current} < item.prefetched_through) return;
    if (cache.reads_in_flight() >= options.max_prefetch_reads) return;
    const BlockJob& job = item.job;
    const std::uint64_t extent_size = BlockCache::extent_bytes(*job.file);
    const std::uint64_t boundary = (std::uint64_t{current} + 1) * extent_size;
    const std::uint64_t first_block = (boundary + job.block_size - 1) / job.block_size;
    auto it = std::lower_bound(job.blocks.begin() + static_cast<std::ptrdiff_t>(item.next),
                               job.blocks.end(), first_block);
    if (it == job.blocks.end()) {
      item.prefetched_through = std::int64_t{current} + 1;  // nothing ahead: stop looking
      return;
    }
    const auto target =
        static_cast<std::uint32_t>(std::uint64_t{*it} * job.block_size / extent_size);
    if (!cache.prefetch(*job.file, target)) item.prefetched_through = target;
  }

  void prefetch_first(const Item& item) {
    if (cache.reads_in_flight() >= options.max_prefetch_reads) return;
    const BlockJob& job = item.job;
    const std::uint64_t extent_size = BlockCache::extent_bytes(*job.file);
    const auto e = static_cast<std::uint32_t>(std::uint64_t{job.blocks.front()} * job.block_size /
                                              extent_size);
    (void)cache.prefetch(*job.file, e);
  }

  void on_read_done(const std::string& name, std::uint64_t id, std::uint32_t extent,
                    std::error_code error, BlockCache::Handle handle) {
    demand_reads--;
    // A slot freed: parked things retry.
    while (!wait_slot.empty()) {
      Thing* w = wait_slot.front();
      wait_slot.pop_front();
      make_ready(*w);
    }
    auto it = things.find(name);
    if (it == things.end()) return;
    Thing& t = *it->second;
    if (t.items.empty() || t.items.front().id != id) return;
    Item& item = t.items.front();
    if (item.reads_waiting > 0) item.reads_waiting--;
    if (error) {
      if (!item.failure) item.failure = error;
    } else if (extent >= item.pins_first && extent - item.pins_first < item.pins.size()) {
      item.pins[extent - item.pins_first] = std::move(handle);
    }
    if (item.reads_waiting == 0 && t.state == State::WaitRead) make_ready(t);
  }

  // ---- waking ----

  void on_writable() {
    if (!paused) return;
    paused = false;
    if (!ring.empty()) start_idle();
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
      refill(global_bucket, options.global_blocks_per_s, now);
      if (global_bucket.tokens >= 1.0) {
        while (!wait_global.empty()) {
          Thing* t = wait_global.front();
          wait_global.pop_front();
          make_ready(*t);
        }
      }
    }
    while (!wait_slot.empty()) {
      Thing* t = wait_slot.front();
      wait_slot.pop_front();
      make_ready(*t);
    }
    if (!ring.empty() && !paused) start_idle();
    arm_timer();
  }

  void arm_timer() {
    if (closed) return;
    const std::uint64_t now = clock.now_ms();
    std::uint64_t due = UINT64_MAX;
    for (Thing* t : wait_tokens) due = std::min(due, t->ready_at_ms);
    if (!wait_global.empty()) {
      refill(global_bucket, options.global_blocks_per_s, now);
      due = std::min(due, now + wait_ms(global_bucket, options.global_blocks_per_s));
    }
    if (paused || !wait_slot.empty()) due = std::min(due, now + kBackstopMs);
    if (due == UINT64_MAX) {
      uv_timer_stop(timer);
      return;
    }
    const std::uint64_t delay = due > now ? due - now : 0;
    uv_timer_start(
        timer, [](uv_timer_t* h) { static_cast<Impl*>(h->data)->on_timer(); }, delay, 0);
  }

  // ---- stopping ----

  void stop(int timeout_ms, std::function<void()> done) {
    if (stopping || closed) {
      if (done) done();  // second call: nothing more to wait for
      return;
    }
    stopping = true;
    stop_done = std::move(done);
    for (auto& [name, thing] : things) {
      Thing& t = *thing;
      std::size_t keep = 0;
      if (!t.items.empty()) {
        const Item& head = t.items.front();
        if (!head.is_job || head.started) keep = 1;
      }
      while (t.items.size() > keep) drop_back(t);
    }
    // Things left without items leave their wait lists lazily: serve_pass skips them.
    purge_empty_from_lists();
    uv_timer_start(
        stop_timer, [](uv_timer_t* h) { static_cast<Impl*>(h->data)->stop_timeout(); },
        static_cast<std::uint64_t>(std::max(0, timeout_ms)), 0);
    maybe_finish_stop();
  }

  void drop_back(Thing& t) {
    Item& item = t.items.back();
    if (item.is_job) {
      jobs_dropped.inc();
      sink.job_ended(item.job, JobEnd::Dropped, {});
    } else {
      messages_dropped.inc();
    }
    t.items.pop_back();
    popped(t);
  }

  void purge_empty_from_lists() {
    auto empty = [](Thing* t) { return t->items.empty(); };
    std::erase_if(ring, empty);
    std::erase_if(wait_tokens, empty);
    std::erase_if(wait_global, empty);
    std::erase_if(wait_slot, empty);
    for (auto& [name, thing] : things) {
      if (thing->items.empty()) thing->state = State::Idle;
    }
  }

  void stop_timeout() {
    for (auto& [name, thing] : things) {
      while (!thing->items.empty()) drop_back(*thing);
    }
    purge_empty_from_lists();
    maybe_finish_stop();
  }

  void maybe_finish_stop() {
    if (!stopping || closed || total_items > 0) return;
    things.clear();
    idle_buckets.clear();
    ring.clear();
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
};

Scheduler::Scheduler(uv_loop_t* loop, BlockCache& cache, Transport& transport, SchedulerSink& sink,
                     const Clock& clock, Metrics& metrics, SchedulerOptions options)
    : impl_(std::make_unique<Impl>(loop, cache, transport, sink, clock, metrics, options)) {}

Scheduler::~Scheduler() = default;

Scheduler::Admit Scheduler::submit(BlockJob job) {
  assert(job.file != nullptr && job.block_size > 0 && !job.blocks.empty());
  Impl::Thing* t = nullptr;
  Admit a = impl_->admit(t, job.thing);
  if (a != Admit::Ok) return a;
  Impl::Item item;
  item.is_job = true;
  item.id = impl_->next_id++;
  item.job = std::move(job);
  t->items.push_back(std::move(item));
  impl_->prefetch_first(t->items.back());
  impl_->pushed(*t);
  return Admit::Ok;
}

Scheduler::Admit Scheduler::post(std::string_view thing, std::string topic,
                                 std::vector<std::byte> payload) {
  Impl::Thing* t = nullptr;
  Admit a = impl_->admit(t, thing);
  if (a != Admit::Ok) return a;
  Impl::Item item;
  item.id = impl_->next_id++;
  item.topic = std::move(topic);
  item.payload = std::move(payload);
  t->items.push_back(std::move(item));
  impl_->pushed(*t);
  return Admit::Ok;
}

void Scheduler::wake() {
  if (impl_->closed) return;
  impl_->on_timer();
}

void Scheduler::stop(int timeout_ms, std::function<void()> done) {
  impl_->stop(timeout_ms, std::move(done));
}

std::size_t Scheduler::queued_requests() const { return impl_->total_items; }
std::size_t Scheduler::active_things() const { return impl_->active; }
std::size_t Scheduler::reads_in_flight() const { return impl_->demand_reads; }
bool Scheduler::paused() const { return impl_->paused; }

}  // namespace chunkd::engine

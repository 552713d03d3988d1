// MqttPool: routing, the choice of path per publish, accounting, readiness and the stop barrier
// over MqttConnections (io/mqtt_connection.hpp), which own everything libmosquitto and sockets.
//
// Accounting per connection (Ledger): `queued_bytes` counts what publish() accepted and the
// socket has not taken yet: wire bytes on the direct path (released as the writer writes them),
// an estimate (payload + topic + kPublishOverheadBytes) on libmosquitto's path, released on
// on_publish (QoS 0: written; QoS 1/2: acknowledged). `outstanding` counts libmosquitto's
// messages so their 16-bit ids stay unique.
#include "io/mqtt_pool.hpp"

#include <fcntl.h>
#include <mosquitto.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <limits>
#include <unordered_map>
#include <utility>

#include "base/assert.hpp"
#include "io/log.hpp"
#include "io/mqtt_connection.hpp"
#include "io/mqtt_handles.hpp"
#include "io/mqtt_uri.hpp"
#include "io/mqtt_writer.hpp"

namespace chunkd::io {
namespace {

constexpr const char* kTag = "mqtt";
// Fixed header (1 byte + up to 4 bytes remaining length) plus the 2-byte topic length, rounded.
constexpr std::size_t kPublishOverheadBytes = 5;
// Messages handed to a connection and not yet released; below 65535 so that libmosquitto's 16-bit
// message ids stay unique among them.
constexpr std::size_t kMaxOutstandingMessages = 60000;
constexpr std::uint64_t kMiscIntervalMs = 1000;

void ensure_lib_init() {
  static const int rc = mosquitto_lib_init();
  (void)rc;
}

std::uint64_t fnv1a64(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (char ch : s) {
    h ^= static_cast<unsigned char>(ch);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

struct MqttPool::Impl final : MqttConnection::Events {
  enum class Phase { Idle, Running, Stopping, Finishing, Stopped };

  struct Pending {
    int mid;
    std::size_t bytes;
  };

  // The libmosquitto publish in progress on a connection: its on_publish may come before
  // mosquitto_publish() returns.
  struct InPublish {
    const int* mid = nullptr;
    std::size_t bytes = 0;
    bool active = false;
    bool released = false;
  };

  struct Ledger {
    std::size_t queued_bytes = 0;
    std::size_t outstanding = 0;                 // libmosquitto's messages not yet released
    std::deque<Pending> qos0;                    // in write order
    std::unordered_map<int, std::size_t> qos12;  // until PUBACK/PUBCOMP
    InPublish in_publish;
    bool notify_writable = false;  // a publish was refused: tell the caller when it may resume
  };

  struct Slot {
    std::unique_ptr<MqttConnection> conn;
    Ledger ledger;
  };

  Impl(uv_loop_t* loop, MqttOptions options, MessageHandler on_message, ReadyHandler on_ready)
      : loop_(loop),
        options_(std::move(options)),
        on_message_(std::move(on_message)),
        on_ready_(std::move(on_ready)),
        handles_(loop) {
    handles_.on_all_closed(on_all_handles_closed, this);
  }

  ~Impl() {
    handles_.abandon();  // polls stop before their sockets close with the clients
    slots_.clear();
  }

  Slot& slot(const MqttConnection& c) {
    CHUNKD_ASSERT(c.index() < slots_.size() && slots_[c.index()].conn.get() == &c);
    return slots_[c.index()];
  }

  // ---- start ----------------------------------------------------------------------------------

  Expected<void> start() {
    if (phase_ != Phase::Idle) {
      return fail(std::errc::operation_not_permitted, "MqttPool::start called twice");
    }
    auto uri = parse_mqtt_uri(options_.uri);
    if (!uri) {
      return fail(uri.error().code, "mqtt.uri '" + options_.uri + "': " + uri.error().detail);
    }
    uri_ = std::move(*uri);
    assert_mqtt_options(options_, uri_.tls);
    if (uri_.tls) {
      if (auto ok = check_mqtt_tls_files(options_); !ok) return ok;
    }
    ensure_lib_init();
    for (std::size_t i = 0; i < options_.connections; ++i) {
      slots_.push_back(Slot{
          std::make_unique<MqttConnection>(i, options_, uri_, handles_, *this, stats_), Ledger{}});
      if (auto ok = slots_.back().conn->init(); !ok) {
        slots_.clear();
        return ok;
      }
    }
    misc_timer_ = handles_.timer(this);
    notify_timer_ = handles_.timer(this);
    flush_timer_ = handles_.timer(this);
    flush_prepare_ = handles_.prepare(this);
    direct_ = !uri_.tls && options_.subscribe_qos == 0;
    uv_timer_start(misc_timer_->timer(), on_misc_timer, kMiscIntervalMs, kMiscIntervalMs);

    phase_ = Phase::Running;
    LOG_INFO(kTag, "connecting %zu client(s) '%s-N' to %s", slots_.size(),
             options_.client_id.c_str(), options_.uri.c_str());
    for (Slot& s : slots_) s.conn->start();
    return {};
  }

  // ---- events from the connections ------------------------------------------------------------

  void state_changed(MqttConnection&) override { schedule_notify(); }

  void dropped(MqttConnection& c) override {
    Ledger& l = slot(c).ledger;
    if (l.queued_bytes > 0) {
      LOG_DEBUG(kTag, "%s: dropping %zu queued byte(s) of %zu message(s)", c.id().c_str(),
                l.queued_bytes, l.outstanding);
    }
    l.queued_bytes = 0;
    l.outstanding = 0;
    l.qos0.clear();
    l.qos12.clear();
    if (l.in_publish.active) l.in_publish.released = true;
  }

  void written(MqttConnection& c, std::size_t bytes) override {
    Ledger& l = slot(c).ledger;
    release_bytes(l, bytes);
    CHUNKD_ASSERT(l.queued_bytes >= c.writer().waiting());
    if (phase_ == Phase::Stopping && l.queued_bytes == 0) schedule_notify();
  }

  void published(MqttConnection& c, int mid) override {
    Ledger& l = slot(c).ledger;
    InPublish& p = l.in_publish;
    if (p.active && !p.released && *p.mid == mid) {
      p.released = true;
      release(l, p.bytes);
      return;
    }
    if (!l.qos0.empty()) {
      // Written in order: normally the front. Anything before a later match was lost unseen.
      auto it = std::find_if(l.qos0.begin(), l.qos0.end(),
                             [mid](const Pending& e) { return e.mid == mid; });
      if (it != l.qos0.end()) {
        std::size_t bytes = 0;
        std::size_t count = 0;
        for (auto e = l.qos0.begin(); e != it + 1; ++e) {
          bytes += e->bytes;
          ++count;
        }
        l.qos0.erase(l.qos0.begin(), it + 1);
        l.outstanding -= std::min(count - 1, l.outstanding);
        release(l, bytes);
        return;
      }
    }
    auto it = l.qos12.find(mid);
    if (it != l.qos12.end()) {
      const std::size_t bytes = it->second;
      l.qos12.erase(it);
      release(l, bytes);
    }
    // Otherwise: a message from before a reconnect, already forgotten.
  }

  void message(const mosquitto_message* msg) override {
    ++stats_.messages_received;
    if (!on_message_ || msg == nullptr || msg->topic == nullptr) return;
    const auto* data = static_cast<const std::byte*>(msg->payload);
    const auto size = msg->payloadlen > 0 ? static_cast<std::size_t>(msg->payloadlen) : 0;
    on_message_(std::string_view(msg->topic), std::span<const std::byte>(data, size));
  }

  void serviced(MqttConnection&) override {
    if (phase_ == Phase::Stopping) advance_stop();
  }

  // Every attempt is counted; a cause is reported once until the pool is ready again.
  void failed(MqttConnection&, const MqttFailureReport& r) override {
    const auto cause = static_cast<std::size_t>(r.cause);
    CHUNKD_ASSERT(cause < kMqttFailureCount);
    ++stats_.connect_failures[cause];
    if (phase_ != Phase::Running || (reported_causes_ & (1u << cause)) != 0) return;
    reported_causes_ |= 1u << cause;
    failures_.push_back(r);
    schedule_notify();
  }

  void report_failures() {
    std::vector<MqttFailureReport> reports = std::move(failures_);
    failures_.clear();
    for (const MqttFailureReport& r : reports) {
      if (phase_ != Phase::Running) return;  // a handler stopped the pool
      if (on_failure_) {
        on_failure_(r);
      } else {
        LOG_WARN(kTag, "%s (retrying)", r.message.c_str());
      }
    }
  }

  // ---- accounting -----------------------------------------------------------------------------

  // on_writable fires once queued bytes fall below half the bound (or the queue is empty).
  bool below_resume_mark(const Ledger& l) const {
    return l.queued_bytes == 0 || l.queued_bytes < options_.max_queued_bytes / 2;
  }

  // A message libmosquitto wrote (or acknowledged).
  void release(Ledger& l, std::size_t bytes) {
    if (l.outstanding > 0) --l.outstanding;
    release_bytes(l, bytes);
  }

  void release_bytes(Ledger& l, std::size_t bytes) {
    l.queued_bytes -= std::min(bytes, l.queued_bytes);
    if (l.notify_writable && below_resume_mark(l)) schedule_notify();
  }

  PublishResult refuse_backpressure(Ledger& l) {
    ++stats_.publish_refused_backpressure;
    l.notify_writable = true;
    return PublishResult::Backpressure;
  }

  // ---- publishing -----------------------------------------------------------------------------

  PublishResult publish(std::size_t connection, std::string_view topic,
                        std::span<const std::span<const std::byte>> parts, int qos) {
    if (slots_.empty()) return PublishResult::Error;  // not started
    CHUNKD_ASSERT(connection < slots_.size());
    std::size_t payload_bytes = 0;
    for (auto p : parts) payload_bytes += p.size();
    if (qos < 0 || qos > 2 ||
        payload_bytes > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
        topic.empty() || topic.size() > 65535) {
      return PublishResult::Error;
    }
    Slot& s = slots_[connection];
    if (phase_ != Phase::Running || !s.conn->connected()) {
      ++stats_.publish_refused_disconnected;
      if (phase_ == Phase::Running) s.ledger.notify_writable = true;
      return PublishResult::NotConnected;
    }
    if (direct_ && qos > 0) {
      // QoS 1/2 traffic makes libmosquitto write from inside its reads (PUBREL, resends after a
      // reconnect): from now on every message goes through it.
      direct_ = false;
      LOG_INFO(kTag, "a QoS %d publish: QoS 0 messages go through libmosquitto from now on", qos);
    }
    if (direct_ && parts.size() <= MqttWriter::kMaxParts) {
      return publish_direct(s, topic, parts, payload_bytes);
    }
    if (s.conn->writer().waiting() > 0) {
      // libmosquitto writes at once: the writer's packets must be out first.
      s.conn->flush();
      if (s.conn->writer().waiting() > 0) return refuse_backpressure(s.ledger);
    }
    std::span<const std::byte> payload;
    if (parts.size() == 1) {
      payload = parts[0];
    } else {
      gather_.clear();
      for (auto p : parts) gather_.insert(gather_.end(), p.begin(), p.end());
      payload = gather_;
    }
    return publish_library(s, topic, payload, qos);
  }

  // The direct path: queued bytes are wire bytes, released as the socket takes them.
  PublishResult publish_direct(Slot& s, std::string_view topic,
                               std::span<const std::span<const std::byte>> parts,
                               std::size_t payload_bytes) {
    const auto head = encode_publish_head(topic.size(), payload_bytes, s.conn->mqtt5());
    if (!head) return PublishResult::Error;
    Ledger& l = s.ledger;
    if (l.queued_bytes > 0 && l.queued_bytes + head->wire_bytes > options_.max_queued_bytes) {
      return refuse_backpressure(l);
    }
    l.queued_bytes += head->wire_bytes;
    ++stats_.messages_published;
    stats_.bytes_published += payload_bytes;
    const std::optional<std::size_t> written = s.conn->write_direct(*head, topic, parts);
    if (!written) return PublishResult::NotConnected;  // the write failed: dropped
    release_bytes(l, *written);
    const MqttWriter& w = s.conn->writer();
    CHUNKD_ASSERT(l.queued_bytes >= w.waiting());
    if (w.waiting() > 0 && !w.blocked()) arm_flush();
    s.conn->update_poll();
    return PublishResult::Ok;
  }

  PublishResult publish_library(Slot& s, std::string_view topic, std::span<const std::byte> payload,
                                int qos) {
    Ledger& l = s.ledger;
    const std::size_t cost = payload.size() + topic.size() + kPublishOverheadBytes;
    // A message larger than the whole bound still goes out alone on an idle connection.
    if ((l.queued_bytes > 0 && l.queued_bytes + cost > options_.max_queued_bytes) ||
        l.outstanding >= kMaxOutstandingMessages) {
      return refuse_backpressure(l);
    }
    topic_buf_.assign(topic);
    l.queued_bytes += cost;
    ++l.outstanding;
    int mid = 0;
    l.in_publish = InPublish{&mid, cost, true, false};
    const int rc = s.conn->publish(topic_buf_.c_str(), payload, qos, &mid);
    const bool released = l.in_publish.released;
    l.in_publish = InPublish{};
    if (rc != MOSQ_ERR_SUCCESS) {
      if (!released) {
        l.queued_bytes -= std::min(cost, l.queued_bytes);
        if (l.outstanding > 0) --l.outstanding;
      }
      return rc == MOSQ_ERR_NO_CONN ? PublishResult::NotConnected : PublishResult::Error;
    }
    if (!released) {
      if (qos == 0) {
        l.qos0.push_back(Pending{mid, cost});
      } else {
        l.qos12[mid] = cost;
      }
    }
    ++stats_.messages_published;
    stats_.bytes_published += payload.size();
    s.conn->update_poll();
    return PublishResult::Ok;
  }

  void arm_flush() {
    if (flush_armed_ || flush_prepare_ == nullptr || flush_prepare_->closing) return;
    flush_armed_ = true;
    uv_prepare_start(flush_prepare_->prepare(), on_flush_prepare);
  }

  // Runs once per loop turn with something to write, just before the loop blocks.
  void flush_all() {
    flush_armed_ = false;
    uv_prepare_stop(flush_prepare_->prepare());
    for (Slot& s : slots_) s.conn->flush();
  }

  // ---- readiness and deferred work ------------------------------------------------------------

  void schedule_notify() {
    if (notify_pending_ || notify_timer_ == nullptr || notify_timer_->closing) return;
    if (phase_ != Phase::Running && phase_ != Phase::Stopping) return;
    notify_pending_ = true;
    uv_timer_start(notify_timer_->timer(), on_notify_timer, 0, 0);
  }

  bool ready() const {
    if (phase_ != Phase::Running || slots_.empty()) return false;
    for (const Slot& s : slots_) {
      if (!s.conn->connected()) return false;
    }
    return slots_[0].conn->subscribed();
  }

  void run_notify() {
    if (phase_ == Phase::Stopping) advance_stop();
    report_failures();
    const bool now_ready = ready();
    if (now_ready) reported_causes_ = 0;
    if (now_ready != reported_ready_) {
      reported_ready_ = now_ready;
      LOG_INFO(kTag, "pool %s", now_ready ? "ready" : "not ready");
      if (on_ready_) on_ready_(now_ready);
    }
    if (phase_ != Phase::Running) return;
    bool fire = false;
    for (Slot& s : slots_) {
      if (s.ledger.notify_writable && s.conn->connected() && below_resume_mark(s.ledger)) {
        s.ledger.notify_writable = false;
        fire = true;
      }
    }
    if (fire && on_writable_) on_writable_();
  }

  // ---- the stop barrier -----------------------------------------------------------------------
  // Running → Stopping (each connection flushes, disconnects, closes; bounded by the flush
  // timer) → Finishing (every handle closing) → Stopped (the last close callback ran: `done`).

  void stop(int flush_timeout_ms, std::function<void()> done) {
    if (phase_ == Phase::Idle || phase_ == Phase::Stopped) {
      phase_ = Phase::Stopped;
      if (done) done();
      return;
    }
    if (done) done_.push_back(std::move(done));
    if (phase_ != Phase::Running) return;  // already stopping: `done` joins the others
    phase_ = Phase::Stopping;
    LOG_INFO(kTag, "stopping: flushing up to %d ms", flush_timeout_ms);
    for (Slot& s : slots_) s.conn->begin_stop();
    uv_timer_start(flush_timer_->timer(), on_flush_timer,
                   static_cast<std::uint64_t>(std::max(0, flush_timeout_ms)), 0);
    schedule_notify();
  }

  void advance_stop() {
    if (phase_ != Phase::Stopping) return;
    for (Slot& s : slots_) s.conn->advance_stop(s.ledger.queued_bytes == 0);
    if (!all_closed()) return;
    finish();
  }

  bool all_closed() const {
    for (const Slot& s : slots_) {
      if (s.conn->state() != MqttConnection::State::Closed || s.conn->resolving()) return false;
    }
    return true;
  }

  void flush_timeout() {
    if (phase_ != Phase::Stopping) return;
    for (Slot& s : slots_) {
      MqttConnection& c = *s.conn;
      if (c.state() == MqttConnection::State::Closed ||
          c.state() == MqttConnection::State::Resolving) {
        continue;
      }
      if (s.ledger.queued_bytes > 0) {
        LOG_WARN(kTag, "%s: flush timed out, dropping %zu queued byte(s)", c.id().c_str(),
                 s.ledger.queued_bytes);
      }
      c.abandon();
      dropped(c);
    }
    advance_stop();
  }

  void finish() {
    phase_ = Phase::Finishing;
    for (Slot& s : slots_) s.conn->close_poll();
    handles_.close_all();
    if (handles_.empty()) complete();
  }

  // Last thing the pool does; `done` may destroy it.
  void complete() {
    for (Slot& s : slots_) s.conn->release_client();  // their handles are closed
    phase_ = Phase::Stopped;
    LOG_INFO(kTag, "stopped");
    std::vector<std::function<void()>> callbacks = std::move(done_);
    done_.clear();
    for (auto& cb : callbacks) cb();
  }

  // ---- C callbacks: noexcept, so an exception from a handler terminates -----------------------

  static Impl* owner(uv_handle_t* handle) {
    return static_cast<Impl*>(static_cast<LoopHandle*>(handle->data)->owner);
  }
  static void on_all_handles_closed(void* context) noexcept {
    auto* impl = static_cast<Impl*>(context);
    if (impl->phase_ == Phase::Finishing && impl->all_closed()) impl->complete();
  }
  static void on_misc_timer(uv_timer_t* timer) noexcept {
    Impl* impl = owner(reinterpret_cast<uv_handle_t*>(timer));
    if (impl == nullptr) return;
    const std::uint64_t now = uv_now(impl->loop_);
    for (Slot& s : impl->slots_) s.conn->misc_tick(now);
  }
  static void on_notify_timer(uv_timer_t* timer) noexcept {
    Impl* impl = owner(reinterpret_cast<uv_handle_t*>(timer));
    if (impl == nullptr) return;
    impl->notify_pending_ = false;
    impl->run_notify();
  }
  static void on_flush_prepare(uv_prepare_t* prepare) noexcept {
    if (Impl* impl = owner(reinterpret_cast<uv_handle_t*>(prepare)); impl != nullptr) {
      impl->flush_all();
    }
  }
  static void on_flush_timer(uv_timer_t* timer) noexcept {
    if (Impl* impl = owner(reinterpret_cast<uv_handle_t*>(timer)); impl != nullptr) {
      impl->flush_timeout();
    }
  }

  uv_loop_t* loop_;
  MqttOptions options_;
  MessageHandler on_message_;
  ReadyHandler on_ready_;
  std::function<void()> on_writable_;
  FailureHandler on_failure_;
  std::vector<MqttFailureReport> failures_;  // to report from the notify timer
  std::uint32_t reported_causes_ = 0;        // bit per MqttFailure since the pool was last ready
  MqttUri uri_;
  MqttStats stats_;
  LoopHandles handles_;
  std::vector<Slot> slots_;  // index = connection
  LoopHandle* misc_timer_ = nullptr;
  LoopHandle* notify_timer_ = nullptr;
  LoopHandle* flush_timer_ = nullptr;
  LoopHandle* flush_prepare_ = nullptr;
  bool flush_armed_ = false;
  bool direct_ = false;            // QoS 0 publishes take the direct writer
  std::vector<std::byte> gather_;  // a multi-part payload made contiguous for libmosquitto
  bool notify_pending_ = false;
  bool reported_ready_ = false;
  Phase phase_ = Phase::Idle;
  std::vector<std::function<void()>> done_;
  std::string topic_buf_;
};

MqttPool::MqttPool(uv_loop_t* loop, MqttOptions options, MessageHandler on_message,
                   ReadyHandler on_ready)
    : impl_(std::make_unique<Impl>(loop, std::move(options), std::move(on_message),
                                   std::move(on_ready))) {}

MqttPool::~MqttPool() = default;

Expected<void> MqttPool::start() { return impl_->start(); }

bool MqttPool::ready() const { return impl_->ready(); }

std::size_t MqttPool::connection_for(std::string_view key) const {
  const std::size_t n = impl_->options_.connections;
  if (n == 0) return 0;
  return static_cast<std::size_t>(fnv1a64(key) % n);
}

PublishResult MqttPool::publish(std::size_t connection, std::string_view topic,
                                std::span<const std::span<const std::byte>> parts, int qos) {
  return impl_->publish(connection, topic, parts, qos);
}

PublishResult MqttPool::publish(std::size_t connection, std::string_view topic,
                                std::span<const std::byte> payload, int qos) {
  const std::span<const std::byte> parts[] = {payload};
  return impl_->publish(connection, topic, parts, qos);
}

std::size_t MqttPool::queued_bytes(std::size_t connection) const {
  if (impl_->slots_.empty()) return 0;  // not started
  CHUNKD_ASSERT(connection < impl_->slots_.size());
  return impl_->slots_[connection].ledger.queued_bytes;
}

std::size_t MqttPool::total_queued_bytes() const {
  std::size_t total = 0;
  for (const auto& s : impl_->slots_) total += s.ledger.queued_bytes;
  return total;
}

void MqttPool::on_writable(std::function<void()> callback) {
  impl_->on_writable_ = std::move(callback);
}

void MqttPool::on_failure(FailureHandler handler) { impl_->on_failure_ = std::move(handler); }

const MqttStats& MqttPool::stats() const { return impl_->stats_; }

std::size_t MqttPool::connections() const { return impl_->options_.connections; }

void MqttPool::stop(int flush_timeout_ms, std::function<void()> done) {
  impl_->stop(flush_timeout_ms, std::move(done));
}

}  // namespace chunkd::io

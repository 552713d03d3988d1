// The loop side of AmqpClient (io/amqp_client.hpp): the hand-off queues' loop ends, the uv_async_t
// that drains the session thread's events, and the publish bound.
#include "io/amqp_client.hpp"

#include <openssl/ssl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "io/amqp_internal.hpp"
#include "io/amqp_uri.hpp"
#include "io/log.hpp"

namespace chunkd::io {

void AmqpClient::Shared::post(AmqpEvent event) {
  {
    std::lock_guard lock(mu);
    events.push_back(std::move(event));
  }
  uv_async_send(async);
}

void AmqpClient::Shared::command(AmqpCommand c) {
  {
    std::lock_guard lock(mu);
    commands.push_back(std::move(c));
  }
  wake_session();
}

void AmqpClient::Shared::wake_session() {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(wake_fd, &one, sizeof one);
}

namespace {

// The CA file loads as the session's TLS context will load it (a file that is not PEM
// certificates would otherwise fail every attempt alike).
Expected<void> check_ca_file(const std::string& path) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return fail(std::errc::not_enough_memory, "cannot make a TLS context");
  const bool ok = SSL_CTX_load_verify_locations(ctx, path.c_str(), nullptr) == 1;
  SSL_CTX_free(ctx);
  if (ok) return {};
  return fail(std::errc::invalid_argument,
              "amqp.ca_file " + path + " holds no usable CA certificate (PEM)");
}

std::size_t capacity_of(const AmqpCommand& c) {
  return c.body.capacity() + c.routing_key.capacity();
}
}  // namespace

AmqpCommand AmqpClient::Shared::take_spare() {
  std::lock_guard lock(mu);
  if (spares.empty()) return {};
  AmqpCommand c = std::move(spares.back());
  spares.pop_back();
  spare_bytes -= capacity_of(c);
  return c;
}

void AmqpClient::Shared::give_spares(std::vector<AmqpCommand>& written) {
  std::lock_guard lock(mu);
  std::size_t kept = 0;
  for (AmqpCommand& c : written) {
    const std::size_t bytes = capacity_of(c);
    if (spare_bytes + bytes > options.max_queued_bytes) {
      written[kept++] = std::move(c);  // over the bound: freed by the caller
      continue;
    }
    spare_bytes += bytes;
    spares.push_back(std::move(c));
  }
  written.resize(kept);
}

struct AmqpClient::Impl {
  uv_loop_t* loop;
  std::unique_ptr<Shared> shared = std::make_unique<Shared>();
  uv_async_t* async = nullptr;  // freed by its close callback
  DeliveryHandler on_delivery;
  StateHandler on_state;
  FailureHandler on_failure;
  std::function<void()> writable_cb;
  std::thread thread;
  bool connected = false;  // as the loop heard it (Up/Down events)
  bool stopping = false;
  std::function<void()> stop_done;

  void drain();
  void joined();
  void close_async();
};

// The session thread's events, in order, on the loop.
void AmqpClient::Impl::drain() {
  std::deque<AmqpEvent> events;
  {
    std::lock_guard lock(shared->mu);
    events.swap(shared->events);
  }
  for (AmqpEvent& e : events) {
    switch (e.kind) {
      case AmqpEvent::Kind::Delivery:
        // Stopping: not handed on; the broker requeues it when the connection closes.
        if (!stopping && on_delivery) on_delivery(std::move(e.delivery));
        break;
      case AmqpEvent::Kind::Up:
        connected = true;
        if (on_state) on_state(true, {});
        break;
      case AmqpEvent::Kind::Down:
        connected = false;
        if (on_state) on_state(false, e.why);
        break;
      case AmqpEvent::Kind::Written:
        if (writable_cb) writable_cb();
        break;
      case AmqpEvent::Kind::Failure:
        if (stopping) break;
        if (on_failure) {
          on_failure(e.failure);
        } else {
          LOG_WARN("amqp", "%s; retrying", e.failure.message.c_str());
        }
        break;
      case AmqpEvent::Kind::Stopped:
        joined();
        return;  // `this` may be gone after the done callback
    }
  }
}

void AmqpClient::Impl::joined() {
  if (thread.joinable()) thread.join();
  connected = false;
  close_async();
  if (auto done = std::move(stop_done)) done();
}

void AmqpClient::Impl::close_async() {
  if (async == nullptr) return;
  async->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(async),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  async = nullptr;
}

AmqpClient::AmqpClient(uv_loop_t* loop, AmqpClientOptions options, DeliveryHandler on_delivery,
                       StateHandler on_state)
    : impl_(std::make_unique<Impl>()) {
  impl_->loop = loop;
  impl_->shared->options = std::move(options);
  impl_->on_delivery = std::move(on_delivery);
  impl_->on_state = std::move(on_state);
}

AmqpClient::~AmqpClient() {
  Shared& s = *impl_->shared;
  if (impl_->thread.joinable()) {
    {
      std::lock_guard lock(s.mu);
      s.stop_requested = true;
      s.flush_timeout_ms = 0;
    }
    s.wake_session();
    impl_->thread.join();
  }
  impl_->close_async();
  if (s.wake_fd >= 0) ::close(s.wake_fd);
}

Expected<void> AmqpClient::start() {
  Shared& s = *impl_->shared;
  const AmqpClientOptions& o = s.options;
  if (impl_->thread.joinable()) return {};
  if (o.uris.empty()) return fail(std::errc::invalid_argument, "no AMQP URI");
  bool tls = false;
  for (const std::string& uri : o.uris) {
    auto parsed = parse_amqp_uri(uri);
    if (!parsed) return unexpected(parsed.error());
    tls = tls || parsed->tls;
  }
  if (tls && !o.ca_file.empty()) {
    if (auto ca = check_ca_file(o.ca_file); !ca) return ca;
  }
  for (const std::string* name : {&o.queue, &o.exchange, &o.jobs_queue}) {
    if (name->size() > kAmqpMaxShortString) {
      return fail(std::errc::invalid_argument, "\"" + *name + "\" is over 255 bytes");
    }
  }
  s.wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s.wake_fd < 0) return fail(std::errc(errno), std::string("eventfd: ") + std::strerror(errno));
  impl_->async = new uv_async_t;
  impl_->async->data = impl_.get();
  uv_async_init(impl_->loop, impl_->async, [](uv_async_t* h) {
    if (h->data != nullptr) static_cast<Impl*>(h->data)->drain();
  });
  s.async = impl_->async;
  impl_->thread = std::thread([&s] { run_amqp_sessions(s); });
  return {};
}

bool AmqpClient::connected() const { return impl_->connected; }

void AmqpClient::on_failure(FailureHandler handler) { impl_->on_failure = std::move(handler); }

AmqpClient::PublishResult AmqpClient::publish(std::string_view routing_key,
                                              std::span<const std::span<const std::byte>> parts) {
  Shared& s = *impl_->shared;
  if (routing_key.size() > kAmqpMaxShortString) return PublishResult::Error;
  if (!impl_->connected || impl_->stopping) return PublishResult::NotConnected;
  std::size_t bytes = 0;
  for (auto p : parts) bytes += p.size();
  const std::size_t max = s.options.max_queued_bytes;
  if (s.queued_bytes.load() > 0 && s.queued_bytes.load() + bytes > max) {
    s.want_writable = true;  // then look again: the session may have drained in between
    if (s.queued_bytes.load() > 0 && s.queued_bytes.load() + bytes > max) {
      return PublishResult::Backpressure;
    }
  }
  AmqpCommand c = s.take_spare();  // clear() and assign keep the capacity
  c.kind = AmqpCommand::Kind::Publish;
  c.routing_key.assign(routing_key);
  c.body.clear();
  c.body.reserve(bytes);
  for (auto p : parts) c.body.insert(c.body.end(), p.begin(), p.end());
  s.queued_bytes += bytes;
  s.command(std::move(c));
  return PublishResult::Ok;
}

void AmqpClient::finish(std::uint64_t session, std::uint64_t tag) {
  settle(session, tag, /*requeue=*/false);
}

void AmqpClient::requeue(std::uint64_t session, std::uint64_t tag) {
  settle(session, tag, /*requeue=*/true);
}

void AmqpClient::settle(std::uint64_t session, std::uint64_t tag, bool requeue) {
  if (!impl_->thread.joinable()) return;
  AmqpCommand c;
  c.kind = AmqpCommand::Kind::Finish;
  c.session = session;
  c.tag = tag;
  c.requeue = requeue;
  impl_->shared->command(std::move(c));
}

void AmqpClient::consume_jobs(bool on) {
  Shared& s = *impl_->shared;
  if (s.options.jobs_queue.empty() || s.jobs_wanted.exchange(on) == on) return;
  if (impl_->thread.joinable()) s.wake_session();
}

std::size_t AmqpClient::queued_bytes() const { return impl_->shared->queued_bytes.load(); }

bool AmqpClient::writable() const {
  const std::size_t q = queued_bytes();
  return q == 0 || q < impl_->shared->options.max_queued_bytes / 2;
}

void AmqpClient::on_writable(std::function<void()> callback) {
  impl_->writable_cb = std::move(callback);
}

AmqpStats AmqpClient::stats() const {
  const Shared& s = *impl_->shared;
  AmqpStats t;
  t.sessions = s.sessions;
  t.failovers = s.failovers;
  t.connect_failures = s.connect_failures;
  for (std::size_t i = 0; i < kAmqpFailureCount; ++i)
    t.failures_by_cause[i] = s.failures_by_cause[i];
  t.deliveries = s.deliveries;
  t.publishes = s.publishes;
  t.confirms = s.confirms;
  t.nacks = s.nacks;
  t.acks = s.acks;
  t.requeued = s.requeued;
  t.broker_internal_errors = s.broker_internal_errors;
  t.confirms_pending = s.confirms_pending;
  t.dropped_publishes = s.dropped_publishes;
  t.connected = impl_->connected;
  t.jobs_consuming = s.jobs_consuming;
  {
    std::lock_guard lock(impl_->shared->mu);
    t.uri = s.uri;
    t.spare_bytes = s.spare_bytes;
  }
  return t;
}

void AmqpClient::stop(int flush_timeout_ms, std::function<void()> done) {
  Shared& s = *impl_->shared;
  impl_->stopping = true;
  if (!impl_->thread.joinable()) {
    impl_->close_async();
    if (done) done();
    return;
  }
  impl_->stop_done = std::move(done);
  {
    std::lock_guard lock(s.mu);
    s.stop_requested = true;
    s.flush_timeout_ms = flush_timeout_ms;
  }
  s.wake_session();
}

}  // namespace chunkd::io

// How libmosquitto 2.0 behaves here (read from its source, checked by the tests):
// - mosquitto_connect_bind_async() opens a non-blocking socket and queues CONNECT; the socket is
//   ours to watch from then on (mosquitto_socket()). Connection errors surface from
//   mosquitto_loop_read/_write as an error code, after libmosquitto has closed the socket and
//   called on_disconnect. mosquitto_loop_misc() does the same on a keep-alive timeout (which is
//   also the connect timeout: keepalive_s).
// - Outside a libmosquitto callback, mosquitto_publish() writes immediately and calls on_publish
//   for a QoS 0 message once its last byte is written, possibly before mosquitto_publish()
//   returns. Inside a callback it only queues. QoS 1/2 messages get on_publish on PUBACK/PUBCOMP.
// - On a lost connection the QoS 0 packets still queued are freed at the next connect attempt
//   without any callback (so the pool forgets a dropped connection's queued bytes).
// - Callbacks run with libmosquitto's callback mutex held: nothing here calls back into the same
//   client synchronously except publish/subscribe/disconnect, which only queue inside callbacks.
// - libmosquitto writes to the socket only from calls made here (loop_write, loop_misc, publish,
//   subscribe, disconnect) and, inside loop_read, only to answer QoS 1/2 traffic;
//   mosquitto_want_write() is true exactly while it holds a packet not fully written.
#include "io/mqtt_connection.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "io/log.hpp"

namespace chunkd::io {
namespace {

constexpr const char* kTag = "mqtt";
// Packets read per readiness event before yielding to the rest of the loop.
constexpr int kMaxReadsPerWakeup = 64;
// Addresses of one host name tried in turn before resolving it again.
constexpr std::size_t kMaxAddresses = 16;

}  // namespace

struct MqttConnection::ResolveReq {
  uv_getaddrinfo_t req;
  MqttConnection* conn = nullptr;  // null once the connection is gone
};

MqttConnection::MqttConnection(std::size_t index, const MqttOptions& options, const MqttUri& uri,
                               LoopHandles& handles, Events& events, MqttStats& stats)
    : index_(index),
      options_(options),
      uri_(uri),
      handles_(handles),
      events_(events),
      stats_(stats),
      id_(options.client_id + "-" + std::to_string(index)),
      backoff_ms_(options.reconnect_min_ms),
      writer_(handles.loop(), stats.socket_writes),
      rng_(static_cast<std::minstd_rand::result_type>(uv_hrtime() + index)) {
  for (const std::string& filter : options.subscriptions) {
    sub_ptrs_.push_back(const_cast<char*>(filter.c_str()));  // libmosquitto only reads them
  }
}

MqttConnection::~MqttConnection() {
  if (resolve_ != nullptr) {
    resolve_->conn = nullptr;
    uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));
  }
  if (probe_fd_ >= 0) ::close(probe_fd_);  // its poll was closed with the pool's handles
  if (mosq_ != nullptr) mosquitto_destroy(mosq_);
  mosquitto_property_free_all(&connect_props_);
}

// ---- setting up -------------------------------------------------------------------------------

Expected<void> MqttConnection::init() {
  CHUNKD_ASSERT(mosq_ == nullptr);
  mosq_ = mosquitto_new(id_.c_str(), true, this);
  if (mosq_ == nullptr) {
    return fail(std::errc::not_enough_memory, "mosquitto_new for " + id_ + " failed");
  }
  int rc = init_protocol();
  if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_int_option(mosq_, MOSQ_OPT_TCP_NODELAY, 1);
  if (rc == MOSQ_ERR_SUCCESS && !options_.username.empty()) {
    rc = mosquitto_username_pw_set(mosq_, options_.username.c_str(),
                                   options_.password.empty() ? nullptr : options_.password.c_str());
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    return fail(std::errc::invalid_argument,
                "configuring MQTT client " + id_ + ": " + mosquitto_strerror(rc));
  }
  if (uri_.tls) {
    if (auto tls = configure_tls(); !tls) return tls;
  }
  set_callbacks();
  return {};
}

Expected<void> MqttConnection::configure_tls() {
  const char* cert = options_.cert_file.empty() ? nullptr : options_.cert_file.c_str();
  const char* key = options_.key_file.empty() ? nullptr : options_.key_file.c_str();
  int rc = MOSQ_ERR_SUCCESS;
  if (options_.ca_file.empty()) {
    // No CA given: trust the system's CAs.
    rc = mosquitto_int_option(mosq_, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
    if (rc == MOSQ_ERR_SUCCESS) {
      rc = mosquitto_tls_set(mosq_, nullptr, "/etc/ssl/certs", cert, key, nullptr);
    }
  } else {
    rc = mosquitto_tls_set(mosq_, options_.ca_file.c_str(), nullptr, cert, key, nullptr);
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    return fail(std::errc::invalid_argument,
                "configuring TLS of MQTT client " + id_ + ": " + mosquitto_strerror(rc));
  }
  return {};
}

void MqttConnection::set_callbacks() {
  mosquitto_connect_callback_set(mosq_, on_connect_cb);
  mosquitto_disconnect_callback_set(mosq_, on_disconnect_cb);
  mosquitto_publish_callback_set(mosq_, on_publish_cb);
  mosquitto_message_callback_set(mosq_, on_message_cb);
  mosquitto_subscribe_callback_set(mosq_, on_subscribe_cb);
  // Only while connecting (or debugging): libmosquitto formats a line per packet while it is set.
  mosquitto_log_callback_set(mosq_, on_log_cb);
}

void MqttConnection::start() {
  CHUNKD_ASSERT(mosq_ != nullptr && reconnect_timer_ == nullptr);
  reconnect_timer_ = handles_.timer(this);
  state_ = State::Backoff;
  uv_timer_start(reconnect_timer_->timer(), on_reconnect_timer, 0, 0);
}

// ---- connecting -------------------------------------------------------------------------------

void MqttConnection::connect_now() {
  if (stopping_) return;
  if (uri_.tls || uri_.host_is_ip) {
    // TLS needs the host name for certificate verification, so libmosquitto resolves it.
    begin_connect(uri_.host);
    return;
  }
  // A host name: each attempt takes the next resolved address (a name may resolve to ::1 and
  // 127.0.0.1 with the broker on one of them); once all were tried, resolve again.
  if (next_addr_ < addrs_.size()) {
    const std::string addr = addrs_[next_addr_++];
    begin_connect(addr);
    return;
  }
  auto* r = new ResolveReq;
  r->conn = this;
  r->req.data = r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const int err =
      uv_getaddrinfo(handles_.loop(), &r->req, on_resolved, uri_.host.c_str(), nullptr, &hints);
  if (err != 0) {
    delete r;
    connect_failed(mqtt_unreachable(options_, uv_strerror(err)));
    return;
  }
  resolve_ = r;
  state_ = State::Resolving;
}

void MqttConnection::resolved(int status, const addrinfo* res) {
  resolve_ = nullptr;
  if (stopping_) {
    state_ = State::Closed;
    events_.state_changed(*this);
    return;
  }
  addrs_.clear();
  next_addr_ = 0;
  for (const addrinfo* ai = status == 0 ? res : nullptr; ai != nullptr; ai = ai->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const char* addr = nullptr;
    if (ai->ai_family == AF_INET) {
      addr = ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(ai->ai_addr)->sin_addr,
                         text, sizeof text);
    } else if (ai->ai_family == AF_INET6) {
      addr = ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(ai->ai_addr)->sin6_addr,
                         text, sizeof text);
    }
    if (addr != nullptr && addrs_.size() < kMaxAddresses &&
        std::find(addrs_.begin(), addrs_.end(), addr) == addrs_.end()) {
      addrs_.emplace_back(addr);
    }
  }
  if (addrs_.empty()) {
    connect_failed(mqtt_unreachable(
        options_, status != 0 ? uv_strerror(status) : "the name has no usable address"));
    return;
  }
  const std::string addr = addrs_[next_addr_++];
  begin_connect(addr);
}

void MqttConnection::begin_connect(const std::string& addr) {
  disconnect_sent_ = false;
  trace_.clear();
  refused_.reset();
  quiet_retry_ = false;
  mosquitto_log_callback_set(mosq_, on_log_cb);
  if (!start_probe(addr)) open_client(addr);
}

void MqttConnection::open_client(const std::string& addr) {
  errno = 0;
  const int rc = connect_client(addr);
  const int err = errno;
  if (rc != MOSQ_ERR_SUCCESS) {
    connect_failed(mqtt_broken(options_, uri_, trace_, rc, err));
    return;
  }
  const int fd = mosquitto_socket(mosq_);
  if (fd < 0) {
    connect_failed(mqtt_broken(options_, uri_, trace_, MOSQ_ERR_NO_CONN, 0));
    return;
  }
  int error = 0;
  LoopHandle* h = handles_.poll(this, fd, error);
  if (h == nullptr) {
    connect_failed(mqtt_unreachable(options_, uv_strerror(error)));
    return;
  }
  poll_ = h;
  poll_fd_ = fd;
  poll_events_ = 0;
  writer_.attach(mosq_, fd);
  state_ = State::Connecting;
  update_poll();
}

// The pool says it (once per cause); here only the debug trail of every attempt.
void MqttConnection::connect_failed(const MqttFailureReport& report) {
  ++failures_;
  LOG_DEBUG(kTag, "%s: connect attempt %u failed (%s): %s", id_.c_str(), failures_,
            mqtt_failure_name(report.cause), report.message.c_str());
  if (!stopping_) events_.failed(*this, report);
  schedule_reconnect();
}

void MqttConnection::schedule_reconnect() {
  if (stopping_) {
    state_ = State::Closed;
    events_.state_changed(*this);
    return;
  }
  const int base = std::clamp(backoff_ms_, options_.reconnect_min_ms, options_.reconnect_max_ms);
  const auto half = static_cast<std::uint64_t>(base) / 2;
  const std::uint64_t delay = half + rng_() % (static_cast<std::uint64_t>(base) - half + 1);
  backoff_ms_ = base > options_.reconnect_max_ms / 2 ? options_.reconnect_max_ms : base * 2;
  state_ = State::Backoff;
  uv_timer_start(reconnect_timer_->timer(), on_reconnect_timer, delay, 0);
}

// ---- the socket -------------------------------------------------------------------------------

void MqttConnection::close_poll() {
  if (poll_ == nullptr) return;
  handles_.close(poll_);  // stops watching now, before any new socket can reuse the fd number
  poll_ = nullptr;
  poll_fd_ = -1;
  poll_events_ = 0;
  writer_.detach();
}

void MqttConnection::update_poll() {
  if (poll_ == nullptr) return;
  const bool write = mosquitto_want_write(mosq_) || writer_.wants_writable();
  const int want = UV_READABLE | (write ? UV_WRITABLE : 0);
  if (want == poll_events_) return;
  const int r = uv_poll_start(poll_->poll(), want, on_poll);
  if (r != 0) {
    LOG_ERROR(kTag, "%s: uv_poll_start: %s", id_.c_str(), uv_strerror(r));
    lost(MOSQ_ERR_ERRNO);
    return;
  }
  poll_events_ = want;
}

// libmosquitto may close the socket (and then always calls on_disconnect); this also covers
// a close without the callback, so a poll never outlives its fd.
void MqttConnection::check_socket() {
  if (poll_ != nullptr && mosquitto_socket(mosq_) != poll_fd_) lost(MOSQ_ERR_CONN_LOST);
}

void MqttConnection::service(LoopHandle* h, int status, int events) {
  if (state_ == State::Connecting) note_handshake();
  if (status < 0) {
    LOG_DEBUG(kTag, "%s: poll error %s", id_.c_str(), uv_strerror(status));
    events = UV_READABLE | UV_WRITABLE;  // let libmosquitto meet the error
  }
  if ((events & UV_READABLE) != 0) read_some(h);
  if (poll_ == h && (events & UV_WRITABLE) != 0) {
    if (mosquitto_want_write(mosq_)) {
      const int rc = mosquitto_loop_write(mosq_, 1);
      if (poll_ == h && rc != MOSQ_ERR_SUCCESS) lost(rc);
    }
    if (poll_ == h) {
      writer_.writable();
      flush();
    }
  }
  if (poll_ == h) check_socket();
  if (poll_ == h) update_poll();
  events_.serviced(*this);
}

void MqttConnection::read_some(LoopHandle* h) {
  for (int i = 0; i < kMaxReadsPerWakeup; ++i) {
    errno = 0;
    const int rc = mosquitto_loop_read(mosq_, 1);
    const int err = errno;
    if (poll_ != h) return;
    if (rc != MOSQ_ERR_SUCCESS) {
      lost(rc, nullptr, err);
      return;
    }
    if (err == EAGAIN || err == EWOULDBLOCK) return;  // drained
  }
}

std::optional<std::size_t> MqttConnection::write_direct(
    const PublishHead& head, std::string_view topic,
    std::span<const std::span<const std::byte>> parts) {
  CHUNKD_ASSERT(connected() && poll_ != nullptr);
  const MqttWriter::Written w = writer_.publish(head, topic, parts);
  if (w.error != 0) {
    const std::string why = std::string("write: ") + std::strerror(w.error);
    write_failed(why.c_str());
    return std::nullopt;
  }
  return w.bytes;
}

void MqttConnection::flush() {
  if (poll_ == nullptr || writer_.waiting() == 0) return;
  const MqttWriter::Written w = writer_.flush();
  if (w.error != 0) {
    const std::string why = std::string("write: ") + std::strerror(w.error);
    write_failed(why.c_str());
    return;
  }
  if (w.bytes > 0) events_.written(*this, w.bytes);
  if (poll_ == nullptr) return;
  if (writer_.waiting() == 0 && misc_due_) run_misc();
  update_poll();
}

int MqttConnection::publish(const char* topic, std::span<const std::byte> payload, int qos,
                            int* mid) {
  // The never-interleave rule (mqtt_writer.hpp): libmosquitto may write at once.
  CHUNKD_ASSERT(writer_.waiting() == 0);
  errno = 0;
  const int rc = mosquitto_publish(mosq_, mid, topic, static_cast<int>(payload.size()),
                                   payload.data(), qos, false);
  if (rc != MOSQ_ERR_SUCCESS) {
    LOG_DEBUG(kTag, "%s: publish to '%s' failed: %s", id_.c_str(), topic, mosquitto_strerror(rc));
    // A socket error leaves the connection to be torn down by the next read/write.
    check_socket();
    update_poll();
  }
  return rc;
}

void MqttConnection::write_failed(const char* why) {
  // libmosquitto closes the socket on the next connect attempt; nothing more goes out on it.
  ::shutdown(poll_fd_, SHUT_RDWR);
  lost(MOSQ_ERR_ERRNO, why);
}

// ---- keep-alive -------------------------------------------------------------------------------

void MqttConnection::misc_tick(std::uint64_t now_ms) {
  if (poll_ == nullptr) return;
  if (writer_.waiting() > 0) {
    // libmosquitto may not write now (a PINGREQ would land inside the writer's packets); the
    // broker sees the writer's traffic meanwhile. A socket that takes nothing is dead.
    const auto stall_ms = static_cast<std::uint64_t>(options_.keepalive_s) * 1500;
    if (now_ms - writer_.last_progress_ms() > stall_ms) {
      write_failed("the broker took no byte for 1.5 keep-alive periods");
      return;
    }
    misc_due_ = true;
    return;
  }
  run_misc();
}

void MqttConnection::run_misc() {
  CHUNKD_ASSERT(writer_.waiting() == 0);
  misc_due_ = false;
  mosquitto_loop_misc(mosq_);  // keep-alive; may drop the connection via on_disconnect
  check_socket();
  update_poll();
}

// ---- connection events ------------------------------------------------------------------------

void MqttConnection::on_connack(int rc) {
  if (rc != 0 && fall_back_to_v311(rc)) {
    quiet_retry_ = true;
    return;
  }
  if (rc != 0) {
    // libmosquitto drops the connection right after this; lost() reports it and retries.
    refused_ = mqtt_refused(options_, rc, mqtt5());
    return;
  }
  if (!log_enabled(LogLevel::Debug)) mosquitto_log_callback_set(mosq_, nullptr);
  state_ = State::Connected;
  failures_ = 0;
  addrs_.clear();  // a later reconnect resolves the name again
  next_addr_ = 0;
  backoff_ms_ = options_.reconnect_min_ms;
  if (ever_connected_) ++stats_.reconnects;
  ever_connected_ = true;
  const int fd = mosquitto_socket(mosq_);
  if (fd >= 0) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  LOG_INFO(kTag, "%s: connected to %s (MQTT %s)", id_.c_str(), options_.uri.c_str(),
           mqtt5() ? "5" : "3.1.1");
  if (index_ == 0) subscribe();
  events_.state_changed(*this);
}

void MqttConnection::subscribe() {
  if (sub_ptrs_.empty()) {
    subscribed_ = true;
    return;
  }
  int mid = 0;
  const int rc = mosquitto_subscribe_multiple(mosq_, &mid, static_cast<int>(sub_ptrs_.size()),
                                              sub_ptrs_.data(), options_.subscribe_qos, 0, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    LOG_ERROR(kTag, "%s: subscribe failed: %s", id_.c_str(), mosquitto_strerror(rc));
    return;
  }
  subscribe_mid_ = mid;
}

void MqttConnection::on_suback(int mid, int count, const int* granted) {
  if (index_ != 0 || mid != subscribe_mid_) return;
  subscribe_mid_ = -1;
  bool ok = true;
  for (int i = 0; i < count; ++i) {
    if (granted[i] < 0 || granted[i] > 2) {
      ok = false;
      const auto k = static_cast<std::size_t>(i);
      LOG_ERROR(kTag, "%s: broker refused subscription '%s'", id_.c_str(),
                k < options_.subscriptions.size() ? options_.subscriptions[k].c_str() : "?");
    }
  }
  subscribed_ = ok;
  if (ok) LOG_INFO(kTag, "%s: subscribed to %d filter(s)", id_.c_str(), count);
  events_.state_changed(*this);
}

// `detail` says why when this side gave up on the socket.
void MqttConnection::lost(int rc, const char* detail, int err) {
  if (poll_ == nullptr && (state_ == State::Closed || state_ == State::Backoff)) return;
  const bool was_connected = state_ == State::Connected;
  close_poll();
  subscribed_ = false;
  subscribe_mid_ = -1;
  misc_due_ = false;
  events_.dropped(*this);
  if (stopping_) {
    state_ = State::Closed;
    events_.state_changed(*this);
    return;
  }
  if (was_connected) {
    const char* why = detail != nullptr      ? detail
                      : rc == MOSQ_ERR_ERRNO ? "socket error"
                                             : mosquitto_strerror(rc);
    LOG_WARN(kTag, "%s: connection lost: %s (reconnecting)", id_.c_str(), why);
    schedule_reconnect();
  } else if (quiet_retry_) {
    schedule_reconnect();
  } else {
    connect_failed(refused_ ? *refused_ : mqtt_broken(options_, uri_, trace_, rc, err));
  }
  events_.state_changed(*this);
}

// ---- stopping ---------------------------------------------------------------------------------

void MqttConnection::begin_stop() {
  stopping_ = true;
  if (reconnect_timer_ != nullptr) uv_timer_stop(reconnect_timer_->timer());
}

void MqttConnection::advance_stop(bool drained) {
  CHUNKD_ASSERT(stopping_);
  switch (state_) {
    case State::Idle:
    case State::Backoff:
      uv_timer_stop(reconnect_timer_->timer());
      state_ = State::Closed;
      break;
    case State::Resolving:
      if (resolve_ != nullptr) uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));
      break;
    case State::Connecting:
      cancel_probe();
      close_poll();  // nothing to flush before CONNACK; the socket closes with the client
      state_ = State::Closed;
      break;
    case State::Connected:
      if (!disconnect_sent_ && drained && !mosquitto_want_write(mosq_)) {
        CHUNKD_ASSERT(writer_.waiting() == 0);
        disconnect_sent_ = true;
        // Written at once when possible; libmosquitto then closes the socket and calls
        // on_disconnect, which marks the connection closed.
        if (mosquitto_disconnect(mosq_) != MOSQ_ERR_SUCCESS) {
          close_poll();
          state_ = State::Closed;
        } else {
          check_socket();
          update_poll();
        }
      }
      break;
    case State::Closed:
      break;
  }
}

void MqttConnection::release_client() {
  CHUNKD_ASSERT(state_ == State::Closed && poll_ == nullptr);
  if (mosq_ != nullptr) mosquitto_destroy(mosq_);
  mosq_ = nullptr;
}

void MqttConnection::abandon() {
  cancel_probe();
  close_poll();
  misc_due_ = false;
  state_ = State::Closed;
}

// ---- C callbacks: noexcept, so an exception from a handler terminates -------------------------

void MqttConnection::on_poll(uv_poll_t* poll, int status, int events) noexcept {
  auto* h = static_cast<LoopHandle*>(poll->data);
  auto* c = static_cast<MqttConnection*>(h->owner);
  if (c == nullptr || h->closing) return;
  c->service(h, status, events);
}

void MqttConnection::on_reconnect_timer(uv_timer_t* timer) noexcept {
  auto* h = static_cast<LoopHandle*>(timer->data);
  if (auto* c = static_cast<MqttConnection*>(h->owner); c != nullptr) c->connect_now();
}

void MqttConnection::on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept {
  auto* r = static_cast<ResolveReq*>(req->data);
  if (r->conn != nullptr) r->conn->resolved(status, res);
  uv_freeaddrinfo(res);
  delete r;
}

void MqttConnection::on_connect_cb(mosquitto*, void* self, int rc) noexcept {
  static_cast<MqttConnection*>(self)->on_connack(rc);
}

void MqttConnection::on_disconnect_cb(mosquitto*, void* self, int rc) noexcept {
  const int err = errno;  // what broke the socket, when rc is MOSQ_ERR_ERRNO
  static_cast<MqttConnection*>(self)->lost(rc, nullptr, err);
}

void MqttConnection::on_publish_cb(mosquitto*, void* self, int mid) noexcept {
  auto* c = static_cast<MqttConnection*>(self);
  c->events_.published(*c, mid);
}

void MqttConnection::on_message_cb(mosquitto*, void* self, const mosquitto_message* msg) noexcept {
  static_cast<MqttConnection*>(self)->events_.message(msg);
}

void MqttConnection::on_subscribe_cb(mosquitto*, void* self, int mid, int count,
                                     const int* granted) noexcept {
  static_cast<MqttConnection*>(self)->on_suback(mid, count, granted);
}

void MqttConnection::on_log_cb(mosquitto* mosq, void* self, int, const char* text) noexcept {
  static_cast<MqttConnection*>(self)->log_line(mosq, text);
}

}  // namespace chunkd::io

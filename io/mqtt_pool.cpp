// MqttPool: libmosquitto (no library threads) driven by the libuv loop.
//
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
//   without any callback. So the pool forgets every queued byte of a connection when it drops
//   (QoS 1/2 messages libmosquitto resends after reconnecting then get an on_publish for a mid
//   the pool no longer tracks, which it ignores).
// - Callbacks run with libmosquitto's callback mutex held: nothing here calls back into the same
//   client synchronously except publish/subscribe/disconnect, which only queue inside callbacks.
//
// The pool's own QoS 0 path (mqtt_pool.hpp) relies on two more facts: libmosquitto writes to the
// socket only from calls the pool makes (loop_write, loop_misc, publish, subscribe, disconnect)
// and, inside loop_read, only to answer QoS 1/2 traffic (PUBACK, PUBREC, PUBREL, PUBCOMP), which
// cannot arrive while the pool subscribes at QoS 0 and has never published at QoS 1/2; and
// mosquitto_want_write() is true exactly while libmosquitto holds a packet not fully written.
//
// Deferred work (ready transitions, on_writable, the stop sequence) runs from a zero-delay timer,
// never inside a libmosquitto call, so user callbacks may publish or call stop(). They must not
// destroy the pool: call stop() and destroy it from `done`.
#include "io/mqtt_pool.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <random>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "io/log.hpp"
#include "io/send_queue.hpp"

namespace chunkd::io {
namespace {

constexpr const char* kTag = "mqtt";
// Fixed header (1 byte + up to 4 bytes remaining length) plus the 2-byte topic length, rounded.
constexpr std::size_t kPublishOverheadBytes = 5;
// Messages handed to a connection and not yet released; below 65535 so that libmosquitto's 16-bit
// message ids stay unique among them.
constexpr std::size_t kMaxOutstandingMessages = 60000;
constexpr std::uint64_t kMiscIntervalMs = 1000;
// Packets read per readiness event before yielding to the rest of the loop.
constexpr int kMaxReadsPerWakeup = 64;
constexpr std::size_t kMaxConnections = 256;
// The pool's own QoS 0 path: packets wait in the connection's buffer until the loop is about to
// block, or are written at once (from the caller's memory) once this many bytes would wait.
constexpr std::size_t kFlushBytes = 64u << 10;
// iovecs of one gathered write: the waiting buffer, the PUBLISH head, the topic, payload parts.
constexpr std::size_t kMaxIovecs = 16;
// iovecs of one flush of the waiting buffer: 4 MiB in 64 KiB chunks.
constexpr std::size_t kMaxFlushIovecs = 64;
// MQTT's largest remaining length (four-byte variable integer).
constexpr std::size_t kMaxRemainingLength = 268435455;

// A QoS 0 PUBLISH's fixed header and topic length (MQTT 3.1.1 §3.3): type 3, no DUP, no RETAIN;
// `remaining` = 2 + topic + payload bytes. Returns the bytes written to `out` (3 to 7).
std::size_t encode_publish_head(std::array<std::byte, 7>& out, std::size_t remaining,
                                std::size_t topic_bytes) {
  std::size_t n = 0;
  out[n++] = std::byte{0x30};
  do {
    auto digit = static_cast<std::uint8_t>(remaining % 128);
    remaining /= 128;
    if (remaining > 0) digit |= 0x80;
    out[n++] = std::byte{digit};
  } while (remaining > 0);
  out[n++] = static_cast<std::byte>(topic_bytes >> 8);
  out[n++] = static_cast<std::byte>(topic_bytes & 0xff);
  return n;
}

void ensure_lib_init() {
  static const int rc = mosquitto_lib_init();
  (void)rc;
}

std::error_code invalid() { return std::make_error_code(std::errc::invalid_argument); }

std::uint64_t fnv1a64(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (char ch : s) {
    h ^= static_cast<unsigned char>(ch);
    h *= 1099511628211ull;
  }
  return h;
}

struct Endpoint {
  bool tls = false;
  std::string host;  // without brackets
  int port = 0;
  bool host_is_ip = false;  // an IPv4/IPv6 literal: no name resolution needed
};

bool parse_port(std::string_view text, int& port) {
  if (text.empty() || text.size() > 5) return false;
  int value = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') return false;
    value = value * 10 + (ch - '0');
  }
  if (value < 1 || value > 65535) return false;
  port = value;
  return true;
}

// tcp://host[:port] (default 1883) or ssl://host[:port] (default 8883); IPv6 as [addr].
bool parse_uri(std::string_view uri, Endpoint& out, std::string& why) {
  const auto sep = uri.find("://");
  if (sep == std::string_view::npos) {
    why = "expected tcp://host:port or ssl://host:port";
    return false;
  }
  const std::string_view scheme = uri.substr(0, sep);
  if (scheme == "tcp") {
    out.tls = false;
    out.port = 1883;
  } else if (scheme == "ssl") {
    out.tls = true;
    out.port = 8883;
  } else {
    why = "unknown scheme '" + std::string(scheme) + "' (use tcp:// or ssl://)";
    return false;
  }
  std::string_view rest = uri.substr(sep + 3);
  if (rest.find_first_of("/?#@ ") != std::string_view::npos) {
    why = "unexpected path, query, credentials or space after the host";
    return false;
  }
  std::string_view host;
  std::string_view port_text;
  bool has_port = false;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) {
      why = "unterminated [IPv6] host";
      return false;
    }
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        why = "expected :port after ]";
        return false;
      }
      port_text = after.substr(1);
      has_port = true;
    }
  } else {
    const auto colon = rest.find(':');
    host = rest.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = rest.substr(colon + 1);
      has_port = true;
    }
  }
  if (host.empty()) {
    why = "missing host";
    return false;
  }
  if (has_port && !parse_port(port_text, out.port)) {
    why = "port must be a number from 1 to 65535";
    return false;
  }
  out.host = std::string(host);
  in6_addr scratch{};
  out.host_is_ip = ::inet_pton(AF_INET, out.host.c_str(), &scratch) == 1 ||
                   ::inet_pton(AF_INET6, out.host.c_str(), &scratch) == 1;
  return true;
}

std::error_code check_readable(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {errno, std::generic_category()};
  ::close(fd);
  return {};
}

template <class F>
void guarded(const char* where, F&& f) noexcept {
  try {
    f();
  } catch (const std::exception& e) {
    LOG_ERROR(kTag, "%s: exception: %s", where, e.what());
  } catch (...) {
    LOG_ERROR(kTag, "%s: unknown exception", where);
  }
}

}  // namespace

struct MqttPool::Impl {
  struct Conn;

  // Every libuv handle lives in one of these, freed in its close callback. `impl`/`conn` are
  // cleared when the pool is destroyed with handles still closing.
  struct LoopHandle {
    uv_any_handle u;
    Impl* impl = nullptr;
    Conn* conn = nullptr;
    bool closing = false;
    uv_handle_t* handle() { return &u.handle; }
    uv_timer_t* timer() { return &u.timer; }
    uv_poll_t* poll() { return &u.poll; }
    uv_prepare_t* prepare() { return &u.prepare; }
  };

  struct ResolveReq {
    uv_getaddrinfo_t req;
    Conn* conn = nullptr;  // null once the pool is gone
  };

  enum class State { Idle, Backoff, Resolving, Connecting, Connected, Closed };
  enum class Phase { Idle, Running, Stopping, Finishing, Stopped };

  struct Pending {
    int mid;
    std::size_t bytes;
  };

  // The publish() call in progress on a connection: its on_publish may come before
  // mosquitto_publish() returns.
  struct InPublish {
    const int* mid = nullptr;
    std::size_t bytes = 0;
    bool active = false;
    bool released = false;
  };

  struct Conn {
    Impl* impl = nullptr;
    std::size_t index = 0;
    std::string id;
    mosquitto* mosq = nullptr;
    State state = State::Idle;
    LoopHandle* poll = nullptr;
    int poll_fd = -1;
    int poll_events = 0;
    LoopHandle* reconnect_timer = nullptr;
    ResolveReq* resolve = nullptr;
    std::vector<std::string> addrs;  // resolved addresses of a host name, tried in turn
    std::size_t next_addr = 0;
    int backoff_ms = 0;
    unsigned failures = 0;  // consecutive failed attempts, for log levels
    bool ever_connected = false;
    bool subscribed = false;
    int subscribe_mid = -1;
    bool disconnect_sent = false;
    bool notify_writable = false;  // a publish was refused: tell the caller when it may resume
    std::size_t queued_bytes = 0;
    std::size_t outstanding = 0;
    std::deque<Pending> qos0;                    // in write order
    std::unordered_map<int, std::size_t> qos12;  // until PUBACK/PUBCOMP
    InPublish in_publish;
    SendQueue out;             // the pool's own QoS 0 packets, not yet written (mqtt_pool.hpp)
    bool out_blocked = false;  // the socket took less than offered: wait for writable
    bool misc_due = false;     // a keep-alive tick waits for `out` to drain
    std::uint64_t out_progress = 0;  // loop time (ms) of the last byte written while `out` waits
    std::size_t waiting() const { return out.size(); }
  };

  Impl(uv_loop_t* loop, MqttOptions options, MessageHandler on_message, ReadyHandler on_ready)
      : loop_(loop),
        options_(std::move(options)),
        on_message_(std::move(on_message)),
        on_ready_(std::move(on_ready)),
        rng_(static_cast<std::minstd_rand::result_type>(uv_hrtime())) {}

  ~Impl() {
    for (LoopHandle* h : handles_) {
      h->impl = nullptr;
      h->conn = nullptr;
      if (!h->closing) {
        h->closing = true;
        uv_close(h->handle(), on_handle_closed);
      }
    }
    handles_.clear();
    for (auto& c : conns_) {
      if (c->resolve != nullptr) {
        c->resolve->conn = nullptr;
        uv_cancel(reinterpret_cast<uv_req_t*>(&c->resolve->req));
      }
      if (c->mosq != nullptr) mosquitto_destroy(c->mosq);
    }
  }

  // ---- start -----------------------------------------------------------------------------

  std::error_code validate() {
    std::string why;
    if (options_.connections < 1 || options_.connections > kMaxConnections) {
      LOG_ERROR(kTag, "mqtt.connections must be 1..%zu (got %zu)", kMaxConnections,
                options_.connections);
      return invalid();
    }
    if (!parse_uri(options_.uri, endpoint_, why)) {
      LOG_ERROR(kTag, "mqtt.uri '%s': %s", options_.uri.c_str(), why.c_str());
      return invalid();
    }
    if (options_.client_id.empty()) {
      LOG_ERROR(kTag, "mqtt.client_id must not be empty");
      return invalid();
    }
    if (options_.keepalive_s < 5 || options_.keepalive_s > 65535) {
      LOG_ERROR(kTag, "mqtt keepalive must be 5..65535 s (got %d)", options_.keepalive_s);
      return invalid();
    }
    if (options_.reconnect_min_ms < 1 || options_.reconnect_max_ms < options_.reconnect_min_ms) {
      LOG_ERROR(kTag, "mqtt reconnect delays need 1 <= min (%d) <= max (%d) ms",
                options_.reconnect_min_ms, options_.reconnect_max_ms);
      return invalid();
    }
    if (options_.max_queued_bytes < 1) {
      LOG_ERROR(kTag, "mqtt max_queued_bytes must be positive");
      return invalid();
    }
    if (options_.subscribe_qos < 0 || options_.subscribe_qos > 2) {
      LOG_ERROR(kTag, "mqtt subscribe QoS must be 0, 1 or 2 (got %d)", options_.subscribe_qos);
      return invalid();
    }
    for (const std::string& filter : options_.subscriptions) {
      if (filter.empty() || mosquitto_sub_topic_check(filter.c_str()) != MOSQ_ERR_SUCCESS) {
        LOG_ERROR(kTag, "mqtt subscription filter '%s' is not a valid topic filter",
                  filter.c_str());
        return invalid();
      }
    }
    if (options_.username.empty() && !options_.password.empty()) {
      LOG_ERROR(kTag, "mqtt password given without a username");
      return invalid();
    }
    if (endpoint_.tls) {
      if (options_.cert_file.empty() != options_.key_file.empty()) {
        LOG_ERROR(kTag, "mqtt cert_file and key_file go together (one is missing)");
        return invalid();
      }
      const std::pair<const char*, const std::string*> files[] = {
          {"ca_file", &options_.ca_file},
          {"cert_file", &options_.cert_file},
          {"key_file", &options_.key_file}};
      for (const auto& [key, path] : files) {
        if (path->empty()) continue;
        if (std::error_code ec = check_readable(*path)) {
          LOG_ERROR(kTag, "mqtt.%s '%s' is not readable: %s", key, path->c_str(),
                    ec.message().c_str());
          return ec;
        }
      }
    } else if (!options_.ca_file.empty() || !options_.cert_file.empty() ||
               !options_.key_file.empty()) {
      LOG_WARN(kTag, "mqtt TLS files are ignored for a tcp:// uri (use ssl://)");
    }
    return {};
  }

  std::error_code configure(Conn& c) {
    c.mosq = mosquitto_new(c.id.c_str(), true, &c);
    if (c.mosq == nullptr) {
      LOG_ERROR(kTag, "mosquitto_new failed: %s", std::strerror(errno));
      return std::make_error_code(std::errc::not_enough_memory);
    }
    int rc = mosquitto_int_option(c.mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_int_option(c.mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (rc == MOSQ_ERR_SUCCESS && !options_.username.empty()) {
      rc = mosquitto_username_pw_set(
          c.mosq, options_.username.c_str(),
          options_.password.empty() ? nullptr : options_.password.c_str());
    }
    if (rc == MOSQ_ERR_SUCCESS && endpoint_.tls) {
      const char* cert = options_.cert_file.empty() ? nullptr : options_.cert_file.c_str();
      const char* key = options_.key_file.empty() ? nullptr : options_.key_file.c_str();
      if (options_.ca_file.empty()) {
        // No CA given: trust the system's CAs.
        rc = mosquitto_int_option(c.mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
        if (rc == MOSQ_ERR_SUCCESS)
          rc = mosquitto_tls_set(c.mosq, nullptr, "/etc/ssl/certs", cert, key, nullptr);
      } else {
        rc = mosquitto_tls_set(c.mosq, options_.ca_file.c_str(), nullptr, cert, key, nullptr);
      }
    }
    if (rc != MOSQ_ERR_SUCCESS) {
      LOG_ERROR(kTag, "configuring MQTT client %s failed: %s", c.id.c_str(),
                mosquitto_strerror(rc));
      return invalid();
    }
    mosquitto_connect_callback_set(c.mosq, on_connect_cb);
    mosquitto_disconnect_callback_set(c.mosq, on_disconnect_cb);
    mosquitto_publish_callback_set(c.mosq, on_publish_cb);
    mosquitto_message_callback_set(c.mosq, on_message_cb);
    mosquitto_subscribe_callback_set(c.mosq, on_subscribe_cb);
    // libmosquitto formats a line per packet when a log callback is set: only when debugging.
    if (log_enabled(LogLevel::Debug)) mosquitto_log_callback_set(c.mosq, on_log_cb);
    return {};
  }

  LoopHandle* new_timer(Conn* conn) {
    auto* h = new LoopHandle;
    uv_timer_init(loop_, h->timer());
    h->impl = this;
    h->conn = conn;
    h->handle()->data = h;
    handles_.insert(h);
    return h;
  }

  std::error_code start() {
    if (phase_ != Phase::Idle) {
      LOG_ERROR(kTag, "MqttPool::start called twice");
      return std::make_error_code(std::errc::operation_not_permitted);
    }
    if (std::error_code ec = validate()) return ec;
    ensure_lib_init();

    conns_.clear();
    for (std::size_t i = 0; i < options_.connections; ++i) {
      auto c = std::make_unique<Conn>();
      c->impl = this;
      c->index = i;
      c->id = options_.client_id + "-" + std::to_string(i);
      c->backoff_ms = options_.reconnect_min_ms;
      conns_.push_back(std::move(c));
    }
    for (auto& c : conns_) {
      if (std::error_code ec = configure(*c)) {
        for (auto& d : conns_) {
          if (d->mosq != nullptr) mosquitto_destroy(d->mosq);
        }
        conns_.clear();
        return ec;
      }
    }
    sub_ptrs_.clear();
    for (std::string& filter : options_.subscriptions) sub_ptrs_.push_back(filter.data());

    misc_timer_ = new_timer(nullptr);
    notify_timer_ = new_timer(nullptr);
    flush_prepare_ = new LoopHandle;
    uv_prepare_init(loop_, flush_prepare_->prepare());
    flush_prepare_->impl = this;
    flush_prepare_->handle()->data = flush_prepare_;
    handles_.insert(flush_prepare_);
    direct_ = !endpoint_.tls && options_.subscribe_qos == 0;
    flush_timer_ = new_timer(nullptr);
    for (auto& c : conns_) c->reconnect_timer = new_timer(c.get());
    uv_timer_start(misc_timer_->timer(), on_misc_timer, kMiscIntervalMs, kMiscIntervalMs);

    phase_ = Phase::Running;
    LOG_INFO(kTag, "connecting %zu client(s) '%s-N' to %s", conns_.size(),
             options_.client_id.c_str(), options_.uri.c_str());
    for (auto& c : conns_) {
      c->state = State::Backoff;
      uv_timer_start(c->reconnect_timer->timer(), on_reconnect_timer, 0, 0);
    }
    return {};
  }

  // ---- connecting --------------------------------------------------------------------------

  void connect_now(Conn& c) {
    if (phase_ != Phase::Running) return;
    if (endpoint_.tls || endpoint_.host_is_ip) {
      // TLS needs the host name for certificate verification, so libmosquitto resolves it.
      begin_connect(c, endpoint_.host);
      return;
    }
    // A host name: each attempt takes the next resolved address (a name may resolve to ::1 and
    // 127.0.0.1 with the broker on one of them); once all were tried, resolve again.
    if (c.next_addr < c.addrs.size()) {
      const std::string addr = c.addrs[c.next_addr++];
      begin_connect(c, addr);
      return;
    }
    auto* r = new ResolveReq;
    r->conn = &c;
    r->req.data = r;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int err = uv_getaddrinfo(loop_, &r->req, on_resolved, endpoint_.host.c_str(), nullptr, &hints);
    if (err != 0) {
      delete r;
      connect_failed(c, uv_strerror(err));
      return;
    }
    c.resolve = r;
    c.state = State::Resolving;
    ++pending_resolves_;
  }

  void resolved(Conn& c, int status, const addrinfo* res) {
    c.resolve = nullptr;
    --pending_resolves_;
    if (phase_ != Phase::Running) {
      c.state = State::Closed;
      schedule_notify();
      return;
    }
    c.addrs.clear();
    c.next_addr = 0;
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
      if (addr != nullptr && c.addrs.size() < 16 &&
          std::find(c.addrs.begin(), c.addrs.end(), addr) == c.addrs.end()) {
        c.addrs.emplace_back(addr);
      }
    }
    if (c.addrs.empty()) {
      connect_failed(c, status != 0 ? uv_strerror(status) : "no usable address");
      return;
    }
    const std::string addr = c.addrs[c.next_addr++];
    begin_connect(c, addr);
  }

  void begin_connect(Conn& c, const std::string& addr) {
    c.disconnect_sent = false;
    errno = 0;
    int rc = mosquitto_connect_bind_async(c.mosq, addr.c_str(), endpoint_.port,
                                          options_.keepalive_s, nullptr);
    int err = errno;
    if (rc != MOSQ_ERR_SUCCESS) {
      connect_failed(c, rc == MOSQ_ERR_ERRNO ? std::strerror(err) : mosquitto_strerror(rc));
      return;
    }
    int fd = mosquitto_socket(c.mosq);
    if (fd < 0) {
      connect_failed(c, "no socket after connect");
      return;
    }
    auto* h = new LoopHandle;
    int r = uv_poll_init_socket(loop_, h->poll(), fd);
    if (r != 0) {
      delete h;  // not registered with the loop
      connect_failed(c, uv_strerror(r));
      return;
    }
    h->impl = this;
    h->conn = &c;
    h->handle()->data = h;
    handles_.insert(h);
    c.poll = h;
    c.poll_fd = fd;
    c.poll_events = 0;
    c.state = State::Connecting;
    update_poll(c);
  }

  void connect_failed(Conn& c, const char* why) {
    ++c.failures;
    if (c.failures == 1) {
      LOG_WARN(kTag, "%s: cannot connect to %s: %s (retrying)", c.id.c_str(), options_.uri.c_str(),
               why);
    } else {
      LOG_DEBUG(kTag, "%s: connect attempt %u failed: %s", c.id.c_str(), c.failures, why);
    }
    schedule_reconnect(c);
  }

  void schedule_reconnect(Conn& c) {
    if (phase_ != Phase::Running) {
      c.state = State::Closed;
      schedule_notify();
      return;
    }
    const int base = std::clamp(c.backoff_ms, options_.reconnect_min_ms, options_.reconnect_max_ms);
    const auto half = static_cast<std::uint64_t>(base) / 2;
    const std::uint64_t delay = half + rng_() % (static_cast<std::uint64_t>(base) - half + 1);
    c.backoff_ms = base > options_.reconnect_max_ms / 2 ? options_.reconnect_max_ms : base * 2;
    c.state = State::Backoff;
    uv_timer_start(c.reconnect_timer->timer(), on_reconnect_timer, delay, 0);
  }

  // ---- polling ------------------------------------------------------------------------------

  void close_handle(LoopHandle* h) {
    if (h == nullptr || h->closing) return;
    h->closing = true;
    uv_close(h->handle(), on_handle_closed);
  }

  void close_poll(Conn& c) {
    if (c.poll == nullptr) return;
    close_handle(c.poll);  // stops watching now, before any new socket can reuse the fd number
    c.poll = nullptr;
    c.poll_fd = -1;
    c.poll_events = 0;
  }

  void update_poll(Conn& c) {
    if (c.poll == nullptr) return;
    const bool write = mosquitto_want_write(c.mosq) || (c.out_blocked && c.waiting() > 0);
    const int want = UV_READABLE | (write ? UV_WRITABLE : 0);
    if (want == c.poll_events) return;
    int r = uv_poll_start(c.poll->poll(), want, on_poll);
    if (r != 0) {
      LOG_ERROR(kTag, "%s: uv_poll_start: %s", c.id.c_str(), uv_strerror(r));
      connection_lost(c, MOSQ_ERR_ERRNO);
      return;
    }
    c.poll_events = want;
  }

  // libmosquitto may close the socket (and then always calls on_disconnect); this also covers
  // a close without the callback, so a poll never outlives its fd.
  void check_socket(Conn& c) {
    if (c.poll != nullptr && mosquitto_socket(c.mosq) != c.poll_fd) {
      connection_lost(c, MOSQ_ERR_CONN_LOST);
    }
  }

  void service(Conn& c, LoopHandle* h, int status, int events) {
    if (status < 0) {
      LOG_DEBUG(kTag, "%s: poll error %s", c.id.c_str(), uv_strerror(status));
      events = UV_READABLE | UV_WRITABLE;  // let libmosquitto meet the error
    }
    if ((events & UV_READABLE) != 0) {
      for (int i = 0; i < kMaxReadsPerWakeup; ++i) {
        errno = 0;
        int rc = mosquitto_loop_read(c.mosq, 1);
        const int err = errno;
        if (c.poll != h) break;
        if (rc != MOSQ_ERR_SUCCESS) {
          connection_lost(c, rc);
          break;
        }
        if (err == EAGAIN || err == EWOULDBLOCK) break;  // drained
      }
    }
    if (c.poll == h && (events & UV_WRITABLE) != 0) {
      if (mosquitto_want_write(c.mosq)) {
        int rc = mosquitto_loop_write(c.mosq, 1);
        if (c.poll == h && rc != MOSQ_ERR_SUCCESS) connection_lost(c, rc);
      }
      if (c.poll == h) {
        c.out_blocked = false;
        flush(c);
      }
    }
    if (c.poll == h) check_socket(c);
    if (c.poll == h) update_poll(c);
    if (phase_ == Phase::Stopping) advance_stop();
  }

  void misc_tick() {
    const std::uint64_t now = uv_now(loop_);
    const auto stall_ms = static_cast<std::uint64_t>(options_.keepalive_s) * 1500;
    for (auto& cp : conns_) {
      Conn& c = *cp;
      if (c.poll == nullptr) continue;
      if (c.waiting() > 0) {
        // libmosquitto may not write now (a PINGREQ would land inside the pool's packets); the
        // broker sees the pool's traffic meanwhile. A socket that takes nothing is dead.
        if (now - c.out_progress > stall_ms) {
          write_failed(c, "the broker took no byte for 1.5 keep-alive periods");
          continue;
        }
        c.misc_due = true;
        continue;
      }
      run_misc(c);
    }
  }

  void run_misc(Conn& c) {
    c.misc_due = false;
    mosquitto_loop_misc(c.mosq);  // keep-alive; may drop the connection via on_disconnect
    check_socket(c);
    update_poll(c);
  }

  // ---- connection events -----------------------------------------------------------------

  void connected(Conn& c, int rc) {
    if (rc != 0) {
      // libmosquitto drops the connection right after this; on_disconnect schedules the retry.
      ++c.failures;
      LOG_WARN(kTag, "%s: broker refused the connection: %s", c.id.c_str(),
               mosquitto_connack_string(rc));
      return;
    }
    c.state = State::Connected;
    c.failures = 0;
    c.addrs.clear();  // a later reconnect resolves the name again
    c.next_addr = 0;
    c.backoff_ms = options_.reconnect_min_ms;
    if (c.ever_connected) ++stats_.reconnects;
    c.ever_connected = true;
    const int fd = mosquitto_socket(c.mosq);
    if (fd >= 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    LOG_INFO(kTag, "%s: connected to %s", c.id.c_str(), options_.uri.c_str());
    if (c.index == 0) subscribe(c);
    schedule_notify();
  }

  void subscribe(Conn& c) {
    if (sub_ptrs_.empty()) {
      c.subscribed = true;
      return;
    }
    int mid = 0;
    int rc = mosquitto_subscribe_multiple(c.mosq, &mid, static_cast<int>(sub_ptrs_.size()),
                                          sub_ptrs_.data(), options_.subscribe_qos, 0, nullptr);
    if (rc != MOSQ_ERR_SUCCESS) {
      LOG_ERROR(kTag, "%s: subscribe failed: %s", c.id.c_str(), mosquitto_strerror(rc));
      return;
    }
    c.subscribe_mid = mid;
  }

  void subscribed(Conn& c, int mid, int count, const int* granted) {
    if (c.index != 0 || mid != c.subscribe_mid) return;
    c.subscribe_mid = -1;
    bool ok = true;
    for (int i = 0; i < count; ++i) {
      if (granted[i] < 0 || granted[i] > 2) {
        ok = false;
        const auto k = static_cast<std::size_t>(i);
        LOG_ERROR(kTag, "%s: broker refused subscription '%s'", c.id.c_str(),
                  k < options_.subscriptions.size() ? options_.subscriptions[k].c_str() : "?");
      }
    }
    c.subscribed = ok;
    if (ok) LOG_INFO(kTag, "%s: subscribed to %d filter(s)", c.id.c_str(), count);
    schedule_notify();
  }

  // `detail` says why when the pool itself gave up on the socket.
  void connection_lost(Conn& c, int rc, const char* detail = nullptr) {
    if (c.poll == nullptr && (c.state == State::Closed || c.state == State::Backoff)) return;
    const bool was_connected = c.state == State::Connected;
    close_poll(c);
    c.subscribed = false;
    c.subscribe_mid = -1;
    drop_accounting(c);
    if (phase_ != Phase::Running) {
      c.state = State::Closed;
      schedule_notify();
      return;
    }
    const char* why = detail != nullptr      ? detail
                      : rc == MOSQ_ERR_ERRNO ? "socket error"
                                             : mosquitto_strerror(rc);
    if (was_connected) {
      LOG_WARN(kTag, "%s: connection lost: %s (reconnecting)", c.id.c_str(), why);
      schedule_reconnect(c);
    } else {
      connect_failed(c, why);
    }
    schedule_notify();
  }

  void message(const mosquitto_message* msg) {
    ++stats_.messages_received;
    if (!on_message_ || msg == nullptr || msg->topic == nullptr) return;
    const auto* data = static_cast<const std::byte*>(msg->payload);
    const auto size = msg->payloadlen > 0 ? static_cast<std::size_t>(msg->payloadlen) : 0;
    on_message_(std::string_view(msg->topic), std::span<const std::byte>(data, size));
  }

  // ---- accounting ---------------------------------------------------------------------------

  // on_writable fires once queued bytes fall below half the bound (or the queue is empty).
  bool below_resume_mark(const Conn& c) const {
    return c.queued_bytes == 0 || c.queued_bytes < options_.max_queued_bytes / 2;
  }

  // A message libmosquitto wrote (or acknowledged).
  void release(Conn& c, std::size_t bytes) {
    if (c.outstanding > 0) --c.outstanding;
    release_bytes(c, bytes);
  }

  void release_bytes(Conn& c, std::size_t bytes) {
    c.queued_bytes -= std::min(bytes, c.queued_bytes);
    if (c.notify_writable && below_resume_mark(c)) schedule_notify();
  }

  void published(Conn& c, int mid) {
    InPublish& p = c.in_publish;
    if (p.active && !p.released && *p.mid == mid) {
      p.released = true;
      release(c, p.bytes);
      return;
    }
    if (!c.qos0.empty()) {
      // Written in order: normally the front. Anything before a later match was lost unseen.
      auto it = std::find_if(c.qos0.begin(), c.qos0.end(),
                             [mid](const Pending& e) { return e.mid == mid; });
      if (it != c.qos0.end()) {
        std::size_t bytes = 0;
        std::size_t count = 0;
        for (auto e = c.qos0.begin(); e != it + 1; ++e) {
          bytes += e->bytes;
          ++count;
        }
        c.qos0.erase(c.qos0.begin(), it + 1);
        c.outstanding -= std::min(count - 1, c.outstanding);
        release(c, bytes);
        return;
      }
    }
    auto it = c.qos12.find(mid);
    if (it != c.qos12.end()) {
      const std::size_t bytes = it->second;
      c.qos12.erase(it);
      release(c, bytes);
    }
    // Otherwise: a message from before a reconnect, already forgotten.
  }

  void drop_accounting(Conn& c) {
    if (c.queued_bytes > 0) {
      LOG_DEBUG(kTag, "%s: dropping %zu queued byte(s) of %zu message(s)", c.id.c_str(),
                c.queued_bytes, c.outstanding);
    }
    c.queued_bytes = 0;
    c.outstanding = 0;
    c.qos0.clear();
    c.qos12.clear();
    if (c.in_publish.active) c.in_publish.released = true;
    c.out.clear();
    c.out_blocked = false;
    c.misc_due = false;
  }

  PublishResult publish(std::size_t connection, std::string_view topic,
                        std::span<const std::span<const std::byte>> parts, int qos) {
    std::size_t payload_bytes = 0;
    for (auto p : parts) payload_bytes += p.size();
    if (connection >= conns_.size() || qos < 0 || qos > 2 ||
        payload_bytes > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
        topic.empty() || topic.size() > 65535) {
      return PublishResult::Error;
    }
    Conn& c = *conns_[connection];
    if (phase_ != Phase::Running || c.state != State::Connected) {
      ++stats_.publish_refused_disconnected;
      if (phase_ == Phase::Running) c.notify_writable = true;
      return PublishResult::NotConnected;
    }
    if (direct_ && qos > 0) {
      // QoS 1/2 traffic makes libmosquitto write from inside its reads (PUBREL, resends after a
      // reconnect): from now on every message goes through it.
      direct_ = false;
      LOG_INFO(kTag, "a QoS %d publish: QoS 0 messages go through libmosquitto from now on", qos);
    }
    if (direct_ && parts.size() + 3 <= kMaxIovecs) {
      return publish_direct(c, topic, parts, payload_bytes);
    }
    if (c.waiting() > 0) {
      // libmosquitto writes at once: the pool's own packets must be out first.
      flush(c);
      if (c.waiting() > 0) return refuse_backpressure(c);
    }
    std::span<const std::byte> payload;
    if (parts.size() == 1) {
      payload = parts[0];
    } else {
      gather_.clear();
      for (auto p : parts) gather_.insert(gather_.end(), p.begin(), p.end());
      payload = gather_;
    }
    return publish_mosquitto(c, topic, payload, qos);
  }

  PublishResult refuse_backpressure(Conn& c) {
    ++stats_.publish_refused_backpressure;
    c.notify_writable = true;
    return PublishResult::Backpressure;
  }

  PublishResult publish_mosquitto(Conn& c, std::string_view topic,
                                  std::span<const std::byte> payload, int qos) {
    const std::size_t cost = payload.size() + topic.size() + kPublishOverheadBytes;
    // A message larger than the whole bound still goes out alone on an idle connection.
    if ((c.queued_bytes > 0 && c.queued_bytes + cost > options_.max_queued_bytes) ||
        c.outstanding >= kMaxOutstandingMessages) {
      return refuse_backpressure(c);
    }
    topic_buf_.assign(topic);
    c.queued_bytes += cost;
    ++c.outstanding;
    int mid = 0;
    c.in_publish = InPublish{&mid, cost, true, false};
    errno = 0;
    const int rc = mosquitto_publish(c.mosq, &mid, topic_buf_.c_str(),
                                     static_cast<int>(payload.size()), payload.data(), qos, false);
    const bool released = c.in_publish.released;
    c.in_publish = InPublish{};
    if (rc != MOSQ_ERR_SUCCESS) {
      if (!released) {
        c.queued_bytes -= std::min(cost, c.queued_bytes);
        if (c.outstanding > 0) --c.outstanding;
      }
      LOG_DEBUG(kTag, "%s: publish to '%s' failed: %s", c.id.c_str(), topic_buf_.c_str(),
                mosquitto_strerror(rc));
      // A socket error leaves the connection to be torn down by the next read/write.
      check_socket(c);
      update_poll(c);
      return rc == MOSQ_ERR_NO_CONN ? PublishResult::NotConnected : PublishResult::Error;
    }
    if (!released) {
      if (qos == 0) {
        c.qos0.push_back(Pending{mid, cost});
      } else {
        c.qos12[mid] = cost;
      }
    }
    ++stats_.messages_published;
    stats_.bytes_published += payload.size();
    update_poll(c);
    return PublishResult::Ok;
  }

  // ---- the pool's own QoS 0 path --------------------------------------------------------------

  // Queued bytes of this path are wire bytes, released as the socket takes them.
  PublishResult publish_direct(Conn& c, std::string_view topic,
                               std::span<const std::span<const std::byte>> parts,
                               std::size_t payload_bytes) {
    const std::size_t remaining = 2 + topic.size() + payload_bytes;
    if (remaining > kMaxRemainingLength) return PublishResult::Error;
    std::array<std::byte, 7> head{};
    const std::size_t head_bytes = encode_publish_head(head, remaining, topic.size());
    const std::size_t wire = head_bytes + topic.size() + payload_bytes;
    if (c.queued_bytes > 0 && c.queued_bytes + wire > options_.max_queued_bytes) {
      return refuse_backpressure(c);
    }
    c.queued_bytes += wire;
    ++stats_.messages_published;
    stats_.bytes_published += payload_bytes;
    if (c.waiting() == 0) c.out_progress = uv_now(loop_);

    const std::span<const std::byte> pieces_head(head.data(), head_bytes);
    const auto* topic_bytes = reinterpret_cast<const std::byte*>(topic.data());
    const std::span<const std::byte> pieces_topic(topic_bytes, topic.size());
    std::size_t skip = 0;  // bytes of this message the socket took
    if (c.waiting() + wire >= kFlushBytes && !c.out_blocked && !mosquitto_want_write(c.mosq)) {
      // Enough to write now: what waits first, then this message straight from the caller's
      // memory, in one gathered send. If what waits needs more iovecs than are left (it is
      // scattered over many chunks), the message joins it and the loop turn's flush writes both.
      std::array<iovec, kMaxIovecs> iov{};
      std::size_t n = c.out.gather(iov.data(), kMaxIovecs - 2 - parts.size());
      std::size_t before = 0;
      for (std::size_t i = 0; i < n; ++i) before += iov[i].iov_len;
      if (before == c.waiting()) {
        iov[n++] = as_iovec(pieces_head);
        iov[n++] = as_iovec(pieces_topic);
        for (auto p : parts) {
          if (!p.empty()) iov[n++] = as_iovec(p);
        }
        const std::size_t written = send_some(c, iov.data(), n, before + wire);
        if (c.poll == nullptr) return PublishResult::NotConnected;  // the write failed: torn down
        const std::size_t from_buffer = std::min(written, before);
        c.out.consume(from_buffer);
        skip = written - from_buffer;
        release_bytes(c, written);
        if (skip == wire) {
          update_poll(c);
          return PublishResult::Ok;
        }
      }
    }
    // Keep what is left of the message (all of it unless a write just took some).
    append(c, pieces_head, skip);
    append(c, pieces_topic, skip);
    for (auto p : parts) append(c, p, skip);
    if (!c.out_blocked) arm_flush();
    update_poll(c);
    return PublishResult::Ok;
  }

  static iovec as_iovec(std::span<const std::byte> s) {
    return iovec{const_cast<std::byte*>(s.data()), s.size()};
  }

  // Appends `bytes` to the connection's buffer, less the first `skip` bytes (consumed from `skip`).
  static void append(Conn& c, std::span<const std::byte> bytes, std::size_t& skip) {
    const std::size_t drop = std::min(skip, bytes.size());
    skip -= drop;
    c.out.append(bytes.subspan(drop));
  }

  // One sendmsg of up to `offered` bytes. Returns the bytes the socket took; marks the connection
  // blocked when it took fewer. A hard error tears the connection down (c.poll becomes null).
  std::size_t send_some(Conn& c, iovec* iov, std::size_t count, std::size_t offered) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    ssize_t n;
    do {
      n = ::sendmsg(c.poll_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    ++stats_.socket_writes;
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        c.out_blocked = true;
        return 0;
      }
      const int err = errno;
      const std::string why = std::string("write: ") + std::strerror(err);
      write_failed(c, why.c_str());
      return 0;
    }
    const auto written = static_cast<std::size_t>(n);
    if (written < offered) c.out_blocked = true;
    if (written > 0) c.out_progress = uv_now(loop_);
    return written;
  }

  // Writes what waits in the connection's buffer, unless libmosquitto's own packet is unfinished
  // or the socket is full.
  void flush(Conn& c) {
    if (c.poll == nullptr || c.waiting() == 0 || c.out_blocked || mosquitto_want_write(c.mosq)) {
      return;
    }
    // One sendmsg() carries up to kMaxFlushIovecs chunks; more go in further calls until the
    // socket is full.
    while (c.waiting() > 0 && !c.out_blocked) {
      std::array<iovec, kMaxFlushIovecs> iov{};
      const std::size_t n = c.out.gather(iov.data(), iov.size());
      std::size_t offered = 0;
      for (std::size_t i = 0; i < n; ++i) offered += iov[i].iov_len;
      const std::size_t written = send_some(c, iov.data(), n, offered);
      if (c.poll == nullptr) return;
      c.out.consume(written);
      release_bytes(c, written);
    }
    if (c.waiting() == 0 && c.misc_due) run_misc(c);
    update_poll(c);
    if (phase_ == Phase::Stopping && c.queued_bytes == 0) schedule_notify();
  }

  void write_failed(Conn& c, const char* why) {
    // libmosquitto closes the socket on the next connect attempt; nothing more goes out on it.
    ::shutdown(c.poll_fd, SHUT_RDWR);
    connection_lost(c, MOSQ_ERR_ERRNO, why);
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
    for (auto& c : conns_) flush(*c);
  }

  // ---- deferred work ------------------------------------------------------------------------

  void schedule_notify() {
    if (notify_pending_ || notify_timer_ == nullptr || notify_timer_->closing) return;
    if (phase_ != Phase::Running && phase_ != Phase::Stopping) return;
    notify_pending_ = true;
    uv_timer_start(notify_timer_->timer(), on_notify_timer, 0, 0);
  }

  bool ready() const {
    if (phase_ != Phase::Running || conns_.empty()) return false;
    for (const auto& c : conns_) {
      if (c->state != State::Connected) return false;
    }
    return conns_[0]->subscribed;
  }

  void run_notify() {
    if (phase_ == Phase::Stopping) advance_stop();
    const bool now_ready = ready();
    if (now_ready != reported_ready_) {
      reported_ready_ = now_ready;
      LOG_INFO(kTag, "pool %s", now_ready ? "ready" : "not ready");
      if (on_ready_) on_ready_(now_ready);
    }
    if (phase_ != Phase::Running) return;
    bool fire = false;
    for (auto& c : conns_) {
      if (c->notify_writable && c->state == State::Connected && below_resume_mark(*c)) {
        c->notify_writable = false;
        fire = true;
      }
    }
    if (fire && on_writable_) on_writable_();
  }

  // ---- stopping -----------------------------------------------------------------------------

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
    for (auto& c : conns_) uv_timer_stop(c->reconnect_timer->timer());
    uv_timer_start(flush_timer_->timer(), on_flush_timer,
                   static_cast<std::uint64_t>(std::max(0, flush_timeout_ms)), 0);
    schedule_notify();
  }

  void advance_stop() {
    if (phase_ != Phase::Stopping) return;
    for (auto& cp : conns_) {
      Conn& c = *cp;
      switch (c.state) {
        case State::Idle:
        case State::Backoff:
          uv_timer_stop(c.reconnect_timer->timer());
          c.state = State::Closed;
          break;
        case State::Resolving:
          if (c.resolve != nullptr) uv_cancel(reinterpret_cast<uv_req_t*>(&c.resolve->req));
          break;
        case State::Connecting:
          close_poll(c);  // nothing to flush before CONNACK; the socket closes with the client
          c.state = State::Closed;
          break;
        case State::Connected:
          if (!c.disconnect_sent && c.queued_bytes == 0 && !mosquitto_want_write(c.mosq)) {
            c.disconnect_sent = true;
            // Written at once when possible; libmosquitto then closes the socket and calls
            // on_disconnect, which marks the connection closed.
            int rc = mosquitto_disconnect(c.mosq);
            if (rc != MOSQ_ERR_SUCCESS) {
              close_poll(c);
              c.state = State::Closed;
            } else {
              check_socket(c);
              update_poll(c);
            }
          }
          break;
        case State::Closed:
          break;
      }
    }
    for (const auto& c : conns_) {
      if (c->state != State::Closed) return;
    }
    if (pending_resolves_ == 0) finish();
  }

  void flush_timeout() {
    if (phase_ != Phase::Stopping) return;
    for (auto& cp : conns_) {
      Conn& c = *cp;
      if (c.state == State::Closed || c.state == State::Resolving) continue;
      if (c.queued_bytes > 0) {
        LOG_WARN(kTag, "%s: flush timed out, dropping %zu queued byte(s)", c.id.c_str(),
                 c.queued_bytes);
      }
      close_poll(c);
      drop_accounting(c);
      c.state = State::Closed;
    }
    advance_stop();
  }

  void finish() {
    phase_ = Phase::Finishing;
    for (auto& c : conns_) close_poll(*c);
    std::vector<LoopHandle*> open(handles_.begin(), handles_.end());
    for (LoopHandle* h : open) close_handle(h);
    if (handles_.empty()) complete();
  }

  void handle_closed(LoopHandle* h) {
    handles_.erase(h);
    if (phase_ == Phase::Finishing && handles_.empty() && pending_resolves_ == 0) complete();
  }

  // Last thing the pool does; `done` may destroy it.
  void complete() {
    for (auto& c : conns_) {
      if (c->mosq != nullptr) {
        mosquitto_destroy(c->mosq);
        c->mosq = nullptr;
      }
    }
    phase_ = Phase::Stopped;
    LOG_INFO(kTag, "stopped");
    std::vector<std::function<void()>> callbacks = std::move(done_);
    done_.clear();
    for (auto& cb : callbacks) guarded("stop done callback", cb);
  }

  // ---- C callbacks --------------------------------------------------------------------------

  static void on_handle_closed(uv_handle_t* handle) {
    auto* h = static_cast<LoopHandle*>(handle->data);
    Impl* impl = h->impl;
    if (impl != nullptr) {
      guarded("handle close", [&] { impl->handle_closed(h); });
    }
    delete h;
  }

  static void on_poll(uv_poll_t* poll, int status, int events) {
    auto* h = static_cast<LoopHandle*>(poll->data);
    if (h->impl == nullptr || h->conn == nullptr || h->closing) return;
    guarded("poll", [&] { h->impl->service(*h->conn, h, status, events); });
  }

  static void on_reconnect_timer(uv_timer_t* timer) {
    auto* h = static_cast<LoopHandle*>(timer->data);
    if (h->impl == nullptr || h->conn == nullptr) return;
    guarded("reconnect", [&] { h->impl->connect_now(*h->conn); });
  }

  static void on_misc_timer(uv_timer_t* timer) {
    auto* h = static_cast<LoopHandle*>(timer->data);
    if (h->impl == nullptr) return;
    guarded("keep-alive", [&] { h->impl->misc_tick(); });
  }

  static void on_notify_timer(uv_timer_t* timer) {
    auto* h = static_cast<LoopHandle*>(timer->data);
    if (h->impl == nullptr) return;
    h->impl->notify_pending_ = false;
    guarded("notify", [&] { h->impl->run_notify(); });
  }

  static void on_flush_prepare(uv_prepare_t* prepare) {
    auto* h = static_cast<LoopHandle*>(prepare->data);
    if (h->impl == nullptr) return;
    guarded("flush", [&] { h->impl->flush_all(); });
  }

  static void on_flush_timer(uv_timer_t* timer) {
    auto* h = static_cast<LoopHandle*>(timer->data);
    if (h->impl == nullptr) return;
    guarded("flush timeout", [&] { h->impl->flush_timeout(); });
  }

  static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    auto* r = static_cast<ResolveReq*>(req->data);
    Conn* c = r->conn;
    if (c != nullptr) {
      guarded("resolve", [&] { c->impl->resolved(*c, status, res); });
    }
    uv_freeaddrinfo(res);
    delete r;
  }

  static void on_connect_cb(mosquitto*, void* userdata, int rc) {
    auto* c = static_cast<Conn*>(userdata);
    guarded("on_connect", [&] { c->impl->connected(*c, rc); });
  }

  static void on_disconnect_cb(mosquitto*, void* userdata, int rc) {
    auto* c = static_cast<Conn*>(userdata);
    guarded("on_disconnect", [&] { c->impl->connection_lost(*c, rc); });
  }

  static void on_publish_cb(mosquitto*, void* userdata, int mid) {
    auto* c = static_cast<Conn*>(userdata);
    guarded("on_publish", [&] { c->impl->published(*c, mid); });
  }

  static void on_message_cb(mosquitto*, void* userdata, const mosquitto_message* msg) {
    auto* c = static_cast<Conn*>(userdata);
    guarded("message handler", [&] { c->impl->message(msg); });
  }

  static void on_subscribe_cb(mosquitto*, void* userdata, int mid, int count, const int* granted) {
    auto* c = static_cast<Conn*>(userdata);
    guarded("on_subscribe", [&] { c->impl->subscribed(*c, mid, count, granted); });
  }

  static void on_log_cb(mosquitto*, void* userdata, int level, const char* text) {
    auto* c = static_cast<Conn*>(userdata);
    if (level == MOSQ_LOG_ERR || level == MOSQ_LOG_WARNING) {
      LOG_WARN(kTag, "%s: libmosquitto: %s", c->id.c_str(), text);
    } else {
      LOG_DEBUG(kTag, "%s: libmosquitto: %s", c->id.c_str(), text);
    }
  }

  uv_loop_t* loop_;
  MqttOptions options_;
  MessageHandler on_message_;
  ReadyHandler on_ready_;
  std::function<void()> on_writable_;
  Endpoint endpoint_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<char*> sub_ptrs_;
  std::unordered_set<LoopHandle*> handles_;
  LoopHandle* misc_timer_ = nullptr;
  LoopHandle* notify_timer_ = nullptr;
  LoopHandle* flush_timer_ = nullptr;
  LoopHandle* flush_prepare_ = nullptr;
  bool flush_armed_ = false;
  bool direct_ = false;            // QoS 0 publishes take the pool's own path (mqtt_pool.hpp)
  std::vector<std::byte> gather_;  // a multi-part payload made contiguous for libmosquitto
  std::size_t pending_resolves_ = 0;
  bool notify_pending_ = false;
  bool reported_ready_ = false;
  Phase phase_ = Phase::Idle;
  std::vector<std::function<void()>> done_;
  std::string topic_buf_;
  MqttStats stats_;
  std::minstd_rand rng_;
};

MqttPool::MqttPool(uv_loop_t* loop, MqttOptions options, MessageHandler on_message,
                   ReadyHandler on_ready)
    : impl_(std::make_unique<Impl>(loop, std::move(options), std::move(on_message),
                                   std::move(on_ready))) {}

MqttPool::~MqttPool() = default;

std::error_code MqttPool::start() { return impl_->start(); }

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
  if (connection >= impl_->conns_.size()) return 0;
  return impl_->conns_[connection]->queued_bytes;
}

std::size_t MqttPool::total_queued_bytes() const {
  std::size_t total = 0;
  for (const auto& c : impl_->conns_) total += c->queued_bytes;
  return total;
}

void MqttPool::on_writable(std::function<void()> callback) {
  impl_->on_writable_ = std::move(callback);
}

const MqttStats& MqttPool::stats() const { return impl_->stats_; }

std::size_t MqttPool::connections() const { return impl_->options_.connections; }

void MqttPool::stop(int flush_timeout_ms, std::function<void()> done) {
  impl_->stop(flush_timeout_ms, std::move(done));
}

}  // namespace chunkd::io

// MqttConnection's choice of MQTT version, its MQTT 5 connect, and what an attempt learns from
// libmosquitto's log lines and TLS session (see io/mqtt_connection.hpp, io/mqtt_failure.hpp).
//
// Why a probe: libmosquitto 2.0 puts CONNECT properties (here Maximum Packet Size) only into the
// CONNECT of mosquitto_connect_bind_v5, whose TCP connect() blocks; its asynchronous connect
// takes no properties (eclipse/mosquitto#1835). A blocking connect to a broker that drops SYNs
// would stall the loop for minutes, so the connection first makes its own non-blocking connect to
// the same address, watched by a uv_poll_t and bounded by keepalive_s, closes it once the broker
// accepted it, and only then calls the blocking connect, which returns within a round trip. The
// broker logs the probe as a connection closed before CONNECT. TLS to a host name is the
// exception: libmosquitto resolves that name itself (blocking, as for 3.1.1), so there is no
// address to probe and the connect blocks until the broker answers or the kernel gives up.
#include <arpa/inet.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/log.hpp"
#include "io/mqtt_connection.hpp"

namespace chunkd::io {
namespace {

constexpr const char* kTag = "mqtt";

// A non-blocking socket connecting to the numeric address `addr`: the fd, or -errno.
int connect_nonblocking(const std::string& addr, int port) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, addr.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof *v4;
  } else if (::inet_pton(AF_INET6, addr.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(port));
    len = sizeof *v6;
  } else {
    return -EINVAL;
  }
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    const int err = errno;
    ::close(fd);
    return -err;
  }
  return fd;
}

}  // namespace

int MqttConnection::init_protocol() {
  CHUNKD_ASSERT(options_.max_packet_bytes >= kMqttMinMaxPacketBytes &&
                options_.max_packet_bytes <= kMqttMaxMaxPacketBytes);
  protocol_version_ =
      options_.protocol == MqttProtocol::V311 || v311_only_ ? MQTT_PROTOCOL_V311 : MQTT_PROTOCOL_V5;
  if (mqtt5() && connect_props_ == nullptr) {
    const int rc = mosquitto_property_add_int32(&connect_props_, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                                static_cast<uint32_t>(options_.max_packet_bytes));
    if (rc != MOSQ_ERR_SUCCESS) return rc;
  }
  return mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, protocol_version_);
}

int MqttConnection::connect_client(const std::string& addr) {
  if (recreate_) {
    // libmosquitto keeps the properties of mosquitto_connect_bind_v5 for every later connect and
    // refuses them under 3.1.1 (MOSQ_ERR_NOT_SUPPORTED): only a new client forgets them.
    recreate_ = false;
    mosquitto_destroy(mosq_);
    mosq_ = nullptr;
    if (!init()) return MOSQ_ERR_NOMEM;
  }
  if (!mqtt5()) {
    return mosquitto_connect_bind_async(mosq_, addr.c_str(), uri_.port, options_.keepalive_s,
                                        nullptr);
  }
  return mosquitto_connect_bind_v5(mosq_, addr.c_str(), uri_.port, options_.keepalive_s, nullptr,
                                   connect_props_);
}

// Starts the probe when this attempt needs one; false: connect now.
bool MqttConnection::start_probe(const std::string& addr) {
  CHUNKD_ASSERT(probe_ == nullptr && probe_fd_ < 0);
  if (!mqtt5() || (uri_.tls && !uri_.host_is_ip)) return false;
  const int fd = connect_nonblocking(addr, uri_.port);
  if (fd < 0) {
    connect_failed(mqtt_unreachable(options_, std::strerror(-fd)));
    return true;
  }
  int error = 0;
  LoopHandle* h = handles_.poll(this, fd, error);
  if (h == nullptr || uv_poll_start(h->poll(), UV_WRITABLE, on_probe_poll) != 0) {
    handles_.close(h);
    ::close(fd);
    connect_failed(
        mqtt_unreachable(options_, h == nullptr ? uv_strerror(error) : "uv_poll_start failed"));
    return true;
  }
  probe_ = h;
  probe_fd_ = fd;
  probe_addr_ = addr;
  state_ = State::Connecting;
  const auto timeout_ms = static_cast<std::uint64_t>(options_.keepalive_s) * 1000;
  uv_timer_start(reconnect_timer_->timer(), on_probe_timeout, timeout_ms, 0);
  return true;
}

void MqttConnection::cancel_probe() {
  if (probe_ == nullptr) return;
  handles_.close(probe_);  // stops watching before the fd closes
  ::close(probe_fd_);
  probe_ = nullptr;
  probe_fd_ = -1;
  uv_timer_stop(reconnect_timer_->timer());
}

// `error`: 0 when the broker accepted the probe's TCP connection, else an errno.
void MqttConnection::probe_done(int error) {
  cancel_probe();
  if (stopping_) {
    state_ = State::Closed;
    events_.state_changed(*this);
    return;
  }
  if (error != 0) {
    connect_failed(mqtt_unreachable(options_, std::strerror(error)));
    return;
  }
  const std::string addr = std::move(probe_addr_);
  open_client(addr);
}

// On a refused CONNACK: true when this was MQTT 5 refused as such and 3.1.1 takes over.
bool MqttConnection::fall_back_to_v311(int rc) {
  if (!mqtt5() || options_.protocol != MqttProtocol::Auto ||
      (rc != MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION && rc != CONNACK_REFUSED_PROTOCOL_VERSION)) {
    return false;
  }
  // One warning for the pool: every connection meets the same broker.
  if (index_ == 0) {
    LOG_WARN(kTag,
             "%s: the broker refused MQTT 5; using MQTT 3.1.1, which cannot limit the size of "
             "what the broker sends: set its message_size_limit (README, deployment notes)",
             id_.c_str());
  } else {
    LOG_DEBUG(kTag, "%s: the broker refused MQTT 5; using MQTT 3.1.1", id_.c_str());
  }
  protocol_version_ = MQTT_PROTOCOL_V311;
  v311_only_ = true;
  recreate_ = true;  // not now: this runs inside a libmosquitto callback
  // libmosquitto drops the connection next; its retry is not a failure worth a warning.
  failures_ = 1;
  backoff_ms_ = options_.reconnect_min_ms;
  return true;
}

void MqttConnection::on_probe_poll(uv_poll_t* poll, int status, int) noexcept {
  auto* h = static_cast<LoopHandle*>(poll->data);
  auto* c = static_cast<MqttConnection*>(h->owner);
  if (c == nullptr || h->closing || h != c->probe_) return;
  // The socket's own error first: libuv reports a failed connect (POLLERR) as UV_EBADF.
  int error = 0;
  socklen_t len = sizeof error;
  if (::getsockopt(c->probe_fd_, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  if (error == 0 && status < 0) error = -status;
  c->probe_done(error);
}

void MqttConnection::on_probe_timeout(uv_timer_t* timer) noexcept {
  auto* h = static_cast<LoopHandle*>(timer->data);
  if (auto* c = static_cast<MqttConnection*>(h->owner); c != nullptr && c->probe_ != nullptr) {
    c->probe_done(ETIMEDOUT);
  }
}

// A TLS session that completed its handshake and then breaks before CONNACK was refused by the
// broker (io/mqtt_failure.hpp). Without a log line at the break, this is how the attempt knows:
// the handshake completes one round trip before the broker's reset can arrive, so it is seen
// complete when the socket event that brings the reset begins.
void MqttConnection::note_handshake() {
  if (!uri_.tls || trace_.tls_done) return;
  auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(mosq_));
  if (ssl != nullptr && SSL_is_init_finished(ssl) == 1) trace_.tls_done = true;
}

// Runs inside libmosquitto, where a failing TLS session still exists: its verify result and
// whether its handshake completed are read now, they are gone once the call returns.
void MqttConnection::log_line(mosquitto* mosq, const char* text) {
  if (text == nullptr) return;
  LOG_DEBUG(kTag, "%s: libmosquitto: %s", id_.c_str(), text);
  if (state_ == State::Connected) return;
  auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(mosq));
  trace_.note(text, ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK,
              ssl != nullptr && SSL_is_init_finished(ssl) == 1);
}

}  // namespace chunkd::io

// RawFleet's sockets: non-blocking connects, reads parsed in place, batched writes, keep-alive.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "tools/chunkload/raw_fleet.hpp"

namespace chunkd::chunkload {
namespace {

constexpr std::uint16_t kKeepAliveSeconds = 30;
constexpr auto kPingInterval = std::chrono::seconds(kKeepAliveSeconds / 2);
constexpr auto kConnectTimeout = std::chrono::seconds(30);
constexpr std::size_t kReadBytes = 256u << 10;  // the read buffer; grows for a larger packet
// The largest packet accepted: a 128 KiB block in JSON (base64) with topic and keys fits easily.
constexpr std::size_t kMaxPacketBytes = 4u << 20;
constexpr int kReadsPerEvent = 4;  // then the other connections get their turn

std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

std::string connack_meaning(int code) {
  switch (code) {
    case 1:
      return "unacceptable protocol version";
    case 2:
      return "client identifier rejected";
    case 3:
      return "server unavailable";
    case 4:
      return "bad user name or password";
    case 5:
      return "not authorized";
    default:
      return "unknown code";
  }
}

}  // namespace

Expected<bool, std::string> RawFleet::open_loop() {
  auto address = parse_tcp_uri(options_.uri);
  if (!address) return chunkd::unexpected<std::string>(address.error());
  address_ = *address;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (const int rc = ::getaddrinfo(address_.host.c_str(), address_.port.c_str(), &hints, &addrs_);
      rc != 0) {
    addrs_ = nullptr;
    return chunkd::unexpected<std::string>("cannot resolve " + address_.host + ": " +
                                           ::gai_strerror(rc));
  }
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return chunkd::unexpected<std::string>(errno_text("epoll_create1", errno));
  return true;
}

void RawFleet::start_connect(Conn& conn, TimePoint now) {
  const addrinfo* ai = addrs_;
  const std::string what = "connect to " + options_.uri + " failed: ";
  conn.fd =
      ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (conn.fd < 0) {
    const int err = errno;
    std::string reason = what + errno_text("socket", err);
    if (err == EMFILE || err == ENFILE) {
      reason +=
          " (each connection needs a file descriptor: raise `ulimit -n` or use fewer "
          "--connections)";
    }
    close_conn(conn, reason);
    return;
  }
  int one = 1;
  ::setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  conn.state = ConnState::Connecting;
  conn.connect_deadline = now + std::min<std::chrono::seconds>(
                                    kConnectTimeout, std::chrono::seconds(options_.max_seconds));
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.u32 = conn.index;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, conn.fd, &ev) != 0) {
    close_conn(conn, what + errno_text("epoll_ctl", errno));
    return;
  }
  conn.watching_out = true;
  if (::connect(conn.fd, ai->ai_addr, ai->ai_addrlen) == 0) {
    on_connected(conn, now);
  } else if (errno != EINPROGRESS) {
    close_conn(conn, what + errno_text("connect", errno));
  }
}

void RawFleet::on_connected(Conn& conn, TimePoint now) {
  conn.state = ConnState::Up;
  conn.in.reserve(kReadBytes);
  conn.last_sent = now;
  mqtt::append_connect(conn.out, conn.client_id, kKeepAliveSeconds);
  // Pipelined, as MQTT allows: the SUBSCRIBEs need not wait for the CONNACK.
  std::vector<std::string> filters;
  for (std::size_t b = 0; b < conn.batches.size(); ++b) {
    filters.clear();
    const Batch& batch = conn.batches[b];
    for (std::uint32_t i = batch.first; i < batch.first + batch.count; ++i) {
      for (protocol::ReplyKind kind : {protocol::ReplyKind::Data, protocol::ReplyKind::Description,
                                       protocol::ReplyKind::Rejected}) {
        std::string t;
        topics_.reply_topic(t, devs_[i]->thing, options_.stream_id, kind, options_.format);
        filters.push_back(std::move(t));
      }
    }
    mqtt::append_subscribe(conn.out, static_cast<std::uint16_t>(b + 1), filters, options_.qos);
  }
  mark_dirty(conn);
}

void RawFleet::on_event(Conn& conn, std::uint32_t events, TimePoint now) {
  if (conn.state == ConnState::Connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(conn.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      close_conn(conn, "connect to " + options_.uri + " failed: " + errno_text("connect", err));
      return;
    }
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    on_connected(conn, now);
  }
  if (conn.state != ConnState::Up) return;
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 && !read_conn(conn)) return;
  if ((events & EPOLLOUT) != 0 && conn.watching_out) write_conn(conn);
}

bool RawFleet::read_conn(Conn& conn) {
  for (int round = 0; round < kReadsPerEvent; ++round) {
    if (conn.in_begin > 0 && conn.in.capacity() - conn.in_end < conn.in.capacity() / 4) {
      // Move the partial packet at the end to the front: at most one packet per buffer.
      std::memmove(conn.in.data(), conn.in.data() + conn.in_begin, conn.in_end - conn.in_begin);
      conn.in_end -= conn.in_begin;
      conn.in_begin = 0;
    }
    if (conn.in_end == conn.in.capacity()) {  // one packet larger than the buffer
      conn.in.reserve(std::min(conn.in.capacity() * 2, kMaxPacketBytes + 8), conn.in_end);
    }
    const std::size_t room = conn.in.capacity() - conn.in_end;
    const ssize_t r = ::recv(conn.fd, conn.in.data() + conn.in_end, room, 0);
    if (r == 0) {
      close_conn(conn, "connection lost (the broker closed the connection)");
      return false;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      close_conn(conn, "connection lost (" + errno_text("recv", errno) + ")");
      return false;
    }
    conn.in_end += static_cast<std::size_t>(r);
    mqtt::Packet packet;
    std::string error;
    for (;;) {
      const auto view =
          std::span<const std::byte>(conn.in.data() + conn.in_begin, conn.in_end - conn.in_begin);
      const mqtt::Parse p = mqtt::next_packet(view, kMaxPacketBytes, packet, error);
      if (p == mqtt::Parse::NeedMore) break;
      if (p == mqtt::Parse::Error) {
        close_conn(conn, "protocol error: " + error);
        return false;
      }
      conn.in_begin += packet.size;
      if (!dispatch(conn, packet)) return false;
    }
    if (conn.in_begin == conn.in_end) conn.in_begin = conn.in_end = 0;
    if (static_cast<std::size_t>(r) < room) return true;  // drained
  }
  return true;
}

bool RawFleet::dispatch(Conn& conn, const mqtt::Packet& packet) {
  std::string error;
  switch (packet.type()) {
    case mqtt::Type::Publish: {
      mqtt::Publish msg;
      if (!mqtt::parse_publish(packet, msg, error)) {
        close_conn(conn, "protocol error: " + error);
        return false;
      }
      if (msg.qos == 1) {
        mqtt::append_puback(conn.out, msg.packet_id);
        mark_dirty(conn);
      }
      route(conn, msg);
      return conn.state == ConnState::Up;
    }
    case mqtt::Type::Connack: {
      const int code = mqtt::parse_connack(packet);
      if (code != 0 || conn.connack) {
        close_conn(conn, code < 0 || conn.connack
                             ? std::string("protocol error: an unexpected CONNACK")
                             : "the broker refused the connection (CONNACK " +
                                   std::to_string(code) + ": " + connack_meaning(code) + ")");
        return false;
      }
      conn.connack = true;
      return true;
    }
    case mqtt::Type::Suback: {
      std::uint16_t id = 0;
      std::span<const std::byte> codes;
      if (!mqtt::parse_suback(packet, id, codes) || id == 0 || id > conn.batches.size()) {
        close_conn(conn, "protocol error: a SUBACK for no SUBSCRIBE");
        return false;
      }
      subscribed(conn.batches[id - 1u], codes);
      return true;
    }
    case mqtt::Type::Pingresp:
    case mqtt::Type::Puback:
      return true;
    default:
      close_conn(conn, "protocol error: the broker sent packet type " +
                           std::to_string(static_cast<unsigned>(packet.type())));
      return false;
  }
}

void RawFleet::mark_dirty(Conn& conn) {
  if (conn.dirty) return;
  conn.dirty = true;
  dirty_.push_back(conn.index);
}

void RawFleet::flush_dirty(TimePoint now) {
  // write_conn may fail devices, whose outboxes are empty then: dirty_ does not grow meanwhile.
  for (std::size_t i = 0; i < dirty_.size(); ++i) {
    Conn& conn = conns_[dirty_[i]];
    conn.dirty = false;
    if (conn.state == ConnState::Up && !conn.watching_out && write_conn(conn)) conn.last_sent = now;
  }
  dirty_.clear();
}

bool RawFleet::write_conn(Conn& conn) {
  while (conn.out_begin < conn.out.size()) {
    const ssize_t n = ::send(conn.fd, conn.out.data() + conn.out_begin,
                             conn.out.size() - conn.out_begin, MSG_NOSIGNAL);
    if (n > 0) {
      conn.out_begin += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (conn.out_begin > conn.out.size() / 2) {
        conn.out.erase(conn.out.begin(),
                       conn.out.begin() + static_cast<std::ptrdiff_t>(conn.out_begin));
        conn.out_begin = 0;
      }
      if (!conn.watching_out) watch(conn, true);
      return true;
    }
    close_conn(conn, "connection lost (" + errno_text("send", errno) + ")");
    return false;
  }
  conn.out.clear();
  conn.out_begin = 0;
  if (conn.watching_out) watch(conn, false);
  return true;
}

void RawFleet::watch(Conn& conn, bool out) {
  epoll_event ev{};
  ev.events = EPOLLIN | (out ? EPOLLOUT : 0u);
  ev.data.u32 = conn.index;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, conn.fd, &ev);
  conn.watching_out = out;
}

void RawFleet::close_conn(Conn& conn, const std::string& reason) {
  if (conn.fd >= 0) {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn.fd, nullptr);
    ::close(conn.fd);
    conn.fd = -1;
  }
  conn.state = ConnState::Closed;
  conn.in = ReadBuffer();
  conn.out = {};
  conn.out_begin = conn.in_begin = conn.in_end = 0;
  if (!reason.empty()) fail_conn_devices(conn, reason);
}

void RawFleet::service_conns(TimePoint now) {
  for (Conn& conn : conns_) {
    switch (conn.state) {
      case ConnState::Idle:
        if (now >= conn.start_at) start_connect(conn, now);
        break;
      case ConnState::Connecting:
        if (now >= conn.connect_deadline)
          close_conn(conn, "connect to " + options_.uri + " timed out");
        break;
      case ConnState::Up:
        if (conn.terminal == conn.count) {  // every device done: leave, as a device would
          mqtt::append_disconnect(conn.out);
          write_conn(conn);
          close_conn(conn, "");
        } else if (!conn.connack && now >= conn.connect_deadline) {
          close_conn(conn, "no CONNACK from " + options_.uri + " within 30 s");
        } else if (now - conn.last_sent >= kPingInterval) {
          mqtt::append_pingreq(conn.out);
          mark_dirty(conn);
          conn.last_sent = now;
        }
        break;
      case ConnState::Closed:
        break;
    }
  }
}

void RawFleet::close_all() {
  for (Conn& conn : conns_) {
    if (conn.state == ConnState::Up) {
      mqtt::append_disconnect(conn.out);
      write_conn(conn);
    }
    if (conn.state != ConnState::Closed && conn.state != ConnState::Idle) close_conn(conn, "");
  }
}

}  // namespace chunkd::chunkload

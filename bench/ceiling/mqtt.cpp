// MQTT 3.1.1 packets by hand, blocking socket helpers and the JSON report line of fleet_ceiling.
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "bench/ceiling/ceiling.hpp"

namespace chunkd::ceiling {
namespace {

void put_u8(Bytes& out, std::uint8_t v) { out.push_back(std::byte{v}); }
void put_u16(Bytes& out, std::size_t v) {
  put_u8(out, static_cast<std::uint8_t>((v >> 8) & 0xff));
  put_u8(out, static_cast<std::uint8_t>(v & 0xff));
}
void put_text(Bytes& out, std::string_view s) {
  put_u16(out, s.size());
  for (char c : s) out.push_back(static_cast<std::byte>(c));
}
// Remaining length: 7 bits a byte, low first, high bit = more (at most 4 bytes).
void put_remaining_length(Bytes& out, std::size_t length) {
  do {
    auto digit = static_cast<std::uint8_t>(length % 128);
    length /= 128;
    if (length > 0) digit = static_cast<std::uint8_t>(digit | 0x80);
    put_u8(out, digit);
  } while (length > 0);
}
Bytes packet(std::uint8_t first, const Bytes& body) {
  Bytes out;
  put_u8(out, first);
  put_remaining_length(out, body.size());
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

int ms_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1000));
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

void JsonLine::key(const char* k) {
  if (text_.size() > 1) text_ += ',';
  text_ += '"';
  text_ += k;
  text_ += "\":";
}
void JsonLine::num(const char* k, std::uint64_t v) {
  key(k);
  text_ += std::to_string(v);
}
void JsonLine::real(const char* k, double v) {
  key(k);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  text_ += buf;
}
void JsonLine::str(const char* k, std::string_view v) {
  key(k);
  text_ += '"' + json_escape(v) + '"';
}
void JsonLine::boolean(const char* k, bool v) {
  key(k);
  text_ += v ? "true" : "false";
}

Bytes connect_packet(std::string_view client_id) {
  Bytes body;
  put_text(body, "MQTT");
  put_u8(body, 4);     // protocol level 3.1.1
  put_u8(body, 0x02);  // clean session
  put_u16(body, 0);    // keep-alive off: every run is bounded by --timeout-s
  put_text(body, client_id);
  return packet(0x10, body);
}

Bytes subscribe_packet(std::uint16_t packet_id, std::span<const std::string> filters) {
  Bytes body;
  put_u16(body, packet_id);
  for (const std::string& f : filters) {
    put_text(body, f);
    put_u8(body, 0);  // QoS 0, as device libraries subscribe
  }
  return packet(0x82, body);
}

Bytes publish_header(std::string_view topic, std::size_t payload_bytes) {
  Bytes out;
  put_u8(out, 0x30);
  put_remaining_length(out, 2 + topic.size() + payload_bytes);
  put_text(out, topic);
  return out;
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

Error connect_tcp(const Options& o, Fd& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string port = std::to_string(o.port);
  if (int rc = getaddrinfo(o.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return "resolve " + o.host + ": " + gai_strerror(rc);
  }
  std::string error = "connect: no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) {
      error = errno_text("socket");
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      error = errno_text("connect");
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    out = std::move(fd);
    freeaddrinfo(res);
    return std::nullopt;
  }
  freeaddrinfo(res);
  return error;
}

Error set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return errno_text("fcntl");
  return std::nullopt;
}

Error write_all(int fd, std::span<const std::byte> data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data = data.subspan(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (Clock::now() >= deadline) return std::string("write: timed out");
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, ms_until(deadline));
      continue;
    }
    return errno_text("send");
  }
  return std::nullopt;
}

Error read_packet(int fd, Clock::time_point deadline, std::uint8_t& type, Bytes& body) {
  auto read_exact = [&](std::byte* dst, std::size_t len) -> Error {
    while (len > 0) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, ms_until(deadline)) == 0) {
        if (Clock::now() >= deadline) return std::string("read: timed out waiting for the broker");
        continue;
      }
      ssize_t n = ::recv(fd, dst, len, 0);
      if (n == 0) return std::string("read: the broker closed the connection");
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return errno_text("recv");
      }
      dst += n;
      len -= static_cast<std::size_t>(n);
    }
    return std::nullopt;
  };
  std::byte b{};
  if (auto e = read_exact(&b, 1)) return e;
  type = std::to_integer<std::uint8_t>(b);
  std::size_t length = 0;
  for (unsigned shift = 0;; shift += 7) {
    if (shift > 21) return std::string("read: bad remaining length");
    if (auto e = read_exact(&b, 1)) return e;
    length |= static_cast<std::size_t>(std::to_integer<std::uint8_t>(b) & 0x7f) << shift;
    if ((std::to_integer<std::uint8_t>(b) & 0x80) == 0) break;
  }
  if (length > kMaxControlPacketBytes) return std::string("read: packet too large");
  body.resize(length);
  return read_exact(body.data(), length);
}

Error read_connack(int fd, Clock::time_point deadline) {
  std::uint8_t type = 0;
  Bytes body;
  if (auto e = read_packet(fd, deadline, type, body)) return e;
  if (type != 0x20 || body.size() != 2) return std::string("expected CONNACK");
  if (body[1] != std::byte{0}) {
    return "CONNACK refused, code " + std::to_string(std::to_integer<int>(body[1]));
  }
  return std::nullopt;
}

Error read_suback(int fd, Clock::time_point deadline) {
  std::uint8_t type = 0;
  Bytes body;
  if (auto e = read_packet(fd, deadline, type, body)) return e;
  if (type != 0x90 || body.size() < 3) return std::string("expected SUBACK");
  for (std::size_t i = 2; i < body.size(); ++i) {
    if (body[i] == std::byte{0x80}) return std::string("SUBSCRIBE refused by the broker");
  }
  return std::nullopt;
}

Error mqtt_connect(const Options& o, const std::string& client_id, Fd& fd,
                   Clock::time_point deadline) {
  if (auto e = connect_tcp(o, fd)) return e;
  if (auto e = write_all(fd.get(), connect_packet(client_id), deadline)) return e;
  return read_connack(fd.get(), deadline);
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return s(u.ru_utime) + s(u.ru_stime);
}

}  // namespace chunkd::ceiling

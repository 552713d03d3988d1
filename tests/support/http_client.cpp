#include "tests/support/http_client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace chunkd::test {
namespace {

constexpr std::size_t kMaxHeaderBytes = 1024 * 1024;
constexpr std::size_t kReadChunkBytes = 64 * 1024;

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int remaining_ms(long long deadline_ms) {
  long long left = deadline_ms - now_ms();
  if (left < 0) return 0;
  if (left > 1000000) return 1000000;
  return static_cast<int>(left);
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool has_header(const HttpClient::Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (lower(key) == name) return true;
  }
  return false;
}

std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

}  // namespace

const std::string* HttpClientResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return &value;
  }
  return nullptr;
}

HttpClient::HttpClient(std::string host, std::uint16_t port, int timeout_ms, std::string source)
    : host_(std::move(host)), source_(std::move(source)), port_(port), timeout_ms_(timeout_ms) {
  connect();
}

HttpClient::~HttpClient() { close(); }

HttpClient::HttpClient(HttpClient&& other) noexcept { *this = std::move(other); }

HttpClient& HttpClient::operator=(HttpClient&& other) noexcept {
  if (this == &other) return *this;
  close();
  host_ = std::move(other.host_);
  source_ = std::move(other.source_);
  port_ = other.port_;
  timeout_ms_ = other.timeout_ms_;
  fd_ = other.fd_;
  connects_ = other.connects_;
  peer_closed_ = other.peer_closed_;
  close_pending_ = other.close_pending_;
  buffer_ = std::move(other.buffer_);
  error_ = std::move(other.error_);
  other.fd_ = -1;
  return *this;
}

bool HttpClient::connect() {
  if (connected()) return true;
  close();
  error_.clear();

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  std::string port_text = std::to_string(port_);
  int rc = getaddrinfo(host_.c_str(), port_text.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    error_ = std::string("getaddrinfo: ") + gai_strerror(rc);
    return false;
  }
  int fd = socket(result->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error_ = errno_text("socket", errno);
    freeaddrinfo(result);
    return false;
  }
  if (!source_.empty() && !bind_source(fd, result->ai_family)) {
    ::close(fd);
    freeaddrinfo(result);
    return false;
  }
  rc = ::connect(fd, result->ai_addr, result->ai_addrlen);
  freeaddrinfo(result);
  if (rc != 0 && errno != EINPROGRESS) {
    error_ = errno_text("connect", errno);
    ::close(fd);
    return false;
  }
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    int ready = poll(&p, 1, timeout_ms_);
    int so_error = 0;
    socklen_t len = sizeof(so_error);
    if (ready <= 0) {
      error_ = ready == 0 ? "connect: timed out" : errno_text("poll", errno);
      ::close(fd);
      return false;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error != 0) {
      error_ = errno_text("connect", so_error != 0 ? so_error : errno);
      ::close(fd);
      return false;
    }
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fd_ = fd;
  peer_closed_ = false;
  buffer_.clear();
  ++connects_;
  return true;
}

bool HttpClient::bind_source(int fd, int family) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    in6->sin6_family = AF_INET6;
    len = sizeof(*in6);
    if (inet_pton(AF_INET6, source_.c_str(), &in6->sin6_addr) != 1) len = 0;
  } else {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&addr);
    in4->sin_family = AF_INET;
    len = sizeof(*in4);
    if (inet_pton(AF_INET, source_.c_str(), &in4->sin_addr) != 1) len = 0;
  }
  if (len == 0) {
    error_ = "bind: not an IP literal of the server's family: " + source_;
    return false;
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    error_ = errno_text("bind", errno);
    return false;
  }
  return true;
}

void HttpClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  peer_closed_ = false;
  close_pending_ = false;
  buffer_.clear();
}

void HttpClient::reset() {
  if (fd_ >= 0) {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  close();
}

void HttpClient::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

bool HttpClient::send_raw(std::string_view bytes) {
  if (fd_ < 0) {
    error_ = "send: not connected";
    return false;
  }
  long long deadline = now_ms() + timeout_ms_;
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      int ready = poll(&p, 1, remaining_ms(deadline));
      if (ready == 0) {
        error_ = "send: timed out";
        return false;
      }
      if (ready < 0 && errno != EINTR) {
        error_ = errno_text("poll", errno);
        return false;
      }
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) peer_closed_ = true;
    error_ = errno_text("send", errno);
    return false;
  }
  return true;
}

long HttpClient::read_some(long long deadline_ms) {
  if (fd_ < 0) {
    error_ = "read: not connected";
    return -1;
  }
  char chunk[kReadChunkBytes];
  for (;;) {
    ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      return static_cast<long>(n);
    }
    if (n == 0) {
      peer_closed_ = true;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      if (errno == ECONNRESET || errno == EPIPE) peer_closed_ = true;
      error_ = errno_text("recv", errno);
      return -1;
    }
    pollfd p{fd_, POLLIN, 0};
    int ready = poll(&p, 1, remaining_ms(deadline_ms));
    if (ready == 0) {
      error_ = "read: timed out";
      return -1;
    }
    if (ready < 0 && errno != EINTR) {
      error_ = errno_text("poll", errno);
      return -1;
    }
  }
}

HttpClientResponse HttpClient::read_response() {
  HttpClientResponse response;
  long long deadline = now_ms() + timeout_ms_;
  std::size_t head_end;
  while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
    if (buffer_.size() > kMaxHeaderBytes) {
      response.error = "response header too large";
      return response;
    }
    long n = peer_closed_ ? 0 : read_some(deadline);
    if (n == 0) {
      response.error = buffer_.empty() ? "connection closed before a response"
                                       : "connection closed in the middle of a response header";
      return response;
    }
    if (n < 0) {
      response.error = error_;
      return response;
    }
  }

  std::string_view head(buffer_.data(), head_end);
  std::size_t line_end = head.find("\r\n");
  std::string_view status_line = head.substr(0, line_end);
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/" || status_line[8] != ' ') {
    response.error = "malformed status line: " + std::string(status_line);
    return response;
  }
  bool http10 = status_line.substr(0, 8) == "HTTP/1.0";
  int status = std::atoi(std::string(status_line.substr(9, 3)).c_str());
  if (status < 100 || status > 999) {
    response.error = "malformed status code: " + std::string(status_line);
    return response;
  }
  response.reason = status_line.size() > 13 ? std::string(status_line.substr(13)) : "";

  std::size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    std::size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) end = head.size();
    std::string_view line = head.substr(pos, end - pos);
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      response.error = "malformed header line: " + std::string(line);
      return response;
    }
    response.headers.emplace_back(lower(trim(line.substr(0, colon))),
                                  std::string(trim(line.substr(colon + 1))));
    pos = end + 2;
  }

  std::size_t body_start = head_end + 4;
  const std::string* length_text = response.header("content-length");
  if (length_text != nullptr) {
    char* parse_end = nullptr;
    unsigned long long length = std::strtoull(length_text->c_str(), &parse_end, 10);
    if (parse_end == length_text->c_str() || *parse_end != '\0') {
      response.error = "malformed Content-Length: " + *length_text;
      return response;
    }
    while (buffer_.size() - body_start < length) {
      long n = peer_closed_ ? 0 : read_some(deadline);
      if (n == 0) {
        response.error = "connection closed in the middle of a response body";
        return response;
      }
      if (n < 0) {
        response.error = error_;
        return response;
      }
    }
    response.body = buffer_.substr(body_start, static_cast<std::size_t>(length));
    buffer_.erase(0, body_start + static_cast<std::size_t>(length));
  } else if (status < 200 || status == 204 || status == 304) {
    buffer_.erase(0, body_start);
  } else {
    for (;;) {  // delimited by the end of the connection
      long n = peer_closed_ ? 0 : read_some(deadline);
      if (n == 0) break;
      if (n < 0) {
        response.error = error_;
        return response;
      }
    }
    response.body = buffer_.substr(body_start);
    buffer_.clear();
  }
  response.status = status;

  const std::string* connection = response.header("connection");
  bool closing = connection != nullptr && lower(*connection) == "close";
  if (http10 && (connection == nullptr || lower(*connection) != "keep-alive")) closing = true;
  if (closing && status >= 200) close_pending_ = true;
  return response;
}

std::string HttpClient::read_until_closed(int timeout_ms) const {
  std::string out;
  const long long deadline = now_ms() + timeout_ms;
  while (fd_ >= 0 && now_ms() < deadline) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

bool HttpClient::wait_closed(int timeout_ms) {
  if (fd_ < 0 || peer_closed_) return true;
  long long deadline = now_ms() + timeout_ms;
  for (;;) {
    long n = read_some(deadline);
    if (n == 0 || peer_closed_) return true;
    if (n < 0) return false;
  }
}

HttpClientResponse HttpClient::request(std::string_view method, std::string_view target,
                                       std::string_view body, const Headers& headers) {
  if (close_pending_) close();  // the last response said the server closes
  // A kept-alive connection the server has closed meanwhile: notice it before reusing it.
  if (fd_ >= 0 && !peer_closed_ && buffer_.empty()) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 0) > 0) {
      char probe;
      ssize_t n = ::recv(fd_, &probe, 1, MSG_PEEK);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) peer_closed_ = true;
    }
  }
  HttpClientResponse failed;
  if (!connect()) {
    failed.error = error_;
    return failed;
  }
  std::string text;
  text.reserve(128 + body.size());
  text.append(method);
  text += ' ';
  text.append(target);
  text += " HTTP/1.1\r\n";
  if (!has_header(headers, "host")) {
    bool v6 = host_.find(':') != std::string::npos;
    text += "Host: ";
    text += v6 ? "[" + host_ + "]" : host_;
    text += ":" + std::to_string(port_) + "\r\n";
  }
  bool wants_length = !body.empty() || method == "POST" || method == "PUT" || method == "PATCH";
  if (wants_length && !has_header(headers, "content-length") &&
      !has_header(headers, "transfer-encoding")) {
    text += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  for (const auto& [name, value] : headers) {
    text += name;
    text += ": ";
    text += value;
    text += "\r\n";
  }
  text += "\r\n";
  text.append(body);
  if (!send_raw(text)) {
    failed.error = error_;
    return failed;
  }
  for (;;) {
    HttpClientResponse response = read_response();
    if (response.status == 0 || response.status >= 200) return response;
  }
}

}  // namespace chunkd::test

// The http-parser callbacks of HttpConnection: request assembly (method, target, lower-cased
// header names, body) and the limits on header and body bytes. A callback that refuses a request
// records the status and message (refuse()) and returns -1; HttpConnection::fail_request() answers.
// Loop thread only, like the rest of the connection (io/http_connection.cpp).
#include "base/text.hpp"
#include "io/http_internal.hpp"
#include "io/log.hpp"

namespace chunkd::io::detail {

const http_parser_settings& HttpConnection::parser_settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_message_begin = &on_message_begin;
    s.on_url = &on_url;
    s.on_header_field = &on_header_field;
    s.on_header_value = &on_header_value;
    s.on_headers_complete = &on_headers_complete;
    s.on_body = &on_body;
    s.on_message_complete = &on_message_complete;
    return s;
  }();
  return settings;
}

void HttpConnection::refuse(int status, std::string message) {
  error_status_ = status;
  error_message_ = std::move(message);
}

int HttpConnection::on_message_begin(http_parser* p) {
  auto* c = static_cast<HttpConnection*>(p->data);
  c->server_->mark_head(c);
  c->in_message_ = true;
  c->message_ready_ = false;
  c->last_was_value_ = false;
  c->header_bytes_ = 0;
  c->url_.clear();
  c->head_ = false;
  c->request_ = HttpRequest{};
  c->error_status_ = 0;
  c->error_message_.clear();
  c->early_response_.reset();
  c->release_body_charge();
  c->set_timer(TimerMode::Request, c->server_->limits().request_timeout_ms);
  return 0;
}

bool HttpConnection::add_header_bytes(std::size_t len) {
  header_bytes_ += len;
  const std::size_t max = server_->limits().max_header_bytes;
  if (header_bytes_ <= max) return true;
  refuse(431, "request header exceeds " + std::to_string(max) + " bytes");
  return false;
}

int HttpConnection::on_url(http_parser* p, const char* at, std::size_t len) {
  auto* c = static_cast<HttpConnection*>(p->data);
  if (!c->add_header_bytes(len)) return -1;
  c->head_ = p->method == HTTP_HEAD;  // the method is complete once the target begins
  c->url_.append(at, len);
  return 0;
}

int HttpConnection::on_header_field(http_parser* p, const char* at, std::size_t len) {
  auto* c = static_cast<HttpConnection*>(p->data);
  bool new_field = c->request_.headers.empty() || c->last_was_value_;
  // A header line costs its name, its value and ": " plus CRLF.
  if (!c->add_header_bytes(len + (new_field ? 4 : 0))) return -1;
  if (new_field) c->request_.headers.emplace_back();
  std::string& name = c->request_.headers.back().first;
  for (std::size_t i = 0; i < len; ++i) name.push_back(base::ascii_lower(at[i]));
  c->last_was_value_ = false;
  return 0;
}

int HttpConnection::on_header_value(http_parser* p, const char* at, std::size_t len) {
  auto* c = static_cast<HttpConnection*>(p->data);
  if (!c->add_header_bytes(len)) return -1;
  if (c->request_.headers.empty()) return -1;  // the parser never does this
  c->request_.headers.back().second.append(at, len);
  c->last_was_value_ = true;
  return 0;
}

int HttpConnection::on_headers_complete(http_parser* p) {
  auto* c = static_cast<HttpConnection*>(p->data);
  c->server_->unmark_head(c);
  const HttpLimits& limits = c->server_->limits();
  const bool has_length = (p->flags & F_CONTENTLENGTH) != 0;
  if (p->http_major != 1 || p->http_minor > 1) {
    c->refuse(505, "HTTP/" + std::to_string(p->http_major) + "." + std::to_string(p->http_minor) +
                       " is not supported: use HTTP/1.1");
    return -1;
  }
  if (p->method == HTTP_CONNECT) {
    c->refuse(400, "CONNECT is not supported");
    return -1;
  }
  if ((p->flags & F_CHUNKED) != 0 || c->request_.header("transfer-encoding") != nullptr) {
    c->refuse(411, "a request body needs Content-Length (Transfer-Encoding is not supported)");
    return -1;
  }
  if (has_length && p->content_length > limits.max_body_bytes) {
    c->refuse(413, "the request body exceeds " + std::to_string(limits.max_body_bytes) + " bytes");
    return -1;
  }
  c->keep_alive_ = http_should_keep_alive(p) != 0;
  c->http10_ = p->http_major == 1 && p->http_minor == 0;
  c->request_.method = http_method_str(static_cast<http_method>(p->method));
  if (!c->admit_head()) return -1;
  if (has_length && !c->admit_body(p)) return -1;
  return 0;
}

// The head is complete: the target is split and the Authorize hook sees the request.
bool HttpConnection::admit_head() {
  auto target = split_target(url_);
  if (!target) {
    refuse(400, "malformed request target (bad percent-encoding or URL)");
    return false;
  }
  request_.path = std::move(target->path);
  request_.query = std::move(target->query);
  request_.peer = peer_;
  early_response_ = server_->authorize(request_);
  if (early_response_) ++server_->stats().early_responses;
  return true;
}

// A body is announced: it must be wanted (no early answer) and fit the server's budget before
// any of it is buffered, and only then does `Expect: 100-continue` get its 100.
bool HttpConnection::admit_body(const http_parser* p) {
  const auto length = static_cast<std::size_t>(p->content_length);
  if (length == 0) return true;
  if (early_response_) return false;  // fail_request() sends it and closes
  if (!server_->budget().try_reserve(length)) {
    ++server_->stats().bodies_refused_budget;
    if (server_->should_warn(address_)) {
      LOG_WARN(kHttpLog, "%s: request body refused: %zu bytes buffered of %zu (max_buffered_bytes)",
               peer_.c_str(), server_->budget().used_bytes(), server_->budget().max_bytes());
    }
    refuse(503, "the server is buffering too much; retry later");
    return false;
  }
  body_charge_ = length;
  request_.body.reserve(length);
  const std::string* expect = request_.header("expect");
  if (expect != nullptr && p->http_major == 1 && p->http_minor >= 1 &&
      base::iequals(*expect, "100-continue")) {
    if (!queue_write("HTTP/1.1 100 Continue\r\n\r\n", {})) return false;
  }
  return true;
}

int HttpConnection::on_body(http_parser* p, const char* at, std::size_t len) {
  auto* c = static_cast<HttpConnection*>(p->data);
  const std::size_t max = c->server_->limits().max_body_bytes;
  if (c->request_.body.size() + len > max) {
    c->refuse(413, "the request body exceeds " + std::to_string(max) + " bytes");
    return -1;
  }
  c->request_.body.append(at, len);
  return 0;
}

int HttpConnection::on_message_complete(http_parser* p) {
  auto* c = static_cast<HttpConnection*>(p->data);
  c->message_ready_ = true;
  c->keep_alive_ = http_should_keep_alive(p) != 0;
  http_parser_pause(p, 1);  // one request at a time: process_input dispatches it
  return 0;
}

}  // namespace chunkd::io::detail

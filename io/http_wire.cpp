// The HTTP/1.1 wire helpers the listener and its connections share: reason phrases, request
// targets, response heads, the default error body, peer names. Pure functions.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "base/text.hpp"
#include "io/http_internal.hpp"

namespace chunkd::io {

const std::string* HttpRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return &value;
  }
  return nullptr;
}

namespace detail {
namespace {

bool is_token_char(char c) {
  if (c >= 'a' && c <= 'z') return true;
  if (c >= 'A' && c <= 'Z') return true;
  if (c >= '0' && c <= '9') return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

// Headers the server writes itself: a handler's copy is skipped.
bool server_header(const std::string& name) {
  return base::iequals(name, "content-length") || base::iequals(name, "connection") ||
         base::iequals(name, "transfer-encoding") || base::iequals(name, "content-type");
}

void append_header(std::string& head, std::string_view name, std::string_view value) {
  head += name;
  head += ": ";
  head += value;
  head += "\r\n";
}

}  // namespace

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      break;
  }
  if (status >= 200 && status < 300) return "Success";
  if (status >= 400 && status < 500) return "Client Error";
  if (status >= 500 && status < 600) return "Server Error";
  return "Status";
}

std::optional<RequestTarget> split_target(const std::string& url) {
  if (url.empty() || url.size() > kMaxUrlBytes) return std::nullopt;
  http_parser_url parts;
  http_parser_url_init(&parts);
  if (http_parser_parse_url(url.data(), url.size(), 0, &parts) != 0) return std::nullopt;
  std::string_view raw_path = "/";
  if ((parts.field_set & (1u << UF_PATH)) != 0) {
    raw_path =
        std::string_view(url).substr(parts.field_data[UF_PATH].off, parts.field_data[UF_PATH].len);
  }
  RequestTarget target;
  if ((parts.field_set & (1u << UF_QUERY)) != 0) {
    target.query = url.substr(parts.field_data[UF_QUERY].off, parts.field_data[UF_QUERY].len);
  }
  // %00 is refused: a decoded path never holds a NUL.
  auto decoded = base::percent_decode(raw_path, false);
  if (!decoded || decoded->find('\0') != std::string::npos) return std::nullopt;
  target.path = std::move(*decoded);
  return target;
}

bool valid_header(const std::string& name, const std::string& value) {
  if (name.empty()) return false;
  if (!std::all_of(name.begin(), name.end(), is_token_char)) return false;
  return std::none_of(value.begin(), value.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

std::string format_response_head(const HttpResponse& response, bool close_after, bool http10,
                                 std::size_t& invalid_headers) {
  std::string head;
  head.reserve(192);
  head += "HTTP/1.1 ";
  head += std::to_string(response.status);
  head += ' ';
  head += reason_phrase(response.status);
  head += "\r\n";
  if (!response.content_type.empty() && valid_header("content-type", response.content_type)) {
    append_header(head, "Content-Type", response.content_type);
  }
  append_header(head, "Content-Length", std::to_string(response.body.size()));
  for (const auto& [name, value] : response.headers) {
    if (!valid_header(name, value)) {
      ++invalid_headers;
      continue;
    }
    if (!server_header(name)) append_header(head, name, value);
  }
  if (close_after) {
    append_header(head, "Connection", "close");
  } else if (http10) {
    append_header(head, "Connection", "keep-alive");
  }
  head += "\r\n";
  return head;
}

std::string default_error_body(int status, std::string_view message) {
  std::string escaped;
  for (char ch : message) {
    if (ch == '"' || ch == '\\') escaped.push_back('\\');
    if (static_cast<unsigned char>(ch) >= 0x20) escaped.push_back(ch);
  }
  return "{\"status\":" + std::to_string(status) + ",\"message\":\"" + escaped + "\"}";
}

std::string format_peer(const uv_tcp_t* tcp) {
  sockaddr_storage addr{};
  int len = sizeof(addr);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char ip[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(&addr);
    uv_ip4_name(in4, ip, sizeof(ip));
    return std::string(ip) + ":" + std::to_string(ntohs(in4->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    uv_ip6_name(in6, ip, sizeof(ip));
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "?";
}

}  // namespace detail
}  // namespace chunkd::io

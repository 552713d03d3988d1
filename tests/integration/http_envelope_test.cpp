// The HTTP envelope of the real chunkd binary (docs/control-api.md, "Envelopes" and "HEAD"): the
// responses the HTTP layer makes itself carry the envelope with their one code and a human
// message, are counted in chunkd_http_requests_total{route="refused"}, HEAD answers like GET
// without a body, and an empty stream id is a validation error.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <string_view>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

// One request sent as raw bytes on a fresh connection; its response.
HttpClientResponse raw(Stack& stack, const std::string& bytes) {
  HttpClient client = stack.daemon().http();
  if (!client.send_raw(bytes)) return HttpClientResponse{0, {}, {}, {}, client.error()};
  return client.read_response();
}

// Everything the server sends on a fresh connection for `bytes` until it closes it, unparsed.
std::string raw_wire(Stack& stack, const std::string& bytes) {
  HttpClient client = stack.daemon().http();
  if (!client.send_raw(bytes)) return {};
  return client.read_until_closed();
}

// The envelope with `code`, a message that is a sentence rather than an internal tag.
::testing::AssertionResult is_envelope(const HttpClientResponse& r, int status,
                                       std::string_view code) {
  if (r.status != status) {
    return ::testing::AssertionFailure()
           << "status " << r.status << " (want " << status << "): " << r.body << r.error;
  }
  Json j(r.body);
  if (j.boolean("/success") != false) return ::testing::AssertionFailure() << r.body;
  if (j.str("/error/code") != std::string(code)) {
    return ::testing::AssertionFailure() << "code (want " << code << "): " << r.body;
  }
  const auto message = j.str("/error/message");
  if (!message || message->empty()) return ::testing::AssertionFailure() << r.body;
  const std::string first_word = message->substr(0, message->find(' '));
  if (first_word.find('_') != std::string::npos || first_word.back() == ':') {
    return ::testing::AssertionFailure() << "internal prefix in the message: " << r.body;
  }
  return ::testing::AssertionSuccess();
}

double counter(const std::string& metrics, const std::string& series) {
  const auto at = metrics.find("\n" + series + " ");
  return at == std::string::npos ? 0.0 : std::stod(metrics.substr(at + series.size() + 2));
}

TEST(HttpEnvelope, ServerMadeResponsesCarryTheirOneCodeAndAreCounted) {
  Stack stack;
  stack.daemon().set("control", "max_body_bytes", "2048");
  stack.daemon().set("control", "request_timeout_ms", "300");
  ASSERT_TRUE(stack.start());
  EXPECT_TRUE(is_envelope(raw(stack, "HELLO WORLD\r\n\r\n"), 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(
      is_envelope(raw(stack, "GET /streams/a%zz HTTP/1.1\r\n\r\n"), 400, "VALIDATION_ERROR"));
  EXPECT_TRUE(
      is_envelope(raw(stack, "GET /streams HTTP/1.1\r\nHost: x\r\n"), 408, "REQUEST_TIMEOUT"));
  EXPECT_TRUE(is_envelope(
      raw(stack, "POST /streams/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 411,
      "LENGTH_REQUIRED"));
  const auto too_large = raw(stack, "POST /streams/a HTTP/1.1\r\nContent-Length: 2049\r\n\r\n");
  EXPECT_TRUE(is_envelope(too_large, 413, "PAYLOAD_TOO_LARGE"));
  EXPECT_EQ(Json(too_large.body).str("/error/message"), "the request body exceeds 2048 bytes");
  EXPECT_TRUE(is_envelope(
      raw(stack, "GET /streams HTTP/1.1\r\nX-Big: " + std::string(20000, 'v') + "\r\n\r\n"), 431,
      "HEADERS_TOO_LARGE"));
  EXPECT_TRUE(
      is_envelope(raw(stack, "GET /streams HTTP/9.9\r\n\r\n"), 505, "HTTP_VERSION_NOT_SUPPORTED"));

  const std::string m = stack.request("GET", "/metrics").body;
  const std::string family = "chunkd_http_requests_total";
  EXPECT_EQ(counter(m, family + R"({route="refused",status="400"})"), 2) << m;
  for (const char* status : {"408", "411", "413", "431", "505"}) {
    EXPECT_EQ(counter(m, family + "{route=\"refused\",status=\"" + status + "\"}"), 1)
        << status << "\n"
        << m;
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(HttpEnvelope, HeadAnswersLikeGetWithoutABody) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  ASSERT_TRUE(stack.create_file_stream("h", test_bytes(3000, 1)));
  for (const char* path : {"/streams", "/streams/h", "/streams/missing", "/healthz"}) {
    const auto get = stack.request("GET", path);
    ASSERT_NE(get.status, 0) << path << get.error;
    const std::string wire =
        raw_wire(stack, std::string("HEAD ") + path + " HTTP/1.1\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(wire.rfind("HTTP/1.1 " + std::to_string(get.status) + " ", 0), 0u) << wire;
    EXPECT_NE(wire.find("Content-Length: " + std::to_string(get.body.size()) + "\r\n"),
              std::string::npos)
        << path << ": " << wire;
    EXPECT_EQ(wire.size(), wire.find("\r\n\r\n") + 4) << path << " has a body: " << wire;
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST(HttpEnvelope, EmptyStreamIdIsAValidationError) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  for (const char* method : {"POST", "PUT", "GET", "DELETE"}) {
    const auto r = stack.request(method, "/streams/", R"({"description":"x"})");
    EXPECT_TRUE(is_envelope(r, 400, "VALIDATION_ERROR")) << method;
    EXPECT_EQ(Json(r.body).str("/error/details/0/field"), "streamId") << method << r.body;
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

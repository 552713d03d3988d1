// S3Request (io/s3_request.hpp): what the signed GET, HEAD and PUT requests share.
#include "io/s3_request.hpp"

#include <utility>

namespace chunkd::io {
namespace {

bool auth_code(std::string_view code) {
  return code == "AccessDenied" || code == "SignatureDoesNotMatch" ||
         code == "InvalidAccessKeyId" || code == "AuthorizationHeaderMalformed" ||
         code == "ExpiredToken" || code == "InvalidToken" || code == "AllAccessDisabled";
}

}  // namespace

S3Request::~S3Request() {
  if (easy != nullptr) curl_easy_cleanup(easy);
  if (headers != nullptr) curl_slist_free_all(headers);
}

bool S3Request::init(uv_loop_t* loop, void* self, const S3BucketOptions& options,
                     std::string object_key, std::string object_version) {
  bucket = options;
  key = std::move(object_key);
  version = std::move(object_version);
  url = s3_object_url(bucket, key, version);
  sigv4 = "aws:amz:" + bucket.region + ":s3";
  started_ms = uv_now(loop);
  uv_timer_init(loop, &timer);
  timer.data = self;
  easy = curl_easy_init();
  if (easy == nullptr) return false;
  CURL* e = easy;
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_AWS_SIGV4, sigv4.c_str());
  curl_easy_setopt(e, CURLOPT_USERNAME, bucket.credentials.access_key_id.c_str());
  curl_easy_setopt(e, CURLOPT_PASSWORD, bucket.credentials.secret_access_key.c_str());
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, static_cast<long>(bucket.timeout_s));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, static_cast<long>(bucket.timeout_s));
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  if (!bucket.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, bucket.ca_file.c_str());
  return true;
}

std::string S3Request::where() const {
  std::string w = "s3://" + bucket.bucket + "/" + key;
  if (!version.empty()) w += " version " + version;
  return w;
}

std::string S3Request::remote() const {
  return "bucket \"" + bucket.bucket + "\" at " + bucket.endpoint;
}

void S3Request::fail(std::error_code e, std::string d) {
  if (error) return;
  ended = true;
  error = e;
  detail = std::move(d);
}

void S3Request::begin_attempt(uv_loop_t* loop, std::uint64_t max_seconds, const char* payload_hash,
                              std::optional<std::string_view> content_type,
                              std::optional<std::string_view> if_match) {
  attempts++;
  errbuf[0] = '\0';
  error_body.clear();
  if (headers != nullptr) curl_slist_free_all(headers);
  headers = curl_slist_append(nullptr, payload_hash);
  if (content_type) {
    headers = curl_slist_append(headers, ("Content-Type: " + std::string(*content_type)).c_str());
  }
  if (!bucket.credentials.session_token.empty()) {
    std::string token = "x-amz-security-token: " + bucket.credentials.session_token;
    headers = curl_slist_append(headers, token.c_str());
  }
  if (if_match) {
    headers = curl_slist_append(headers, ("If-Match: " + std::string(*if_match)).c_str());
  }
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  std::uint64_t elapsed = uv_now(loop) - started_ms;
  std::uint64_t limit_ms = max_seconds * 1000;
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(elapsed < limit_ms ? limit_ms - elapsed : 1));
}

bool S3Request::submit(CurlLoop& curl, CurlLoop::Done done) {
  auto added = curl.add(easy, std::move(done));
  if (!added) {
    fail(S3Error::Cancelled, where() + ": " + added.error().message());
    return false;
  }
  in_transfer = true;
  return true;
}

void S3Request::stop(CurlLoop& curl) {
  if (!in_transfer) return;
  curl.remove(easy);
  in_transfer = false;
}

std::string S3Request::cause(CURLcode code) const {
  return errbuf[0] != '\0' ? std::string(errbuf) : curl_easy_strerror(code);
}

void S3Request::keep_error_body(const char* data, std::size_t n) {
  std::size_t room = kMaxErrorBody - std::min(kMaxErrorBody, error_body.size());
  error_body.append(data, std::min(room, n));
}

S3ErrorAnswer S3Request::error_answer(long status) const {
  S3ErrorAnswer a;
  a.body = parse_s3_error(error_body);
  a.said = "HTTP " + std::to_string(status);
  if (!a.body.code.empty()) a.said += " " + a.body.code;
  if (!a.body.message.empty()) a.said += ": " + a.body.message;
  return a;
}

bool S3Request::fail_common(long status, const S3ErrorAnswer& answer) {
  if (status == 403 || auth_code(answer.body.code)) {
    fail(S3Error::AccessDenied, remote() + " refused the request (" + answer.said + ")");
    return true;
  }
  if (answer.body.code == "NoSuchBucket") {
    fail(S3Error::NoSuchBucket, "no " + remote() + " (" + answer.said + ")");
    return true;
  }
  return false;
}

std::optional<std::uint64_t> S3Request::backoff_ms(uv_loop_t* loop,
                                                   std::uint64_t max_seconds) const {
  std::uint64_t elapsed = uv_now(loop) - started_ms;
  if (attempts > bucket.retries || elapsed >= max_seconds * 1000) return std::nullopt;
  return std::min<std::uint64_t>(250u << std::min(attempts - 1, 5u), 8000);
}

std::string S3Request::gave_up(const std::string& why, const std::string& note) const {
  return where() + " at " + bucket.endpoint + ": " + why + " (after " + std::to_string(attempts) +
         " attempts" + note + ")";
}

void S3Request::close_timer(uv_close_cb closed) {
  closing = true;
  uv_timer_stop(&timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), closed);
}

}  // namespace chunkd::io

// Private to io/: what one signed request of io::S3Client (GET, io/s3_client.cpp) and of
// io::S3Uploader (HEAD and PUT, io/s3_upload.cpp) share. Not part of the contract; engine code
// includes io/s3_client.hpp and io/s3_upload.hpp.
//
// S3Request holds the curl easy handle with what every request sets (the URL, http/https only,
// SigV4 with the bucket's credentials, the CA file, the connect and low-speed timeouts), the
// headers of an attempt (the payload hash, then Content-Type, the session token and If-Match when
// given), the bound of the whole request over its attempts, the retry timer and its back-off
// (250 ms, 500 ms, ... capped at 8 s), the outcome (the first error wins), and the reading of an
// S3 error answer. Its owner keeps what is its own: the body, what an answer means, the result.
//
// Ownership: the owner (S3Client, S3Uploader) holds each request in a list of unique_ptr and frees
// it only from the timer's close callback (close_timer), once no transfer and no file I/O runs.
// Thread: loop thread only.
#pragma once

#include <curl/curl.h>
#include <uv.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "base/assert.hpp"
#include "io/curl_loop.hpp"
#include "io/s3_client.hpp"
#include "io/s3_text.hpp"

namespace chunkd::io {

// SHA-256 of the empty body: GET and HEAD carry none.
inline constexpr const char* kS3EmptyBodySha256 =
    "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// An error answer: its XML body's words and "HTTP <status>[ <Code>][: <Message>]".
struct S3ErrorAnswer {
  S3ErrorBody body;
  std::string said;
};

struct S3Request {
  static constexpr std::size_t kMaxErrorBody = 16 << 10;

  S3BucketOptions bucket;
  std::string key;
  std::string version;  // "" : none (the latest)
  std::string url;
  std::string sigv4;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  char errbuf[CURL_ERROR_SIZE] = {};
  uv_timer_t timer{};  // the back-off between attempts; timer.data is the owner's request
  std::uint64_t started_ms = 0;
  std::uint32_t attempts = 0;
  bool in_transfer = false;
  std::string error_body;  // a non-2xx answer's body, at most kMaxErrorBody bytes

  bool ended = false;  // the outcome is decided: finish once nothing runs any more
  bool closing = false;
  std::error_code error;
  std::string detail;

  S3Request() = default;
  ~S3Request();
  S3Request(const S3Request&) = delete;
  S3Request& operator=(const S3Request&) = delete;

  // Fills the request in, starts its clock, initialises the timer (its data: `self`, the owner's
  // request) and creates the easy handle; false (easy stays null) when curl cannot.
  bool init(uv_loop_t* loop, void* self, const S3BucketOptions& options, std::string object_key,
            std::string object_version);

  std::string where() const;   // "s3://bucket/key[ version v]"
  std::string remote() const;  // "bucket \"b\" at <endpoint>"
  void fail(std::error_code e, std::string d);

  // A new attempt: counted, the last one's error text and body forgotten, its headers set (those
  // not given left out), curl's time bound the rest of `max_seconds` since the request began.
  void begin_attempt(uv_loop_t* loop, std::uint64_t max_seconds, const char* payload_hash,
                     std::optional<std::string_view> content_type,
                     std::optional<std::string_view> if_match);
  // Hands the easy handle to `curl`; false (the request failed with Cancelled) when it refuses.
  bool submit(CurlLoop& curl, CurlLoop::Done done);
  // Stops the transfer, if one runs, without its callback.
  void stop(CurlLoop& curl);

  // curl's words for how the attempt ended.
  std::string cause(CURLcode code) const;
  void keep_error_body(const char* data, std::size_t n);
  S3ErrorAnswer error_answer(long status) const;
  // AccessDenied (403 or a credentials code) or NoSuchBucket; false (nothing done) for the rest.
  bool fail_common(long status, const S3ErrorAnswer& answer);

  // The wait before the next attempt; nullopt when the retries or the time are spent.
  std::optional<std::uint64_t> backoff_ms(uv_loop_t* loop, std::uint64_t max_seconds) const;
  // The detail of a request that gives up: "<where> at <endpoint>: <why> (after N attempts<note>)".
  std::string gave_up(const std::string& why, const std::string& note) const;

  // Stops the retry timer and closes it; `closed` finishes the request (frees it).
  void close_timer(uv_close_cb closed);
};

// Takes `r` out of its owner's list (the caller frees it).
template <class R>
std::unique_ptr<R> take_request(std::list<std::unique_ptr<R>>& list, const R* r) {
  auto it = std::find_if(list.begin(), list.end(), [&](const auto& p) { return p.get() == r; });
  CHUNKD_ASSERT(it != list.end());
  std::unique_ptr<R> owned = std::move(*it);
  list.erase(it);
  return owned;
}

// Ends every request of `list` with Cancelled and calls `finish` (the owner's maybe_finish) on it.
template <class R, class Finish>
void cancel_requests(std::list<std::unique_ptr<R>>& list, CurlLoop& curl, Finish finish) {
  std::vector<R*> all;
  for (auto& r : list) all.push_back(r.get());
  for (R* r : all) {
    r->fail(S3Error::Cancelled, r->where() + ": chunkd is shutting down");
    r->stop(curl);
    finish(*r);
  }
}

}  // namespace chunkd::io

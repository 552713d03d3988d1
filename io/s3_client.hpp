// S3Client: fetches one object of an S3-compatible bucket (the hosted service, MinIO, Ceph, ...)
// into an open file, on the libuv loop through io::CurlLoop.
//
// One streaming GET per object, signed with SigV4 (libcurl's CURLOPT_AWS_SIGV4, plus the
// x-amz-content-sha256 header of an empty body, which libcurl 7.88 leaves to the caller).
// `version` adds ?versionId=. The body is written at its offsets into the caller's file with
// uv_fs_write (at most kMaxBufferedBytes buffered per fetch: beyond, the transfer is paused until
// the disk catches up), and handed to the caller's S3Sink::bytes in offset order as it is accepted.
// Before the first byte is written the response's size is checked against `max_bytes`, then given
// to S3Sink::sized (the transfer waits for its answer, e.g. a free-space check). A dropped
// connection or a timeout is retried (at most `retries` times, with back-off 250 ms, 500 ms, ...
// capped at 8 s) by a Range request that continues where the file ends, guarded by If-Match with
// the first answer's ETag (the object must not change between parts); a 5xx answer is retried the
// same way. The whole fetch is bounded by kMaxFetchSeconds.
//
// Errors (S3Error, the detail names the bucket, key or version and the server's own words): no
// such bucket, key or version; access denied (403: a wrong key, secret or signature, a policy);
// unreachable (connect, DNS, TLS, 5xx after the retries); timed out (nothing received for
// `timeout_s`, or the whole-fetch bound); too large; a malformed answer; a write error (the errno
// code, so a full disk is recognisable); cancelled.
//
// Thread: loop thread only. cancel_all() before destroying the client.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <system_error>

#include "io/curl_loop.hpp"
#include "io/s3_text.hpp"

namespace chunkd::io {

struct S3BucketOptions {
  std::string endpoint;  // "http://host:port" or "https://host" (no path)
  std::string region;
  std::string bucket;               // the remote bucket name
  bool virtual_addressing = false;  // bucket.host/key instead of host/bucket/key
  S3Credentials credentials;
  std::string ca_file;  // "" : the system's CAs
  std::uint32_t timeout_s = 30;
  std::uint32_t retries = 3;
};

enum class S3Error {
  NoSuchBucket = 1,
  NoSuchKey,
  NoSuchVersion,
  AccessDenied,
  Unreachable,
  TimedOut,
  TooLarge,
  BadResponse,
  Cancelled,
};
const std::error_category& s3_category();
std::error_code make_error_code(S3Error e);

struct S3Object {
  std::uint64_t size = 0;
  std::string etag;        // as the server sent it (quotes included)
  std::string version_id;  // "" when the bucket is not versioned
  std::uint32_t attempts = 0;
};

// Where S3Client::fetch puts the object.
struct S3Sink {
  int fd = -1;  // a regular file, written at the object's offsets from 0 (not closed)
  // Once the size is known (the first answer's headers), before any byte is written: the fetch
  // waits until `go` is called, which must be from a later loop callback; an error (an errno or
  // the caller's own code) ends the fetch with that error. Empty: go on at once.
  std::function<void(std::uint64_t size, std::function<void(std::error_code)> go)> sized;
  // Each byte of the object exactly once, in offset order, when accepted. May be empty.
  std::function<void(const char* data, std::size_t n)> bytes;
};

struct S3FetchResult {
  std::error_code error;  // S3Error, an errno code from writing the file, or S3Sink::sized's
  std::string detail;     // for an operator; names the bucket/key/version and the server's words
  S3Object object;        // size: the object's size when known (also for TooLarge)
};

// The URL of `key` (and `version`) in `bucket`: path or virtual-host style, key URI-encoded.
std::string s3_object_url(const S3BucketOptions& bucket, std::string_view key,
                          std::string_view version);

// One signed HEAD of the bucket: reachable, existing, and the credentials accepted. Blocks for at
// most `timeout_s`: for `chunkd --check --probe`, never on the loop. The error names the bucket.
Expected<void, std::string> s3_probe_bucket(const S3BucketOptions& bucket);

class S3Client {
 public:
  using Done = std::function<void(S3FetchResult result)>;
  static constexpr std::size_t kMaxBufferedBytes = 1u << 20;
  static constexpr std::uint64_t kMaxFetchSeconds = 3600;

  S3Client(uv_loop_t* loop, CurlLoop& curl);
  ~S3Client();
  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  // Fetches `key` (`version`: "" for the latest) into `sink`. `done` runs once, on the loop
  // thread, never inside fetch().
  void fetch(const S3BucketOptions& bucket, std::string key, std::string version, S3Sink sink,
             std::uint64_t max_bytes, Done done);

  // Ends every fetch with Cancelled (each `done` runs once its in-flight write has finished).
  void cancel_all();
  std::size_t fetches() const { return fetches_.size(); }

  // Bytes written to files so far by every fetch (for metrics).
  std::uint64_t bytes_fetched() const { return bytes_fetched_; }

 private:
  struct Fetch;
  void start_attempt(Fetch& f);
  void attempt_done(Fetch& f, CURLcode code);
  void retry_or_fail(Fetch& f, S3Error error, std::string detail);
  void end(Fetch& f, std::error_code error, std::string detail);
  void maybe_finish(Fetch& f);
  void sized(Fetch& f, std::error_code error);

  uv_loop_t* loop_;
  CurlLoop& curl_;
  std::list<std::unique_ptr<Fetch>> fetches_;
  std::uint64_t bytes_fetched_ = 0;
};

}  // namespace chunkd::io

namespace std {
template <>
struct is_error_code_enum<chunkd::io::S3Error> : true_type {};
}  // namespace std

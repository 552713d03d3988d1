// S3Uploader: the small signed requests that write to an S3-compatible bucket (the shared content
// bucket, engine/content_bucket.hpp): HEAD of an object (is it there, how large) and PUT of an
// object whose body streams from an open file or comes from memory. On the libuv loop through
// io::CurlLoop, signed like io::S3Client's fetches (CURLOPT_AWS_SIGV4).
//
// PUT body: "x-amz-content-sha256: UNSIGNED-PAYLOAD" (libcurl 7.88 signs the header's value as the
// payload hash and leaves the body unhashed; S3, MinIO and moto accept it; the content's integrity
// is chunkd's own XXH3-128 digest, checked again by every reader). A file body is read with
// uv_fs_read, at most two kChunkBytes buffers per upload: the transfer pauses until the disk
// catches up, so the loop never blocks on the file. Content-Length is the `size` given; a file
// shorter than that fails the upload (BadResponse, "the file shrank"). libcurl's own
// "Expect: 100-continue" stays: removing it with an empty "Expect:" header breaks libcurl 7.88's
// signature (it signs the empty header it then does not send).
//
// Retries: a dropped connection, a timeout (nothing moving for `timeout_s`) or a 5xx answer is
// retried from the first byte (at most `retries` times, back-off 250 ms, 500 ms, ... capped at
// 8 s); each request is bounded by kMaxRequestSeconds in all. 403 is AccessDenied, a missing bucket
// NoSuchBucket, anything else unexpected BadResponse; the detail names the bucket, the key and the
// server's words. HEAD of a missing key is no error: `exists` is false.
//
// Thread: loop thread only. cancel_all() before destroying the uploader.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <system_error>

#include "io/curl_loop.hpp"
#include "io/s3_client.hpp"

namespace chunkd::io {

struct S3HeadResult {
  std::error_code error;  // S3Error
  std::string detail;
  bool exists = false;
  std::uint64_t size = 0;  // Content-Length, when it exists
};

struct S3PutResult {
  std::error_code error;  // S3Error, or an errno code from reading the file
  std::string detail;
  std::uint32_t attempts = 0;
};

// What a PUT sends: `size` bytes of the open regular file `fd` (from offset 0; not closed), or
// `data` when fd < 0.
struct S3Body {
  int fd = -1;
  std::uint64_t size = 0;
  std::string data;
};

class S3Uploader {
 public:
  static constexpr std::size_t kChunkBytes = 1u << 20;
  static constexpr std::uint64_t kMaxRequestSeconds = 3600;

  S3Uploader(uv_loop_t* loop, CurlLoop& curl);
  ~S3Uploader();
  S3Uploader(const S3Uploader&) = delete;
  S3Uploader& operator=(const S3Uploader&) = delete;

  // `done` runs once, on the loop thread, never inside head()/put().
  void head(const S3BucketOptions& bucket, std::string key, std::function<void(S3HeadResult)> done);
  void put(const S3BucketOptions& bucket, std::string key, S3Body body,
           std::function<void(S3PutResult)> done);

  // Ends every request with Cancelled (each `done` runs once its file read has finished).
  void cancel_all();
  std::size_t requests() const { return requests_.size(); }
  std::uint64_t bytes_sent() const { return bytes_sent_; }  // PUT body bytes handed to curl

 private:
  struct Request;
  Request& make(const S3BucketOptions& bucket, std::string key);
  void start_attempt(Request& r);
  void attempt_done(Request& r, CURLcode code);
  void retry_or_fail(Request& r, S3Error error, const std::string& detail);
  void maybe_finish(Request& r);

  uv_loop_t* loop_;
  CurlLoop& curl_;
  std::list<std::unique_ptr<Request>> requests_;
  std::uint64_t bytes_sent_ = 0;
};

}  // namespace chunkd::io

// S3Source: the S3 side of creating or updating a stream (engine/control_service.hpp): fetches an
// object of a configured S3 bucket (engine/s3_bucket.hpp) into an unnamed temporary file under
// <data_dir>/tmp, which the caller then ingests into the ContentStore like a local file, and says
// what a failed fetch means to the control API's client.
//
// The temporary file is created and unlinked at once on the libuv thread pool, so it exists only
// as a descriptor: a failed fetch, a crash or a shutdown leave nothing behind. The HTTP client
// (io::CurlLoop, io::S3Client) is made on the first fetch.
//
// Metrics: chunkd_s3_fetched_bytes_total, chunkd_s3_fetches_total{result} (ok, no_such_bucket,
// no_such_key, no_such_version, access_denied, unreachable, timed_out, too_large, bad_response,
// write_error, cancelled), chunkd_s3_fetch_seconds (histogram of successful fetches).
//
// Thread: loop thread only. close() before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "engine/metrics.hpp"
#include "engine/s3_bucket.hpp"
#include "io/curl_loop.hpp"
#include "io/http_server.hpp"
#include "io/s3_client.hpp"

namespace chunkd::engine {

struct S3Fetched {
  int fd = -1;  // the fetched object (read/write, unlinked): the caller's on success
  io::S3FetchResult result;
};

class S3Source {
 public:
  using Done = std::function<void(S3Fetched fetched)>;

  // `metrics` may be null.
  S3Source(uv_loop_t* loop, Metrics* metrics);
  ~S3Source();
  S3Source(const S3Source&) = delete;
  S3Source& operator=(const S3Source&) = delete;

  // Fetches `key` (`version`: "" for the latest) of `bucket` into a new temporary file under
  // `data_dir`/tmp, refusing an object over `max_bytes`. `done` runs once, from a later loop
  // callback (inside fetch() only when the thread pool refuses work, which a live loop never does).
  void fetch(const S3Bucket& bucket, std::string key, std::string version,
             const std::string& data_dir, std::uint64_t max_bytes, Done done);

  std::size_t fetches_in_progress() const { return in_progress_; }

  // Cancels every fetch (their `done` run with Cancelled), closes the HTTP client, then `done`.
  void close(std::function<void()> done);

 private:
  struct Job;
  void fetched(std::unique_ptr<Job> job, io::S3FetchResult result);
  void maybe_closed();

  uv_loop_t* loop_;
  Metrics* metrics_;
  std::unique_ptr<io::CurlLoop> curl_;
  std::unique_ptr<io::S3Client> client_;
  std::size_t in_progress_ = 0;
  bool closing_ = false;
  std::function<void()> close_done_;
  Counter* fetched_bytes_ = nullptr;
  Histogram* fetch_seconds_ = nullptr;
  std::uint64_t counted_bytes_ = 0;
};

// The control API's answer to a failed fetch of files[i] from local bucket `bucket_name`:
// no such bucket/key/version: 400 VALIDATION_ERROR naming the field; refused credentials: 502
// SOURCE_ACCESS_DENIED naming the bucket; unreachable or timing out: 503 with the cause; too large:
// 422 LIMIT_EXCEEDED with both sizes; a full store: 507; shutting down: 503.
io::HttpResponse s3_fetch_error(const io::S3FetchResult& result, std::size_t i,
                                const std::string& bucket_name, std::uint64_t max_bytes);

}  // namespace chunkd::engine

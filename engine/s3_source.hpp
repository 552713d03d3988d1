// S3Source: the S3 side of creating or updating a stream (engine/control_service.hpp): fetches an
// object of a configured S3 bucket (engine/s3_bucket.hpp) straight into the content store, and
// says what a failed fetch means to the control API's client.
//
// The body goes once to disk: into a temp file of the store (ContentStore::begin_write), hashed on
// the loop as it arrives (XXH3-128 and the per-extent manifest, in offset order: a resumed Range
// continues at the end), then fsync'd and linked to its digest name like any ingest. Before the
// first byte is written the object's size is checked against storage.max_file_mib and the free
// space under data_dir. A failed fetch, a crash or a shutdown leave no temp file behind (the store
// removes it, or empties tmp at start-up). The HTTP client (io::CurlLoop, io::S3Client) is made on
// the first fetch.
//
// Metrics: chunkd_s3_fetched_bytes_total, chunkd_s3_fetches_total{result} (ok, no_such_bucket,
// no_such_key, no_such_version, access_denied, unreachable, timed_out, too_large, bad_response,
// storage_full, write_error, cancelled), chunkd_s3_fetch_seconds (histogram of successful fetches),
// chunkd_s3_fetches_in_progress.
//
// Thread: loop thread only. close() before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "engine/content_store.hpp"
#include "engine/metrics.hpp"
#include "engine/s3_bucket.hpp"
#include "io/curl_loop.hpp"
#include "io/http_server.hpp"
#include "io/s3_client.hpp"

namespace chunkd::engine {

struct S3Fetched {
  io::S3FetchResult result;     // the fetch's outcome: an error here is s3_fetch_error's
  std::error_code store_error;  // else the store's (refused size, full disk, closing)
  IngestResult stored;          // success: the content, its digest pinned (the caller unpins);
                                // a store error: the sizes it saw
};

class S3Source {
 public:
  using Done = std::function<void(S3Fetched fetched)>;

  // `metrics` may be null.
  S3Source(uv_loop_t* loop, Metrics* metrics);
  ~S3Source();
  S3Source(const S3Source&) = delete;
  S3Source& operator=(const S3Source&) = delete;

  // Fetches `key` (`version`: "" for the latest) of `bucket` into `store` (refusing an object
  // over its max_file_bytes); `progress` (may be null) follows the bytes. `done` runs once, from a
  // later loop callback (inside fetch() only when the store is closing).
  void fetch(const S3Bucket& bucket, std::string key, std::string version, ContentStore& store,
             std::shared_ptr<IngestProgress> progress, Done done);

  std::size_t fetches_in_progress() const { return in_progress_; }

  // Cancels every fetch (their `done` run with Cancelled), closes the HTTP client, then `done`.
  void close(std::function<void()> done);

 private:
  struct Job;
  void start(Job* job);
  void fetched(Job* job, io::S3FetchResult result);
  void report(Job* job);
  void maybe_closed();

  uv_loop_t* loop_;
  Metrics* metrics_;
  std::unique_ptr<io::CurlLoop> curl_;
  std::unique_ptr<io::S3Client> client_;
  std::size_t in_progress_ = 0;
  bool closing_ = false;
  std::function<void()> close_done_;
  Histogram* fetch_seconds_ = nullptr;
};

// The control API's answer to a failed fetch of files[i] from local bucket `bucket_name`:
// no such bucket/key/version: 400 VALIDATION_ERROR naming the field; refused credentials: 502
// SOURCE_ACCESS_DENIED naming the bucket; unreachable or timing out: 503 with the cause; too large:
// 422 LIMIT_EXCEEDED with both sizes; a full store: 507; shutting down: 503.
io::HttpResponse s3_fetch_error(const io::S3FetchResult& result, std::size_t i,
                                const std::string& bucket_name, std::uint64_t max_bytes);

}  // namespace chunkd::engine

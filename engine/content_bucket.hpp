// ContentBucket: the content every instance of a cluster shares (storage.content_bucket, an s3
// bucket entry of [buckets]). The instance that ingests a file writes it there once; any instance
// missing a blob a stream references fills its local store from it on first use.
//
// Layout in the bucket, content-addressed (the digest is the store's XXH3-128, 32 hex digits):
//   blobs/<digest>      the file's bytes, exactly
//   manifests/<digest>  text: "chunkd-manifest 1\n", "size <bytes>\n", "extent_bytes <n>\n", then
//                       one line per extent with its XXH3-64 in 16 lowercase hex digits
// The registry (local or shared) keeps each file's digest, size and manifest; the manifest object
// is for operators and tools, chunkd never reads it back. Objects under these names never change:
// a blob with the right size is the right blob (a reader verifies the digest anyway).
//
// Upload (upload(), before a create or update is acknowledged): HEAD manifests/<digest>: present
// with the expected length → nothing to do ("present"). Else HEAD blobs/<digest>: absent or of
// another size → PUT it, streamed from the store's file; then PUT the manifest (last, so a manifest
// means its blob is complete). Concurrent uploads of one digest share one; at most
// `max_uploads` digests upload at once, the rest queue. A failed upload fails `done` with a detail
// naming the bucket; the caller then does not commit. A PUT is atomic on S3: a failure leaves no
// partial object; a blob uploaded before the manifest failed stays (content-addressed, reused by
// the next upload of that content).
//
// Fill (fill(), from the block cache's missing_blob hook): GET blobs/<digest> straight into the
// store (ContentStore::begin_write, as engine/s3_source.hpp), refusing an object of another size,
// hashed as it arrives; a content that is not `digest` is DigestMismatch and nothing is kept. One
// fill per digest: later callers join it. At most `max_fills` run at once, the rest queue. While a
// blob fills, device reads of it are answered RequestThrottled (the block cache's transient
// error) and devices retry; once it is stored they are served from it. A failed fill is
// remembered for kFailedFillMs: meanwhile fill() says false (devices get InternalError, as for any
// missing blob), then the next read tries again.
//
// Permissions: s3:GetObject, s3:PutObject and s3:ListBucket on the bucket (without ListBucket,
// S3 answers a HEAD of a missing object 403, which fails every first upload as access_denied).
//
// Metrics: chunkd_content_bucket_uploads_total{result} (uploaded, present, or the error kind),
// chunkd_content_bucket_fills_total{result} (ok, digest_mismatch, or the error kind),
// chunkd_content_bucket_uploaded_bytes_total, chunkd_content_bucket_filled_bytes_total,
// chunkd_content_bucket_uploads_in_progress, chunkd_content_bucket_fills_in_progress.
// Error kinds: no_such_bucket, no_such_key, access_denied, unreachable, timed_out, too_large,
// bad_response, cancelled, storage_full, file_error.
//
// Thread: loop thread only. close() before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "engine/content_store.hpp"
#include "engine/metrics.hpp"
#include "io/curl_loop.hpp"
#include "io/s3_client.hpp"
#include "io/s3_upload.hpp"

namespace chunkd::engine {

struct ContentBucketOptions {
  std::string name;  // the bucket entry's name (storage.content_bucket), for messages
  io::S3BucketOptions remote;
  std::size_t max_uploads = 4;  // digests uploading at once
  std::size_t max_fills = 4;    // digests filling at once
};

class ContentBucket {
 public:
  using Done = std::function<void(std::error_code error, const std::string& detail)>;
  static constexpr std::uint64_t kFailedFillMs = 5000;

  // `metrics` may be null.
  ContentBucket(uv_loop_t* loop, ContentStore& store, Metrics* metrics,
                ContentBucketOptions options);
  ~ContentBucket();
  ContentBucket(const ContentBucket&) = delete;
  ContentBucket& operator=(const ContentBucket&) = delete;

  // Makes sure the bucket holds `content` (stored and pinned in the store, which keeps it while
  // the upload runs). `done` runs once, from a later loop callback.
  void upload(const IngestResult& content, Done done);

  // Starts or joins the fill of blob `digest` of `size` bytes into the store; `done` (may be
  // empty) runs once it ends, from a later loop callback. False (nothing started, `done` dropped)
  // while closing or while a failed fill of it is remembered.
  bool fill(const std::string& digest, std::uint64_t size, Done done = {});

  // A reload: the bucket's settings (rotated credentials, endpoint) for later requests; those in
  // progress keep theirs.
  void set_remote(io::S3BucketOptions remote) { options_.remote = std::move(remote); }

  std::size_t uploads_in_progress() const { return uploads_.size(); }
  std::size_t fills_in_progress() const { return fills_.size(); }
  const std::string& name() const { return options_.name; }

  // The manifest object's text for `content` (see above).
  static std::string manifest_text(const IngestResult& content);
  static std::string blob_key(const std::string& digest) { return "blobs/" + digest; }
  static std::string manifest_key(const std::string& digest) { return "manifests/" + digest; }

  // Cancels every upload and fill (their `done` run with Cancelled), closes the HTTP client, then
  // `done`.
  void close(std::function<void()> done);

 private:
  struct Upload;
  struct Fill;
  void ensure_client();
  void start_upload(Upload& u);
  void upload_blob(Upload& u);
  void put_manifest(Upload& u);
  void upload_done(Upload& u, std::error_code error, std::string detail, const char* result);
  void start_fill(Fill& f);
  void fetched(Fill& f, io::S3FetchResult result);
  void fill_done(Fill& f, std::error_code error, std::string detail);
  void start_queued();
  void maybe_closed();

  uv_loop_t* loop_;
  ContentStore& store_;
  Metrics* metrics_;
  ContentBucketOptions options_;
  std::unique_ptr<io::CurlLoop> curl_;
  std::unique_ptr<io::S3Client> client_;
  std::unique_ptr<io::S3Uploader> uploader_;
  std::map<std::string, std::unique_ptr<Upload>> uploads_;  // by digest
  std::map<std::string, std::unique_ptr<Fill>> fills_;      // by digest
  std::deque<std::string> queued_uploads_, queued_fills_;
  std::size_t running_uploads_ = 0, running_fills_ = 0;
  Counter* uploaded_bytes_ = nullptr;
  Counter* filled_bytes_ = nullptr;
  std::map<std::string, std::uint64_t> failed_fills_;  // digest → when (uv_now) it failed
  bool closing_ = false;
  std::function<void()> close_done_;
};

}  // namespace chunkd::engine

#include "engine/content_bucket.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <utility>

#include "base/assert.hpp"
#include "io/log.hpp"

namespace chunkd::engine {
namespace {

constexpr const char* kTag = "content";

const char* error_kind(const std::error_code& e) {
  if (e == IngestError::DigestMismatch) return "digest_mismatch";
  if (storage_full(e) || e == IngestError::TooLarge) return "storage_full";
  if (e.category() != io::s3_category()) return "file_error";
  switch (static_cast<io::S3Error>(e.value())) {
    case io::S3Error::NoSuchBucket:
      return "no_such_bucket";
    case io::S3Error::NoSuchKey:
    case io::S3Error::NoSuchVersion:
      return "no_such_key";
    case io::S3Error::AccessDenied:
      return "access_denied";
    case io::S3Error::Unreachable:
      return "unreachable";
    case io::S3Error::TimedOut:
      return "timed_out";
    case io::S3Error::TooLarge:
      return "too_large";
    case io::S3Error::BadResponse:
      return "bad_response";
    case io::S3Error::Cancelled:
      return "cancelled";
  }
  return "bad_response";
}

}  // namespace

struct ContentBucket::Upload {
  ContentBucket* owner = nullptr;
  std::string digest;
  std::uint64_t size = 0;
  std::string manifest;
  std::vector<Done> waiters;
  uv_fs_t open_req{};
};

struct ContentBucket::Fill {
  std::string digest;
  std::uint64_t size = 0;
  std::vector<Done> waiters;
  IngestWriter writer;
  std::string store_detail;  // why the store refused the object, when it did
};

ContentBucket::ContentBucket(uv_loop_t* loop, ContentStore& store, Metrics* metrics,
                             ContentBucketOptions options)
    : loop_(loop), store_(store), metrics_(metrics), options_(std::move(options)) {
  CHUNKD_ASSERT(options_.max_uploads > 0 && options_.max_fills > 0);
  if (metrics_ == nullptr) return;
  uploaded_bytes_ = &metrics_->counter("chunkd_content_bucket_uploaded_bytes_total",
                                       "Blob and manifest bytes written to the content bucket.");
  filled_bytes_ = &metrics_->counter("chunkd_content_bucket_filled_bytes_total",
                                     "Bytes fetched from the content bucket into the store.");
  metrics_->gauge_fn("chunkd_content_bucket_uploads_in_progress",
                     "Blobs being written to the content bucket (or queued).", "",
                     [this] { return static_cast<double>(uploads_.size()); });
  metrics_->gauge_fn("chunkd_content_bucket_fills_in_progress",
                     "Blobs being filled from the content bucket (or queued).", "",
                     [this] { return static_cast<double>(fills_.size()); });
}

ContentBucket::~ContentBucket() {
  CHUNKD_ASSERT(uploads_.empty() && fills_.empty() && (!curl_ || closing_));
}

std::string ContentBucket::manifest_text(const IngestResult& content) {
  std::string text = "chunkd-manifest 1\nsize " + std::to_string(content.size_bytes) +
                     "\nextent_bytes " + std::to_string(content.extent_bytes) + "\n";
  char line[20];
  for (std::uint64_t h : content.manifest) {
    std::snprintf(line, sizeof line, "%016" PRIx64 "\n", h);
    text += line;
  }
  return text;
}

void ContentBucket::ensure_client() {
  if (client_) return;
  curl_ = std::make_unique<io::CurlLoop>(loop_);
  client_ = std::make_unique<io::S3Client>(loop_, *curl_);
  uploader_ = std::make_unique<io::S3Uploader>(loop_, *curl_);
}

// ---- upload ----

void ContentBucket::upload(const IngestResult& content, Done done) {
  if (closing_) {
    done(io::S3Error::Cancelled, "chunkd is shutting down");
    return;
  }
  auto it = uploads_.find(content.digest);
  if (it != uploads_.end()) {
    it->second->waiters.push_back(std::move(done));
    return;
  }
  auto owned = std::make_unique<Upload>();
  Upload& u = *owned;
  u.owner = this;
  u.digest = content.digest;
  u.size = content.size_bytes;
  u.manifest = manifest_text(content);
  u.waiters.push_back(std::move(done));
  uploads_.emplace(u.digest, std::move(owned));
  if (running_uploads_ < options_.max_uploads) {
    start_upload(u);
  } else {
    queued_uploads_.push_back(u.digest);
  }
}

void ContentBucket::start_upload(Upload& u) {
  running_uploads_++;
  ensure_client();
  uploader_->head(options_.remote, manifest_key(u.digest), [this, &u](io::S3HeadResult m) {
    if (m.error) {
      upload_done(u, m.error, std::move(m.detail), nullptr);
    } else if (m.exists && m.size == u.manifest.size()) {
      upload_done(u, {}, {}, "present");
    } else {
      uploader_->head(options_.remote, blob_key(u.digest), [this, &u](io::S3HeadResult b) {
        if (b.error) {
          upload_done(u, b.error, std::move(b.detail), nullptr);
        } else if (b.exists && b.size == u.size) {
          put_manifest(u);  // the blob is there (a manifest upload failed before)
        } else {
          upload_blob(u);
        }
      });
    }
  });
}

void ContentBucket::upload_blob(Upload& u) {
  if (closing_) {
    upload_done(u, io::S3Error::Cancelled, "chunkd is shutting down", nullptr);
    return;
  }
  const std::string path = blob_path(store_.options().data_dir, u.digest);
  u.open_req.data = &u;
  int rc = uv_fs_open(loop_, &u.open_req, path.c_str(), O_RDONLY | O_CLOEXEC, 0, [](uv_fs_t* req) {
    Upload& up = *static_cast<Upload*>(req->data);
    ContentBucket& self = *up.owner;
    const auto fd = static_cast<int>(req->result);
    uv_fs_req_cleanup(req);
    if (fd < 0) {
      self.upload_done(up, std::error_code(-fd, std::generic_category()),
                       "cannot open the stored blob " + up.digest, nullptr);
      return;
    }
    if (self.closing_) {
      ::close(fd);
      self.upload_done(up, io::S3Error::Cancelled, "chunkd is shutting down", nullptr);
      return;
    }
    io::S3Body body{fd, up.size, {}};
    self.uploader_->put(self.options_.remote, blob_key(up.digest), std::move(body),
                        [&self, &up, fd](io::S3PutResult r) {
                          ::close(fd);
                          if (!r.error && self.uploaded_bytes_ != nullptr) {
                            self.uploaded_bytes_->inc(up.size);
                          }
                          if (r.error) {
                            self.upload_done(up, r.error, std::move(r.detail), nullptr);
                          } else {
                            self.put_manifest(up);
                          }
                        });
  });
  if (rc != 0) {
    upload_done(u, std::error_code(-rc, std::generic_category()), "cannot open the stored blob",
                nullptr);
  }
}

void ContentBucket::put_manifest(Upload& u) {
  if (closing_) {
    upload_done(u, io::S3Error::Cancelled, "chunkd is shutting down", nullptr);
    return;
  }
  io::S3Body body{-1, 0, u.manifest};
  uploader_->put(options_.remote, manifest_key(u.digest), std::move(body),
                 [this, &u](io::S3PutResult r) {
                   if (r.error) {
                     upload_done(u, r.error, std::move(r.detail), nullptr);
                   } else {
                     if (uploaded_bytes_ != nullptr) uploaded_bytes_->inc(u.manifest.size());
                     upload_done(u, {}, {}, "uploaded");
                   }
                 });
}

// `result`: the label of a success ("uploaded", "present"); null for an error.
void ContentBucket::upload_done(Upload& u, std::error_code error, std::string detail,
                                const char* result) {
  const char* label = error ? error_kind(error) : result;
  if (metrics_ != nullptr) {
    metrics_
        ->counter("chunkd_content_bucket_uploads_total",
                  "Blobs written to (or found in) the content bucket, by result.",
                  std::string("result=\"") + label + "\"")
        .inc();
  }
  std::string message;
  if (error) {
    message = "content bucket \"" + options_.name + "\": " + detail + " (" + error.message() + ")";
    LOG_WARN(kTag, "upload of blob %s failed: %s", u.digest.c_str(), message.c_str());
  } else {
    LOG_INFO(kTag, "blob %s (%llu bytes) %s content bucket \"%s\"", u.digest.c_str(),
             static_cast<unsigned long long>(u.size),
             label == std::string_view("present") ? "already in" : "written to",
             options_.name.c_str());
  }
  running_uploads_--;
  std::vector<Done> waiters = std::move(u.waiters);
  uploads_.erase(u.digest);  // `u` is gone from here on
  for (auto& w : waiters) w(error, message);
  start_queued();
  maybe_closed();
}

// ---- fill ----

bool ContentBucket::fill(const std::string& digest, std::uint64_t size, Done done) {
  if (closing_) return false;
  auto failed = failed_fills_.find(digest);
  if (failed != failed_fills_.end()) {
    if (uv_now(loop_) - failed->second < kFailedFillMs) return false;
    failed_fills_.erase(failed);
  }
  auto it = fills_.find(digest);
  if (it != fills_.end()) {
    if (done) it->second->waiters.push_back(std::move(done));
    return true;
  }
  auto owned = std::make_unique<Fill>();
  Fill& f = *owned;
  f.digest = digest;
  f.size = size;
  if (done) f.waiters.push_back(std::move(done));
  fills_.emplace(digest, std::move(owned));
  if (running_fills_ < options_.max_fills) {
    start_fill(f);
  } else {
    queued_fills_.push_back(digest);
  }
  return true;
}

void ContentBucket::start_fill(Fill& f) {
  running_fills_++;
  LOG_INFO(kTag, "blob %s (%llu bytes) is not in the store: filling it from content bucket \"%s\"",
           f.digest.c_str(), static_cast<unsigned long long>(f.size), options_.name.c_str());
  store_.begin_write([this, &f](std::error_code error, IngestWriter writer) {
    if (error) {
      fill_done(f, error, "the content store refused it");
      return;
    }
    f.writer = std::move(writer);
    f.writer.expect_digest(f.digest);
    if (closing_) {
      io::S3FetchResult cancelled;
      cancelled.error = io::S3Error::Cancelled;
      cancelled.detail = "chunkd is shutting down";
      fetched(f, std::move(cancelled));
      return;
    }
    ensure_client();
    io::S3Sink sink;
    sink.fd = f.writer.fd();
    sink.sized = [&f](std::uint64_t size, std::function<void(std::error_code)> go) {
      if (size != f.size) {
        f.store_detail = "the object has " + std::to_string(size) + " bytes, the stream recorded " +
                         std::to_string(f.size);
        go(IngestError::DigestMismatch);
        return;
      }
      f.writer.reserve(size, [&f, go](std::error_code e, IngestResult seen) {
        if (e) {
          f.store_detail = "the store cannot take " + std::to_string(seen.size_bytes) + " bytes (" +
                           std::to_string(seen.available_bytes) + " available)";
        }
        go(e);
      });
    };
    sink.bytes = [this, &f](const char* data, std::size_t n) {
      f.writer.update(data, n);
      if (filled_bytes_ != nullptr) filled_bytes_->inc(n);
    };
    client_->fetch(options_.remote, blob_key(f.digest), "", std::move(sink), f.size,
                   [this, &f](io::S3FetchResult result) { fetched(f, std::move(result)); });
  });
}

void ContentBucket::fetched(Fill& f, io::S3FetchResult result) {
  const std::error_code failure = result.error;
  std::string detail = !f.store_detail.empty() ? f.store_detail : result.detail;
  f.writer.finish(failure, [this, &f, failure, detail](std::error_code error, IngestResult stored) {
    if (!failure && !error) {
      store_.unpin(stored.digest);  // the streams referencing it keep it from GC
      fill_done(f, {}, {});
      return;
    }
    std::string why = failure ? detail : "";
    if (!failure && error == IngestError::DigestMismatch) {
      why = "the object's content does not hash to its name; nothing was kept";
    }
    fill_done(f, failure ? failure : error, why);
  });
}

void ContentBucket::fill_done(Fill& f, std::error_code error, std::string detail) {
  const char* label = error ? error_kind(error) : "ok";
  if (metrics_ != nullptr) {
    metrics_
        ->counter("chunkd_content_bucket_fills_total",
                  "Blobs filled from the content bucket into the store, by result.",
                  std::string("result=\"") + label + "\"")
        .inc();
  }
  std::string message;
  if (error) {
    message = "content bucket \"" + options_.name + "\": blob " + f.digest + ": " +
              (detail.empty() ? error.message() : detail + " (" + error.message() + ")");
    LOG_WARN(kTag, "fill failed: %s; retried by a read after %llu ms", message.c_str(),
             static_cast<unsigned long long>(kFailedFillMs));
    if (error != io::S3Error::Cancelled) failed_fills_[f.digest] = uv_now(loop_);
  } else {
    LOG_INFO(kTag, "blob %s (%llu bytes) filled from content bucket \"%s\"", f.digest.c_str(),
             static_cast<unsigned long long>(f.size), options_.name.c_str());
  }
  running_fills_--;
  std::vector<Done> waiters = std::move(f.waiters);
  fills_.erase(f.digest);  // `f` is gone from here on
  for (auto& w : waiters) w(error, message);
  start_queued();
  maybe_closed();
}

// ---- queues and closing ----

void ContentBucket::start_queued() {
  while (!closing_ && running_uploads_ < options_.max_uploads && !queued_uploads_.empty()) {
    std::string digest = std::move(queued_uploads_.front());
    queued_uploads_.pop_front();
    start_upload(*uploads_.at(digest));
  }
  while (!closing_ && running_fills_ < options_.max_fills && !queued_fills_.empty()) {
    std::string digest = std::move(queued_fills_.front());
    queued_fills_.pop_front();
    start_fill(*fills_.at(digest));
  }
}

void ContentBucket::close(std::function<void()> done) {
  closing_ = true;
  close_done_ = std::move(done);
  const std::error_code cancelled = io::S3Error::Cancelled;
  auto queued_uploads = std::move(queued_uploads_);
  queued_uploads_.clear();
  for (const auto& digest : queued_uploads) {
    auto owned = std::move(uploads_.at(digest));
    uploads_.erase(digest);
    for (auto& w : owned->waiters) w(cancelled, "chunkd is shutting down");
  }
  auto queued_fills = std::move(queued_fills_);
  queued_fills_.clear();
  for (const auto& digest : queued_fills) {
    auto owned = std::move(fills_.at(digest));
    fills_.erase(digest);
    for (auto& w : owned->waiters) w(cancelled, "chunkd is shutting down");
  }
  if (uploader_) uploader_->cancel_all();
  if (client_) client_->cancel_all();
  maybe_closed();
}

void ContentBucket::maybe_closed() {
  if (!closing_ || !uploads_.empty() || !fills_.empty() || !close_done_) return;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  if (!curl_) {
    done();
    return;
  }
  client_.reset();
  uploader_.reset();
  curl_->close(std::move(done));
}

}  // namespace chunkd::engine

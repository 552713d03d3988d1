#include "engine/s3_source.hpp"

#include <utility>

#include "base/assert.hpp"
#include "engine/content_store.hpp"
#include "engine/control_service_internal.hpp"
#include "io/log.hpp"

namespace chunkd::engine {
namespace {

using io::S3Error;
using protocol::ApiErrorCode;

const char* result_label(const std::error_code& e) {
  if (!e) return "ok";
  if (storage_full(e)) return "storage_full";
  if (e.category() != io::s3_category()) return "write_error";
  switch (static_cast<S3Error>(e.value())) {
    case S3Error::NoSuchBucket:
      return "no_such_bucket";
    case S3Error::NoSuchKey:
      return "no_such_key";
    case S3Error::NoSuchVersion:
      return "no_such_version";
    case S3Error::AccessDenied:
      return "access_denied";
    case S3Error::Unreachable:
      return "unreachable";
    case S3Error::TimedOut:
      return "timed_out";
    case S3Error::TooLarge:
      return "too_large";
    case S3Error::BadResponse:
      return "bad_response";
    case S3Error::Cancelled:
      return "cancelled";
  }
  return "bad_response";
}

std::string field(std::size_t i, const char* leaf) {
  return "files[" + std::to_string(i) + "].s3Location." + leaf;
}

}  // namespace

struct S3Source::Job {
  S3Source* source = nullptr;
  io::S3BucketOptions bucket;
  std::string key;
  std::string version;
  std::uint64_t max_bytes = 0;
  std::uint64_t started_ms = 0;
  IngestWriter writer;
  S3Fetched out;
  Done done;
};

S3Source::S3Source(uv_loop_t* loop, Metrics* metrics) : loop_(loop), metrics_(metrics) {
  if (metrics_ != nullptr) {
    metrics_->counter_fn(
        "chunkd_s3_fetched_bytes_total", "Bytes fetched from S3 buckets into the content store.",
        "", [this] { return static_cast<double>(client_ ? client_->bytes_fetched() : 0); });
    metrics_->gauge_fn("chunkd_s3_fetches_in_progress", "Fetches from S3 buckets running now.", "",
                       [this] { return static_cast<double>(in_progress_); });
    fetch_seconds_ = &metrics_->histogram("chunkd_s3_fetch_seconds",
                                          "Duration of successful fetches from S3 buckets.",
                                          {0.1, 0.5, 1, 5, 15, 60, 300, 1800});
  }
}

S3Source::~S3Source() { CHUNKD_ASSERT(in_progress_ == 0 && (!curl_ || closing_)); }

void S3Source::fetch(const S3Bucket& bucket, std::string key, std::string version,
                     ContentStore& store, std::shared_ptr<IngestProgress> progress, Done done) {
  auto owned = std::make_unique<Job>();
  Job* job = owned.release();  // owned by the callbacks until report()
  job->source = this;
  job->bucket = bucket.remote;
  job->key = std::move(key);
  job->version = std::move(version);
  job->max_bytes = store.options().max_file_bytes;
  job->started_ms = uv_now(loop_);
  job->done = std::move(done);
  in_progress_++;
  store.begin_write(
      [job](std::error_code error, IngestWriter writer) {
        S3Source& self = *job->source;
        if (error) {
          job->out.store_error = error;
          self.report(job);
          return;
        }
        job->writer = std::move(writer);
        if (self.closing_) {
          io::S3FetchResult cancelled;
          cancelled.error = io::S3Error::Cancelled;
          cancelled.detail = "chunkd is shutting down";
          self.fetched(job, std::move(cancelled));
          return;
        }
        self.start(job);
      },
      std::move(progress));
}

void S3Source::start(Job* job) {
  if (!client_) {
    curl_ = std::make_unique<io::CurlLoop>(loop_);
    client_ = std::make_unique<io::S3Client>(loop_, *curl_);
  }
  io::S3Sink sink;
  sink.fd = job->writer.fd();
  sink.sized = [job](std::uint64_t size, std::function<void(std::error_code)> go) {
    // Before any byte is written: the store checks the size against its free space.
    job->writer.reserve(size, [job, go](std::error_code error, IngestResult seen) {
      if (error) {
        job->out.store_error = error;
        job->out.stored = std::move(seen);
      }
      go(error);
    });
  };
  sink.bytes = [job](const char* data, std::size_t n) { job->writer.update(data, n); };
  client_->fetch(job->bucket, job->key, job->version, std::move(sink), job->max_bytes,
                 [job](io::S3FetchResult result) { job->source->fetched(job, std::move(result)); });
}

// The fetch ended: the store keeps the content (linked, pinned) or drops the temp file.
void S3Source::fetched(Job* job, io::S3FetchResult result) {
  std::error_code failure = result.error;
  job->out.result = std::move(result);
  if (failure) {
    if (!job->out.store_error) {
      LOG_WARN("s3", "fetch of %s/%s failed: %s", job->bucket.bucket.c_str(), job->key.c_str(),
               job->out.result.detail.c_str());
    } else {
      job->out.result.error.clear();  // the store's refusal says it better
    }
  }
  job->writer.finish(failure, [job](std::error_code error, IngestResult stored) {
    if (!job->out.result.error && !job->out.store_error) {
      job->out.store_error = error;
      job->out.stored = std::move(stored);
    }
    job->source->report(job);
  });
}

void S3Source::report(Job* raw) {
  std::unique_ptr<Job> job(raw);
  in_progress_--;
  S3Fetched& out = job->out;
  const std::error_code& error = out.result.error ? out.result.error : out.store_error;
  if (metrics_ != nullptr) {
    metrics_
        ->counter("chunkd_s3_fetches_total", "Fetches from S3 buckets, by result.",
                  std::string("result=\"") + result_label(error) + "\"")
        .inc();
  }
  if (!error) {
    double seconds = static_cast<double>(uv_now(loop_) - job->started_ms) / 1000.0;
    if (fetch_seconds_ != nullptr) fetch_seconds_->observe(seconds);
    LOG_INFO("s3", "fetched s3://%s/%s (%llu bytes, version %s, ETag %s) in %.3f s",
             job->bucket.bucket.c_str(), job->key.c_str(),
             static_cast<unsigned long long>(out.result.object.size),
             out.result.object.version_id.empty() ? "-" : out.result.object.version_id.c_str(),
             out.result.object.etag.c_str(), seconds);
  }
  Done done = std::move(job->done);
  S3Fetched reported = std::move(out);
  job.reset();
  done(std::move(reported));
  maybe_closed();
}

void S3Source::close(std::function<void()> done) {
  closing_ = true;
  close_done_ = std::move(done);
  if (client_) client_->cancel_all();
  maybe_closed();
}

void S3Source::maybe_closed() {
  if (!closing_ || in_progress_ != 0 || !close_done_) return;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  if (!curl_) {
    done();
    return;
  }
  client_.reset();
  curl_->close(std::move(done));
}

io::HttpResponse s3_fetch_error(const io::S3FetchResult& result, std::size_t i,
                                const std::string& bucket_name, std::uint64_t max_bytes) {
  using control_detail::api_error;
  const std::error_code& e = result.error;
  if (e.category() != io::s3_category()) {
    if (storage_full(e)) {
      return api_error(ApiErrorCode::StorageFull, "storage full: " + field(i, "key") + " (" +
                                                      std::to_string(result.object.size) +
                                                      " bytes) does not fit in storage.data_dir (" +
                                                      e.message() + ")");
    }
    return api_error(ApiErrorCode::InternalError, "fetching " + field(i, "key") + " failed: " +
                                                      result.detail + ": " + e.message());
  }
  switch (static_cast<S3Error>(e.value())) {
    case S3Error::NoSuchBucket:
      return api_error(ApiErrorCode::ValidationError, "the S3 bucket does not exist",
                       {{field(i, "bucket"), result.detail}});
    case S3Error::NoSuchKey:
      return api_error(ApiErrorCode::ValidationError, "no such key in the S3 bucket",
                       {{field(i, "key"), result.detail}});
    case S3Error::NoSuchVersion:
      return api_error(ApiErrorCode::ValidationError, "no such version of the key",
                       {{field(i, "version"), result.detail}});
    case S3Error::AccessDenied:
      return api_error(
          ApiErrorCode::SourceAccessDenied,
          "bucket \"" + bucket_name + "\" refused chunkd's credentials: " + result.detail);
    case S3Error::TooLarge:
      return api_error(ApiErrorCode::LimitExceeded, "a source file is over storage.max_file_mib",
                       {{field(i, "key"), "the object has " + std::to_string(result.object.size) +
                                              " bytes; storage.max_file_mib allows " +
                                              std::to_string(max_bytes) + " bytes (" +
                                              std::to_string(max_bytes >> 20) + " MiB)"}});
    case S3Error::Cancelled:
      return api_error(ApiErrorCode::ServiceUnavailable, "chunkd is shutting down");
    case S3Error::Unreachable:
    case S3Error::TimedOut:
    case S3Error::BadResponse:
      break;
  }
  io::HttpResponse r =
      api_error(ApiErrorCode::ServiceUnavailable,
                "bucket \"" + bucket_name + "\": " + e.message() + ": " + result.detail);
  r.headers.emplace_back("Retry-After", "5");
  return r;
}

}  // namespace chunkd::engine

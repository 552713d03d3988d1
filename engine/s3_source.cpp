#include "engine/s3_source.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
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
  uv_work_t work{};
  io::S3BucketOptions bucket;
  std::string key;
  std::string version;
  std::string tmp_template;
  std::uint64_t max_bytes = 0;
  std::uint64_t started_ms = 0;
  int fd = -1;
  int work_errno = 0;
  Done done;
};

S3Source::S3Source(uv_loop_t* loop, Metrics* metrics) : loop_(loop), metrics_(metrics) {
  if (metrics_ != nullptr) {
    metrics_->counter_fn(
        "chunkd_s3_fetched_bytes_total", "Bytes fetched from S3 buckets into temporary files.", "",
        [this] { return static_cast<double>(client_ ? client_->bytes_fetched() : 0); });
    fetch_seconds_ = &metrics_->histogram("chunkd_s3_fetch_seconds",
                                          "Duration of successful fetches from S3 buckets.",
                                          {0.1, 0.5, 1, 5, 15, 60, 300, 1800});
  }
}

S3Source::~S3Source() { CHUNKD_ASSERT(in_progress_ == 0 && (!curl_ || closing_)); }

void S3Source::fetch(const S3Bucket& bucket, std::string key, std::string version,
                     const std::string& data_dir, std::uint64_t max_bytes, Done done) {
  auto job = std::make_unique<Job>();
  job->source = this;
  job->bucket = bucket.remote;
  job->key = std::move(key);
  job->version = std::move(version);
  job->tmp_template = data_dir + "/tmp/fetch-XXXXXX";
  job->max_bytes = max_bytes;
  job->started_ms = uv_now(loop_);
  job->done = std::move(done);
  job->work.data = job.get();
  in_progress_++;
  Job* raw = job.release();  // owned by the pool work until it reports
  int rc = uv_queue_work(
      loop_, &raw->work,
      [](uv_work_t* req) {
        auto& j = *static_cast<Job*>(req->data);
        j.fd = ::mkostemp(j.tmp_template.data(), O_CLOEXEC);
        if (j.fd < 0) {
          j.work_errno = errno;
          return;
        }
        ::unlink(j.tmp_template.c_str());  // a descriptor only: nothing is left behind
      },
      [](uv_work_t* req, int status) {
        std::unique_ptr<Job> j(static_cast<Job*>(req->data));
        S3Source& self = *j->source;
        io::S3FetchResult failed;
        if (status != 0 || j->work_errno != 0) {
          failed.error =
              std::error_code(status != 0 ? -status : j->work_errno, std::generic_category());
          failed.detail = "cannot create a temporary file under storage.data_dir";
        } else if (self.closing_) {
          failed.error = S3Error::Cancelled;
          failed.detail = "chunkd is shutting down";
        } else {
          if (!self.client_) {
            self.curl_ = std::make_unique<io::CurlLoop>(self.loop_);
            self.client_ = std::make_unique<io::S3Client>(self.loop_, *self.curl_);
          }
          Job* jp = j.release();
          self.client_->fetch(jp->bucket, jp->key, jp->version, jp->fd, jp->max_bytes,
                              [jp](io::S3FetchResult result) {
                                jp->source->fetched(std::unique_ptr<Job>(jp), std::move(result));
                              });
          return;
        }
        self.fetched(std::move(j), std::move(failed));
      });
  if (rc != 0) {
    std::unique_ptr<Job> j(raw);
    io::S3FetchResult failed;
    failed.error = std::error_code(-rc, std::generic_category());
    failed.detail = "cannot queue the fetch";
    // The thread pool refuses work only on a loop that is gone: answer at once.
    fetched(std::move(j), std::move(failed));
  }
}

void S3Source::fetched(std::unique_ptr<Job> job, io::S3FetchResult result) {
  in_progress_--;
  if (metrics_ != nullptr) {
    metrics_
        ->counter("chunkd_s3_fetches_total", "Fetches from S3 buckets, by result.",
                  std::string("result=\"") + result_label(result.error) + "\"")
        .inc();
  }
  S3Fetched out;
  if (result.error) {
    if (job->fd >= 0) ::close(job->fd);
    LOG_WARN("s3", "fetch of %s/%s failed: %s", job->bucket.bucket.c_str(), job->key.c_str(),
             result.detail.c_str());
  } else {
    out.fd = job->fd;
    double seconds = static_cast<double>(uv_now(loop_) - job->started_ms) / 1000.0;
    if (fetch_seconds_ != nullptr) fetch_seconds_->observe(seconds);
    LOG_INFO("s3", "fetched s3://%s/%s (%llu bytes, version %s, ETag %s) in %.3f s",
             job->bucket.bucket.c_str(), job->key.c_str(),
             static_cast<unsigned long long>(result.object.size),
             result.object.version_id.empty() ? "-" : result.object.version_id.c_str(),
             result.object.etag.c_str(), seconds);
  }
  out.result = std::move(result);
  Done done = std::move(job->done);
  job.reset();
  done(std::move(out));
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

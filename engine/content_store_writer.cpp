// ContentStore::begin_write and IngestWriter (engine/content_store.hpp): content the caller writes
// into a temp file of the store itself, hashed on the loop as it arrives, then ended by the same
// finalize (fsync, link or deduplicate) and finish (pin, counters) as a copied ingest.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "base/assert.hpp"
#include "engine/content_store.hpp"
#include "engine/content_store_internal.hpp"

namespace chunkd::engine {

void ContentStore::begin_write(std::function<void(std::error_code, IngestWriter)> ready,
                               std::shared_ptr<IngestProgress> progress) {
  if (closing_) {
    ready(IngestError::Closed, {});
    return;
  }
  auto job = std::make_unique<Job>();
  job->store = this;
  job->writer = true;
  job->ready = std::move(ready);
  job->progress = std::move(progress);
  job->started_ms = clock_.now_ms();
  if (gc_running_) {
    waiting_.push_back(std::move(job));
    return;
  }
  jobs_.push_back(std::move(job));
  start(*jobs_.back());
}

// Thread pool: create the temp file (start() named it).
void ContentStore::start_writer(Job& job) {
  job.work.data = &job;
  int rc = uv_queue_work(
      loop_, &job.work,
      [](uv_work_t* req) {
        auto& j = *static_cast<Job*>(req->data);
        j.tmp_fd = ::open(j.tmp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        j.work_errno = j.tmp_fd < 0 ? errno : 0;
      },
      [](uv_work_t* req, int status) {
        auto& j = *static_cast<Job*>(req->data);
        if (status != 0) j.error = std::error_code(-status, std::generic_category());
        j.store->writer_ready(j);
      });
  if (rc != 0) {
    job.error = std::error_code(-rc, std::generic_category());
    writer_ready(job);
  }
}

// Loop thread: hand the writer over, or end the job (removing anything made) and report.
void ContentStore::writer_ready(Job& j) {
  if (!j.error && j.work_errno != 0)
    j.error = std::error_code(j.work_errno, std::generic_category());
  if (!j.error && closing_) j.error = IngestError::Closed;
  if (!j.error) {
    j.hash = XXH3_createState();
    j.extent_hash = XXH3_createState();
    if (j.hash == nullptr || j.extent_hash == nullptr || XXH3_128bits_reset(j.hash) != XXH_OK ||
        XXH3_64bits_reset(j.extent_hash) != XXH_OK) {
      j.error = std::make_error_code(std::errc::not_enough_memory);
    }
  }
  auto ready = std::move(j.ready);
  j.ready = nullptr;
  if (j.error) {
    j.done = [ready](std::error_code error, IngestResult) { ready(error, {}); };
    finalize(j);
    return;
  }
  j.result.extent_bytes = options_.extent_bytes;
  ready({}, IngestWriter(&j));
}

IngestWriter& IngestWriter::operator=(IngestWriter&& other) noexcept {
  CHUNKD_ASSERT(job_ == nullptr);  // a writer is finished before it is replaced
  job_ = other.job_;
  other.job_ = nullptr;
  return *this;
}

IngestWriter::~IngestWriter() { CHUNKD_ASSERT(job_ == nullptr); }

int IngestWriter::fd() const {
  CHUNKD_ASSERT(job_ != nullptr);
  return job_->tmp_fd;
}

void IngestWriter::reserve(std::uint64_t size, IngestDone done) {
  CHUNKD_ASSERT(job_ != nullptr && !job_->reserved);
  ContentStore::Job& j = *job_;
  if (j.progress) j.progress->total = size;
  j.reserving = size;
  j.available = 0;
  j.reserved = std::move(done);
  j.work.data = &j;
  j.work_errno = 0;
  int rc = uv_queue_work(
      j.store->loop_, &j.work,
      [](uv_work_t* req) {
        auto& job = *static_cast<ContentStore::Job*>(req->data);
        const ContentStoreOptions& options = job.store->options_;
        if (job.reserving > options.max_file_bytes) return;
        job.work_errno = options.free_space(options.data_dir, job.available);
      },
      [](uv_work_t* req, int status) {
        auto& job = *static_cast<ContentStore::Job*>(req->data);
        IngestResult seen;
        seen.size_bytes = job.reserving;
        seen.available_bytes = job.available;
        std::error_code error;
        if (job.reserving > job.store->options_.max_file_bytes) {
          error = IngestError::TooLarge;
        } else if (status != 0 || job.work_errno != 0) {
          error = std::error_code(status != 0 ? -status : job.work_errno, std::generic_category());
        } else if (job.available < job.reserving) {
          error = IngestError::StorageFull;
        }
        auto reserved = std::move(job.reserved);
        job.reserved = nullptr;
        reserved(error, std::move(seen));
      });
  if (rc != 0) {
    auto reserved = std::move(j.reserved);
    j.reserved = nullptr;
    reserved(std::error_code(-rc, std::generic_category()), {});
  }
}

void IngestWriter::expect_digest(std::string digest) {
  CHUNKD_ASSERT(job_ != nullptr);
  job_->expected_digest = std::move(digest);
}

void IngestWriter::update(const void* data, std::size_t n) {
  CHUNKD_ASSERT(job_ != nullptr);
  ContentStore::Job& j = *job_;
  const std::uint64_t extent = j.store->options_.extent_bytes;
  const auto* p = static_cast<const unsigned char*>(data);
  (void)XXH3_128bits_update(j.hash, p, n);
  while (n > 0) {
    const std::size_t take =
        static_cast<std::size_t>(std::min<std::uint64_t>(n, extent - j.extent_filled));
    (void)XXH3_64bits_update(j.extent_hash, p, take);
    j.extent_filled += take;
    p += take;
    n -= take;
    j.size += take;
    if (j.extent_filled == extent) {
      j.result.manifest.push_back(XXH3_64bits_digest(j.extent_hash));
      (void)XXH3_64bits_reset(j.extent_hash);
      j.extent_filled = 0;
    }
  }
  if (j.progress) j.progress->done = j.size;
}

void IngestWriter::finish(std::error_code failure, IngestDone done) {
  CHUNKD_ASSERT(job_ != nullptr && !job_->reserved);
  ContentStore::Job& j = *job_;
  job_ = nullptr;
  j.done = std::move(done);
  if (failure) {
    j.error = failure;
  } else if (j.store->closing_) {
    j.error = IngestError::Closed;
  } else if (j.extent_filled > 0) {
    j.result.manifest.push_back(XXH3_64bits_digest(j.extent_hash));
  }
  j.store->finalize(j);
}

}  // namespace chunkd::engine

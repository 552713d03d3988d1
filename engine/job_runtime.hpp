// JobRuntime: the jobs service with its store, as the daemon runs them. Opens the jobs tables of
// the registry database (io/job_store.hpp), loads every job into the service's book, and turns
// the JobWriter's batches into store writes (engine records ↔ stored rows: a job's spec is kept
// as its create body, re-read with protocol::parse_create_job).
//
// Thread: loop thread only. close() before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/expected.hpp"
#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/job_options.hpp"
#include "engine/job_service.hpp"
#include "engine/metrics.hpp"
#include "engine/transport.hpp"
#include "io/job_store.hpp"

namespace chunkd::engine {

class JobRuntime {
 public:
  // Start-up only (the load is synchronous). The error names the registry file and the job.
  static Expected<std::unique_ptr<JobRuntime>, std::string> open(
      uv_loop_t* loop, const std::string& data_dir, const Catalog& catalog, Transport& transport,
      Metrics& metrics, const Clock& clock, JobOptions options);
  JobService& service() { return *service_; }

  // The service (its writes flushed within `timeout_ms`), then the store; then `done`.
  void close(std::uint64_t timeout_ms, std::function<void()> done);

 private:
  JobRuntime() = default;
  std::unique_ptr<io::JobStore> store_;
  std::unique_ptr<JobService> service_;
};

// Conversions between the book's records and the store's rows (tested on their own).
io::StoredJob stored_job(const JobHeader& header);
io::StoredExecution stored_execution(const protocol::JobExecution& e);
io::JobBatch stored_batch(const JobBatch& batch);
// The jobs as stored, ready for JobBook::restore. Fails naming the first damaged row.
Expected<std::vector<Job>, std::string> jobs_from_store(io::StoredJobs stored);

}  // namespace chunkd::engine

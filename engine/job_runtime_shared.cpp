// JobRuntime in a cluster (engine/job_runtime.hpp): the jobs lease decides whether this instance
// serves jobs.
#include <utility>

#include "engine/job_runtime.hpp"
#include "io/log.hpp"

namespace chunkd::engine {

Expected<std::unique_ptr<JobRuntime>, std::string> JobRuntime::open_shared(Parts parts,
                                                                           Shared shared) {
  std::unique_ptr<JobRuntime> runtime(new JobRuntime(std::move(parts)));
  JobRuntime* self = runtime.get();
  self->consume_ = std::move(shared.consume);
  self->not_serving_ = "jobs are served by another chunkd instance (finding out which)";
  io::JobLeaseOptions options;
  options.url = std::move(shared.url);
  options.holder = std::move(shared.holder);
  auto lease = io::PgJobLease::open(
      self->parts_.loop, std::move(options),
      [self](io::StoredJobs rows) { self->acquired(std::move(rows)); },
      [self](std::string_view why) { self->lost(why); });
  if (!lease) return unexpected(lease.error().message());
  self->lease_ = std::move(*lease);
  self->register_lease_metrics();
  return runtime;
}

// The lease is ours and `rows` are the jobs as committed: serve them.
void JobRuntime::acquired(io::StoredJobs rows) {
  if (closing_) return;
  acquired_->inc();
  std::vector<std::string> things = std::move(rows.things);
  auto jobs = jobs_from_store(std::move(rows));
  if (!jobs) {
    // Every instance would read the same rows: serving nothing beats serving them wrong.
    not_serving_ = "jobs cannot be served: " + jobs.error();
    LOG_ERROR("jobs", "jobs lease taken, but %s", jobs.error().c_str());
    return;
  }
  io::PgJobLease* lease = lease_.get();
  service_ = make_service([lease](const JobBatch& batch, JobWriter::Done done) {
    lease->store().apply(stored_batch(batch), std::move(done));
  });
  service_->open(std::move(*jobs), std::move(things));
  if (consume_) consume_(true);
  LOG_INFO("jobs", "this instance serves jobs now (it holds the jobs lease)");
}

// The session that held the lease is gone: another instance may serve jobs already.
void JobRuntime::lost(std::string_view why) {
  if (consume_) consume_(false);
  if (service_) {
    lost_->inc();
    LOG_WARN("jobs", "jobs lease lost (%.*s): this instance stops serving jobs",
             static_cast<int>(why.size()), why.data());
  }
  retire(0);  // its writes cannot succeed on a lost session
  not_serving_ = "jobs are served by another chunkd instance (the jobs lease changes hands)";
}

void JobRuntime::register_lease_metrics() {
  Metrics& m = parts_.metrics;
  const char* help = "Times this instance took or lost the jobs lease of the cluster.";
  acquired_ = &m.counter("chunkd_jobs_lease_changes_total", help, "change=\"acquired\"");
  lost_ = &m.counter("chunkd_jobs_lease_changes_total", help, "change=\"lost\"");
  m.gauge_fn("chunkd_jobs_lease_held", "1 while this instance serves the cluster's jobs.", "",
             [this] { return service_ ? 1.0 : 0.0; });
}

}  // namespace chunkd::engine

// JobRuntime: the jobs service with its store, as the daemon runs it, and what the control API
// sees of jobs (JobsHttp).
//
// Alone (open): the jobs tables of the registry database in data_dir (io/job_store.hpp); every job
// is loaded into the service's book at start-up, and the service serves for as long as chunkd
// runs.
//
// In a cluster (open_shared; docs/cluster.md, "Jobs"): the jobs state lives in the shared
// PostgreSQL registry and exactly one instance serves jobs at a time: the holder of the jobs lease
// (io/job_lease_pg.hpp, a session-level advisory lock whose session also makes every write, so an
// instance that lost it cannot write). When this instance takes the lease it loads every job as
// committed, opens a JobService on them and starts consuming the jobs queue (`consume(true)`);
// when it loses the lease it stops consuming, closes that service (what it had not made durable
// is dropped unanswered, and unacknowledged requests go back to the queue for the next holder)
// and serves /jobs with 503 naming the holder until it takes the lease again. Jobs requests that
// still arrive meanwhile are handed back to the jobs queue (Transport::requeue) for the holder.
//
// Metrics: the service's (while serving), chunkd_jobs_lease_held (1 while this instance serves
// jobs in a cluster), chunkd_jobs_lease_changes_total{change="acquired"|"lost"}.
//
// Thread: loop thread only. close() before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/job_options.hpp"
#include "engine/job_service.hpp"
#include "engine/jobs_http.hpp"
#include "engine/metrics.hpp"
#include "engine/transport.hpp"
#include "io/job_lease_pg.hpp"
#include "io/job_store.hpp"

namespace chunkd::engine {

class JobRuntime final : public JobsHttp {
 public:
  // What every JobService of the runtime is made with.
  struct Parts {
    uv_loop_t* loop;
    const Catalog& catalog;
    Transport& transport;
    Metrics& metrics;
    const Clock& clock;
    JobOptions options;
  };
  // A cluster's jobs: the shared registry's URL, this instance's name as other instances see it,
  // and how to start or stop consuming the jobs queue.
  struct Shared {
    std::string url;
    std::string holder;
    std::function<void(bool on)> consume;
  };

  // Start-up only (the load is synchronous). The error names the registry file and the job.
  static Expected<std::unique_ptr<JobRuntime>, std::string> open(Parts parts,
                                                                 const std::string& data_dir);
  // Start-up only (connects and prepares the schema). Serving starts once the lease is taken.
  static Expected<std::unique_ptr<JobRuntime>, std::string> open_shared(Parts parts, Shared shared);
  ~JobRuntime() override;

  // A device message (JobService::on_message). False when it is no jobs topic. While another
  // instance serves jobs, a jobs request is handed back (Transport::requeue: the AMQP jobs queue
  // redelivers it to the holder) and counted as result="not_serving".
  bool on_message(std::string_view topic, std::span<const std::byte> payload,
                  Transport::RequestTag tag);
  void serve(const io::HttpRequest& request, io::HttpServer::Responder respond) override;
  std::optional<std::string> job_using_stream(std::string_view stream_id) const override;

  // The service while this instance serves jobs; null in a cluster while another one does.
  JobService* service() { return service_.get(); }

  // The service (its writes flushed within `timeout_ms`), then the store or the lease; then `done`.
  void close(std::uint64_t timeout_ms, std::function<void()> done);

 private:
  explicit JobRuntime(Parts parts) : parts_(std::move(parts)) {}
  std::unique_ptr<JobService> make_service(JobWriter::Store store);
  void acquired(io::StoredJobs rows);
  void lost(std::string_view why);
  void register_lease_metrics();
  void retire(std::uint64_t timeout_ms);
  void maybe_closed();

  Parts parts_;
  std::unique_ptr<io::JobStore> store_;    // alone
  std::unique_ptr<io::PgJobLease> lease_;  // in a cluster
  std::function<void(bool)> consume_;
  std::unique_ptr<JobService> service_;
  std::vector<std::unique_ptr<JobService>> retiring_;  // closing after a lost lease
  std::string not_serving_;                            // why /jobs is 503 without a service
  bool closing_ = false;
  std::function<void()> close_done_;
  Counter* acquired_ = nullptr;
  Counter* lost_ = nullptr;
};

// Conversions between the book's records and the store's rows (tested on their own).
io::StoredJob stored_job(const JobHeader& header);
io::StoredExecution stored_execution(const protocol::JobExecution& e);
io::JobBatch stored_batch(const JobBatch& batch);
// The jobs as stored, ready for JobBook::restore. Fails naming the first damaged row.
Expected<std::vector<Job>, std::string> jobs_from_store(io::StoredJobs stored);

}  // namespace chunkd::engine

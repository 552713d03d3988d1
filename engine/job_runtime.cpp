#include "engine/job_runtime.hpp"

#include <map>
#include <utility>

#include "io/log.hpp"

namespace chunkd::engine {

io::StoredJob stored_job(const JobHeader& header) {
  io::StoredJob row;
  row.id = header.plan.id;
  row.spec = protocol::encode_job_spec(header.plan.spec);
  row.document = header.plan.document;
  if (header.plan.spec.ota) row.stream_id = header.plan.spec.ota->stream_id;
  row.status = std::string(protocol::to_string(header.status));
  row.reason_code = header.reason_code;
  row.comment = header.comment;
  row.created_at_ms = header.plan.created_at_ms;
  row.last_updated_at_ms = header.last_updated_at_ms;
  row.completed_at_ms = header.completed_at_ms;
  return row;
}

io::StoredExecution stored_execution(const protocol::JobExecution& e) {
  io::StoredExecution row;
  row.job_id = e.job_id;
  row.thing = e.thing;
  row.status = std::string(protocol::to_string(e.status));
  row.status_details = e.status_details;
  row.queued_at_ms = e.queued_at_ms;
  row.started_at_ms = e.started_at_ms;
  row.last_updated_at_ms = e.last_updated_at_ms;
  row.version_number = e.version_number;
  row.execution_number = e.execution_number;
  row.step_deadline_ms = e.step_deadline_ms;
  return row;
}

io::JobBatch stored_batch(const JobBatch& batch) {
  io::JobBatch out;
  out.things = batch.things;
  out.deleted = batch.deleted;
  for (const JobHeader& h : batch.jobs) out.upserts.push_back(stored_job(h));
  for (const auto& e : batch.executions) out.executions.push_back(stored_execution(e));
  return out;
}

Expected<std::vector<Job>, std::string> jobs_from_store(io::StoredJobs stored) {
  std::map<std::string, Job> jobs;
  for (io::StoredJob& row : stored.jobs) {
    auto spec = protocol::parse_create_job(row.spec);
    auto status = protocol::job_status_from_string(row.status);
    if (!spec || !status) {
      return unexpected("job " + row.id + " is damaged in the registry (" +
                        (spec ? "status \"" + row.status + "\"" : spec.error().message) + ")");
    }
    Job job;
    job.plan.id = row.id;
    job.plan.spec = std::move(*spec);
    job.plan.document = std::move(row.document);
    job.plan.created_at_ms = row.created_at_ms;
    job.status = *status;
    job.reason_code = std::move(row.reason_code);
    job.comment = std::move(row.comment);
    job.last_updated_at_ms = row.last_updated_at_ms;
    job.completed_at_ms = row.completed_at_ms;
    jobs.emplace(row.id, std::move(job));
  }
  for (io::StoredExecution& row : stored.executions) {
    auto job = jobs.find(row.job_id);
    auto status = protocol::execution_status_from_string(row.status);
    if (job == jobs.end() || !status) {
      return unexpected("the execution of job " + row.job_id + " for " + row.thing +
                        " is damaged in the registry");
    }
    protocol::JobExecution e;
    e.job_id = std::move(row.job_id);
    e.thing = row.thing;
    e.status = *status;
    e.status_details = std::move(row.status_details);
    e.queued_at_ms = row.queued_at_ms;
    e.started_at_ms = row.started_at_ms;
    e.last_updated_at_ms = row.last_updated_at_ms;
    e.version_number = row.version_number;
    e.execution_number = row.execution_number;
    e.step_deadline_ms = row.step_deadline_ms;
    job->second.executions.emplace(std::move(row.thing), std::move(e));
  }
  std::vector<Job> out;
  for (auto& [id, job] : jobs) out.push_back(std::move(job));
  return out;
}

Expected<std::unique_ptr<JobRuntime>, std::string> JobRuntime::open(
    uv_loop_t* loop, const std::string& data_dir, const Catalog& catalog, Transport& transport,
    Metrics& metrics, const Clock& clock, JobOptions options) {
  auto store = io::JobStore::open(loop, data_dir);
  if (!store) return unexpected(store.error().message());
  auto loaded = (*store)->load_all();
  if (!loaded) return unexpected(loaded.error().message());
  std::vector<std::string> things = std::move(loaded->things);
  auto jobs = jobs_from_store(std::move(*loaded));
  if (!jobs) return unexpected(jobs.error());
  std::unique_ptr<JobRuntime> runtime(new JobRuntime);
  runtime->store_ = std::move(*store);
  io::JobStore* rows = runtime->store_.get();
  runtime->service_ = std::make_unique<JobService>(
      loop, catalog, transport,
      [rows](const JobBatch& batch, JobWriter::Done done) {
        rows->apply(stored_batch(batch), std::move(done));
      },
      metrics, clock, std::move(options));
  runtime->service_->open(std::move(*jobs), std::move(things));
  return runtime;
}

void JobRuntime::close(std::uint64_t timeout_ms, std::function<void()> done) {
  service_->close(timeout_ms,
                  [this, done = std::move(done)]() mutable { store_->close(std::move(done)); });
}

}  // namespace chunkd::engine

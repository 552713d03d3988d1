#include "engine/job_runtime.hpp"

#include <map>
#include <utility>

#include "engine/control_service_internal.hpp"
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

std::unique_ptr<JobService> JobRuntime::make_service(JobWriter::Store store) {
  return std::make_unique<JobService>(parts_.loop, parts_.catalog, parts_.transport,
                                      std::move(store), parts_.metrics, parts_.clock,
                                      parts_.options);
}

Expected<std::unique_ptr<JobRuntime>, std::string> JobRuntime::open(Parts parts,
                                                                    const std::string& data_dir) {
  auto store = io::JobStore::open(parts.loop, data_dir);
  if (!store) return unexpected(store.error().message());
  auto loaded = (*store)->load_all();
  if (!loaded) return unexpected(loaded.error().message());
  std::vector<std::string> things = std::move(loaded->things);
  auto jobs = jobs_from_store(std::move(*loaded));
  if (!jobs) return unexpected(jobs.error());
  std::unique_ptr<JobRuntime> runtime(new JobRuntime(std::move(parts)));
  runtime->store_ = std::move(*store);
  io::JobStore* rows = runtime->store_.get();
  runtime->service_ = runtime->make_service([rows](const JobBatch& batch, JobWriter::Done done) {
    rows->apply(stored_batch(batch), std::move(done));
  });
  runtime->service_->open(std::move(*jobs), std::move(things));
  return runtime;
}

JobRuntime::~JobRuntime() {
  if (lease_) parts_.metrics.drop_fn("chunkd_jobs_lease_held", "");
}

bool JobRuntime::on_message(std::string_view topic, std::span<const std::byte> payload,
                            Transport::RequestTag tag) {
  if (service_) return service_->on_message(topic, payload, tag);
  if (!lease_ || !is_jobs_topic(parts_.options.topic_prefix, topic)) return false;
  // Another instance serves jobs (or the lease changes hands): handed back to the jobs queue for
  // the holder, which consumes it (this instance stopped consuming when it lost the lease).
  parts_.metrics
      .counter("chunkd_jobs_requests_total", "Jobs requests from devices, by API and result.",
               "api=\"other\",result=\"not_serving\"")
      .inc();
  if (tag != Transport::kNoRequestTag && !closing_) parts_.transport.requeue(tag);
  return true;
}

void JobRuntime::serve(const io::HttpRequest& request, io::HttpServer::Responder respond) {
  if (service_) return service_->serve(request, std::move(respond));
  std::string holder = lease_ ? lease_->holder() : std::string();
  respond(control_detail::api_error(
      protocol::ApiErrorCode::ServiceUnavailable,
      holder.empty() ? not_serving_
                     : "jobs are served by another chunkd instance, " + holder +
                           ": send jobs requests there (it holds the cluster's jobs lease)"));
}

std::optional<std::string> JobRuntime::job_using_stream(std::string_view stream_id) const {
  // Without a book (another instance serves jobs) the shared registry refuses the delete itself.
  return service_ ? service_->job_using_stream(stream_id) : std::nullopt;
}

// Closes the service (its writes flushed within `timeout_ms`) and destroys it once closed.
void JobRuntime::retire(std::uint64_t timeout_ms) {
  if (!service_) return;
  JobService* service = service_.get();
  retiring_.push_back(std::move(service_));
  service->close(timeout_ms, [this, service] {
    std::erase_if(retiring_, [service](const auto& s) { return s.get() == service; });
    maybe_closed();
  });
}

void JobRuntime::close(std::uint64_t timeout_ms, std::function<void()> done) {
  closing_ = true;
  close_done_ = std::move(done);
  if (consume_) consume_(false);
  retire(timeout_ms);
  maybe_closed();
}

// Once closing and every service is closed: the store or the lease, then close()'s callback.
void JobRuntime::maybe_closed() {
  if (!closing_ || !retiring_.empty() || !close_done_) return;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  if (store_) return store_->close(std::move(done));
  if (lease_) return lease_->close(std::move(done));
  done();
}

}  // namespace chunkd::engine

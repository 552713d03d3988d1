#include "engine/job_writer.hpp"

#include <algorithm>

#include "base/assert.hpp"
#include "io/log.hpp"

namespace chunkd::engine {

JobHeader header_of(const Job& job) {
  JobHeader h;
  h.plan = job.plan;
  h.status = job.status;
  h.reason_code = job.reason_code;
  h.comment = job.comment;
  h.last_updated_at_ms = job.last_updated_at_ms;
  h.completed_at_ms = job.completed_at_ms;
  return h;
}

JobWriter::JobWriter(uv_loop_t* loop, const JobBook& book, Store store, std::size_t max_waiting,
                     Metrics* metrics)
    : loop_(loop),
      book_(book),
      store_(std::move(store)),
      max_waiting_(max_waiting),
      metrics_(metrics),
      retry_timer_(new uv_timer_t) {
  CHUNKD_ASSERT(max_waiting_ > 0);
  uv_timer_init(loop_, retry_timer_);
  retry_timer_->data = this;
}

JobWriter::~JobWriter() { CHUNKD_ASSERT(retry_timer_ == nullptr && !write_in_flight_); }

void JobWriter::record(JobChanges changes, std::function<void()> then) {
  CHUNKD_ASSERT(retry_timer_ != nullptr);  // not closed
  for (const std::string& id : changes.deleted) {
    std::erase_if(open_.executions, [&id](const auto& kv) { return kv.first.first == id; });
    open_.jobs.erase(id);
    open_.deleted.insert(id);
  }
  open_.jobs.merge(changes.jobs);
  open_.things.merge(changes.seen);
  for (auto& e : changes.executions) {
    auto key = std::make_pair(e.job_id, e.thing);
    open_.executions.insert_or_assign(std::move(key), std::move(e));
  }
  if (then) open_thens_.push_back(std::move(then));
  if (!write_in_flight_ && !retry_pending_) start_write();
}

JobBatch JobWriter::build(const Pending& pending) const {
  JobBatch batch;
  batch.things.assign(pending.things.begin(), pending.things.end());
  batch.deleted.assign(pending.deleted.begin(), pending.deleted.end());
  for (const std::string& id : pending.jobs) {
    if (const Job* job = book_.job(id)) batch.jobs.push_back(header_of(*job));
  }
  for (const auto& [key, e] : pending.executions) {
    if (book_.job(key.first) != nullptr) batch.executions.push_back(e);
  }
  return batch;
}

void JobWriter::start_write() {
  CHUNKD_ASSERT(!write_in_flight_);
  if (!retry_pending_) {
    if (open_.empty()) {
      // Nothing to write and nothing in flight: every earlier change is durable.
      auto thens = std::move(open_thens_);
      open_thens_.clear();
      for (auto& then : thens) then();
      return;
    }
    writing_ = std::move(open_);
    open_ = Pending{};
    writing_thens_ = std::move(open_thens_);
    open_thens_.clear();
  }
  retry_pending_ = false;
  write_in_flight_ = true;
  JobBatch batch = build(writing_);
  if (metrics_ != nullptr) {
    metrics_->gauge("chunkd_jobs_store_batch_records", "Records in the last jobs batch written.")
        .set(static_cast<double>(batch.size()));
  }
  store_(batch, [this](std::error_code error) { written(error); });
}

void JobWriter::written(std::error_code error) {
  write_in_flight_ = false;
  if (metrics_ != nullptr) {
    metrics_
        ->counter("chunkd_jobs_store_writes_total", "Jobs batches written to the registry.",
                  error ? "result=\"error\"" : "result=\"ok\"")
        .inc();
  }
  if (error) {
    retry_ms_ = retry_ms_ == 0 ? kFirstRetryMs : std::min(retry_ms_ * 2, kMaxRetryMs);
    LOG_WARN("jobs", "cannot write jobs to the registry (%s); answers wait, retrying in %llu ms",
             error.message().c_str(), static_cast<unsigned long long>(retry_ms_));
    if (closing_ && uv_now(loop_) + retry_ms_ > close_deadline_ms_) {
      LOG_ERROR("jobs", "shutting down with %zu jobs answers never written", waiting());
      writing_ = Pending{};
      writing_thens_.clear();
      open_ = Pending{};
      open_thens_.clear();
      maybe_closed();
      return;
    }
    retry_pending_ = true;
    uv_timer_start(
        retry_timer_,
        [](uv_timer_t* t) {
          auto* self = static_cast<JobWriter*>(t->data);
          if (self->retry_pending_ && !self->write_in_flight_) self->start_write();
        },
        retry_ms_, 0);
    return;
  }
  if (retry_ms_ != 0) LOG_INFO("jobs", "writing jobs to the registry works again");
  retry_ms_ = 0;
  writing_ = Pending{};
  auto thens = std::move(writing_thens_);
  writing_thens_.clear();
  for (auto& then : thens) then();
  if (!write_in_flight_ && !retry_pending_ && (!open_.empty() || !open_thens_.empty())) {
    start_write();
  }
  maybe_closed();
}

void JobWriter::close(std::uint64_t give_up_ms, std::function<void()> done) {
  closing_ = true;
  close_deadline_ms_ = uv_now(loop_) + give_up_ms;
  close_done_ = std::move(done);
  maybe_closed();
}

void JobWriter::maybe_closed() {
  if (!closing_ || !close_done_ || write_in_flight_ || retry_pending_) return;
  if (!open_.empty()) {
    start_write();
    return;
  }
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(retry_timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  retry_timer_ = nullptr;
  done();
}

}  // namespace chunkd::engine

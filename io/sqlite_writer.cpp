// The SQLite stores' write queue (io/sqlite_writer.hpp).
#include "io/sqlite_writer.hpp"

#include <cstdlib>
#include <exception>
#include <new>
#include <utility>

#include "base/assert.hpp"
#include "io/log.hpp"

namespace chunkd::io::detail {

SqliteWriter::SqliteWriter(uv_loop_t* loop, const char* component, std::size_t max_pending)
    : loop_(loop), component_(component), max_pending_(max_pending == 0 ? 1 : max_pending) {
  work_.data = this;
}

std::errc SqliteWriter::refusal() const {
  if (closing_) return std::errc::operation_canceled;
  if (pending_ >= max_pending_) return std::errc::resource_unavailable_try_again;
  return std::errc{};
}

void SqliteWriter::submit(Write write, Done done) {
  if (const std::errc refused = refusal(); refused != std::errc{}) {
    done(std::make_error_code(refused));
    return;
  }
  CHUNKD_ASSERT(write);
  auto job = std::make_unique<Job>();
  job->write = std::move(write);
  job->done = std::move(done);
  ++pending_;
  queue_.push_back(std::move(job));
  if (!running_) start_next();
}

void SqliteWriter::close(std::function<void()> on_pool, std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  auto job = std::make_unique<Job>();
  job->is_close = true;
  job->close_on_pool = std::move(on_pool);
  job->close_done = std::move(done);
  queue_.push_back(std::move(job));
  if (!running_) start_next();
}

void SqliteWriter::abort_if_running() const {
  if (!running_) return;
  LOG_ERROR(component_, "store destroyed while a write is running");
  std::abort();
}

void SqliteWriter::start_next() {
  CHUNKD_ASSERT(running_ == nullptr);  // one job on the pool at a time
  if (queue_.empty()) return;
  running_ = std::move(queue_.front());
  queue_.pop_front();
  const int rc = uv_queue_work(loop_, &work_, &on_work, &on_after_work);
  if (rc != 0) {  // only for a null work callback: cannot happen
    LOG_ERROR(component_, "uv_queue_work failed: %s", uv_strerror(rc));
    std::abort();
  }
}

// ---- worker thread ----

void SqliteWriter::on_work(uv_work_t* request) noexcept {
  auto* self = static_cast<SqliteWriter*>(request->data);
  Job& job = *self->running_;
  try {
    if (!job.is_close) {
      job.error = job.write(job.message);
    } else if (job.close_on_pool) {
      job.close_on_pool();
    }
  } catch (const std::bad_alloc&) {
    job.error = std::make_error_code(std::errc::not_enough_memory);
    job.message = std::string(self->component_) + " write: out of memory";
  } catch (const std::exception& e) {
    job.error = std::make_error_code(std::errc::io_error);
    job.message = std::string(self->component_) + " write: " + e.what();
  }
}

// ---- loop thread ----

void SqliteWriter::on_after_work(uv_work_t* request, int status) noexcept {
  auto* self = static_cast<SqliteWriter*>(request->data);
  CHUNKD_ASSERT(self->running_ != nullptr);
  std::unique_ptr<Job> job = std::move(self->running_);
  if (status != 0 && !job->error) {  // not cancelled by us, but be exact about it
    job->error = std::error_code(-status, std::system_category());
    job->message = uv_strerror(status);
  }
  if (job->is_close) {
    auto done = std::move(job->close_done);
    job.reset();
    if (done) done();  // may destroy *self: nothing after this
    return;
  }
  CHUNKD_ASSERT(self->pending_ > 0);
  --self->pending_;
  self->start_next();  // keep the disk busy before running caller code
  if (job->error && !job->message.empty()) LOG_ERROR(self->component_, "%s", job->message.c_str());
  job->done(job->error);
}

}  // namespace chunkd::io::detail

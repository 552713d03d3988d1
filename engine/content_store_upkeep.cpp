// The content store's upkeep: garbage collection runs and the data directory's writability
// (storage_problem(), probe_storage()). The ingest state machine is in engine/content_store.cpp.
#include <algorithm>
#include <cstring>
#include <memory>

#include "base/assert.hpp"
#include "engine/content_store.hpp"
#include "engine/content_store_internal.hpp"
#include "engine/content_store_work.hpp"
#include "io/log.hpp"

namespace chunkd::engine {
namespace {

std::error_code errno_code(int e) { return {e, std::generic_category()}; }

}  // namespace

void ContentStore::collect_garbage(std::function<void(const GcResult&)> done) {
  if (closing_) {
    if (done) done(GcResult{IngestError::Closed, 0, 0});
    return;
  }
  gc_pending_ = true;
  if (done) gc_waiters_.push_back(std::move(done));
  maybe_run_gc();
}

void ContentStore::maybe_run_gc() {
  if (gc_running_ || !gc_pending_ || closing_ || !jobs_.empty() || !pins_.empty()) return;
  gc_pending_ = false;
  gc_running_ = true;
  gc_ = std::make_unique<GcRun>();
  gc_->store = this;
  gc_->data_dir = options_.data_dir;
  gc_->live = live_ ? live_() : std::vector<std::string>{};
  std::sort(gc_->live.begin(), gc_->live.end());
  gc_->waiters = std::move(gc_waiters_);
  gc_waiters_.clear();
  gc_->work.data = gc_.get();
  int rc = uv_queue_work(
      loop_, &gc_->work,
      [](uv_work_t* req) {
        auto& run = *static_cast<GcRun*>(req->data);
        (void)store_work::clean_tmp(run.data_dir);  // no ingest is running
        run.scan = store_work::scan_blobs(run.data_dir, &run.live);
      },
      [](uv_work_t* req, int status) { static_cast<GcRun*>(req->data)->store->gc_done(status); });
  if (rc != 0) {
    gc_running_ = false;
    GcResult result{errno_code(-rc), 0, 0};
    auto waiters = std::move(gc_->waiters);
    gc_.reset();
    for (auto& waiter : waiters) waiter(result);
  }
}

// Loop thread, after a GC run's work: reports it, then starts the ingests that waited for it.
void ContentStore::gc_done(int status) {
  std::unique_ptr<GcRun> run = std::move(gc_);
  gc_running_ = false;
  GcResult result;
  if (status != 0) {
    result.error = errno_code(-status);
  } else if (run->scan.error != 0) {
    result.error = errno_code(run->scan.error);
  } else {
    stored_blobs_ = run->scan.blobs;
    stored_bytes_ = run->scan.bytes;
    result.removed_blobs = run->scan.removed_blobs;
    result.removed_bytes = run->scan.removed_bytes;
    if (gc_removed_ != nullptr) gc_removed_->inc(result.removed_blobs);
  }
  if (result.error) {
    LOG_WARN("store", "garbage collection failed: %s", result.error.message().c_str());
  } else if (result.removed_blobs != 0) {
    LOG_INFO("store", "garbage collection removed %llu blobs (%llu bytes)",
             static_cast<unsigned long long>(result.removed_blobs),
             static_cast<unsigned long long>(result.removed_bytes));
  }
  for (auto& waiter : run->waiters) waiter(result);
  start_waiting();  // the ingests that arrived during the run
  maybe_run_gc();
  maybe_closed();
}

void ContentStore::set_storage_state(int writable_errno) {
  if (writable_errno == 0) {
    if (!storage_problem_.empty()) {
      LOG_INFO("store", "storage.data_dir %s is writable again", options_.data_dir.c_str());
    }
    storage_problem_.clear();
    return;
  }
  std::string problem = "storage.data_dir " + options_.data_dir +
                        " is not writable: " + std::strerror(writable_errno);
  if (problem != storage_problem_) LOG_WARN("store", "%s", problem.c_str());
  storage_problem_ = std::move(problem);
}

void ContentStore::probe_storage() {
  if (probe_ || closing_) return;
  const std::uint64_t now = clock_.now_ms();
  if (probed_ && now - last_probe_ms_ < kProbeIntervalMs) return;
  probed_ = true;
  last_probe_ms_ = now;
  probe_ = std::make_unique<Probe>();
  probe_->store = this;
  probe_->work.data = probe_.get();
  int rc = uv_queue_work(
      loop_, &probe_->work,
      [](uv_work_t* req) {
        auto& probe = *static_cast<Probe*>(req->data);
        probe.result = probe.store->options_.check_writable(probe.store->options_.data_dir);
      },
      [](uv_work_t* req, int status) {
        auto& probe = *static_cast<Probe*>(req->data);
        ContentStore& store = *probe.store;
        if (status == 0) store.set_storage_state(probe.result);
        store.probe_.reset();
        store.maybe_closed();
      });
  if (rc != 0) probe_.reset();
}

}  // namespace chunkd::engine

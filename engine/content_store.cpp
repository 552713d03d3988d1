// The loop-side state machine of the content store: ingest jobs (read, hash in order, write,
// finalize), pins, and GC runs. The blocking file-system steps are plain functions in
// engine/content_store_work.hpp that this file queues on the libuv thread pool.
#include "engine/content_store.hpp"

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>

#include "base/assert.hpp"
#include "engine/content_store_internal.hpp"
#include "engine/content_store_work.hpp"
#include "io/log.hpp"

namespace chunkd::engine {

std::string blob_path(const std::string& data_dir, std::string_view digest) {
  std::string path = data_dir;
  path += "/blobs/";
  path.append(digest.substr(0, 2));
  path += '/';
  path.append(digest);
  return path;
}

bool valid_digest(std::string_view digest) {
  if (digest.size() != 32) return false;
  return std::all_of(digest.begin(), digest.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

namespace {

class IngestCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "ingest"; }
  std::string message(int value) const override {
    switch (static_cast<IngestError>(value)) {
      case IngestError::SourceChanged:
        return "the file changed while it was being read";
      case IngestError::Closed:
        return "the content store is closing";
      case IngestError::TooLarge:
        return "the file is over storage.max_file_mib";
      case IngestError::StorageFull:
        return "too little free space in storage.data_dir";
      case IngestError::DigestMismatch:
        return "the content does not have the expected digest";
    }
    return "ingest error";
  }
};

std::error_code errno_code(int e) { return {e, std::generic_category()}; }

std::string digest_hex(XXH128_hash_t hash) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (std::size_t i = 0; i < 16; ++i) {
    out[2 * i] = kHex[canonical.digest[i] >> 4];
    out[2 * i + 1] = kHex[canonical.digest[i] & 0xf];
  }
  return out;
}

}  // namespace

const std::error_category& ingest_category() {
  static const IngestCategory category;
  return category;
}

std::error_code make_error_code(IngestError e) { return {static_cast<int>(e), ingest_category()}; }

bool storage_full(const std::error_code& error) {
  return error == IngestError::StorageFull || error == std::errc::no_space_on_device ||
         (error.category() == std::generic_category() && error.value() == EDQUOT);
}

ContentStore::ContentStore(uv_loop_t* loop, io::FileReader& reader, Metrics* metrics,
                           const Clock& clock, ContentStoreOptions options, LiveDigests live)
    : loop_(loop),
      reader_(reader),
      metrics_(metrics),
      clock_(clock),
      options_(std::move(options)),
      live_(std::move(live)) {
  // REQUIRES: a power-of-two extent (the config's storage.extent_kib), at least one read.
  CHUNKD_ASSERT(options_.extent_bytes > 0 &&
                (options_.extent_bytes & (options_.extent_bytes - 1)) == 0);
  CHUNKD_ASSERT(options_.reads_in_flight > 0);
  if (!options_.free_space) options_.free_space = store_work::free_space;
  if (!options_.check_writable) options_.check_writable = store_work::check_writable;
  if (metrics_ != nullptr) {
    ingest_bytes_ = &metrics_->counter("chunkd_ingest_bytes_total",
                                       "Bytes read into the content store by ingests.");
    ingest_seconds_ = &metrics_->gauge("chunkd_ingest_seconds_total",
                                       "Seconds spent in successful ingests (a running total).");
    gc_removed_ =
        &metrics_->counter("chunkd_gc_removed_blobs_total", "Blobs removed by garbage collection.");
    metrics_->gauge_fn("chunkd_store_bytes", "Bytes stored in the content store.", "",
                       [this] { return static_cast<double>(stored_bytes_); });
    metrics_->gauge_fn("chunkd_store_blobs", "Blobs stored in the content store.", "",
                       [this] { return static_cast<double>(stored_blobs_); });
  }
}

ContentStore::~ContentStore() {
  CHUNKD_ASSERT(jobs_.empty() && waiting_.empty() && !gc_running_ && !probe_);
}

std::error_code ContentStore::open(std::string& message) {
  const std::string& dir = options_.data_dir;
  for (const std::string& path : {dir, dir + "/blobs", dir + "/tmp"}) {
    if (int e = store_work::make_dirs(path)) {
      message = "cannot create " + path + ": " + std::strerror(e);
      return errno_code(e);
    }
  }
  struct stat st {};
  if (::stat((dir + "/tmp").c_str(), &st) != 0) {
    int e = errno;
    message = "cannot stat " + dir + "/tmp: " + std::strerror(e);
    return errno_code(e);
  }
  data_device_ = static_cast<std::uint64_t>(st.st_dev);
  if (int e = store_work::clean_tmp(dir)) {
    message = "cannot empty " + dir + "/tmp: " + std::strerror(e);
    return errno_code(e);
  }
  store_work::ScanResult scan = store_work::scan_blobs(dir, nullptr);
  if (scan.error != 0) {
    message = "cannot list " + dir + "/blobs: " + std::strerror(scan.error);
    return errno_code(scan.error);
  }
  stored_blobs_ = scan.blobs;
  stored_bytes_ = scan.bytes;
  set_storage_state(options_.check_writable(dir));
  return {};
}

std::size_t ContentStore::ingests_in_progress() const { return jobs_.size() + waiting_.size(); }

void ContentStore::ingest(int fd, IngestDone done, std::shared_ptr<IngestProgress> progress) {
  if (closing_) {
    ::close(fd);
    done(IngestError::Closed, {});
    return;
  }
  auto job = std::make_unique<Job>();
  job->store = this;
  job->done = std::move(done);
  job->src_fd = fd;
  job->progress = std::move(progress);
  job->started_ms = clock_.now_ms();
  if (gc_running_) {
    waiting_.push_back(std::move(job));
    return;
  }
  jobs_.push_back(std::move(job));
  start(*jobs_.back());
}

// Thread pool: size the source, make the temp file, try a reflink.
void ContentStore::start(Job& job) {
  job.tmp_path = options_.data_dir + "/tmp/ingest-" + std::to_string(::getpid()) + "-" +
                 std::to_string(next_tmp_++);
  if (job.writer) {
    start_writer(job);
    return;
  }
  job.work.data = &job;
  int rc = uv_queue_work(
      loop_, &job.work,
      [](uv_work_t* req) {
        auto& j = *static_cast<Job*>(req->data);
        const ContentStore& store = *j.store;
        store_work::PreparedIngest prepared;
        store_work::IngestPlan plan{j.tmp_path,
                                    store.options_.try_reflink,
                                    store.data_device_,
                                    store.options_.max_file_bytes,
                                    store.options_.data_dir,
                                    store.options_.free_space};
        j.work_errno = store_work::prepare_ingest(j.src_fd, plan, prepared);
        j.tmp_fd = prepared.tmp_fd;
        j.read_fd = prepared.read_fd;
        j.size = prepared.size;
        j.available = prepared.available_bytes;
        j.hash_only = prepared.hash_only;
        j.result.reflinked = prepared.reflinked;
        if (prepared.too_large) j.error = IngestError::TooLarge;
      },
      [](uv_work_t* req, int status) {
        auto& j = *static_cast<Job*>(req->data);
        j.store->prepared(j, status);
      });
  if (rc != 0) {
    job.error = errno_code(-rc);
    pump(job);
  }
}

// Loop thread, after start's work: sets up hashing and the read slots, then starts reading.
void ContentStore::prepared(Job& j, int status) {
  if (status != 0) {
    j.error = errno_code(-status);
  } else if (j.work_errno != 0) {
    j.error = errno_code(j.work_errno);
  }
  if (!j.error && j.hash_only) {
    LOG_INFO("store", "%llu bytes free under %s for a %llu-byte file: hashing it first",
             static_cast<unsigned long long>(j.available), options_.data_dir.c_str(),
             static_cast<unsigned long long>(j.size));
  }
  if (!j.error && j.progress) j.progress->total = j.size;
  if (!j.error) {
    const std::uint64_t extent = options_.extent_bytes;
    j.extents = (j.size + extent - 1) / extent;
    j.hash = XXH3_createState();
    if (j.hash == nullptr || XXH3_128bits_reset(j.hash) != XXH_OK) {
      j.error = std::make_error_code(std::errc::not_enough_memory);
    } else {
      std::size_t n =
          static_cast<std::size_t>(std::min<std::uint64_t>(j.extents, options_.reads_in_flight));
      j.slots.resize(n);
      for (auto& slot : j.slots) {
        slot.job = &j;
        slot.buffer = std::make_unique<std::byte[]>(extent);
      }
      j.result.extent_bytes = options_.extent_bytes;
      j.result.manifest.reserve(static_cast<std::size_t>(j.extents));
    }
  }
  pump(j);
}

void ContentStore::pump(Job& job) {
  if (job.pumping) {
    job.pump_again = true;
    return;
  }
  job.pumping = true;
  do {
    job.pump_again = false;
    step(job);
  } while (job.pump_again);
  job.pumping = false;
}

void ContentStore::step(Job& job) {
  if (job.ended || job.writer) return;  // a writer ends with IngestWriter::finish
  if (!job.error && closing_) job.error = IngestError::Closed;
  if (!job.error) {
    hash_ready(job);
    if (!job.error) issue_reads(job);
  }
  if (job.outstanding != 0) return;
  if (job.error || job.next_hash == job.extents) finalize(job);
}

void ContentStore::issue_reads(Job& job) {
  const std::uint64_t extent = options_.extent_bytes;
  for (auto& slot : job.slots) {
    if (job.error || job.next_read >= job.extents) return;
    if (slot.state != Job::SlotState::Free) continue;
    slot.state = Job::SlotState::Reading;
    slot.extent = job.next_read++;
    std::uint64_t offset = slot.extent * extent;
    slot.length = static_cast<std::size_t>(std::min(extent, job.size - offset));
    slot.written = 0;
    job.outstanding++;
    Job::Slot* s = &slot;
    reader_.read(job.read_fd, offset, std::span<std::byte>(slot.buffer.get(), slot.length),
                 [s](std::error_code error, std::size_t bytes_read) {
                   Job& j = *s->job;
                   j.outstanding--;
                   if (error) {
                     if (!j.error) j.error = error;
                     s->state = Job::SlotState::Free;
                   } else if (bytes_read < s->length) {
                     if (!j.error) j.error = IngestError::SourceChanged;
                     s->state = Job::SlotState::Free;
                   } else {
                     s->state = Job::SlotState::Ready;
                   }
                   j.store->pump(j);
                 });
  }
}

void ContentStore::hash_ready(Job& job) {
  bool progressed = true;
  while (progressed && job.next_hash < job.extents) {
    progressed = false;
    for (auto& slot : job.slots) {
      if (slot.state != Job::SlotState::Ready || slot.extent != job.next_hash) continue;
      progressed = true;
      const std::byte* data = slot.buffer.get();
      (void)XXH3_128bits_update(job.hash, data, slot.length);
      job.result.manifest.push_back(XXH3_64bits(data, slot.length));
      job.next_hash++;
      if (job.progress) job.progress->done += slot.length;
      if (job.result.reflinked || job.hash_only) {
        slot.state = Job::SlotState::Free;
        break;
      }
      if (!job.write_extent(slot)) return;
      break;
    }
  }
}

bool ContentStore::Job::write_extent(Slot& slot) {
  slot.state = SlotState::Writing;
  slot.write_req.data = &slot;
  slot.write_buf =
      uv_buf_init(reinterpret_cast<char*>(slot.buffer.get()), static_cast<unsigned>(slot.length));
  outstanding++;
  const std::uint64_t extent = store->options_.extent_bytes;
  int rc = uv_fs_write(store->loop_, &slot.write_req, tmp_fd, &slot.write_buf, 1,
                       static_cast<std::int64_t>(slot.extent * extent), &Job::on_write);
  if (rc != 0) {
    outstanding--;
    slot.state = SlotState::Free;
    error = errno_code(-rc);
    return false;
  }
  return true;
}

void ContentStore::Job::on_write(uv_fs_t* req) {
  auto* s = static_cast<Slot*>(req->data);
  Job& j = *s->job;
  const std::uint64_t ext = j.store->options_.extent_bytes;
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  if (result < 0 || (result == 0 && s->written < s->length)) {
    if (!j.error) j.error = errno_code(result < 0 ? static_cast<int>(-result) : EIO);
  } else {
    s->written += static_cast<std::size_t>(result);
    if (s->written < s->length && !j.error) {
      // A short write: write the rest.
      s->write_buf = uv_buf_init(reinterpret_cast<char*>(s->buffer.get() + s->written),
                                 static_cast<unsigned>(s->length - s->written));
      int rc = uv_fs_write(j.store->loop_, &s->write_req, j.tmp_fd, &s->write_buf, 1,
                           static_cast<std::int64_t>(s->extent * ext + s->written), req->cb);
      if (rc == 0) return;
      j.error = errno_code(-rc);
    }
  }
  s->state = SlotState::Free;
  j.outstanding--;
  j.store->pump(j);
}

// Thread pool: on success fsync, link to the digest name, fsync the directory; always close the
// descriptors and remove the temp name.
void ContentStore::finalize(Job& job) {
  job.ended = true;
  if (!job.error) {
    job.result.digest = digest_hex(XXH3_128bits_digest(job.hash));
    job.result.size_bytes = job.size;
    if (!job.expected_digest.empty() && job.result.digest != job.expected_digest) {
      job.error = IngestError::DigestMismatch;  // commit_ingest then drops the temp file
    }
  }
  job.work.data = &job;
  job.work_errno = 0;
  int rc = uv_queue_work(
      loop_, &job.work,
      [](uv_work_t* req) {
        auto& j = *static_cast<Job*>(req->data);
        store_work::CommittedBlob blob;
        const std::string& data_dir = j.store->options_.data_dir;
        j.work_errno = store_work::commit_ingest(!j.error && !j.hash_only, j.src_fd, j.tmp_fd,
                                                 j.tmp_path, data_dir, j.result.digest, blob);
        if (j.hash_only && !j.error) {
          blob.deduplicated = store_work::blob_stored(data_dir, j.result.digest, j.size);
          if (!blob.deduplicated) j.error = IngestError::StorageFull;
        }
        j.tmp_fd = j.src_fd = j.read_fd = -1;
        j.created = blob.created;
        j.result.deduplicated = blob.deduplicated;
      },
      [](uv_work_t* req, int status) {
        auto& j = *static_cast<Job*>(req->data);
        if (!j.error && status != 0) j.error = errno_code(-status);
        if (!j.error && j.work_errno != 0) j.error = errno_code(j.work_errno);
        j.store->finish(j);
      });
  if (rc != 0) {
    // Cannot happen with a live loop; close here rather than leak.
    if (job.tmp_fd >= 0) ::close(job.tmp_fd);
    if (job.src_fd >= 0) ::close(job.src_fd);
    ::unlink(job.tmp_path.c_str());
    if (!job.error) job.error = errno_code(-rc);
    finish(job);
  }
}

void ContentStore::finish(Job& job) {
  auto it =
      std::find_if(jobs_.begin(), jobs_.end(), [&](const auto& p) { return p.get() == &job; });
  CHUNKD_ASSERT(it != jobs_.end());
  std::unique_ptr<Job> owned = std::move(*it);
  jobs_.erase(it);
  if (!owned->error) {
    pins_[owned->result.digest]++;
    if (owned->created) {
      stored_blobs_++;
      stored_bytes_ += owned->result.size_bytes;
    }
    if (ingest_bytes_ != nullptr) ingest_bytes_->inc(owned->result.size_bytes);
    if (ingest_seconds_ != nullptr) {
      ingest_seconds_->add(static_cast<double>(clock_.now_ms() - owned->started_ms) / 1000.0);
    }
    if (!owned->hash_only && !storage_problem_.empty()) set_storage_state(0);
    owned->done({}, std::move(owned->result));
  } else {
    const std::error_code& e = owned->error;
    if (e == std::errc::read_only_file_system || e == std::errc::permission_denied) {
      set_storage_state(e.value());
    }
    IngestResult failed;
    failed.size_bytes = owned->size;
    failed.available_bytes = owned->available;
    owned->done(e, std::move(failed));
  }
  maybe_run_gc();
  maybe_closed();
}

void ContentStore::unpin(const std::string& digest) {
  auto it = pins_.find(digest);
  CHUNKD_ASSERT(it != pins_.end());  // every unpin matches a pin
  if (--it->second == 0) pins_.erase(it);
  maybe_run_gc();
}

void ContentStore::start_waiting() {
  while (!waiting_.empty() && !closing_) {
    jobs_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    start(*jobs_.back());
  }
}

void ContentStore::close(std::function<void()> done) {
  closing_ = true;
  close_done_ = std::move(done);
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& job : waiting) {
    if (job->writer) {
      job->ready(IngestError::Closed, {});
      continue;
    }
    ::close(job->src_fd);
    job->done(IngestError::Closed, {});
  }
  auto waiters = std::move(gc_waiters_);
  gc_waiters_.clear();
  gc_pending_ = false;
  for (auto& waiter : waiters) waiter(GcResult{IngestError::Closed, 0, 0});
  // Running ingests notice `closing_` at their next step; those idle between steps notice now.
  std::vector<Job*> running;
  for (auto& job : jobs_) running.push_back(job.get());
  for (Job* job : running) {
    if (!job->ended && job->hash != nullptr) pump(*job);
  }
  maybe_closed();
}

void ContentStore::maybe_closed() {
  if (!closing_ || !jobs_.empty() || gc_running_ || probe_ || !close_done_) return;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  done();
}

}  // namespace chunkd::engine
// The FileReader factory (backend choice) and the short-read arithmetic both backends share.
#include "io/file_reader.hpp"

#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "base/assert.hpp"
#include "io/file_reader_internal.hpp"

namespace chunkd::io {
namespace detail {

ReadStep apply_completion(ReadProgress& progress, std::int64_t result, std::error_code& error) {
  if (result > 0) {
    const auto bytes = static_cast<std::uint64_t>(result);
    const std::size_t remaining = progress.length - progress.done;
    if (bytes > remaining) {
      // The kernel never returns more than it was asked for; treat it as an I/O fault.
      error = std::make_error_code(std::errc::io_error);
      return ReadStep::Fail;
    }
    progress.done += static_cast<std::size_t>(bytes);
    progress.retries = 0;
    return progress.done == progress.length ? ReadStep::Complete : ReadStep::Resubmit;
  }
  if (result == 0) return ReadStep::Complete;  // EOF: whatever arrived so far
  if (result == -EAGAIN || result == -EINTR) {
    if (++progress.retries > kMaxConsecutiveRetries) {
      error = std::error_code(static_cast<int>(-result), std::system_category());
      return ReadStep::Fail;
    }
    return ReadStep::Resubmit;
  }
  if (result < -std::numeric_limits<int>::max()) {
    error = std::make_error_code(std::errc::io_error);
  } else {
    error = std::error_code(static_cast<int>(-result), std::system_category());
  }
  return ReadStep::Fail;
}

std::size_t next_request_bytes(const ReadProgress& progress, std::size_t max_io_bytes) {
  const std::size_t remaining = progress.length - progress.done;
  const std::size_t cap = max_io_bytes == 0 ? kMaxIoBytes : max_io_bytes;
  return remaining < cap ? remaining : cap;
}

std::size_t slot_count(const FileReaderOptions& options) {
  constexpr std::size_t kMaxSlots = 32768;  // the largest io_uring submission queue
  if (options.max_in_flight == 0) return 1;
  return options.max_in_flight < kMaxSlots ? options.max_in_flight : kMaxSlots;
}

ReaderBase::ReaderBase(uv_loop_t* loop, std::size_t slot_count, std::size_t max_queued,
                       const ReaderHooks& hooks)
    : loop_(loop),
      max_queued_(max_queued),
      max_io_bytes_(hooks.max_io_bytes == 0 ? kMaxIoBytes : hooks.max_io_bytes),
      slots_(slot_count) {
  free_slots_.reserve(slot_count);
  // Lowest index on top, so a lightly loaded reader keeps reusing the same few slots.
  for (std::size_t i = slot_count; i > 0; --i) free_slots_.push_back(i - 1);
}

void ReaderBase::read(int fd, std::uint64_t offset, std::span<std::byte> buffer, Callback done) {
  if (state_ != State::Open) {
    done(std::make_error_code(std::errc::operation_canceled), 0);
    return;
  }
  if (!valid_range(offset, buffer.size())) {
    done(std::make_error_code(std::errc::invalid_argument), 0);
    return;
  }
  if (!free_slots_.empty()) {
    // A free slot implies an empty FIFO: slots are refilled from it the moment they free up.
    const std::size_t slot = free_slots_.back();
    free_slots_.pop_back();
    start(slot, fd, offset, buffer, std::move(done));
    return;
  }
  if (fifo_.size() >= max_queued_) {
    done(std::make_error_code(std::errc::resource_unavailable_try_again), 0);
    return;
  }
  fifo_.push_back(Request{fd, offset, buffer, std::move(done)});
}

void ReaderBase::start(std::size_t slot, int fd, std::uint64_t offset, std::span<std::byte> buffer,
                       Callback done) {
  CHUNKD_ASSERT(slot < slots_.size() && !slots_[slot].busy);
  Slot& s = slots_[slot];
  s.busy = true;
  s.fd = fd;
  s.buffer = buffer.data();
  s.progress = ReadProgress{offset, buffer.size(), 0, 0};
  s.done = std::move(done);
  ++busy_slots_;
  submit(slot);
}

void ReaderBase::complete(std::size_t slot, std::int64_t result) {
  CHUNKD_ASSERT(slot < slots_.size() && slots_[slot].busy);
  Slot& s = slots_[slot];
  std::error_code error;
  if (apply_completion(s.progress, result, error) == ReadStep::Resubmit) {
    submit(slot);
    return;
  }
  Callback done = std::move(s.done);
  const std::size_t bytes = error ? 0 : s.progress.done;
  s.busy = false;
  s.done = nullptr;
  s.buffer = nullptr;
  CHUNKD_ASSERT(busy_slots_ > 0);
  --busy_slots_;
  free_slots_.push_back(slot);
  // Keep the kernel busy before running caller code.
  while (!free_slots_.empty() && !fifo_.empty()) {
    Request next = std::move(fifo_.front());
    fifo_.pop_front();
    const std::size_t free_slot = free_slots_.back();
    free_slots_.pop_back();
    start(free_slot, next.fd, next.offset, next.buffer, std::move(next.done));
  }
  done(error, bytes);
  maybe_shut_down();
}

void ReaderBase::close(std::function<void()> done) {
  if (state_ != State::Open) return;  // a second close() is ignored
  state_ = State::Draining;
  close_done_ = std::move(done);
  maybe_shut_down();
}

void ReaderBase::maybe_shut_down() {
  if (state_ != State::Draining || busy_slots_ != 0 || !fifo_.empty()) return;
  state_ = State::ShuttingDown;
  shut_down();
}

void ReaderBase::finish_close() {
  state_ = State::Closed;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  if (done) done();
}

bool valid_range(std::uint64_t offset, std::size_t length) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return offset <= kMax && static_cast<std::uint64_t>(length) <= kMax - offset;
}

Expected<FileReaderSetup> make_file_reader(uv_loop_t* loop, const FileReaderOptions& options,
                                           const ReaderHooks& hooks) {
  using Backend = FileReaderOptions::Backend;
  if (options.backend == Backend::ThreadPool) {
    return FileReaderSetup{make_threadpool_reader(loop, options, hooks),
                           "file reads: libuv thread pool (chosen in the configuration)"};
  }
  auto uring = make_uring_reader(loop, options, hooks);
  if (uring) return FileReaderSetup{std::move(*uring), "file reads: io_uring"};
  const base::Error& refused = uring.error();
  if (options.backend == Backend::IoUring) {
    return fail(refused.code, "io_uring refused by the kernel (in " + refused.detail +
                                  "); it was required by the configuration: allow io_uring "
                                  "(kernel.io_uring_disabled, seccomp policy, RLIMIT_MEMLOCK) or "
                                  "choose the thread-pool backend");
  }
  // Auto: any refusal (EPERM from a sysctl or seccomp, ENOSYS on an old or stripped kernel,
  // ENOMEM from RLIMIT_MEMLOCK, ...) falls back; the thread pool needs nothing from the kernel.
  return FileReaderSetup{
      make_threadpool_reader(loop, options, hooks),
      "io_uring unavailable (" + refused.message() + "); using the libuv thread pool"};
}

}  // namespace detail

Expected<FileReaderSetup> make_file_reader(uv_loop_t* loop, const FileReaderOptions& options) {
  return detail::make_file_reader(loop, options, detail::ReaderHooks{});
}

}  // namespace chunkd::io

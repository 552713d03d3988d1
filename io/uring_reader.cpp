// FileReader on io_uring, bridged into the libuv loop through the ring's eventfd.
#include "io/uring_reader.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "base/assert.hpp"
#include "io/log.hpp"

namespace chunkd::io::detail {
namespace {

constexpr unsigned kMaxRingEntries = 32768;  // IORING_MAX_ENTRIES
constexpr unsigned kReapBatch = 64;
constexpr std::uint64_t kSubmitRetryMs = 1;

std::error_code errno_code(int value) { return {value, std::system_category()}; }

// The kernel refused `step` with errno `value`.
Unexpected<base::Error> refused(const char* step, int value) {
  return fail(errno_code(value), step);
}

}  // namespace

Expected<std::unique_ptr<UringReader>> UringReader::create(uv_loop_t* loop,
                                                           const FileReaderOptions& options,
                                                           const ReaderHooks& hooks) {
  std::unique_ptr<UringReader> reader(new UringReader(loop, options, hooks));
  if (auto ready = reader->init(options, hooks); !ready) return Unexpected{ready.error()};
  return reader;
}

UringReader::UringReader(uv_loop_t* loop, const FileReaderOptions& options,
                         const ReaderHooks& hooks)
    : ReaderBase(loop, slot_count(options), options.max_queued, hooks) {}

Expected<void> UringReader::init(const FileReaderOptions& options, const ReaderHooks& hooks) {
  if (hooks.fail_uring_init_with != 0) {
    return refused("io_uring_queue_init", hooks.fail_uring_init_with);
  }

  // Every slot's SQE must fit in the submission queue; the completion queue is twice as large,
  // so it cannot overflow with at most one request per slot in the kernel.
  const auto slots = static_cast<unsigned>(slot_count(options));
  unsigned entries = options.ring_entries > slots ? options.ring_entries : slots;
  if (entries > kMaxRingEntries) entries = kMaxRingEntries;
  if (entries == 0) entries = 1;
  const int rc = io_uring_queue_init(entries, &ring_, 0);
  if (rc < 0) return refused("io_uring_queue_init", -rc);
  ring_ready_ = true;
  ring_entries_ = ring_.sq.ring_entries;

  io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
  // Probing arrived with IORING_OP_READ (5.6).
  if (probe == nullptr) return refused("io_uring_get_probe_ring", ENOSYS);
  const bool has_read = io_uring_opcode_supported(probe, IORING_OP_READ) != 0;
  io_uring_free_probe(probe);
  if (!has_read) return refused("IORING_OP_READ", EOPNOTSUPP);

  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) return refused("eventfd", errno);
  const int reg = io_uring_register_eventfd(&ring_, event_fd_);
  if (reg < 0) return refused("io_uring_register_eventfd", -reg);

  const int poll_rc = uv_poll_init(loop(), &poll_, event_fd_);
  if (poll_rc < 0) return refused("uv_poll_init", -poll_rc);
  uv_prepare_init(loop(), &prepare_);
  uv_timer_init(loop(), &retry_timer_);
  poll_.data = this;
  prepare_.data = this;
  retry_timer_.data = this;
  handles_ready_ = true;
  return {};
}

UringReader::~UringReader() {
  if (handles_ready_ && state() != State::Closed) {
    LOG_ERROR("io", "io_uring FileReader destroyed before close() finished");
    std::abort();
  }
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

std::uint64_t UringReader::make_user_data(std::size_t slot, std::uint32_t generation) {
  CHUNKD_ASSERT(slot <= 0xffffffffu);  // the slot index fits the low half
  return (std::uint64_t{generation} << 32) | static_cast<std::uint32_t>(slot);
}

void UringReader::submit(std::size_t slot) {
  CHUNKD_ASSERT(slot < slots().size() && slots()[slot].busy);
  Slot& s = slots()[slot];
  ++s.generation;  // a completion of any earlier submission of this slot is now stale
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // Impossible by construction: at most one SQE per slot and the queue holds all slots.
    LOG_ERROR("io", "io_uring submission queue full (%u entries)", ring_entries_);
    std::abort();
  }
  const std::size_t bytes = next_request_bytes(s.progress, max_io_bytes());
  io_uring_prep_read(sqe, s.fd, s.buffer + s.progress.done, static_cast<unsigned>(bytes),
                     s.progress.offset + s.progress.done);
  io_uring_sqe_set_data64(sqe, make_user_data(slot, s.generation));
  if (!prepare_active_) {
    uv_prepare_start(&prepare_, &on_prepare);
    prepare_active_ = true;
  }
  if (!poll_active_) {
    uv_poll_start(&poll_, UV_READABLE, &on_poll);
    poll_active_ = true;
  }
}

void UringReader::flush_submissions() {
  if (prepare_active_) {
    uv_prepare_stop(&prepare_);
    prepare_active_ = false;
  }
  if (io_uring_sq_ready(&ring_) == 0) return;
  for (unsigned attempt = 0;; ++attempt) {
    ++submit_calls_;
    const int rc = io_uring_submit(&ring_);
    if (rc >= 0) break;
    if (rc == -EINTR && attempt < kMaxConsecutiveRetries) continue;
    if (rc == -EAGAIN || rc == -EBUSY || rc == -EINTR) break;  // transient: retried below
    LOG_ERROR("io", "io_uring_submit failed: %s", errno_code(-rc).message().c_str());
    std::abort();
  }
  if (io_uring_sq_ready(&ring_) > 0) {
    // The kernel took only part of the batch (out of memory for the moment): try again soon.
    uv_timer_start(&retry_timer_, &on_retry_timer, kSubmitRetryMs, 0);
  }
}

void UringReader::reap() {
  std::uint64_t count = 0;
  // Drain first: a completion posted after this read raises the eventfd again.
  [[maybe_unused]] const ssize_t drained = ::read(event_fd_, &count, sizeof count);
  struct Completion {
    std::uint64_t user_data;
    std::int32_t result;
  };
  Completion batch[kReapBatch];
  for (;;) {
    unsigned n = 0;
    unsigned head = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      batch[n++] = Completion{cqe->user_data, cqe->res};
      if (n == kReapBatch) break;
    }
    if (n == 0) break;
    // Release the CQ entries before any caller code runs.
    io_uring_cq_advance(&ring_, n);
    for (unsigned i = 0; i < n; ++i) handle_completion(batch[i].user_data, batch[i].result);
  }
  if (poll_active_ && in_flight() == 0 && state() != State::ShuttingDown &&
      state() != State::Closed) {
    uv_poll_stop(&poll_);
    poll_active_ = false;
  }
}

void UringReader::handle_completion(std::uint64_t user_data, std::int32_t result) {
  const auto slot = static_cast<std::size_t>(user_data & 0xffffffffu);
  const auto generation = static_cast<std::uint32_t>(user_data >> 32);
  if (slot >= slots().size() || !slots()[slot].busy || slots()[slot].generation != generation) {
    ++stale_completions_;
    LOG_WARN("io", "ignoring stale io_uring completion (slot %zu, generation %u, result %d)", slot,
             generation, result);
    return;
  }
  // Exactly one SQE per busy slot is in the kernel; its completion matches slot and generation.
  complete(slot, result);
}

void UringReader::shut_down() {
  handles_open_ = 3;
  poll_active_ = false;
  prepare_active_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), &on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), &on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&retry_timer_), &on_close);
}

void UringReader::on_prepare(uv_prepare_t* handle) noexcept {
  static_cast<UringReader*>(handle->data)->flush_submissions();
}

void UringReader::on_retry_timer(uv_timer_t* handle) noexcept {
  static_cast<UringReader*>(handle->data)->flush_submissions();
}

void UringReader::on_poll(uv_poll_t* handle, int status, int /*events*/) noexcept {
  auto* self = static_cast<UringReader*>(handle->data);
  if (status < 0) {
    LOG_WARN("io", "io_uring eventfd poll error: %s", uv_strerror(status));
  }
  self->reap();  // the CQ is the truth; reaping on an error wake-up costs nothing
}

void UringReader::on_close(uv_handle_t* handle) noexcept {
  auto* self = static_cast<UringReader*>(handle->data);
  if (--self->handles_open_ > 0) return;
  io_uring_queue_exit(&self->ring_);
  self->ring_ready_ = false;
  ::close(self->event_fd_);
  self->event_fd_ = -1;
  self->finish_close();  // may destroy *self: nothing after this
}

Expected<std::unique_ptr<FileReader>> make_uring_reader(uv_loop_t* loop,
                                                        const FileReaderOptions& options,
                                                        const ReaderHooks& hooks) {
  auto reader = UringReader::create(loop, options, hooks);
  if (!reader) return Unexpected{reader.error()};
  return std::unique_ptr<FileReader>(std::move(*reader));
}

}  // namespace chunkd::io::detail

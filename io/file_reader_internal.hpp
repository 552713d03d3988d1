// Private to io/: the pieces both FileReader backends share, and the seams their tests use.
// Not part of the contract; engine code includes io/file_reader.hpp only.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "io/file_reader.hpp"

namespace chunkd::io::detail {

// One submission never asks for more than this many bytes (an SQE length is 32 bits and Linux
// caps a single read at 0x7ffff000 bytes); a longer read is carried out as several submissions.
inline constexpr std::size_t kMaxIoBytes = std::size_t{1} << 30;
// -EAGAIN/-EINTR from one read are retried at most this many times in a row before it fails.
inline constexpr unsigned kMaxConsecutiveRetries = 64;

// Progress of one caller read across its submissions.
struct ReadProgress {
  std::uint64_t offset = 0;  // file offset of byte 0 of the caller's buffer
  std::size_t length = 0;    // bytes the caller asked for
  std::size_t done = 0;      // bytes already in the buffer
  unsigned retries = 0;      // consecutive -EAGAIN/-EINTR
};

enum class ReadStep {
  Resubmit,  // submit again for [offset + done, offset + length)
  Complete,  // finished: `done` bytes (== length, or fewer at EOF)
  Fail,      // finished with `error`
};

// Applies one completion to `progress`. `result` is what the kernel (or uv_fs_read) returned:
// a byte count >= 0 or a negated errno. Pure; both backends and the tests use it.
ReadStep apply_completion(ReadProgress& progress, std::int64_t result, std::error_code& error);

// Bytes the next submission asks for: the rest of the buffer, capped at `max_io_bytes`.
std::size_t next_request_bytes(const ReadProgress& progress, std::size_t max_io_bytes);

// True when [offset, offset + length) is addressable as a signed 64-bit file range.
bool valid_range(std::uint64_t offset, std::size_t length);

// Test seams. Production code uses the defaults.
struct ReaderHooks {
  // Cap on the bytes per submission: a test lowers it to force the short-read path.
  std::size_t max_io_bytes = kMaxIoBytes;
  // Non-zero: pretend io_uring_queue_init failed with this errno.
  int fail_uring_init_with = 0;
};

// What both backends share: a fixed array of `max_in_flight` slots (one per read in the kernel),
// the bounded FIFO behind them, the short-read loop and the close protocol. A backend supplies
// submit() (start one submission for a busy slot) and shut_down() (release its handles once
// everything accepted has finished, then call finish_close()). Loop thread only.
class ReaderBase : public FileReader {
 public:
  void read(int fd, std::uint64_t offset, std::span<std::byte> buffer, Callback done) final;
  void close(std::function<void()> done) final;
  std::size_t in_flight() const final { return busy_slots_; }
  std::size_t queued() const final { return fifo_.size(); }

 protected:
  struct Slot {
    bool busy = false;
    std::uint32_t generation = 0;  // bumped by the backend on every submission
    int fd = -1;
    std::byte* buffer = nullptr;
    ReadProgress progress;
    Callback done;
  };
  enum class State { Open, Draining, ShuttingDown, Closed };

  ReaderBase(uv_loop_t* loop, std::size_t slot_count, std::size_t max_queued,
             const ReaderHooks& hooks);

  virtual void submit(std::size_t slot) = 0;
  virtual void shut_down() = 0;

  // Applies one completion (bytes or -errno) to a busy slot: resubmits, or finishes the read,
  // refills free slots from the FIFO, runs the caller's callback and, after close(), shuts down.
  void complete(std::size_t slot, std::int64_t result);
  void finish_close();

  uv_loop_t* loop() const { return loop_; }
  std::vector<Slot>& slots() { return slots_; }
  std::size_t max_io_bytes() const { return max_io_bytes_; }
  State state() const { return state_; }

 private:
  struct Request {
    int fd;
    std::uint64_t offset;
    std::span<std::byte> buffer;
    Callback done;
  };
  void start(std::size_t slot, int fd, std::uint64_t offset, std::span<std::byte> buffer,
             Callback done);
  void maybe_shut_down();

  uv_loop_t* loop_;
  std::size_t max_queued_;
  std::size_t max_io_bytes_;
  std::vector<Slot> slots_;
  std::vector<std::size_t> free_slots_;
  std::size_t busy_slots_ = 0;
  std::deque<Request> fifo_;
  State state_ = State::Open;
  std::function<void()> close_done_;
};

// Slots a backend gets for these options (max_in_flight, at least 1).
std::size_t slot_count(const FileReaderOptions& options);

std::unique_ptr<FileReader> make_threadpool_reader(uv_loop_t* loop,
                                                   const FileReaderOptions& options,
                                                   const ReaderHooks& hooks);

// Fails with the kernel's errno, and the set-up step that failed, when the kernel refuses io_uring.
Expected<std::unique_ptr<FileReader>> make_uring_reader(uv_loop_t* loop,
                                                        const FileReaderOptions& options,
                                                        const ReaderHooks& hooks);

// make_file_reader with test hooks.
Expected<FileReaderSetup> make_file_reader(uv_loop_t* loop, const FileReaderOptions& options,
                                           const ReaderHooks& hooks);

}  // namespace chunkd::io::detail

// Asynchronous positional file reads completed on the libuv loop thread.
//
// Two backends behind one interface: io_uring (the ring's eventfd watched by a uv_poll_t; every
// wake-up drains the eventfd and reaps all completions; submissions batched once per loop turn) and
// the libuv thread pool (uv_fs_read), used when the kernel refuses io_uring (EPERM/ENOSYS/...).
// At most `max_in_flight` reads are in the kernel; further reads wait in a FIFO (bounded by
// `max_queued`; over it, read() fails at once with std::errc::resource_unavailable_try_again).
// Short reads are resubmitted for the rest; -EAGAIN/-EINTR retried; the callback sees either the
// full length, a shorter length only at EOF, or an error.
//
// Thread: every method and callback on the loop thread. The caller keeps `fd` open and `buffer`
// alive until the callback runs. close() cancels nothing: it waits for reads in flight, then calls
// `done`; read() after close() fails with std::errc::operation_canceled.
// "Fails at once" means the callback runs before read() returns. read() also fails at once with
// std::errc::invalid_argument when offset + size exceeds INT64_MAX. On error the callback gets
// bytes_read == 0.
// REQUIRES: destroy the reader only after close()'s `done` has run (checked: aborts otherwise).
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>

#include "base/expected.hpp"

namespace chunkd::io {

struct FileReaderOptions {
  enum class Backend { Auto, IoUring, ThreadPool };
  Backend backend = Backend::Auto;
  unsigned ring_entries = 256;
  std::size_t max_in_flight = 64;
  std::size_t max_queued = 65536;
};

class FileReader {
 public:
  using Callback = std::function<void(std::error_code error, std::size_t bytes_read)>;

  virtual ~FileReader() = default;
  virtual void read(int fd, std::uint64_t offset, std::span<std::byte> buffer, Callback done) = 0;
  virtual void close(std::function<void()> done) = 0;
  virtual const char* backend_name() const = 0;  // "io_uring" or "threadpool"
  virtual std::size_t in_flight() const = 0;
  virtual std::size_t queued() const = 0;
};

struct FileReaderSetup {
  std::unique_ptr<FileReader> reader;  // never null
  // One line for the start-up log: the backend chosen and why (e.g. "io_uring unavailable
  // (Operation not permitted); using the libuv thread pool").
  std::string note;
};

// Auto tries io_uring and falls back to the thread pool. Forcing IoUring fails with the kernel's
// error when it is refused, and a detail telling the operator what to change.
// REQUIRES: loop thread.
Expected<FileReaderSetup> make_file_reader(uv_loop_t* loop, const FileReaderOptions& options);

}  // namespace chunkd::io

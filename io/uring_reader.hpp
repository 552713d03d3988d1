// Private to io/: the io_uring FileReader backend, visible so its tests can feed it synthetic
// completions. Engine code uses make_file_reader() in io/file_reader.hpp.
//
// The ring's eventfd is watched by a uv_poll_t; each wake-up drains the eventfd and reaps every
// completion. read() only prepares SQEs; a uv_prepare_t submits them all with one
// io_uring_submit per loop turn. Each slot has at most one SQE in the kernel; its user_data is
// (generation << 32 | slot index), never a pointer, so a completion that does not match a busy
// slot's current generation is counted and ignored instead of touching freed state.
// Loop thread only. Destroy only after close()'s callback has run.
#pragma once

#include <liburing.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <system_error>

#include "base/expected.hpp"
#include "io/file_reader_internal.hpp"

namespace chunkd::io::detail {

class UringReader final : public ReaderBase {
 public:
  // Sets up the ring (sized to hold every slot's SQE) and its eventfd. Fails with the kernel's
  // errno, the detail naming the step the kernel refused ("io_uring_queue_init", ...).
  static Expected<std::unique_ptr<UringReader>> create(uv_loop_t* loop,
                                                       const FileReaderOptions& options,
                                                       const ReaderHooks& hooks);
  ~UringReader() override;

  const char* backend_name() const override { return "io_uring"; }

  // One completion, exactly as the reaper applies it.
  void handle_completion(std::uint64_t user_data, std::int32_t result);

  static std::uint64_t make_user_data(std::size_t slot, std::uint32_t generation);
  std::uint64_t stale_completions() const { return stale_completions_; }
  std::uint64_t submit_calls() const { return submit_calls_; }  // io_uring_submit() calls
  unsigned ring_entries() const { return ring_entries_; }

 private:
  UringReader(uv_loop_t* loop, const FileReaderOptions& options, const ReaderHooks& hooks);
  Expected<void> init(const FileReaderOptions& options, const ReaderHooks& hooks);

  void submit(std::size_t slot) override;
  void shut_down() override;
  void flush_submissions();
  void reap();

  static void on_prepare(uv_prepare_t* handle) noexcept;
  static void on_poll(uv_poll_t* handle, int status, int events) noexcept;
  static void on_retry_timer(uv_timer_t* handle) noexcept;
  static void on_close(uv_handle_t* handle) noexcept;

  io_uring ring_{};
  bool ring_ready_ = false;
  bool handles_ready_ = false;
  int event_fd_ = -1;
  unsigned ring_entries_ = 0;
  uv_poll_t poll_{};
  uv_prepare_t prepare_{};
  uv_timer_t retry_timer_{};
  bool poll_active_ = false;
  bool prepare_active_ = false;
  int handles_open_ = 0;
  std::uint64_t stale_completions_ = 0;
  std::uint64_t submit_calls_ = 0;
};

}  // namespace chunkd::io::detail

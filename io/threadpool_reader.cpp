// FileReader on the libuv thread pool: one uv_fs_t per slot (allocated once), uv_fs_read for each
// submission. The fallback when the kernel refuses io_uring.
#include <uv.h>

#include <cstdlib>
#include <vector>

#include "base/assert.hpp"
#include "io/file_reader_internal.hpp"
#include "io/log.hpp"

namespace chunkd::io::detail {
namespace {

class ThreadPoolReader final : public ReaderBase {
 public:
  ThreadPoolReader(uv_loop_t* loop, const FileReaderOptions& options, const ReaderHooks& hooks)
      : ReaderBase(loop, slot_count(options), options.max_queued, hooks),
        requests_(slot_count(options)) {
    for (uv_fs_t& request : requests_) request.data = this;
    // Never started: closing it is how close() reaches its callback asynchronously.
    uv_idle_init(loop, &close_handle_);
    close_handle_.data = this;
  }

  ~ThreadPoolReader() override {
    if (state() != State::Closed) {
      LOG_ERROR("io", "threadpool FileReader destroyed before close() finished");
      std::abort();
    }
  }

  const char* backend_name() const override { return "threadpool"; }

 private:
  void submit(std::size_t slot) override {
    Slot& s = slots()[slot];
    ++s.generation;
    const std::size_t bytes = next_request_bytes(s.progress, max_io_bytes());
    uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(s.buffer + s.progress.done),
                               static_cast<unsigned int>(bytes));
    const auto offset = static_cast<std::int64_t>(s.progress.offset + s.progress.done);
    const int rc = uv_fs_read(loop(), &requests_[slot], s.fd, &buf, 1, offset, &on_read);
    if (rc < 0) complete(slot, rc);  // rejected before reaching the pool (bad arguments)
  }

  void shut_down() override { uv_close(reinterpret_cast<uv_handle_t*>(&close_handle_), &on_close); }

  static void on_read(uv_fs_t* request) noexcept {
    auto* self = static_cast<ThreadPoolReader*>(request->data);
    const std::int64_t result = request->result;  // bytes, or a negated errno on Linux
    uv_fs_req_cleanup(request);
    const auto slot = static_cast<std::size_t>(request - self->requests_.data());
    CHUNKD_ASSERT(slot < self->requests_.size());
    self->complete(slot, result);
  }

  static void on_close(uv_handle_t* handle) noexcept {
    static_cast<ThreadPoolReader*>(handle->data)->finish_close();
  }

  std::vector<uv_fs_t> requests_;  // never resized: libuv holds pointers into it
  uv_idle_t close_handle_{};
};

}  // namespace

std::unique_ptr<FileReader> make_threadpool_reader(uv_loop_t* loop,
                                                   const FileReaderOptions& options,
                                                   const ReaderHooks& hooks) {
  return std::make_unique<ThreadPoolReader>(loop, options, hooks);
}

}  // namespace chunkd::io::detail

// FileReader: one suite run against both backends, plus backend-specific and pure tests.
#include "io/file_reader.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "io/file_reader_internal.hpp"
#include "io/uring_reader.hpp"

namespace chunkd::io {
namespace {

using Backend = FileReaderOptions::Backend;

std::byte pattern(std::uint64_t offset) {
  // Not periodic at any power of two up to 2^24, so a read from the wrong offset shows.
  const std::uint64_t x = offset * 0x9E3779B1u;
  return static_cast<std::byte>((x >> 13) ^ (offset >> 16));
}

// An unlinked temporary file filled with pattern(offset).
int make_file(std::size_t size_bytes) {
  std::string path = ::testing::TempDir() + "chunkd-file-reader-XXXXXX";
  const int fd = ::mkstemp(path.data());
  if (fd < 0) return -1;
  ::unlink(path.c_str());
  std::vector<std::byte> content(size_bytes);
  for (std::size_t i = 0; i < size_bytes; ++i) content[i] = pattern(i);
  std::size_t written = 0;
  while (written < size_bytes) {
    const ssize_t n = ::write(fd, content.data() + written, size_bytes - written);
    if (n <= 0) {
      ::close(fd);
      return -1;
    }
    written += static_cast<std::size_t>(n);
  }
  return fd;
}

bool matches(const std::byte* data, std::uint64_t offset, std::size_t length) {
  for (std::size_t i = 0; i < length; ++i) {
    if (data[i] != pattern(offset + i)) return false;
  }
  return true;
}

struct Result {
  bool called = false;
  std::error_code error;
  std::size_t bytes = 0;
};

FileReader::Callback capture(Result& result) {
  return [&result](std::error_code error, std::size_t bytes) {
    EXPECT_FALSE(result.called) << "callback ran twice";
    result.called = true;
    result.error = error;
    result.bytes = bytes;
  };
}

class ReaderFixture {
 protected:
  void init_loop() {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    ASSERT_EQ(uv_timer_init(&loop_, &watchdog_), 0);
    watchdog_.data = this;
  }

  void make(Backend backend, FileReaderOptions options = {}, detail::ReaderHooks hooks = {}) {
    options.backend = backend;
    auto setup = detail::make_file_reader(&loop_, options, hooks);
    if (!setup && backend == Backend::IoUring) {
      GTEST_SKIP() << "kernel refuses io_uring: " << setup.error().message();
    }
    ASSERT_TRUE(setup) << setup.error().message();
    reader_ = std::move(setup->reader);
    ASSERT_TRUE(reader_);
  }

  // Runs the loop until `done()` holds. The watchdog is only a guard against a hang.
  template <typename Pred>
  void run_until(Pred done) {
    timed_out_ = false;
    uv_timer_start(&watchdog_, &on_watchdog, 120'000, 0);
    while (!done() && !timed_out_) {
      if (uv_run(&loop_, UV_RUN_ONCE) == 0 && !done()) break;
    }
    uv_timer_stop(&watchdog_);
    ASSERT_TRUE(done()) << (timed_out_ ? "timed out" : "loop ran out of work");
  }

  Result read_once(int fd, std::uint64_t offset, std::span<std::byte> buffer) {
    Result result;
    reader_->read(fd, offset, buffer, capture(result));
    run_until([&] { return result.called; });
    return result;
  }

  void close_reader() {
    if (!reader_) return;
    bool closed = false;
    reader_->close([&closed] { closed = true; });
    run_until([&] { return closed; });
    reader_.reset();
  }

  void finish() {
    close_reader();
    for (int fd : fds_) ::close(fd);
    fds_.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&watchdog_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  int file(std::size_t size_bytes) {
    const int fd = make_file(size_bytes);
    EXPECT_GE(fd, 0) << "cannot create a temporary file";
    if (fd >= 0) fds_.push_back(fd);
    return fd;
  }

  static void on_watchdog(uv_timer_t* timer) {
    static_cast<ReaderFixture*>(timer->data)->timed_out_ = true;
  }

  uv_loop_t loop_{};
  uv_timer_t watchdog_{};
  bool timed_out_ = false;
  std::unique_ptr<FileReader> reader_;
  std::vector<int> fds_;
};

// ---- The shared suite, run once per backend ----------------------------------------------

class FileReaderTest : public ::testing::TestWithParam<Backend>, public ReaderFixture {
 protected:
  void SetUp() override { init_loop(); }
  void TearDown() override { finish(); }
};

TEST_P(FileReaderTest, ReadsWholeSmallFile) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(1000);
  std::vector<std::byte> buffer(1000);
  const Result r = read_once(fd, 0, buffer);
  ASSERT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, 1000u);
  EXPECT_TRUE(matches(buffer.data(), 0, 1000));
  EXPECT_STREQ(reader_->backend_name(), GetParam() == Backend::IoUring ? "io_uring" : "threadpool");
}

TEST_P(FileReaderTest, ReadsAtOffsets) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(64 * 1024);
  for (std::uint64_t offset : {0u, 1u, 4095u, 4096u, 12345u, 65000u}) {
    std::vector<std::byte> buffer(100);
    const Result r = read_once(fd, offset, buffer);
    ASSERT_FALSE(r.error) << r.error.message();
    EXPECT_EQ(r.bytes, 100u) << "offset " << offset;
    EXPECT_TRUE(matches(buffer.data(), offset, 100)) << "offset " << offset;
  }
}

TEST_P(FileReaderTest, ShortReadAtEofReturnsTheRest) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(1000);
  std::vector<std::byte> buffer(500);
  const Result r = read_once(fd, 900, buffer);
  ASSERT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, 100u);
  EXPECT_TRUE(matches(buffer.data(), 900, 100));
}

TEST_P(FileReaderTest, ReadPastEofReturnsZeroBytes) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(1000);
  std::vector<std::byte> buffer(64);
  Result r = read_once(fd, 1000, buffer);
  EXPECT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, 0u);
  r = read_once(fd, 1u << 20, buffer);
  EXPECT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, 0u);
}

TEST_P(FileReaderTest, ZeroLengthReadCompletes) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(10);
  const Result r = read_once(fd, 0, {});
  EXPECT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, 0u);
}

TEST_P(FileReaderTest, BadFdReportsEbadf) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  std::vector<std::byte> buffer(16);
  Result r = read_once(-1, 0, buffer);
  EXPECT_EQ(r.error, std::error_code(EBADF, std::system_category())) << r.error.message();
  EXPECT_EQ(r.bytes, 0u);

  const int closed_fd = make_file(16);
  ASSERT_GE(closed_fd, 0);
  ::close(closed_fd);
  r = read_once(closed_fd, 0, buffer);
  EXPECT_EQ(r.error, std::error_code(EBADF, std::system_category())) << r.error.message();
}

TEST_P(FileReaderTest, OffsetBeyondSignedRangeFailsAtOnce) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(16);
  std::vector<std::byte> buffer(16);
  Result r;
  reader_->read(fd, ~std::uint64_t{0} - 4, buffer, capture(r));
  ASSERT_TRUE(r.called);
  EXPECT_EQ(r.error, std::errc::invalid_argument);
}

TEST_P(FileReaderTest, TenThousandReadsQueueBehindEightInFlight) {
  constexpr std::size_t kReads = 10'000;
  constexpr std::size_t kLength = 256;
  constexpr std::size_t kFileBytes = 1 << 20;
  FileReaderOptions options;
  options.max_in_flight = 8;
  options.max_queued = kReads;
  make(GetParam(), options);
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(kFileBytes);

  std::vector<std::array<std::byte, kLength>> buffers(kReads);
  std::vector<std::uint64_t> offsets(kReads);
  std::vector<Result> results(kReads);
  std::size_t completed = 0;
  std::size_t max_in_flight_seen = 0;
  for (std::size_t i = 0; i < kReads; ++i) {
    offsets[i] = (i * 7919u) % (kFileBytes - kLength);
    reader_->read(fd, offsets[i], buffers[i], [&, i](std::error_code error, std::size_t bytes) {
      results[i] = Result{true, error, bytes};
      ++completed;
      if (reader_->in_flight() > max_in_flight_seen) max_in_flight_seen = reader_->in_flight();
    });
  }
  EXPECT_EQ(reader_->in_flight(), 8u);
  EXPECT_EQ(reader_->queued(), kReads - 8);
  run_until([&] { return completed == kReads; });

  std::size_t good = 0;
  for (std::size_t i = 0; i < kReads; ++i) {
    if (!results[i].error && results[i].bytes == kLength &&
        matches(buffers[i].data(), offsets[i], kLength)) {
      ++good;
    }
  }
  EXPECT_EQ(good, kReads);
  EXPECT_LE(max_in_flight_seen, 8u);
  EXPECT_EQ(reader_->in_flight(), 0u);
  EXPECT_EQ(reader_->queued(), 0u);
}

TEST_P(FileReaderTest, QueueOverflowFailsAtOnce) {
  FileReaderOptions options;
  options.max_in_flight = 1;
  options.max_queued = 2;
  make(GetParam(), options);
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(4096);
  std::vector<std::vector<std::byte>> buffers(4, std::vector<std::byte>(64));
  std::vector<Result> results(4);
  for (std::size_t i = 0; i < 3; ++i) {
    reader_->read(fd, i * 64, buffers[i], capture(results[i]));
  }
  EXPECT_EQ(reader_->in_flight(), 1u);
  EXPECT_EQ(reader_->queued(), 2u);
  reader_->read(fd, 0, buffers[3], capture(results[3]));
  ASSERT_TRUE(results[3].called) << "overflow must fail before read() returns";
  EXPECT_EQ(results[3].error, std::errc::resource_unavailable_try_again);
  EXPECT_EQ(reader_->queued(), 2u);

  run_until([&] { return results[0].called && results[1].called && results[2].called; });
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_FALSE(results[i].error) << i << ": " << results[i].error.message();
    EXPECT_EQ(results[i].bytes, 64u);
    EXPECT_TRUE(matches(buffers[i].data(), i * 64, 64));
  }
}

TEST_P(FileReaderTest, CloseWaitsForReadsInFlightAndQueued) {
  FileReaderOptions options;
  options.max_in_flight = 4;
  make(GetParam(), options);
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(64 * 1024);
  constexpr std::size_t kReads = 20;
  std::vector<std::vector<std::byte>> buffers(kReads, std::vector<std::byte>(1024));
  std::size_t completed_ok = 0;
  std::size_t completed_before_close_done = 0;
  bool closed = false;
  for (std::size_t i = 0; i < kReads; ++i) {
    reader_->read(fd, i * 1024, buffers[i], [&, i](std::error_code error, std::size_t bytes) {
      EXPECT_FALSE(closed);
      if (!error && bytes == 1024 && matches(buffers[i].data(), i * 1024, 1024)) ++completed_ok;
    });
  }
  EXPECT_GT(reader_->queued(), 0u);
  reader_->close([&] {
    completed_before_close_done = completed_ok;
    closed = true;
  });
  EXPECT_FALSE(closed) << "close() must not call back synchronously";

  Result after;
  reader_->read(fd, 0, buffers[0], capture(after));
  ASSERT_TRUE(after.called);
  EXPECT_EQ(after.error, std::errc::operation_canceled);

  run_until([&] { return closed; });
  EXPECT_EQ(completed_before_close_done, kReads);
  reader_.reset();
}

TEST_P(FileReaderTest, CloseWhenIdleCallsBackOnTheLoop) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  bool closed = false;
  reader_->close([&] { closed = true; });
  EXPECT_FALSE(closed);
  run_until([&] { return closed; });
  reader_.reset();
}

TEST_P(FileReaderTest, LargeReadOf8MiB) {
  make(GetParam());
  if (IsSkipped() || HasFatalFailure()) return;
  constexpr std::size_t kBytes = 8u << 20;
  const int fd = file(kBytes);
  std::vector<std::byte> buffer(kBytes);
  const Result r = read_once(fd, 0, buffer);
  ASSERT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, kBytes);
  EXPECT_TRUE(matches(buffer.data(), 0, kBytes));
}

TEST_P(FileReaderTest, ShortReadsAreResubmittedForTheRest) {
  // Each submission asks for at most 1000 bytes, so every read here is a chain of short reads.
  detail::ReaderHooks hooks;
  hooks.max_io_bytes = 1000;
  make(GetParam(), {}, hooks);
  if (IsSkipped() || HasFatalFailure()) return;
  const int fd = file(25'000);

  std::vector<std::byte> buffer(10'000);
  Result r = read_once(fd, 777, buffer);
  ASSERT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, 10'000u);
  EXPECT_TRUE(matches(buffer.data(), 777, 10'000));

  // The chain stops at EOF with what it has.
  r = read_once(fd, 20'500, buffer);
  ASSERT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, 4'500u);
  EXPECT_TRUE(matches(buffer.data(), 20'500, 4'500));
}

INSTANTIATE_TEST_SUITE_P(Backends, FileReaderTest,
                         ::testing::Values(Backend::IoUring, Backend::ThreadPool),
                         [](const ::testing::TestParamInfo<Backend>& param_info) {
                           return param_info.param == Backend::IoUring ? std::string("IoUring")
                                                                       : std::string("ThreadPool");
                         });

// ---- Backend choice ----------------------------------------------------------------------

class FileReaderFactoryTest : public ::testing::Test, public ReaderFixture {
 protected:
  void SetUp() override { init_loop(); }
  void TearDown() override { finish(); }
};

TEST_F(FileReaderFactoryTest, AutoFallsBackToThreadPoolWhenIoUringIsRefused) {
  detail::ReaderHooks hooks;
  hooks.fail_uring_init_with = EPERM;
  auto setup = detail::make_file_reader(&loop_, {}, hooks);
  ASSERT_TRUE(setup);
  reader_ = std::move(setup->reader);
  const std::string& note = setup->note;
  EXPECT_STREQ(reader_->backend_name(), "threadpool");
  EXPECT_NE(note.find("io_uring unavailable"), std::string::npos) << note;
  EXPECT_NE(note.find(std::error_code(EPERM, std::system_category()).message()), std::string::npos)
      << note;
  EXPECT_NE(note.find("thread pool"), std::string::npos) << note;
}

TEST_F(FileReaderFactoryTest, ForcedIoUringFailsWithTheKernelError) {
  detail::ReaderHooks hooks;
  hooks.fail_uring_init_with = ENOSYS;
  FileReaderOptions options;
  options.backend = Backend::IoUring;
  auto setup = detail::make_file_reader(&loop_, options, hooks);
  ASSERT_FALSE(setup);
  EXPECT_EQ(setup.error().code, std::error_code(ENOSYS, std::system_category()));
  EXPECT_FALSE(setup.error().detail.empty());
}

TEST_F(FileReaderFactoryTest, PublicFactoryNotesItsChoice) {
  auto setup = make_file_reader(&loop_, {});
  ASSERT_TRUE(setup) << setup.error().message();
  reader_ = std::move(setup->reader);
  const std::string& note = setup->note;
  EXPECT_FALSE(note.empty());
  const std::string name = reader_->backend_name();
  EXPECT_TRUE(name == "io_uring" || name == "threadpool") << name;
}

// ---- io_uring specifics ------------------------------------------------------------------

class UringReaderTest : public ::testing::Test, public ReaderFixture {
 protected:
  void SetUp() override {
    init_loop();
    make(Backend::IoUring);
    if (IsSkipped() || HasFatalFailure()) return;
    uring_ = dynamic_cast<detail::UringReader*>(reader_.get());
    ASSERT_NE(uring_, nullptr);
  }
  void TearDown() override { finish(); }
  detail::UringReader* uring_ = nullptr;
};

TEST_F(UringReaderTest, SubmitsOncePerLoopTurn) {
  const int fd = file(8 * 512);
  std::vector<std::vector<std::byte>> buffers(8, std::vector<std::byte>(512));
  std::vector<Result> results(8);
  for (std::size_t i = 0; i < 8; ++i) reader_->read(fd, i * 512, buffers[i], capture(results[i]));
  EXPECT_EQ(uring_->submit_calls(), 0u) << "read() must only queue";
  run_until([&] {
    for (const Result& r : results) {
      if (!r.called) return false;
    }
    return true;
  });
  EXPECT_EQ(uring_->submit_calls(), 1u);
  for (std::size_t i = 0; i < 8; ++i) {
    EXPECT_FALSE(results[i].error);
    EXPECT_TRUE(matches(buffers[i].data(), i * 512, 512));
  }
}

TEST_F(UringReaderTest, StaleCompletionsAreIgnored) {
  // Nothing is in flight: any completion is stale.
  uring_->handle_completion(detail::UringReader::make_user_data(0, 7), 100);
  uring_->handle_completion(detail::UringReader::make_user_data(1'000'000, 1), 100);
  EXPECT_EQ(uring_->stale_completions(), 2u);
  EXPECT_EQ(reader_->in_flight(), 0u);

  // A read still works afterwards.
  const int fd = file(100);
  std::vector<std::byte> buffer(100);
  const Result r = read_once(fd, 0, buffer);
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.bytes, 100u);
}

TEST_F(UringReaderTest, SyntheticShortCompletionIsResubmittedAndTheOldOneTurnsStale) {
  const int fd = file(8192);
  std::vector<std::byte> buffer(4096);
  Result r;
  reader_->read(fd, 1000, buffer, capture(r));
  ASSERT_EQ(reader_->in_flight(), 1u);
  // Slot 0 holds its first SQE (generation 1), not yet submitted. Pretend the kernel answered
  // it with a short read of 1000 bytes: the reader must ask for the remaining 3096 bytes with a
  // new generation, and the real answer to the first SQE must then be ignored as stale.
  uring_->handle_completion(detail::UringReader::make_user_data(0, 1), 1000);
  EXPECT_FALSE(r.called);
  EXPECT_EQ(reader_->in_flight(), 1u);
  run_until([&] { return r.called && uring_->stale_completions() == 1; });
  ASSERT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.bytes, 4096u);
  EXPECT_TRUE(matches(buffer.data(), 1000, 4096));
}

TEST_F(UringReaderTest, SyntheticEagainIsRetriedAndErrorIsReported) {
  const int fd = file(8192);
  std::vector<std::byte> buffer(512);
  Result r;
  reader_->read(fd, 0, buffer, capture(r));
  uring_->handle_completion(detail::UringReader::make_user_data(0, 1), -EAGAIN);
  EXPECT_FALSE(r.called);
  uring_->handle_completion(detail::UringReader::make_user_data(0, 2), -EIO);
  ASSERT_TRUE(r.called);
  EXPECT_EQ(r.error, std::error_code(EIO, std::system_category()));
  EXPECT_EQ(reader_->in_flight(), 0u);
  // Both real SQEs still complete in the kernel; their answers are stale now.
  run_until([&] { return uring_->stale_completions() == 2; });
}

// ---- The short-read arithmetic -----------------------------------------------------------

TEST(ReadProgressTest, PartialResultsAdvanceUntilComplete) {
  detail::ReadProgress p{100, 10'000, 0, 0};
  std::error_code error;
  EXPECT_EQ(detail::apply_completion(p, 4000, error), detail::ReadStep::Resubmit);
  EXPECT_EQ(p.done, 4000u);
  EXPECT_EQ(detail::next_request_bytes(p, detail::kMaxIoBytes), 6000u);
  EXPECT_EQ(detail::next_request_bytes(p, 1000), 1000u);
  EXPECT_EQ(detail::apply_completion(p, 6000, error), detail::ReadStep::Complete);
  EXPECT_EQ(p.done, 10'000u);
  EXPECT_FALSE(error);
}

TEST(ReadProgressTest, ZeroIsEofWithTheBytesSoFar) {
  detail::ReadProgress p{0, 10'000, 0, 0};
  std::error_code error;
  EXPECT_EQ(detail::apply_completion(p, 300, error), detail::ReadStep::Resubmit);
  EXPECT_EQ(detail::apply_completion(p, 0, error), detail::ReadStep::Complete);
  EXPECT_EQ(p.done, 300u);
  EXPECT_FALSE(error);
}

TEST(ReadProgressTest, EagainAndEintrRetryWithABound) {
  detail::ReadProgress p{0, 10, 0, 0};
  std::error_code error;
  for (unsigned i = 0; i < detail::kMaxConsecutiveRetries; ++i) {
    ASSERT_EQ(detail::apply_completion(p, i % 2 ? -EAGAIN : -EINTR, error),
              detail::ReadStep::Resubmit);
  }
  EXPECT_EQ(detail::apply_completion(p, 5, error), detail::ReadStep::Resubmit);
  EXPECT_EQ(p.retries, 0u) << "progress resets the retry count";
  for (unsigned i = 0; i < detail::kMaxConsecutiveRetries; ++i) {
    ASSERT_EQ(detail::apply_completion(p, -EAGAIN, error), detail::ReadStep::Resubmit);
  }
  EXPECT_EQ(detail::apply_completion(p, -EAGAIN, error), detail::ReadStep::Fail);
  EXPECT_EQ(error, std::error_code(EAGAIN, std::system_category()));
}

TEST(ReadProgressTest, OtherErrorsFail) {
  detail::ReadProgress p{0, 10, 0, 0};
  std::error_code error;
  EXPECT_EQ(detail::apply_completion(p, -EIO, error), detail::ReadStep::Fail);
  EXPECT_EQ(error, std::error_code(EIO, std::system_category()));
}

TEST(ReadProgressTest, MoreBytesThanAskedIsAnError) {
  detail::ReadProgress p{0, 10, 0, 0};
  std::error_code error;
  EXPECT_EQ(detail::apply_completion(p, 11, error), detail::ReadStep::Fail);
  EXPECT_EQ(error, std::errc::io_error);
}

TEST(ReadProgressTest, RangeMustFitASignedOffset) {
  EXPECT_TRUE(detail::valid_range(0, 100));
  EXPECT_TRUE(detail::valid_range(INT64_MAX - 100, 100));
  EXPECT_FALSE(detail::valid_range(INT64_MAX - 99, 100));
  EXPECT_FALSE(detail::valid_range(~std::uint64_t{0}, 0));
}

}  // namespace
}  // namespace chunkd::io

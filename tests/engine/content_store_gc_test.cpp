// What the content store (engine/content_store.hpp) removes, and when, through the thread-pool
// and io_uring file readers: GC of unreferenced blobs, waiting for pinned blobs and open writers,
// an ingest queued behind GC, a failed writer leaving nothing, tmp/ emptied on open, and close
// cancelling an ingest in progress.
#include <fcntl.h>
#include <uv.h>

#include <fstream>
#include <optional>
#include <string>

#include "engine/content_store.hpp"
#include "tests/engine/content_store_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

// A writer finished with a failure leaves nothing: no blob, no temp file, no pin.
TEST_P(ContentStoreTest, AFailedWriterLeavesNothingBehind) {
  auto out = write_through(random_bytes(2 * kExtent, 31), 4096,
                           std::make_error_code(std::errc::connection_reset));
  EXPECT_EQ(out.error, std::errc::connection_reset);
  EXPECT_EQ(blob_files(), 0u);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  EXPECT_EQ(store_->ingests_in_progress(), 0u);
  EXPECT_EQ(gc().removed_blobs, 0u);
}

// GC never runs while a writer is open (its blob is not referenced yet).
TEST_P(ContentStoreTest, GcWaitsForAnOpenWriter) {
  std::optional<std::error_code> began;
  IngestWriter writer;
  store_->begin_write([&](std::error_code e, IngestWriter w) {
    began = e;
    writer = std::move(w);
  });
  run_until([&] { return began.has_value(); });
  ASSERT_FALSE(*began);
  EXPECT_EQ(store_->ingests_in_progress(), 1u);
  std::optional<GcResult> result;
  store_->collect_garbage([&](const GcResult& r) { result = r; });
  for (int i = 0; i < 10; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_FALSE(result.has_value());
  std::optional<std::error_code> finished;
  writer.finish(std::make_error_code(std::errc::operation_canceled),
                [&](std::error_code e, IngestResult) { finished = e; });
  run_until([&] { return finished.has_value() && result.has_value(); });
  EXPECT_EQ(*finished, std::errc::operation_canceled);
}

TEST_P(ContentStoreTest, GcRemovesUnreferencedBlobs) {
  auto a = ingest_path(write_source("a", random_bytes(1000, 6)));
  auto b = ingest_path(write_source("b", random_bytes(2000, 7)));
  ASSERT_FALSE(a.error);
  ASSERT_FALSE(b.error);
  store_->unpin(a.result.digest);
  store_->unpin(b.result.digest);
  live_ = {a.result.digest};
  GcResult r = gc();
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.removed_blobs, 1u);
  EXPECT_EQ(r.removed_bytes, 2000u);
  EXPECT_TRUE(fs::exists(blob_path(dir_ + "/data", a.result.digest)));
  EXPECT_FALSE(fs::exists(blob_path(dir_ + "/data", b.result.digest)));
  EXPECT_EQ(store_->stored_blobs(), 1u);
  EXPECT_EQ(store_->stored_bytes(), 1000u);
  EXPECT_EQ(metrics_.counter_value("chunkd_gc_removed_blobs_total"), 1u);

  live_.clear();
  r = gc();
  EXPECT_EQ(r.removed_blobs, 1u);
  EXPECT_EQ(blob_files(), 0u);
  EXPECT_EQ(store_->stored_blobs(), 0u);
}

TEST_P(ContentStoreTest, GcWaitsWhileABlobIsPinned) {
  auto a = ingest_path(write_source("a", random_bytes(1000, 8)));
  ASSERT_FALSE(a.error);
  std::optional<GcResult> result;
  store_->collect_garbage([&](const GcResult& r) { result = r; });
  // Let the loop turn: the pinned blob keeps GC from running.
  for (int i = 0; i < 10; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_FALSE(result.has_value());
  EXPECT_TRUE(fs::exists(blob_path(dir_ + "/data", a.result.digest)));
  store_->unpin(a.result.digest);
  run_until([&] { return result.has_value(); });
  EXPECT_EQ(result->removed_blobs, 1u);
  EXPECT_FALSE(fs::exists(blob_path(dir_ + "/data", a.result.digest)));
}

TEST_P(ContentStoreTest, IngestDuringGcWaitsForIt) {
  std::optional<GcResult> result;
  store_->collect_garbage([&](const GcResult& r) { result = r; });
  std::string data = random_bytes(5000, 9);
  int fd = ::open(write_source("a", data).c_str(), O_RDONLY | O_CLOEXEC);
  std::optional<Outcome> out;
  store_->ingest(fd, [&](std::error_code e, IngestResult r) { out = Outcome{e, std::move(r)}; });
  run_until([&] { return out.has_value(); });
  EXPECT_TRUE(result.has_value());  // the GC finished first
  ASSERT_FALSE(out->error);
  EXPECT_TRUE(fs::exists(blob_path(dir_ + "/data", out->result.digest)));
  store_->unpin(out->result.digest);
}

TEST_P(ContentStoreTest, OpenEmptiesTmpAndCountsBlobs) {
  auto a = ingest_path(write_source("a", random_bytes(3000, 10)));
  ASSERT_FALSE(a.error);
  store_->unpin(a.result.digest);
  std::ofstream(dir_ + "/data/tmp/ingest-leftover") << "partial";
  bool closed = false;
  store_->close([&] { closed = true; });
  run_until([&] { return closed; });
  make_store();
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  EXPECT_EQ(store_->stored_blobs(), 1u);
  EXPECT_EQ(store_->stored_bytes(), 3000u);
}

TEST_P(ContentStoreTest, CloseCancelsAnIngestInProgress) {
  int fd = ::open(write_source("a", random_bytes(4 * kExtent, 11)).c_str(), O_RDONLY | O_CLOEXEC);
  std::optional<std::error_code> error;
  store_->ingest(fd, [&](std::error_code e, IngestResult) { error = e; });
  bool closed = false;
  store_->close([&] { closed = true; });
  run_until([&] { return closed; });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(*error, IngestError::Closed);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  EXPECT_EQ(blob_files(), 0u);
  // Ingest after close fails at once.
  int fd2 = ::open((dir_ + "/src/a").c_str(), O_RDONLY | O_CLOEXEC);
  std::optional<std::error_code> late;
  store_->ingest(fd2, [&](std::error_code e, IngestResult) { late = e; });
  ASSERT_TRUE(late.has_value());
  EXPECT_EQ(*late, IngestError::Closed);
}

INSTANTIATE_TEST_SUITE_P(Backends, ContentStoreTest,
                         ::testing::Values(Backend::ThreadPool, Backend::IoUring), backend_name);

}  // namespace
}  // namespace chunkd::engine

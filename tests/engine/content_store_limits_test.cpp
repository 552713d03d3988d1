// Storage limits of the content store (engine/content_store.hpp), through the thread-pool and
// io_uring file readers: its free-space and writability seams stand in for a full or read-only
// disk; max_file_bytes, too little free space (storage full), a writer's reserve(), content
// already stored needing no space, and an unwritable data_dir reported until a probe finds it
// writable again.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/content_store.hpp"
#include "tests/engine/content_store_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

class ContentStoreLimitsTest : public ContentStoreTest {
 protected:
  // Rebuilds the store with `free_bytes_` as its free space and `writable_errno_` as its
  // writability; no reflink, so every ingest is a copy.
  void remake(ContentStoreOptions options = {}) {
    bool closed = false;
    store_->close([&] { closed = true; });
    run_until([&] { return closed; });
    options.try_reflink = false;
    options.free_space = [free = free_bytes_](const std::string&, std::uint64_t& available) {
      available = free->load();
      return 0;
    };
    options.check_writable = [e = writable_errno_](const std::string&) { return e->load(); };
    make_store(options);
  }

  std::shared_ptr<std::atomic<std::uint64_t>> free_bytes_ =
      std::make_shared<std::atomic<std::uint64_t>>(std::uint64_t{1} << 40);
  std::shared_ptr<std::atomic<int>> writable_errno_ = std::make_shared<std::atomic<int>>(0);
};

TEST_P(ContentStoreLimitsTest, RefusesAFileOverMaxFileBytesBeforeCopying) {
  ContentStoreOptions options;
  options.max_file_bytes = 100000;
  remake(options);
  auto out = ingest_path(write_source("big", random_bytes(100001, 20)));
  EXPECT_EQ(out.error, IngestError::TooLarge);
  EXPECT_EQ(out.result.size_bytes, 100001u);
  EXPECT_EQ(metrics_.counter_value("chunkd_ingest_bytes_total"), 0u);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  EXPECT_EQ(blob_files(), 0u);
  auto fits = ingest_path(write_source("fits", random_bytes(100000, 21)));
  ASSERT_FALSE(fits.error) << fits.error.message();
  store_->unpin(fits.result.digest);
}

TEST_P(ContentStoreLimitsTest, TooLittleFreeSpaceForNewContentIsStorageFull) {
  remake();
  free_bytes_->store(1000);
  auto out = ingest_path(write_source("new", random_bytes(3 * kExtent, 22)));
  EXPECT_EQ(out.error, IngestError::StorageFull);
  EXPECT_TRUE(storage_full(out.error));
  EXPECT_EQ(out.result.size_bytes, 3u * kExtent);
  EXPECT_EQ(out.result.available_bytes, 1000u);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  EXPECT_EQ(blob_files(), 0u);
  EXPECT_TRUE(storage_full(std::make_error_code(std::errc::no_space_on_device)));
  EXPECT_TRUE(storage_full({EDQUOT, std::generic_category()}));
}

// An 8 MiB file whose content is already stored needs no free space: it is hashed, not copied.
// reserve() refuses a size over max_file_bytes or the free space, naming both sizes.
TEST_P(ContentStoreLimitsTest, AWriterReservesItsSizeFirst) {
  ContentStoreOptions options;
  options.max_file_bytes = 100000;
  remake(options);
  free_bytes_->store(5000);
  IngestWriter writer;
  auto progress = std::make_shared<IngestProgress>();
  const std::optional<std::error_code> began = begin_write(writer, progress);
  ASSERT_FALSE(*began);
  struct Seen {
    std::error_code error;
    IngestResult result;
  };
  auto reserve = [&](std::uint64_t size) {
    std::optional<Seen> seen;
    writer.reserve(size, [&](std::error_code e, IngestResult r) { seen = Seen{e, std::move(r)}; });
    run_until([&] { return seen.has_value(); });
    return seen.value_or(Seen{});
  };
  Seen big = reserve(100001);
  EXPECT_EQ(big.error, IngestError::TooLarge);
  Seen full = reserve(6000);
  EXPECT_EQ(full.error, IngestError::StorageFull);
  EXPECT_EQ(full.result.size_bytes, 6000u);
  EXPECT_EQ(full.result.available_bytes, 5000u);
  EXPECT_EQ(progress->total, 6000u);
  Seen fits = reserve(5000);
  EXPECT_FALSE(fits.error) << fits.error.message();
  std::optional<std::error_code> finished;
  writer.finish(full.error, [&](std::error_code e, IngestResult) { finished = e; });
  run_until([&] { return finished.has_value(); });
  EXPECT_EQ(*finished, IngestError::StorageFull);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
}

TEST_P(ContentStoreLimitsTest, ContentAlreadyStoredSucceedsWithLittleFreeSpace) {
  remake();
  const std::string data = random_bytes(8u << 20, 23);
  auto first = ingest_path(write_source("a", data));
  ASSERT_FALSE(first.error) << first.error.message();
  store_->unpin(first.result.digest);
  free_bytes_->store(4096);
  auto again = ingest_path(write_source("b", data));
  ASSERT_FALSE(again.error) << again.error.message();
  EXPECT_TRUE(again.result.deduplicated);
  EXPECT_EQ(again.result.digest, first.result.digest);
  EXPECT_EQ(again.result.manifest, first.result.manifest);
  EXPECT_EQ(again.result.size_bytes, data.size());
  EXPECT_EQ(blob_files(), 1u);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  store_->unpin(again.result.digest);
}

TEST_P(ContentStoreLimitsTest, ReportsAnUnwritableDataDirUntilAProbeFindsItWritable) {
  writable_errno_->store(EROFS);
  remake();
  EXPECT_NE(store_->storage_problem().find("not writable"), std::string::npos)
      << store_->storage_problem();
  writable_errno_->store(0);
  store_->probe_storage();
  run_until([&] { return store_->storage_problem().empty(); });
  writable_errno_->store(EACCES);
  store_->probe_storage();  // within kProbeIntervalMs of the last probe: skipped
  EXPECT_TRUE(store_->storage_problem().empty());
  clock_.advance_ms(ContentStore::kProbeIntervalMs);
  store_->probe_storage();
  run_until([&] { return !store_->storage_problem().empty(); });
}

INSTANTIATE_TEST_SUITE_P(Backends, ContentStoreLimitsTest,
                         ::testing::Values(Backend::ThreadPool, Backend::IoUring), backend_name);

}  // namespace
}  // namespace chunkd::engine

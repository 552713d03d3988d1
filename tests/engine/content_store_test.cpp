// Storing content (engine/content_store.hpp) through the thread-pool and io_uring file readers:
// ingested copies and caller-written blobs (begin_write) match XXH3 computed directly (digest and
// per-extent manifest), are linked read-only, deduplicated and counted; the source may change
// afterwards; a non-regular file is refused; blob paths and digest syntax.
#include "engine/content_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <uv.h>

#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/engine/content_store_fixture.hpp"

namespace chunkd::engine {
namespace {

using namespace testing;

TEST_P(ContentStoreTest, DigestAndManifestMatchDirectXXH3) {
  std::string data = random_bytes(3 * kExtent + 12345, 1);
  auto out = ingest_path(write_source("fw.bin", data));
  ASSERT_FALSE(out.error) << out.error.message();
  EXPECT_EQ(out.result.digest, expected_digest(data));
  EXPECT_TRUE(valid_digest(out.result.digest));
  EXPECT_EQ(out.result.size_bytes, data.size());
  EXPECT_EQ(out.result.extent_bytes, kExtent);
  EXPECT_EQ(out.result.manifest, expected_manifest(data, kExtent));
  EXPECT_FALSE(out.result.deduplicated);
  std::string blob = blob_path(dir_ + "/data", out.result.digest);
  EXPECT_EQ(read_file(blob), data);
  struct stat st {};
  ASSERT_EQ(::stat(blob.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  EXPECT_EQ(store_->stored_blobs(), 1u);
  EXPECT_EQ(store_->stored_bytes(), data.size());
  EXPECT_EQ(metrics_.counter_value("chunkd_ingest_bytes_total"), data.size());
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  store_->unpin(out.result.digest);
}

TEST_P(ContentStoreTest, EmptyAndExactMultipleFiles) {
  auto empty = ingest_path(write_source("empty", ""));
  ASSERT_FALSE(empty.error);
  EXPECT_EQ(empty.result.digest, expected_digest(""));
  EXPECT_EQ(empty.result.size_bytes, 0u);
  EXPECT_TRUE(empty.result.manifest.empty());
  EXPECT_EQ(read_file(blob_path(dir_ + "/data", empty.result.digest)), "");

  std::string data = random_bytes(2 * kExtent, 2);
  auto exact = ingest_path(write_source("exact", data));
  ASSERT_FALSE(exact.error);
  EXPECT_EQ(exact.result.digest, expected_digest(data));
  EXPECT_EQ(exact.result.manifest, expected_manifest(data, kExtent));
  EXPECT_EQ(exact.result.manifest.size(), 2u);
  store_->unpin(empty.result.digest);
  store_->unpin(exact.result.digest);
}

TEST_P(ContentStoreTest, ManyExtentsWithBoundedReadsInFlight) {
  std::string data = random_bytes(80 * kExtent + 7, 3);
  auto out = ingest_path(write_source("big", data));
  ASSERT_FALSE(out.error) << out.error.message();
  EXPECT_EQ(out.result.digest, expected_digest(data));
  EXPECT_EQ(out.result.manifest, expected_manifest(data, kExtent));
  EXPECT_EQ(read_file(blob_path(dir_ + "/data", out.result.digest)), data);
  store_->unpin(out.result.digest);
}

// The loop keeps turning while a large file is ingested: extents are read, hashed and written in
// separate loop iterations, never in one long stretch.
TEST_P(ContentStoreTest, IngestYieldsToTheLoop) {
  std::string data = random_bytes(40 * kExtent, 14);
  int fd = ::open(write_source("big", data).c_str(), O_RDONLY | O_CLOEXEC);
  uv_check_t check;
  uv_check_init(&loop_, &check);
  std::size_t iterations = 0;
  check.data = &iterations;
  uv_check_start(&check, [](uv_check_t* c) { ++*static_cast<std::size_t*>(c->data); });
  std::optional<Outcome> out;
  store_->ingest(fd, [&](std::error_code e, IngestResult r) { out = Outcome{e, std::move(r)}; });
  run_until([&] { return out.has_value(); });
  bool check_closed = false;
  check.data = &check_closed;
  uv_close(reinterpret_cast<uv_handle_t*>(&check),
           [](uv_handle_t* h) { *static_cast<bool*>(h->data) = true; });
  run_until([&] { return check_closed; });  // `check` lives on this stack frame
  ASSERT_FALSE(out->error);
  EXPECT_EQ(out->result.digest, expected_digest(data));
  EXPECT_GE(iterations, 10u);
  store_->unpin(out->result.digest);
}

TEST_P(ContentStoreTest, IdenticalContentIsStoredOnce) {
  std::string data = random_bytes(kExtent + 1, 4);
  auto a = ingest_path(write_source("a", data));
  auto b = ingest_path(write_source("b", data));
  ASSERT_FALSE(a.error);
  ASSERT_FALSE(b.error);
  EXPECT_EQ(a.result.digest, b.result.digest);
  EXPECT_FALSE(a.result.deduplicated);
  EXPECT_TRUE(b.result.deduplicated);
  EXPECT_EQ(blob_files(), 1u);
  EXPECT_EQ(store_->stored_blobs(), 1u);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  store_->unpin(a.result.digest);
  store_->unpin(b.result.digest);
}

TEST_P(ContentStoreTest, ChangingTheSourceAfterIngestLeavesTheBlobUnchanged) {
  std::string data = random_bytes(kExtent / 2, 5);
  std::string path = write_source("fw.bin", data);
  auto out = ingest_path(path);
  ASSERT_FALSE(out.error);
  // Rewrite in place (same inode), then remove it.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f << "CHANGED";
  }
  EXPECT_EQ(read_file(blob_path(dir_ + "/data", out.result.digest)), data);
  fs::remove(path);
  EXPECT_EQ(read_file(blob_path(dir_ + "/data", out.result.digest)), data);
  store_->unpin(out.result.digest);
}

TEST_P(ContentStoreTest, ConcurrentIngestsOfTheSameContent) {
  std::string data = random_bytes(5 * kExtent, 13);
  std::vector<Outcome> outs;
  for (int i = 0; i < 4; ++i) {
    int fd = ::open(write_source("f" + std::to_string(i), data).c_str(), O_RDONLY | O_CLOEXEC);
    store_->ingest(fd, [&](std::error_code e, IngestResult r) {
      outs.push_back({e, std::move(r)});
    });
  }
  EXPECT_EQ(store_->ingests_in_progress(), 4u);
  run_until([&] { return outs.size() == 4; });
  int fresh = 0;
  for (auto& o : outs) {
    ASSERT_FALSE(o.error);
    EXPECT_EQ(o.result.digest, expected_digest(data));
    if (!o.result.deduplicated) fresh++;
    store_->unpin(o.result.digest);
  }
  EXPECT_EQ(fresh, 1);
  EXPECT_EQ(blob_files(), 1u);
  EXPECT_EQ(store_->stored_blobs(), 1u);
}

TEST_P(ContentStoreTest, ReflinkOffStillCopies) {
  bool closed = false;
  store_->close([&] { closed = true; });
  run_until([&] { return closed; });
  ContentStoreOptions options;
  options.try_reflink = false;
  options.reads_in_flight = 1;
  make_store(options);
  std::string data = random_bytes(3 * kExtent, 12);
  auto out = ingest_path(write_source("a", data));
  ASSERT_FALSE(out.error);
  EXPECT_FALSE(out.result.reflinked);
  EXPECT_EQ(out.result.digest, expected_digest(data));
  EXPECT_EQ(read_file(blob_path(dir_ + "/data", out.result.digest)), data);
  store_->unpin(out.result.digest);
}

TEST_P(ContentStoreTest, RefusesANonRegularFile) {
  int fd = ::open((dir_ + "/src").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::optional<std::error_code> error;
  store_->ingest(fd, [&](std::error_code e, IngestResult) { error = e; });
  run_until([&] { return error.has_value(); });
  EXPECT_EQ(*error, std::errc::invalid_argument);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
}

// Content written by the caller (begin_write) is stored exactly like an ingested copy: the same
// digest and manifest whatever the piece sizes, linked read-only, deduplicated, counted, pinned.
TEST_P(ContentStoreTest, AWriterStoresWhatItWasGivenLikeAnIngest) {
  const std::string data = random_bytes(3 * kExtent + 12345, 30);
  auto progress = std::make_shared<IngestProgress>();
  auto out = write_through(data, 1000, {}, progress);  // pieces straddle every extent boundary
  ASSERT_FALSE(out.error) << out.error.message();
  EXPECT_EQ(out.result.digest, expected_digest(data));
  EXPECT_EQ(out.result.manifest, expected_manifest(data, kExtent));
  EXPECT_EQ(out.result.size_bytes, data.size());
  EXPECT_EQ(out.result.extent_bytes, kExtent);
  EXPECT_FALSE(out.result.deduplicated);
  EXPECT_EQ(progress->done, data.size());
  const std::string blob = blob_path(dir_ + "/data", out.result.digest);
  EXPECT_EQ(read_file(blob), data);
  struct stat st {};
  ASSERT_EQ(::stat(blob.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  EXPECT_EQ(store_->stored_blobs(), 1u);
  EXPECT_EQ(metrics_.counter_value("chunkd_ingest_bytes_total"), data.size());
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));

  auto again = write_through(data, kExtent);  // whole extents at a time: the same content
  ASSERT_FALSE(again.error);
  EXPECT_TRUE(again.result.deduplicated);
  EXPECT_EQ(again.result.manifest, out.result.manifest);
  auto copy = ingest_path(write_source("same", data));
  ASSERT_FALSE(copy.error);
  EXPECT_EQ(copy.result.digest, out.result.digest);
  EXPECT_EQ(store_->stored_blobs(), 1u);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
  // Pinned until unpinned: GC keeps the blob meanwhile.
  std::optional<GcResult> result;
  store_->collect_garbage([&](const GcResult& r) { result = r; });
  for (int i = 0; i < 10; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_FALSE(result.has_value());
  for (const auto* o : {&out, &again, &copy}) store_->unpin(o->result.digest);
  run_until([&] { return result.has_value(); });
  EXPECT_EQ(result->removed_blobs, 1u);
}

TEST_P(ContentStoreTest, AnEmptyWriteIsTheEmptyBlob) {
  auto out = write_through("", 1);
  ASSERT_FALSE(out.error);
  EXPECT_EQ(out.result.digest, expected_digest(""));
  EXPECT_TRUE(out.result.manifest.empty());
  EXPECT_EQ(read_file(blob_path(dir_ + "/data", out.result.digest)), "");
  store_->unpin(out.result.digest);
}

TEST(ContentStoreNames, BlobPathAndDigestSyntax) {
  EXPECT_EQ(blob_path("/d", "0123456789abcdef0123456789abcdef"),
            "/d/blobs/01/0123456789abcdef0123456789abcdef");
  EXPECT_TRUE(valid_digest("0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(valid_digest("0123456789ABCDEF0123456789abcdef"));
  EXPECT_FALSE(valid_digest("0123"));
}

INSTANTIATE_TEST_SUITE_P(Backends, ContentStoreTest,
                         ::testing::Values(Backend::ThreadPool, Backend::IoUring), backend_name);

}  // namespace
}  // namespace chunkd::engine

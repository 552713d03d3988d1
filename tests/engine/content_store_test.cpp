#include "engine/content_store.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/clock.hpp"
#include "engine/metrics.hpp"
#include "io/file_reader.hpp"

namespace chunkd::engine {
namespace {

namespace fs = std::filesystem;

constexpr std::uint32_t kExtent = 64 * 1024;

std::string expected_digest(const std::string& data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

std::vector<std::uint64_t> expected_manifest(const std::string& data, std::size_t extent) {
  std::vector<std::uint64_t> out;
  for (std::size_t off = 0; off < data.size(); off += extent) {
    std::size_t n = std::min(extent, data.size() - off);
    out.push_back(XXH3_64bits(data.data() + off, n));
  }
  return out;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

using Backend = io::FileReaderOptions::Backend;

class ContentStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "chunkd-store-XXXXXX").string();
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
    fs::create_directories(dir_ + "/src");
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    io::FileReaderOptions options;
    options.backend = GetParam();
    auto setup = io::make_file_reader(&loop_, options);
    if (setup) reader_ = std::move(setup->reader);
    if (!reader_ && GetParam() == Backend::IoUring) {
      uv_loop_close(&loop_);
      loop_open_ = false;
      GTEST_SKIP() << "io_uring refused: " << setup.error().message();
    }
    ASSERT_TRUE(reader_) << setup.error().message();
    make_store();
  }

  void make_store(ContentStoreOptions options = {}) {
    options.data_dir = dir_ + "/data";
    if (options.extent_bytes == (256u << 10)) options.extent_bytes = kExtent;
    store_ = std::make_unique<ContentStore>(&loop_, *reader_, &metrics_, clock_, options,
                                            [this] { return live_; });
    std::string message;
    ASSERT_FALSE(store_->open(message)) << message;
  }

  void TearDown() override {
    if (!loop_open_) return;
    bool store_closed = false;
    bool reader_closed = false;
    if (store_) {
      store_->close([&] { store_closed = true; });
      run_until([&] { return store_closed; });
    }
    reader_->close([&] { reader_closed = true; });
    run_until([&] { return reader_closed; });
    store_.reset();
    reader_.reset();
    EXPECT_EQ(uv_run(&loop_, UV_RUN_DEFAULT), 0);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // Runs the loop until `done()`; a 60 s timer only guards against a hang.
  void run_until(const std::function<bool()>& done) {
    uv_timer_t guard;
    uv_timer_init(&loop_, &guard);
    bool expired = false;
    guard.data = &expired;
    uv_timer_start(
        &guard, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 60000, 0);
    while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    ASSERT_FALSE(expired) << "timed out";
  }

  std::string write_source(const std::string& name, const std::string& data) {
    std::string path = dir_ + "/src/" + name;
    std::ofstream(path, std::ios::binary) << data;
    return path;
  }

  struct Outcome {
    std::error_code error;
    IngestResult result;
  };
  Outcome ingest_path(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    std::optional<Outcome> out;
    store_->ingest(fd, [&](std::error_code e, IngestResult r) { out = Outcome{e, std::move(r)}; });
    run_until([&] { return out.has_value(); });
    return out.value_or(Outcome{});
  }

  // begin_write, then the caller's side: writes `data` at its offsets in pieces of `piece` bytes,
  // hashing each as it goes, and finishes (with `failure`, if any).
  Outcome write_through(const std::string& data, std::size_t piece, std::error_code failure = {},
                        const std::shared_ptr<IngestProgress>& progress = nullptr) {
    std::optional<std::error_code> began;
    IngestWriter writer;
    store_->begin_write(
        [&](std::error_code e, IngestWriter w) {
          began = e;
          writer = std::move(w);
        },
        progress);
    run_until([&] { return began.has_value(); });
    if (!began || *began)
      return Outcome{began.value_or(std::make_error_code(std::errc::io_error)), {}};
    EXPECT_TRUE(writer);
    for (std::size_t off = 0; off < data.size(); off += piece) {
      const std::size_t n = std::min(piece, data.size() - off);
      EXPECT_EQ(::pwrite(writer.fd(), data.data() + off, n, static_cast<off_t>(off)),
                static_cast<ssize_t>(n));
      writer.update(data.data() + off, n);
    }
    std::optional<Outcome> out;
    writer.finish(failure, [&](std::error_code e, IngestResult r) {
      out = Outcome{e, std::move(r)};
    });
    run_until([&] { return out.has_value(); });
    return out.value_or(Outcome{});
  }

  GcResult gc() {
    std::optional<GcResult> out;
    store_->collect_garbage([&](const GcResult& r) { out = r; });
    run_until([&] { return out.has_value(); });
    return out.value_or(GcResult{});
  }

  std::size_t blob_files() const {
    std::size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_ + "/data/blobs")) {
      if (e.is_regular_file()) n++;
    }
    return n;
  }

  uv_loop_t loop_{};
  bool loop_open_ = true;
  std::string dir_;
  std::unique_ptr<io::FileReader> reader_;
  Metrics metrics_;
  ManualClock clock_;
  std::vector<std::string> live_;
  std::unique_ptr<ContentStore> store_;
};

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

TEST_P(ContentStoreTest, RefusesANonRegularFile) {
  int fd = ::open((dir_ + "/src").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::optional<std::error_code> error;
  store_->ingest(fd, [&](std::error_code e, IngestResult) { error = e; });
  run_until([&] { return error.has_value(); });
  EXPECT_EQ(*error, std::errc::invalid_argument);
  EXPECT_TRUE(fs::is_empty(dir_ + "/data/tmp"));
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

TEST(ContentStoreNames, BlobPathAndDigestSyntax) {
  EXPECT_EQ(blob_path("/d", "0123456789abcdef0123456789abcdef"),
            "/d/blobs/01/0123456789abcdef0123456789abcdef");
  EXPECT_TRUE(valid_digest("0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(valid_digest("0123456789ABCDEF0123456789abcdef"));
  EXPECT_FALSE(valid_digest("0123"));
}

INSTANTIATE_TEST_SUITE_P(Backends, ContentStoreTest,
                         ::testing::Values(Backend::ThreadPool, Backend::IoUring),
                         [](const auto& info) {
                           return info.param == Backend::ThreadPool ? "ThreadPool" : "IoUring";
                         });

// --- storage limits: the free-space and writability seams stand in for a full or read-only disk

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
  std::optional<std::error_code> began;
  IngestWriter writer;
  auto progress = std::make_shared<IngestProgress>();
  store_->begin_write(
      [&](std::error_code e, IngestWriter w) {
        began = e;
        writer = std::move(w);
      },
      progress);
  run_until([&] { return began.has_value(); });
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
                         ::testing::Values(Backend::ThreadPool, Backend::IoUring),
                         [](const auto& info) {
                           return info.param == Backend::ThreadPool ? "ThreadPool" : "IoUring";
                         });

}  // namespace
}  // namespace chunkd::engine

// The content store under test (tests/engine/content_store*_test.cpp): ContentStoreTest opens a
// ContentStore (engine/content_store.hpp) on a temporary data_dir with 64 KiB extents, a
// ManualClock and a real file reader (the thread pool or io_uring: the test parameter, skipped
// where io_uring is refused), runs its uv loop until each step is done, and checks blobs on disk
// against XXH3 computed directly.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "engine/clock.hpp"
#include "engine/content_store.hpp"
#include "engine/metrics.hpp"
#include "io/file_reader.hpp"
#include "tests/support/loop.hpp"

namespace chunkd::engine::testing {

namespace fs = std::filesystem;

inline constexpr std::uint32_t kExtent = 64 * 1024;

inline std::string expected_digest(const std::string& data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

inline std::vector<std::uint64_t> expected_manifest(const std::string& data, std::size_t extent) {
  std::vector<std::uint64_t> out;
  for (std::size_t off = 0; off < data.size(); off += extent) {
    std::size_t n = std::min(extent, data.size() - off);
    out.push_back(XXH3_64bits(data.data() + off, n));
  }
  return out;
}

inline std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

inline std::string read_file(const std::string& path) {
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
    ASSERT_TRUE(test::run_until(&loop_, done)) << "timed out";
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
    IngestWriter writer;
    const std::optional<std::error_code> began = begin_write(writer, progress);
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

  // begin_write, run until it answers: its error (nullopt: no answer), and `writer` set.
  std::optional<std::error_code> begin_write(IngestWriter& writer,
                                             const std::shared_ptr<IngestProgress>& progress) {
    std::optional<std::error_code> began;
    store_->begin_write(
        [&](std::error_code e, IngestWriter w) {
          began = e;
          writer = std::move(w);
        },
        progress);
    run_until([&] { return began.has_value(); });
    return began;
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

// The suffix of each instantiated test's name: the file reader's backend.
inline std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::ThreadPool ? "ThreadPool" : "IoUring";
}

}  // namespace chunkd::engine::testing

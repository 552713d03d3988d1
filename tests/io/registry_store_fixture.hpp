// The store under test (tests/io/registry_store*_test.cpp): RegistryStoreTest opens a
// RegistryStore (io/registry_store.hpp) on its own uv loop in a fresh temporary directory (nested,
// so open() creates it), runs the loop until each write is acknowledged, and closes and removes
// everything after the test.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <uv.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "io/registry_store.hpp"
#include "tests/io/outcome.hpp"

namespace chunkd::io::testing {

namespace fs = std::filesystem;

using test::capture;
using test::Outcome;

class RegistryStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    std::string pattern = ::testing::TempDir() + "chunkd-registry-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    dir_ = root_ + "/state/registry";  // nested: open() creates it
  }

  void TearDown() override {
    close_store();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  void open_store(std::size_t max_pending = RegistryStore::kDefaultMaxPendingWrites) {
    auto opened = RegistryStore::open(&loop_, dir_, max_pending);
    ASSERT_TRUE(opened) << opened.error().message();
    store_ = std::move(*opened);
  }

  void close_store() {
    if (!store_) return;
    bool closed = false;
    store_->close([&closed] { closed = true; });
    EXPECT_FALSE(closed) << "close() must call back on the loop, later";
    run_until([&] { return closed; });
    store_.reset();
  }

  template <typename Pred>
  void run_until(Pred done) {
    while (!done()) {
      if (uv_run(&loop_, UV_RUN_ONCE) == 0 && !done()) break;
    }
    ASSERT_TRUE(done()) << "loop ran out of work";
  }

  std::error_code put_and_wait(StoredStream stream) {
    Outcome outcome;
    store_->put(std::move(stream), capture(outcome));
    run_until([&] { return outcome.called; });
    return outcome.error;
  }

  std::vector<StoredStream> load() {
    auto streams = store_->load_all();
    EXPECT_TRUE(streams) << streams.error().message();
    return streams ? std::move(*streams) : std::vector<StoredStream>{};
  }

  uv_loop_t loop_{};
  std::string root_;
  std::string dir_;
  std::unique_ptr<RegistryStore> store_;
};

}  // namespace chunkd::io::testing

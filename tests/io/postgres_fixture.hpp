// The fixture of the tests that talk to a real PostgreSQL (registry_pg_test.cpp,
// job_lease_pg_test.cpp, engine/registry_sync_test.cpp): one TestPostgres for the suite (started
// once; a test that stopped it finds it started again), a libuv loop per test that must close
// clean, and the skip, saying why, when the PostgreSQL binaries are not installed.
#pragma once

#include <gtest/gtest.h>
#include <uv.h>

#include <string>

#include "tests/support/postgres.hpp"

namespace chunkd::test {

class PostgresTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!TestPostgres::missing().empty()) return;
    pg_ = new TestPostgres();
    if (!pg_->start()) ADD_FAILURE() << pg_->error();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }

  // Derived fixtures call this first, then stop if IsSkipped() or HasFatalFailure().
  void SetUp() override {
    if (std::string why = TestPostgres::missing(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(pg_->start()) << pg_->error();
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    loop_open_ = true;
  }

  // A clean registry for the next test, the schema kept: TRUNCATE `tables` (a list, the first one
  // checked: the first test of a suite finds no schema yet).
  static void empty_registry(const std::string& tables) {
    const std::string first = tables.substr(0, tables.find(','));
    pg_->psql("DO $$ BEGIN IF to_regclass('" + first + "') IS NOT NULL THEN TRUNCATE " + tables +
              " CASCADE; END IF; END $$");
  }

  // Runs what is left on the loop, then requires it to close (no handle leaked).
  void close_loop() {
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    loop_open_ = false;
  }

  static inline TestPostgres* pg_ = nullptr;
  uv_loop_t loop_{};
  bool loop_open_ = false;
};

}  // namespace chunkd::test

// RegistryStore (io/registry_store.hpp) on SQLite in a temporary directory: every field round
// trips, puts replace and erases remove whole streams, writes apply in submission order, a full
// queue and a load during pending writes fail at once, a failed put keeps the previous version,
// data survives a reopen, close waits for queued writes, allowedThings lists round trip; the
// SQLite error category.
#include "io/registry_store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <uv.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tests/io/outcome.hpp"
#include "tests/io/registry_samples.hpp"
#include "tests/io/registry_store_fixture.hpp"

namespace chunkd::io {
namespace {

using test::capture;
using test::Outcome;
using testing::RegistryStoreTest;

TEST_F(RegistryStoreTest, PutThenLoadRoundTripsEveryField) {
  open_store();
  EXPECT_TRUE(load().empty());
  const StoredStream stream = rich_stream();
  ASSERT_FALSE(put_and_wait(stream));
  const auto streams = load();
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_TRUE(same_stream(streams[0], stream));
  EXPECT_EQ(streams[0].files[0].manifest.size(), 4096u);
  EXPECT_EQ(streams[0].files[2].manifest.size(), 0u);
  EXPECT_EQ(streams[0].tags.size(), 4u);
}

TEST_F(RegistryStoreTest, PutReplacesTheWholeStream) {
  open_store();
  ASSERT_FALSE(put_and_wait(rich_stream()));
  StoredStream smaller;
  smaller.id = "firmware-v2";
  smaller.version = 9;
  smaller.description = "replaced";
  smaller.created_at = "2026-11-27T10:00:00Z";
  smaller.updated_at = "2026-11-28T10:00:00Z";
  StoredFile f;
  f.file_id = 7;  // reuses an id of the old version
  f.bucket = "fw";
  f.key = "v3.bin";
  f.size_bytes = 10;
  f.digest = "0123456789abcdef0123456789abcdef";
  f.extent_bytes = 4096;
  f.manifest = {42};
  smaller.files = {f};
  ASSERT_FALSE(put_and_wait(smaller));
  const auto streams = load();
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_TRUE(same_stream(streams[0], smaller)) << "no tag or file of the old version may remain";
}

TEST_F(RegistryStoreTest, CreateRefusesAnExistingIdAndKeepsIt) {
  open_store();
  const StoredStream first = rich_stream();
  Outcome created;
  store_->create(first, capture(created));
  run_until([&] { return created.called; });
  ASSERT_FALSE(created.error) << created.error.message();
  StoredStream second = numbered_stream(1);
  second.id = first.id;
  Outcome refused;
  store_->create(second, capture(refused));
  run_until([&] { return refused.called; });
  EXPECT_EQ(refused.error, std::errc::file_exists) << refused.error.message();
  const auto streams = load();
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_TRUE(same_stream(streams[0], first)) << "the refused create must change nothing";
  EXPECT_FALSE(put_and_wait(second)) << "put still replaces";
  EXPECT_TRUE(same_stream(load().at(0), second));
}

TEST_F(RegistryStoreTest, EraseRemovesTheStreamAndItsRows) {
  open_store();
  ASSERT_FALSE(put_and_wait(numbered_stream(1)));
  ASSERT_FALSE(put_and_wait(numbered_stream(2)));
  Outcome erased;
  store_->erase("stream-1", capture(erased));
  run_until([&] { return erased.called; });
  ASSERT_FALSE(erased.error) << erased.error.message();
  const auto streams = load();
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_TRUE(same_stream(streams[0], numbered_stream(2)));
  close_store();

  // No orphan rows either.
  sqlite3* db = nullptr;
  ASSERT_EQ(
      sqlite3_open_v2((dir_ + "/registry.sqlite3").c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
      SQLITE_OK);
  for (const char* sql : {"SELECT count(*) FROM stream_files WHERE stream_id = 'stream-1'",
                          "SELECT count(*) FROM stream_tags WHERE stream_id = 'stream-1'"}) {
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int(stmt, 0), 0) << sql;
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
}

TEST_F(RegistryStoreTest, EraseOfUnknownIdSucceeds) {
  open_store();
  Outcome erased;
  store_->erase("never-existed", capture(erased));
  run_until([&] { return erased.called; });
  EXPECT_FALSE(erased.error) << erased.error.message();
}

TEST_F(RegistryStoreTest, WritesApplyInSubmissionOrder) {
  open_store();
  StoredStream v1 = numbered_stream(5);
  v1.version = 1;
  StoredStream v2 = numbered_stream(5);
  v2.version = 2;
  v2.description = "second";
  std::vector<int> order;
  store_->put(v1, [&](std::error_code e) {
    EXPECT_FALSE(e);
    order.push_back(1);
  });
  store_->put(v2, [&](std::error_code e) {
    EXPECT_FALSE(e);
    order.push_back(2);
  });
  // put, erase, put of another id: the last word wins.
  store_->put(numbered_stream(6), [&](std::error_code e) {
    EXPECT_FALSE(e);
    order.push_back(3);
  });
  store_->erase("stream-6", [&](std::error_code e) {
    EXPECT_FALSE(e);
    order.push_back(4);
  });
  store_->put(numbered_stream(7), [&](std::error_code e) {
    EXPECT_FALSE(e);
    order.push_back(5);
  });
  store_->erase("stream-7", [&](std::error_code e) {
    EXPECT_FALSE(e);
    order.push_back(6);
  });
  store_->put(numbered_stream(7), [&](std::error_code e) {
    EXPECT_FALSE(e);
    order.push_back(7);
  });
  EXPECT_EQ(store_->pending_writes(), 7u);
  run_until([&] { return order.size() == 7; });
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(store_->pending_writes(), 0u);
  const auto streams = load();
  ASSERT_EQ(streams.size(), 2u);
  EXPECT_TRUE(same_stream(streams[0], v2));
  EXPECT_TRUE(same_stream(streams[1], numbered_stream(7)));
}

TEST_F(RegistryStoreTest, QueueOverflowFailsAtOnce) {
  open_store(2);
  Outcome a;
  Outcome b;
  Outcome c;
  store_->put(numbered_stream(1), capture(a));
  store_->put(numbered_stream(2), capture(b));
  store_->put(numbered_stream(3), capture(c));
  ASSERT_TRUE(c.called) << "overflow must fail before put() returns";
  EXPECT_EQ(c.error, std::errc::resource_unavailable_try_again);
  EXPECT_EQ(store_->pending_writes(), 2u);
  Outcome d;
  store_->erase("stream-1", capture(d));
  ASSERT_TRUE(d.called);
  EXPECT_EQ(d.error, std::errc::resource_unavailable_try_again);
  run_until([&] { return a.called && b.called; });
  EXPECT_FALSE(a.error);
  EXPECT_FALSE(b.error);
  EXPECT_EQ(load().size(), 2u);
}

TEST_F(RegistryStoreTest, LoadAllWhileWritesArePendingIsBusy) {
  open_store();
  Outcome a;
  store_->put(numbered_stream(1), capture(a));
  const auto streams = store_->load_all();
  ASSERT_FALSE(streams);
  EXPECT_EQ(streams.error().code, std::errc::device_or_resource_busy);
  run_until([&] { return a.called; });
  EXPECT_EQ(load().size(), 1u);
}

TEST_F(RegistryStoreTest, FailedPutLeavesThePreviousVersion) {
  open_store();
  const StoredStream good = numbered_stream(4);
  ASSERT_FALSE(put_and_wait(good));
  StoredStream bad = numbered_stream(4);
  bad.version = 99;
  bad.files.push_back(bad.files[0]);  // duplicate file id: the insert fails mid-transaction
  const std::error_code error = put_and_wait(bad);
  ASSERT_TRUE(error);
  EXPECT_EQ(error.category(), sqlite_category());
  EXPECT_EQ(error.value() & 0xff, SQLITE_CONSTRAINT) << error.message();
  const auto streams = load();
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_TRUE(same_stream(streams[0], good));
  // The connection is usable afterwards.
  ASSERT_FALSE(put_and_wait(numbered_stream(5)));
  EXPECT_EQ(load().size(), 2u);
}

TEST_F(RegistryStoreTest, ReopenAfterCloseKeepsData) {
  open_store();
  ASSERT_FALSE(put_and_wait(rich_stream()));
  ASSERT_FALSE(put_and_wait(numbered_stream(1)));
  close_store();
  open_store();
  const auto streams = load();
  ASSERT_EQ(streams.size(), 2u);
  EXPECT_TRUE(same_stream(streams[0], rich_stream()));
  EXPECT_TRUE(same_stream(streams[1], numbered_stream(1)));
}

TEST_F(RegistryStoreTest, CloseWaitsForQueuedWrites) {
  open_store();
  int acknowledged = 0;
  bool closed = false;
  for (int n = 0; n < 5; ++n) {
    store_->put(numbered_stream(n), [&](std::error_code e) {
      EXPECT_FALSE(e);
      EXPECT_FALSE(closed);
      ++acknowledged;
    });
  }
  store_->close([&] { closed = true; });
  Outcome late;
  store_->put(numbered_stream(9), capture(late));
  ASSERT_TRUE(late.called);
  EXPECT_EQ(late.error, std::errc::operation_canceled);
  run_until([&] { return closed; });
  EXPECT_EQ(acknowledged, 5);
  store_.reset();
  open_store();
  EXPECT_EQ(load().size(), 5u);
}

// No list, an empty list (never written by the control API, kept as "nobody") and a list each
// survive a put and a reopen as they were, and a put replaces or removes the list.
TEST_F(RegistryStoreTest, AllowedThingsRoundTripAndAreReplaced) {
  open_store();
  StoredStream open = numbered_stream(1);
  StoredStream nobody = numbered_stream(2);
  nobody.allowed_things = std::vector<std::string>{};
  StoredStream gated = numbered_stream(3);
  gated.allowed_things = std::vector<std::string>{"gw-*"};
  for (const StoredStream& s : {open, nobody, gated}) ASSERT_FALSE(put_and_wait(s));
  close_store();
  open_store();
  auto streams = load();
  ASSERT_EQ(streams.size(), 3u);
  EXPECT_EQ(streams[0].allowed_things, std::nullopt);
  EXPECT_EQ(streams[1].allowed_things, std::vector<std::string>{});
  EXPECT_EQ(streams[2].allowed_things, std::vector<std::string>{"gw-*"});

  gated.allowed_things = std::vector<std::string>{"a", "b?", "c*"};
  ASSERT_FALSE(put_and_wait(gated));
  open.allowed_things = std::vector<std::string>{"only-me"};
  ASSERT_FALSE(put_and_wait(open));
  nobody.allowed_things.reset();
  ASSERT_FALSE(put_and_wait(nobody));
  streams = load();
  ASSERT_EQ(streams.size(), 3u);
  EXPECT_TRUE(same_stream(streams[0], open));
  EXPECT_TRUE(same_stream(streams[1], nobody));
  EXPECT_TRUE(same_stream(streams[2], gated));
}

TEST(SqliteCategoryTest, NamesAndMapsErrors) {
  const std::error_code full(SQLITE_FULL, sqlite_category());
  EXPECT_STREQ(sqlite_category().name(), "sqlite");
  EXPECT_FALSE(full.message().empty());
  EXPECT_EQ(full, std::errc::no_space_on_device);
  EXPECT_EQ(std::error_code(SQLITE_IOERR_FSYNC, sqlite_category()), std::errc::io_error);
  EXPECT_EQ(std::error_code(SQLITE_BUSY, sqlite_category()),
            std::errc::resource_unavailable_try_again);
}

}  // namespace
}  // namespace chunkd::io

// The shared registry (RegistryStore::open_shared) against a real PostgreSQL 15 started by the
// test (tests/support/postgres.hpp): round trips, create conflicts, erase, asynchronous loads,
// change notifications between two stores, the bounded queue, a server restart and the schema
// check. Skipped, saying why, when the PostgreSQL binaries are not installed.
#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/registry_store.hpp"
#include "tests/io/outcome.hpp"
#include "tests/io/postgres_fixture.hpp"
#include "tests/io/registry_samples.hpp"

namespace chunkd::io {
namespace {

using test::capture;
using test::Outcome;

class RegistryPgTest : public test::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    empty_registry("streams");
  }

  void TearDown() override {
    if (!loop_open_) return;
    for (auto* store : {&a_, &b_}) close(*store);
    close_loop();
  }

  std::unique_ptr<RegistryStore> open(std::size_t max_pending = 64) {
    auto opened = RegistryStore::open_shared(&loop_, pg_->url(), max_pending);
    EXPECT_TRUE(opened) << opened.error().message();
    return opened ? std::move(*opened) : nullptr;
  }

  void close(std::unique_ptr<RegistryStore>& store) {
    if (!store) return;
    bool closed = false;
    store->close([&closed] { closed = true; });
    run_until([&] { return closed; });
    store.reset();
  }

  template <typename Pred>
  void run_until(Pred done) {
    // Bounded by the loop running out of work; PostgreSQL answers within the test's time limit.
    while (!done()) {
      if (uv_run(&loop_, UV_RUN_ONCE) == 0 && !done()) break;
    }
    ASSERT_TRUE(done()) << "loop ran out of work";
  }

  std::error_code write(RegistryStore& store, bool create, StoredStream stream) {
    Outcome outcome;
    if (create) {
      store.create(std::move(stream), capture(outcome));
    } else {
      store.put(std::move(stream), capture(outcome));
    }
    run_until([&] { return outcome.called; });
    return outcome.error;
  }

  std::error_code erase(RegistryStore& store, std::string id) {
    Outcome outcome;
    store.erase(std::move(id), capture(outcome));
    run_until([&] { return outcome.called; });
    return outcome.error;
  }

  Expected<std::vector<StoredStream>> load(RegistryStore& store, std::optional<std::string> id) {
    std::optional<Expected<std::vector<StoredStream>>> out;
    store.load(std::move(id),
               [&out](Expected<std::vector<StoredStream>> r) { out = std::move(r); });
    run_until([&] { return out.has_value(); });
    return std::move(*out);
  }

  std::unique_ptr<RegistryStore> a_;
  std::unique_ptr<RegistryStore> b_;
};

TEST_F(RegistryPgTest, PutThenLoadRoundTripsEveryField) {
  a_ = open();
  ASSERT_TRUE(a_);
  EXPECT_TRUE(a_->shared());
  const StoredStream rich = rich_stream();
  ASSERT_FALSE(write(*a_, false, rich));
  ASSERT_FALSE(write(*a_, false, numbered_stream(2)));
  StoredStream no_list = numbered_stream(3);
  no_list.allowed_things = std::vector<std::string>{};  // an empty list is not "every thing"
  ASSERT_FALSE(write(*a_, false, no_list));
  auto all = load(*a_, std::nullopt);
  ASSERT_TRUE(all) << all.error().message();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_TRUE(same_stream((*all)[0], rich));
  EXPECT_TRUE(same_stream((*all)[1], numbered_stream(2)));
  EXPECT_TRUE(same_stream((*all)[2], no_list));
  auto one = load(*a_, rich.id);
  ASSERT_TRUE(one) << one.error().message();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_TRUE(same_stream(one->front(), rich));
  auto sync = a_->load_all();
  ASSERT_TRUE(sync) << sync.error().message();
  EXPECT_EQ(sync->size(), 3u);
  EXPECT_EQ(a_->stats().writes, 3u);
  EXPECT_GT(a_->stats().write_seconds, 0.0);
}

TEST_F(RegistryPgTest, PutReplacesAndEraseRemovesEveryRow) {
  a_ = open();
  ASSERT_TRUE(a_);
  ASSERT_FALSE(write(*a_, false, rich_stream()));
  StoredStream smaller = numbered_stream(1);
  smaller.id = rich_stream().id;
  ASSERT_FALSE(write(*a_, false, smaller));
  auto loaded = load(*a_, smaller.id);
  ASSERT_TRUE(loaded && loaded->size() == 1u);
  EXPECT_TRUE(same_stream(loaded->front(), smaller)) << "no tag or file of the old one may remain";
  ASSERT_FALSE(erase(*a_, smaller.id));
  EXPECT_FALSE(erase(*a_, "never-existed")) << "erasing an unknown id succeeds";
  EXPECT_TRUE(load(*a_, smaller.id)->empty());
  EXPECT_EQ(pg_->psql("SELECT count(*) FROM stream_files") + pg_->psql("SELECT count(*) FROM "
                                                                       "stream_tags"),
            "0\n0\n");
}

TEST_F(RegistryPgTest, CreateOfAnExistingIdIsRefusedWhoeverWroteIt) {
  a_ = open();
  b_ = open();
  ASSERT_TRUE(a_ && b_);
  const StoredStream first = numbered_stream(5);
  ASSERT_FALSE(write(*a_, true, first));
  StoredStream second = numbered_stream(6);
  second.id = first.id;
  EXPECT_EQ(write(*b_, true, second), std::errc::file_exists);
  EXPECT_EQ(write(*a_, true, second), std::errc::file_exists);
  EXPECT_TRUE(same_stream(load(*b_, first.id)->at(0), first));

  // Both at once: exactly one wins.
  Outcome from_a, from_b;
  a_->create(numbered_stream(7), capture(from_a));
  b_->create(numbered_stream(7), capture(from_b));
  run_until([&] { return from_a.called && from_b.called; });
  EXPECT_NE(!from_a.error, !from_b.error)
      << from_a.error.message() << " / " << from_b.error.message();
  EXPECT_EQ(from_a.error ? from_a.error : from_b.error, std::errc::file_exists);
}

TEST_F(RegistryPgTest, UpdateHoldsOnlyWhileTheStreamIsAsItWasRead) {
  a_ = open();
  b_ = open();
  ASSERT_TRUE(a_ && b_);
  const StoredStream read = numbered_stream(1);
  ASSERT_FALSE(write(*a_, true, read));
  auto update = [&](RegistryStore& store, StoredStream s, const StoredStream& as_read) {
    Outcome outcome;
    store.update(std::move(s), {as_read.version, as_read.updated_at}, capture(outcome));
    run_until([&] { return outcome.called; });
    return outcome.error;
  };
  StoredStream through_a = read;
  through_a.version = read.version + 1;
  through_a.updated_at = "2026-12-01T00:00:00Z";
  StoredStream through_b = read;
  through_b.version = read.version + 1;
  through_b.description = "B's change";
  through_b.updated_at = "2026-12-01T00:00:01Z";
  ASSERT_FALSE(update(*a_, through_a, read));
  EXPECT_EQ(update(*b_, through_b, read), changed_meanwhile()) << "B read it before A's update";
  EXPECT_TRUE(same_stream(load(*b_, read.id)->at(0), through_a));
  ASSERT_FALSE(update(*b_, through_b, through_a)) << "read again, B's update holds";
  ASSERT_FALSE(erase(*a_, read.id));
  EXPECT_EQ(update(*b_, through_b, through_b), changed_meanwhile()) << "erased meanwhile";
  EXPECT_TRUE(load(*a_, read.id)->empty()) << "a refused update creates nothing";
}

TEST_F(RegistryPgTest, OtherStoresHearOfEveryChangeAndNotOfTheirOwn) {
  a_ = open();
  b_ = open();
  ASSERT_TRUE(a_ && b_);
  std::vector<std::optional<std::string>> heard_by_a, heard_by_b;
  a_->on_change([&](const std::optional<std::string>& id) { heard_by_a.push_back(id); });
  b_->on_change([&](const std::optional<std::string>& id) { heard_by_b.push_back(id); });
  ASSERT_FALSE(write(*a_, true, numbered_stream(1)));
  run_until([&] { return heard_by_b.size() == 1; });
  EXPECT_EQ(heard_by_b[0], "stream-1");
  StoredStream updated = numbered_stream(1);
  updated.version = 42;
  ASSERT_FALSE(write(*a_, false, updated));
  ASSERT_FALSE(erase(*a_, "stream-1"));
  run_until([&] { return heard_by_b.size() == 3; });
  EXPECT_EQ(heard_by_b[1], "stream-1");
  EXPECT_EQ(heard_by_b[2], "stream-1");
  ASSERT_FALSE(write(*b_, false, numbered_stream(2)));
  run_until([&] { return heard_by_a.size() == 1; });
  EXPECT_EQ(heard_by_a[0], "stream-2");
  EXPECT_EQ(heard_by_b.size(), 3u) << "a store is not told of its own writes";
  EXPECT_EQ(b_->stats().notifications, 3u);
}

TEST_F(RegistryPgTest, QueueOverflowFailsAtOnce) {
  a_ = open(1);
  ASSERT_TRUE(a_);
  Outcome first, second;
  a_->put(numbered_stream(1), capture(first));
  a_->put(numbered_stream(2), capture(second));
  ASSERT_TRUE(second.called) << "over the bound: refused at once";
  EXPECT_EQ(second.error, std::errc::resource_unavailable_try_again);
  EXPECT_EQ(a_->pending_writes(), 1u);
  EXPECT_EQ(a_->load_all().error().code, std::errc::device_or_resource_busy);
  run_until([&] { return first.called; });
  EXPECT_FALSE(first.error) << first.error.message();
}

TEST_F(RegistryPgTest, CloseWaitsForQueuedWritesThenRefuses) {
  a_ = open();
  ASSERT_TRUE(a_);
  std::vector<Outcome> outcomes(5);
  for (int i = 0; i < 5; ++i) a_->put(numbered_stream(i), capture(outcomes[i]));
  close(a_);
  for (const Outcome& o : outcomes) EXPECT_TRUE(o.called && !o.error) << o.error.message();
  EXPECT_EQ(pg_->psql("SELECT count(*) FROM streams"), "5\n");
}

TEST_F(RegistryPgTest, WritesFailClearlyWhileTheServerIsDownThenWorkAfterItRestarted) {
  a_ = open();
  ASSERT_TRUE(a_);
  int reloads = 0;
  a_->on_change([&](const std::optional<std::string>& id) { reloads += id ? 0 : 1; });
  ASSERT_FALSE(write(*a_, false, numbered_stream(1)));
  pg_->stop();
  run_until([&] { return !a_->stats().connected; });
  EXPECT_EQ(write(*a_, false, numbered_stream(2)), std::errc::not_connected);
  EXPECT_FALSE(load(*a_, std::nullopt));
  ASSERT_TRUE(pg_->start()) << pg_->error();
  run_until([&] { return a_->stats().connected; });
  EXPECT_EQ(a_->stats().reconnects, 1u);
  EXPECT_EQ(reloads, 1) << "after a reconnect, everything is reloaded";
  ASSERT_FALSE(write(*a_, false, numbered_stream(3)));
  auto all = load(*a_, std::nullopt);
  ASSERT_TRUE(all) << all.error().message();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "stream-1");
  EXPECT_EQ((*all)[1].id, "stream-3");
  // And notifications flow on the new connection.
  b_ = open();
  ASSERT_TRUE(b_);
  std::vector<std::string> heard;
  a_->on_change([&](const std::optional<std::string>& id) { heard.push_back(id.value_or("")); });
  ASSERT_FALSE(erase(*b_, "stream-1"));
  run_until([&] { return !heard.empty(); });
  EXPECT_EQ(heard[0], "stream-1");
}

TEST_F(RegistryPgTest, UnreachableServerAndNewerSchemaGiveClearErrors) {
  auto unreachable = RegistryStore::open_shared(
      &loop_, "postgresql://chunkd@127.0.0.1:1/chunkd?connect_timeout=5");
  ASSERT_FALSE(unreachable);
  EXPECT_NE(unreachable.error().message().find("cannot connect to PostgreSQL"), std::string::npos)
      << unreachable.error().message();
  a_ = open();  // creates the schema
  ASSERT_TRUE(a_);
  close(a_);
  pg_->psql("UPDATE registry_schema SET version = 99");
  auto newer = RegistryStore::open_shared(&loop_, pg_->url());
  pg_->psql("UPDATE registry_schema SET version = 2");  // the version this chunkd writes
  ASSERT_FALSE(newer);
  EXPECT_NE(newer.error().message().find("schema version 99"), std::string::npos)
      << newer.error().message();
}

}  // namespace
}  // namespace chunkd::io

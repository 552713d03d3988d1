// RegistrySync: another writer's changes to a shared registry (a real PostgreSQL 15 started by the
// test) reach this instance's catalog; a reconnect reloads everything; hostile notifications are
// ignored. Skipped, saying why, without the PostgreSQL binaries.
#include "engine/registry_sync.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <utility>

#include "tests/io/postgres_fixture.hpp"
#include "tests/io/registry_samples.hpp"

namespace chunkd::engine {
namespace {

using io::numbered_stream;

class RegistrySyncTest : public test::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    empty_registry("streams");
    other_ = open();
    mine_ = open();
    ASSERT_TRUE(other_ && mine_);
    sync_ = std::make_unique<RegistrySync>(catalog_, *mine_, metrics_, [this] { gc_runs_++; });
    sync_->start();
  }

  void TearDown() override {
    if (!loop_open_) return;
    for (auto* store : {&other_, &mine_}) {
      if (!*store) continue;
      bool closed = false;
      (*store)->close([&closed] { closed = true; });
      run_until([&] { return closed; });
    }
    sync_.reset();
    close_loop();
  }

  std::unique_ptr<io::RegistryStore> open() {
    auto opened = io::RegistryStore::open_shared(&loop_, pg_->url());
    EXPECT_TRUE(opened) << opened.error().message();
    return opened ? std::move(*opened) : nullptr;
  }

  template <typename Pred>
  void run_until(Pred done) {
    while (!done()) {
      if (uv_run(&loop_, UV_RUN_ONCE) == 0 && !done()) break;
    }
    ASSERT_TRUE(done()) << "loop ran out of work";
  }

  void other_put(io::StoredStream s) {
    bool written = false;
    other_->put(std::move(s), [&](std::error_code e) {
      EXPECT_FALSE(e) << e.message();
      written = true;
    });
    run_until([&] { return written; });
  }

  void other_erase(std::string id) {
    bool written = false;
    other_->erase(std::move(id), [&](std::error_code e) {
      EXPECT_FALSE(e) << e.message();
      written = true;
    });
    run_until([&] { return written; });
  }

  std::uint64_t applied(const char* kind) const {
    return metrics_.counter_value("chunkd_registry_changes_applied_total",
                                  std::string("kind=\"") + kind + "\"");
  }

  Catalog catalog_;
  Metrics metrics_;
  int gc_runs_ = 0;
  std::unique_ptr<io::RegistryStore> other_;
  std::unique_ptr<io::RegistryStore> mine_;
  std::unique_ptr<RegistrySync> sync_;
};

TEST_F(RegistrySyncTest, AnotherWritersChangesReachTheCatalog) {
  other_put(numbered_stream(1));
  run_until([&] { return catalog_.find("stream-1") != nullptr; });
  EXPECT_TRUE(io::same_stream(*catalog_.find("stream-1"), numbered_stream(1)));
  EXPECT_EQ(applied("created"), 1u);

  io::StoredStream updated = numbered_stream(1);
  updated.version = 7;
  updated.files[0].digest = "ffffffffffffffffffffffffffffffff";
  other_put(updated);
  run_until([&] { return catalog_.find("stream-1")->version == 7u; });
  EXPECT_EQ(applied("updated"), 1u);
  EXPECT_EQ(gc_runs_, 1) << "a replaced file may leave a blob nobody references";

  other_erase("stream-1");
  run_until([&] { return catalog_.find("stream-1") == nullptr; });
  EXPECT_EQ(applied("deleted"), 1u);
  EXPECT_EQ(gc_runs_, 2);
}

TEST_F(RegistrySyncTest, ManyChangesEndInTheLastState) {
  for (int i = 0; i < 200; ++i) other_put(numbered_stream(i));
  for (int i = 0; i < 200; i += 2) other_erase("stream-" + std::to_string(i));
  run_until([&] { return catalog_.size() == 100 && catalog_.find("stream-199") != nullptr; });
  // Let every load in flight land, then compare with what the registry holds.
  bool loaded = false;
  mine_->load(std::nullopt, [&](auto) { loaded = true; });
  run_until([&] { return loaded; });
  EXPECT_EQ(catalog_.size(), 100u);
  EXPECT_EQ(catalog_.find("stream-0"), nullptr);
  EXPECT_NE(catalog_.find("stream-1"), nullptr);
}

TEST_F(RegistrySyncTest, HostileNotificationsAreIgnored) {
  pg_->psql("NOTIFY chunkd_streams, 'not a valid id/../..'");
  pg_->psql("NOTIFY chunkd_streams, ''");
  pg_->psql("NOTIFY chunkd_streams, 'no-such-stream'");
  run_until([&] { return mine_->stats().notifications == 3u; });
  other_put(numbered_stream(2));  // a real one after them
  run_until([&] { return catalog_.find("stream-2") != nullptr; });
  EXPECT_EQ(catalog_.size(), 1u);
  EXPECT_EQ(applied("deleted"), 0u);
}

TEST_F(RegistrySyncTest, AReconnectReloadsWhatWasMissed) {
  other_put(numbered_stream(1));
  other_put(numbered_stream(2));
  run_until([&] { return catalog_.size() == 2; });
  // Changes nobody announces, then the connection is cut.
  pg_->psql("DELETE FROM streams WHERE id = 'stream-1'");
  pg_->psql("UPDATE streams SET version = 99 WHERE id = 'stream-2'");
  pg_->psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'chunkd'");
  run_until([&] { return catalog_.find("stream-1") == nullptr; });
  EXPECT_EQ(catalog_.find("stream-2")->version, 99u);
  EXPECT_GE(mine_->stats().reconnects, 1u);
}

}  // namespace
}  // namespace chunkd::engine

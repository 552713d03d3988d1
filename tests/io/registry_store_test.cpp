// RegistryStore: round trips, ordering, bounds, reopening, bad directories and a kill -9 test.
#include "io/registry_store.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tests/io/outcome.hpp"
#include "tests/io/registry_samples.hpp"

namespace chunkd::io {
namespace {

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

TEST_F(RegistryStoreTest, CorruptDatabaseGivesAClearError) {
  fs::create_directories(dir_);
  {
    std::ofstream junk(dir_ + "/registry.sqlite3", std::ios::binary);
    for (int i = 0; i < 1000; ++i) junk << "this is not a database ";
  }
  auto opened = RegistryStore::open(&loop_, dir_);
  ASSERT_FALSE(opened);
  const std::error_code error = opened.error().code;
  const std::string message = opened.error().message();
  ASSERT_TRUE(error);
  EXPECT_EQ(error.category(), sqlite_category());
  EXPECT_EQ(error.value() & 0xff, SQLITE_NOTADB);
  EXPECT_NE(message.find("registry.sqlite3"), std::string::npos) << message;
  EXPECT_NE(message.find("not a database"), std::string::npos) << message;
}

TEST_F(RegistryStoreTest, DirectoryThatIsAFileGivesAClearError) {
  fs::create_directories(root_ + "/state");
  { std::ofstream file(dir_); }
  auto opened = RegistryStore::open(&loop_, dir_);
  ASSERT_FALSE(opened);
  const std::error_code error = opened.error().code;
  const std::string message = opened.error().message();
  EXPECT_TRUE(error);
  EXPECT_NE(message.find(dir_), std::string::npos) << message;
}

TEST_F(RegistryStoreTest, UncreatableDirectoryGivesAClearError) {
  auto opened = RegistryStore::open(&loop_, "/proc/self/chunkd-registry");
  ASSERT_FALSE(opened);
  const std::error_code error = opened.error().code;
  const std::string message = opened.error().message();
  EXPECT_TRUE(error);
  EXPECT_NE(message.find("/proc/self/chunkd-registry"), std::string::npos) << message;
}

TEST_F(RegistryStoreTest, UnwritableDirectoryGivesAClearError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  fs::create_directories(dir_);
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec);
  auto opened = RegistryStore::open(&loop_, dir_);
  fs::permissions(dir_, fs::perms::owner_all);
  ASSERT_FALSE(opened);
  const std::error_code error = opened.error().code;
  const std::string message = opened.error().message();
  EXPECT_TRUE(error);
  EXPECT_NE(message.find("registry.sqlite3"), std::string::npos) << message;
}

TEST_F(RegistryStoreTest, NewerSchemaVersionIsRefused) {
  fs::create_directories(dir_);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/registry.sqlite3").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto opened = RegistryStore::open(&loop_, dir_);
  ASSERT_FALSE(opened);
  const std::error_code error = opened.error().code;
  const std::string message = opened.error().message();
  EXPECT_TRUE(error);
  EXPECT_NE(message.find("schema version 99"), std::string::npos) << message;
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

// A registry written by the release before allowedThings (schema version 1, with its exact
// tables) opens, keeps every stream readable by every thing, and takes lists (and S3 sources)
// from then on.
TEST_F(RegistryStoreTest, MigratesAVersion1Registry) {
  fs::create_directories(dir_);
  const std::string path = dir_ + "/registry.sqlite3";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* v1 = R"sql(
    CREATE TABLE streams (id TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL,
      description TEXT NOT NULL, role_arn TEXT NOT NULL, created_at TEXT NOT NULL,
      updated_at TEXT NOT NULL, file_count INTEGER NOT NULL);
    CREATE TABLE stream_tags (stream_id TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
      ord INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
      PRIMARY KEY (stream_id, ord)) WITHOUT ROWID;
    CREATE TABLE stream_files (stream_id TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
      ord INTEGER NOT NULL, file_id INTEGER NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
      size_bytes INTEGER NOT NULL, digest TEXT NOT NULL, extent_bytes INTEGER NOT NULL,
      manifest BLOB NOT NULL, PRIMARY KEY (stream_id, ord), UNIQUE (stream_id, file_id))
      WITHOUT ROWID;
    INSERT INTO streams VALUES ('old', 4, 'from v1', 'arn:aws:iam::123456789012:role/chunkd',
      '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', 1);
    INSERT INTO stream_tags VALUES ('old', 0, 'team', 'ota');
    INSERT INTO stream_files VALUES ('old', 0, 9, 'fw', 'a.bin', 16,
      '00112233445566778899aabbccddeeff', 262144, x'0102030405060708');
    PRAGMA user_version=1;)sql";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  open_store();
  auto streams = load();
  ASSERT_EQ(streams.size(), 1u);
  StoredStream old = streams[0];
  EXPECT_EQ(old.id, "old");
  EXPECT_EQ(old.version, 4u);
  EXPECT_EQ(old.description, "from v1");
  EXPECT_EQ(old.tags, (std::vector<std::pair<std::string, std::string>>{{"team", "ota"}}));
  ASSERT_EQ(old.files.size(), 1u);
  EXPECT_EQ(old.files[0].file_id, 9u);
  EXPECT_EQ(old.files[0].manifest, std::vector<std::uint64_t>{0x0807060504030201ull});
  EXPECT_EQ(old.allowed_things, std::nullopt) << "a v1 stream stays readable by every thing";
  EXPECT_EQ(old.files[0].source_etag, "") << "a v1 file came from a directory";
  EXPECT_EQ(old.files[0].source_version, "");

  old.allowed_things = std::vector<std::string>{"sensor-*"};
  old.files[0].source_etag = "\"etag\"";
  old.files[0].source_version = "v-1";
  ASSERT_FALSE(put_and_wait(old));
  close_store();
  open_store();  // a second open finds the current version and migrates nothing
  streams = load();
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_TRUE(same_stream(streams[0], old));
  close_store();

  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 4);  // the current version
  sqlite3_finalize(stmt);
  sqlite3_close(db);
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

// ---- kill -9 in the middle of a burst of writes --------------------------------------------

// The writer runs in a fresh process: fork() then exec() of this same test binary, which sees
// kCrashChildEnv in a global test environment and never reaches the tests. (Forking without exec
// would copy a process whose libuv pool threads already exist, which ThreadSanitizer refuses.)
constexpr const char* kCrashChildEnv = "CHUNKD_REGISTRY_CRASH_CHILD";  // "<ack fd>:<dir>"

// Acknowledged puts, each id written to `ack_fd` after its callback reported success. Never
// returns; the parent kills it.
[[noreturn]] void crash_child(const std::string& dir, int ack_fd) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) ::_exit(2);
  auto opened = RegistryStore::open(&loop, dir, 16);
  if (!opened) ::_exit(3);
  auto store = std::move(*opened);
  constexpr int kTotal = 100'000;
  constexpr std::size_t kDepth = 8;  // writes queued at once
  int next = 0;
  std::function<void()> issue = [&] {
    while (store->pending_writes() < kDepth && next < kTotal) {
      const int n = next++;
      store->put(numbered_stream(n), [&, n](std::error_code e) {
        if (e) ::_exit(4);
        const std::int32_t id = n;
        if (::write(ack_fd, &id, sizeof id) != static_cast<ssize_t>(sizeof id)) ::_exit(5);
        issue();
      });
    }
  };
  issue();
  uv_run(&loop, UV_RUN_DEFAULT);
  ::_exit(0);
}

class CrashChildEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* spec = std::getenv(kCrashChildEnv);
    if (spec == nullptr) return;
    char* rest = nullptr;
    const long fd = std::strtol(spec, &rest, 10);
    if (rest == nullptr || *rest != ':' || fd < 0) ::_exit(6);
    crash_child(rest + 1, static_cast<int>(fd));
  }
};
[[maybe_unused]] ::testing::Environment* const crash_child_environment =
    ::testing::AddGlobalTestEnvironment(new CrashChildEnvironment);

TEST_F(RegistryStoreTest, AcknowledgedWritesSurviveKill9) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  // Everything the child needs is built before fork(): between fork and exec it only calls
  // async-signal-safe functions.
  std::string env_entry = std::string(kCrashChildEnv) + "=" + std::to_string(fds[1]) + ":" + dir_;
  // Environments are only set up when some test is selected: pick a trivial one.
  std::string filter = "--gtest_filter=SqliteCategoryTest.NamesAndMapsErrors";
  std::string self = "/proc/self/exe";
  std::vector<char*> argv = {self.data(), filter.data(), nullptr};
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(env_entry.data());
  envp.push_back(nullptr);
  const int dev_null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(dev_null, 0);

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::dup2(dev_null, STDOUT_FILENO);  // the child's gtest banner is noise
    ::execve(self.c_str(), argv.data(), envp.data());
    ::_exit(7);
  }
  ::close(dev_null);
  ::close(fds[1]);

  // Collect acknowledgements; kill the child once a burst is well under way.
  constexpr std::size_t kKillAfter = 40;
  std::set<int> acknowledged;
  bool killed = false;
  std::int32_t id = 0;
  std::size_t have = 0;
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, 120'000);  // failure guard only
    if (ready <= 0) {
      ADD_FAILURE() << "no acknowledgement from the child for two minutes";
      ::kill(pid, SIGKILL);
      break;
    }
    const ssize_t n = ::read(fds[0], reinterpret_cast<char*>(&id) + have, sizeof id - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child is gone and every ack it wrote has been read
    have += static_cast<std::size_t>(n);
    if (have < sizeof id) continue;
    have = 0;
    acknowledged.insert(id);
    if (!killed && acknowledged.size() >= kKillAfter) {
      ASSERT_EQ(::kill(pid, SIGKILL), 0);
      killed = true;
    }
  }
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(killed) << "child ended early, status " << status;
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  ASSERT_GE(acknowledged.size(), kKillAfter);

  // Independent check of the raw rows: every stream row has all of its file rows.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(
        sqlite3_open_v2((dir_ + "/registry.sqlite3").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr),
        SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db,
                                 "SELECT s.id, s.file_count, (SELECT count(*) FROM stream_files f "
                                 "WHERE f.stream_id = s.id) FROM streams s",
                                 -1, &stmt, nullptr),
              SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      ++rows;
      EXPECT_EQ(sqlite3_column_int(stmt, 1), sqlite3_column_int(stmt, 2))
          << reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    EXPECT_GE(rows, static_cast<int>(acknowledged.size()));
    sqlite3_close(db);
  }

  open_store();
  const auto streams = load();
  std::set<std::string> present;
  for (const StoredStream& s : streams) {
    present.insert(s.id);
    const int n = std::atoi(s.id.c_str() + std::string("stream-").size());
    EXPECT_TRUE(same_stream(s, numbered_stream(n))) << s.id << " is not exactly what was put";
  }
  std::size_t missing = 0;
  for (int n : acknowledged) {
    if (present.count("stream-" + std::to_string(n)) == 0) ++missing;
  }
  EXPECT_EQ(missing, 0u) << "acknowledged streams lost after kill -9";
  // Writes are sequential: at most the queue depth of unacknowledged ones may have landed.
  EXPECT_LE(streams.size(), acknowledged.size() + 8);
}

}  // namespace
}  // namespace chunkd::io

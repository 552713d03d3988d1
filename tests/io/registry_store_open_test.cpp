// Opening a RegistryStore (io/registry_store.hpp) on what it finds: a corrupt database, a
// directory that is a file, cannot be created or is not writable each give a clear error; a newer
// schema version is refused; a version 1 registry (before allowedThings) is migrated.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "io/registry_store.hpp"
#include "tests/io/registry_samples.hpp"
#include "tests/io/registry_store_fixture.hpp"

namespace chunkd::io {
namespace {

namespace fs = std::filesystem;

using testing::RegistryStoreTest;

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

}  // namespace
}  // namespace chunkd::io

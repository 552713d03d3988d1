// The registry's SQLite schema and connection set-up, the manifest encoding, the durable creation
// of the registry directory and SQLite's error category (io/registry_sqlite.hpp).
#include "io/registry_sqlite.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iterator>

#include "base/assert.hpp"
#include "io/registry_store.hpp"

namespace chunkd::io {
namespace detail {
namespace {

// Version history: 1, the first release; 2 added streams.allowed_things; 3 added
// stream_files.source_etag and source_version (what an S3 fetch got); 4 added the jobs tables
// (kJobsSchema). A database of an older version is migrated forward on open (kMigrations), in one
// transaction with the version bump; a newer one is refused.
constexpr int kSchemaVersion = 4;

class SqliteCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "sqlite"; }
  std::string message(int code) const override { return sqlite3_errstr(code); }
  std::error_condition default_error_condition(int code) const noexcept override {
    switch (code & 0xff) {
      case SQLITE_FULL:
        return std::errc::no_space_on_device;
      case SQLITE_IOERR:
        return std::errc::io_error;
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        return std::errc::resource_unavailable_try_again;
      case SQLITE_NOMEM:
        return std::errc::not_enough_memory;
      case SQLITE_READONLY:
      case SQLITE_PERM:
      case SQLITE_AUTH:
      case SQLITE_CANTOPEN:
        return std::errc::permission_denied;
      default:
        return {code, *this};
    }
  }
};

constexpr const char* kSchema = R"sql(
CREATE TABLE streams (
  id          TEXT PRIMARY KEY NOT NULL,
  version     INTEGER NOT NULL,
  description TEXT NOT NULL,
  role_arn    TEXT NOT NULL,
  created_at  TEXT NOT NULL,
  updated_at  TEXT NOT NULL,
  file_count  INTEGER NOT NULL,
  allowed_things TEXT  -- NULL: every thing may read the stream; else patterns joined by '\n'
);
CREATE TABLE stream_tags (
  stream_id TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
  ord       INTEGER NOT NULL,
  key       TEXT NOT NULL,
  value     TEXT NOT NULL,
  PRIMARY KEY (stream_id, ord)
) WITHOUT ROWID;
CREATE TABLE stream_files (
  stream_id    TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
  ord          INTEGER NOT NULL,
  file_id      INTEGER NOT NULL,
  bucket       TEXT NOT NULL,
  key          TEXT NOT NULL,
  size_bytes   INTEGER NOT NULL,
  digest       TEXT NOT NULL,
  extent_bytes INTEGER NOT NULL,
  manifest     BLOB NOT NULL,
  source_etag    TEXT NOT NULL DEFAULT '',  -- an S3 object's ETag; '' for a directory bucket
  source_version TEXT NOT NULL DEFAULT '',  -- an S3 object's versionId; '' when not versioned
  PRIMARY KEY (stream_id, ord),
  UNIQUE (stream_id, file_id)
) WITHOUT ROWID;
)sql";

// The store of jobs (io/job_store.cpp): created with kSchema on a fresh database, and by the
// migration that introduced it on an older one. Times are milliseconds since the Unix epoch.
constexpr const char* kJobsSchema = R"sql(
CREATE TABLE jobs (
  id                 TEXT PRIMARY KEY NOT NULL,
  spec               TEXT NOT NULL,  -- the create body as chunkd re-reads it (JSON)
  document           TEXT NOT NULL,  -- the job document devices get (JSON)
  stream_id          TEXT,           -- an OTA job's stream, else NULL
  status             TEXT NOT NULL,
  reason_code        TEXT NOT NULL,
  comment            TEXT NOT NULL,
  created_at_ms      INTEGER NOT NULL,
  last_updated_at_ms INTEGER NOT NULL,
  completed_at_ms    INTEGER NOT NULL
);
CREATE INDEX jobs_by_stream ON jobs (stream_id) WHERE stream_id IS NOT NULL;
CREATE TABLE job_executions (
  job_id             TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  thing              TEXT NOT NULL,
  status             TEXT NOT NULL,
  status_details     BLOB NOT NULL,  -- io/job_store.cpp encode_details
  queued_at_ms       INTEGER NOT NULL,
  started_at_ms      INTEGER NOT NULL,
  last_updated_at_ms INTEGER NOT NULL,
  version_number     INTEGER NOT NULL,
  execution_number   INTEGER NOT NULL,
  step_deadline_ms   INTEGER NOT NULL,  -- the step timer (stepTimeoutInMinutes); 0: none
  PRIMARY KEY (job_id, thing)
) WITHOUT ROWID;
CREATE TABLE job_things (  -- things that talked to the jobs API: patterns match them later
  thing TEXT PRIMARY KEY NOT NULL
) WITHOUT ROWID;
)sql";

// kMigrations[v - 1] brings a version-v schema to version v + 1. A column added here is also in
// kSchema, which creates the current version directly.
constexpr const char* kMigrations[] = {
    "ALTER TABLE streams ADD COLUMN allowed_things TEXT;",  // 1 → 2: NULL keeps every thing
    // 2 → 3: files stored before were all read from directories.
    "ALTER TABLE stream_files ADD COLUMN source_etag TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE stream_files ADD COLUMN source_version TEXT NOT NULL DEFAULT '';",
    kJobsSchema,  // 3 → 4: the jobs tables
};
static_assert(std::size(kMigrations) == kSchemaVersion - 1, "one migration per version step");

// Runs `sql` (no rows expected back) and describes a failure.
int exec(sqlite3* db, const char* sql, std::string& message) {
  char* error_text = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error_text);
  if (rc != SQLITE_OK) {
    message = error_text != nullptr ? error_text : sqlite3_errstr(rc);
  }
  sqlite3_free(error_text);
  return rc;
}

// Reads a single-row, single-column pragma.
int pragma_value(sqlite3* db, const char* sql, std::string& value, std::string& message) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      value = column_text(stmt, 0);
      rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      rc = SQLITE_OK;
    }
  }
  if (rc != SQLITE_OK) message = sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  return rc;
}

// Configures the connection and brings the schema to kSchemaVersion; on failure names the step.
int configure(sqlite3* db, std::string& step, std::string& message) {
  step = "enable write-ahead logging";
  std::string mode;
  int rc = pragma_value(db, "PRAGMA journal_mode=WAL", mode, message);
  if (rc != SQLITE_OK) return rc;
  if (mode != "wal") {
    message = "the file system does not support WAL (journal mode stayed '" + mode + "')";
    return SQLITE_CANTOPEN;
  }
  step = "configure the connection";
  rc = exec(db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", message);
  if (rc != SQLITE_OK) return rc;

  step = "read the schema version";
  std::string version_text;
  rc = pragma_value(db, "PRAGMA user_version", version_text, message);
  if (rc != SQLITE_OK) return rc;
  const int version = std::atoi(version_text.c_str());
  if (version == kSchemaVersion) return SQLITE_OK;
  if (version < 0 || version > kSchemaVersion) {
    step = "check the schema version";
    message = "schema version " + std::to_string(version) + " is newer than the " +
              std::to_string(kSchemaVersion) +
              " this chunkd understands (written by a later chunkd release?)";
    return SQLITE_MISMATCH;
  }
  std::string script = "BEGIN IMMEDIATE;";
  if (version == 0) {
    step = "create the schema";
    script += kSchema;
    script += kJobsSchema;
  } else {
    step = "migrate the schema from version " + std::to_string(version) + " to " +
           std::to_string(kSchemaVersion);
    for (int v = version; v < kSchemaVersion; ++v) script += kMigrations[v - 1];
  }
  script += "PRAGMA user_version=" + std::to_string(kSchemaVersion) + "; COMMIT;";
  rc = exec(db, script.c_str(), message);
  if (rc != SQLITE_OK) {
    std::string ignored;
    if (sqlite3_get_autocommit(db) == 0) exec(db, "ROLLBACK", ignored);
  }
  return rc;
}

int fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  const int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

// create_directories, then fsync every directory whose entries changed (the nearest existing
// ancestor and each new one), so a fresh registry directory survives power loss too. SQLite
// itself syncs the directory when it creates the database and WAL files.
std::error_code create_directories_synced(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::path target = fs::absolute(dir, error);
  if (error) return error;
  std::vector<fs::path> to_sync;
  fs::path existing = target;
  while (!fs::exists(existing, error)) {
    if (error) return error;
    to_sync.push_back(existing);
    if (!existing.has_relative_path()) break;  // reached the root
    existing = existing.parent_path();
  }
  if (!to_sync.empty()) to_sync.push_back(existing);
  fs::create_directories(target, error);
  if (error) return error;
  if (!fs::is_directory(target, error)) {
    return error ? error : std::make_error_code(std::errc::not_a_directory);
  }
  for (const fs::path& path : to_sync) {
    if (const int rc = fsync_directory(path); rc != 0) return {rc, std::system_category()};
  }
  return {};
}

}  // namespace

std::error_code sqlite_error(int code) { return {code, sqlite_category()}; }

std::string sqlite_cause(sqlite3* db, int code) {
  if (db == nullptr) return {};
  const std::string text = sqlite3_errmsg(db);
  if (text.empty() || text == sqlite3_errstr(code)) return {};
  return ": " + text;
}

std::string column_text(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  const int bytes = sqlite3_column_bytes(stmt, column);
  if (text == nullptr || bytes <= 0) return {};
  return std::string(reinterpret_cast<const char*>(text), static_cast<std::size_t>(bytes));
}

void encode_manifest(const std::vector<std::uint64_t>& manifest, std::vector<unsigned char>& out) {
  out.resize(manifest.size() * 8);
  for (std::size_t i = 0; i < manifest.size(); ++i) {
    for (std::size_t b = 0; b < 8; ++b) {
      out[i * 8 + b] = static_cast<unsigned char>(manifest[i] >> (8 * b));
    }
  }
}

bool decode_manifest(const void* data, int bytes, std::vector<std::uint64_t>& out) {
  if (bytes < 0 || bytes % 8 != 0) return false;
  const auto* p = static_cast<const unsigned char*>(data);
  out.resize(static_cast<std::size_t>(bytes) / 8);
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::uint64_t value = 0;
    for (std::size_t b = 0; b < 8; ++b) value |= std::uint64_t{p[i * 8 + b]} << (8 * b);
    out[i] = value;
  }
  return true;
}

std::optional<std::string> join_patterns(const std::optional<std::vector<std::string>>& patterns) {
  if (!patterns) return std::nullopt;
  CHUNKD_ASSERT(patterns->size() != 1 || !patterns->front().empty());
  std::string out;
  for (std::size_t i = 0; i < patterns->size(); ++i) {
    CHUNKD_ASSERT((*patterns)[i].find('\n') == std::string::npos);
    if (i > 0) out += '\n';
    out += (*patterns)[i];
  }
  return out;
}

std::vector<std::string> split_patterns(std::string_view joined) {
  std::vector<std::string> out;
  if (joined.empty()) return out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = joined.find('\n', start);
    out.emplace_back(joined.substr(start, end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

Expected<void> prepare_database(sqlite3* db, const std::string& path) {
  std::string step;
  std::string message;
  const int rc = configure(db, step, message);
  if (rc == SQLITE_OK) return {};
  std::string detail = "registry " + path + ": cannot " + step;
  if (!message.empty() && message != sqlite3_errstr(rc)) detail += ": " + message;
  if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT) {
    detail +=
        " (the file is damaged or not a chunkd registry: restore it from a backup or move it away "
        "to start empty)";
  }
  return fail(sqlite_error(rc), std::move(detail));
}

Expected<void> create_durable_directories(const std::string& dir) {
  if (std::error_code error = create_directories_synced(dir)) {
    return fail(error, "cannot create registry directory '" + dir + "'");
  }
  return {};
}

Expected<sqlite3*> open_registry_database(const std::string& dir, std::string_view user,
                                          std::string& path) {
  if (dir.empty()) {
    return fail(std::errc::invalid_argument,
                "registry directory is empty: set it in the configuration");
  }
  if (auto created = create_durable_directories(dir); !created) return Unexpected{created.error()};
  path = (std::filesystem::path(dir) / "registry.sqlite3").string();
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
      nullptr);
  if (rc != SQLITE_OK) {
    std::string detail = "cannot open registry " + path + sqlite_cause(db, rc) + std::string(user) +
                         " (check that the directory is writable by chunkd)";
    sqlite3_close(db);
    return fail(sqlite_error(rc), std::move(detail));
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  if (auto prepared = prepare_database(db, path); !prepared) {
    sqlite3_close(db);
    return Unexpected{prepared.error()};
  }
  return db;
}

}  // namespace detail

const std::error_category& sqlite_category() {
  static const detail::SqliteCategory category;
  return category;
}

}  // namespace chunkd::io

// RegistryStore on SQLite: one connection, one write at a time on the libuv thread pool.
//
// Threading: the connection is opened with SQLITE_OPEN_NOMUTEX ("multi-thread" mode: any thread
// may use it, but never two at once), which is safe here because exactly one thread touches it at
// any moment: open() and load_all() run on the loop thread and refuse to run while a job is
// queued or running; each job runs on one pool thread, and the next job is only queued from the
// previous job's after_work callback on the loop thread (the write queue, io/sqlite_writer.hpp).
// libuv's work queue (a mutex and an async wake-up) orders the hand-offs, so each thread sees the
// connection state the previous one left.
#include "io/registry_store.hpp"

#include <sqlite3.h>

#include <climits>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "io/log.hpp"
#include "io/registry_sqlite.hpp"
#include "io/sqlite_writer.hpp"

namespace chunkd::io {
namespace detail {
namespace {

class SqliteRegistryStore final : public RegistryStore {
 public:
  SqliteRegistryStore(uv_loop_t* loop, sqlite3* db, std::string path,
                      std::size_t max_pending_writes)
      : db_(db), path_(std::move(path)), writer_(loop, "registry", max_pending_writes) {}

  ~SqliteRegistryStore() override {
    writer_.abort_if_running();
    if (db_ != nullptr) {
      if (ready_) {
        LOG_WARN("registry", "store destroyed without close(); closing %s synchronously",
                 path_.c_str());
      }
      close_db();
    }
  }

  // Prepares every statement.
  Expected<void> prepare_all() {
    const std::pair<sqlite3_stmt**, const char*> statements[] = {
        {&begin_write_, "BEGIN IMMEDIATE"},
        {&begin_read_, "BEGIN"},
        {&commit_, "COMMIT"},
        {&rollback_, "ROLLBACK"},
        {&delete_tags_, "DELETE FROM stream_tags WHERE stream_id = ?1"},
        {&delete_files_, "DELETE FROM stream_files WHERE stream_id = ?1"},
        {&delete_stream_, "DELETE FROM streams WHERE id = ?1"},
        {&upsert_stream_,
         "INSERT INTO streams (id, version, description, role_arn, created_at, updated_at, "
         "file_count, allowed_things) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
         "ON CONFLICT (id) DO UPDATE SET "
         "version = excluded.version, description = excluded.description, "
         "role_arn = excluded.role_arn, created_at = excluded.created_at, "
         "updated_at = excluded.updated_at, file_count = excluded.file_count, "
         "allowed_things = excluded.allowed_things"},
        {&insert_stream_,
         "INSERT INTO streams (id, version, description, role_arn, created_at, updated_at, "
         "file_count, allowed_things) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
        {&insert_tag_,
         "INSERT INTO stream_tags (stream_id, ord, key, value) VALUES (?1, ?2, ?3, ?4)"},
        {&insert_file_,
         "INSERT INTO stream_files (stream_id, ord, file_id, bucket, key, size_bytes, digest, "
         "extent_bytes, manifest, source_etag, source_version) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"},
        {&select_streams_,
         "SELECT id, version, description, role_arn, created_at, updated_at, file_count, "
         "allowed_things FROM streams ORDER BY id"},
        {&select_tags_, "SELECT stream_id, key, value FROM stream_tags ORDER BY stream_id, ord"},
        {&select_files_,
         "SELECT stream_id, file_id, bucket, key, size_bytes, digest, extent_bytes, manifest, "
         "source_etag, source_version FROM stream_files ORDER BY stream_id, ord"},
    };
    for (const auto& [stmt, sql] : statements) {
      const int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, nullptr);
      if (rc != SQLITE_OK) {
        return fail(sqlite_error(rc), "registry " + path_ + ": cannot prepare \"" + sql + "\"" +
                                          sqlite_cause(db_, rc));
      }
    }
    return {};
  }

  void mark_ready() { ready_ = true; }

  Expected<std::vector<StoredStream>> load_all() override {
    if (db_ == nullptr || writer_.closing()) {
      return fail(std::errc::operation_canceled, "registry " + path_ + " is closed");
    }
    if (writer_.busy()) {
      return fail(std::errc::device_or_resource_busy,
                  "registry " + path_ + ": load_all() while writes are pending");
    }
    std::vector<StoredStream> streams;
    std::string message;
    if (std::error_code error = read_all(streams, message)) return fail(error, std::move(message));
    return streams;
  }

  void put(StoredStream stream, Done done) override {
    writer_.submit([this, stream = std::move(stream)](
                       std::string& message) { return write_put(stream, false, message); },
                   std::move(done));
  }

  void create(StoredStream stream, Done done) override {
    writer_.submit([this, stream = std::move(stream)](
                       std::string& message) { return write_put(stream, true, message); },
                   std::move(done));
  }

  void erase(std::string id, Done done) override {
    writer_.submit(
        [this, id = std::move(id)](std::string& message) { return write_erase(id, message); },
        std::move(done));
  }

  std::size_t pending_writes() const override { return writer_.pending(); }

  void close(std::function<void()> done) override {
    writer_.close([this] { close_db(); }, std::move(done));
  }

 private:
  // ---- worker thread ----

  // Steps a write statement to completion, then resets it. Records the first failure.
  bool run(sqlite3_stmt* stmt, const char* what, int& rc_out, std::string& message) {
    const int rc = sqlite3_step(stmt);
    const bool ok = rc == SQLITE_DONE || rc == SQLITE_ROW;
    if (!ok) {
      rc_out = rc;
      message = std::string(what) + ": " + sqlite3_errmsg(db_);
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return ok;
  }

  bool bind_text(sqlite3_stmt* stmt, int index, std::string_view text, int& rc_out) {
    if (text.size() > static_cast<std::size_t>(INT_MAX)) {
      rc_out = SQLITE_TOOBIG;
      return false;
    }
    // The job owns the text until the statement is reset, so SQLite need not copy it.
    rc_out = sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()), nullptr);
    return rc_out == SQLITE_OK;
  }

  // NULL for nullopt.
  bool bind_optional_text(sqlite3_stmt* stmt, int index, const std::optional<std::string>& text,
                          int& rc_out) {
    if (text) return bind_text(stmt, index, *text, rc_out);
    rc_out = sqlite3_bind_null(stmt, index);
    return rc_out == SQLITE_OK;
  }

  bool bind_int(sqlite3_stmt* stmt, int index, sqlite3_int64 value, int& rc_out) {
    rc_out = sqlite3_bind_int64(stmt, index, value);
    return rc_out == SQLITE_OK;
  }

  std::error_code finish_write(bool ok, int rc, const std::string& id, const char* what,
                               std::string& message) {
    if (ok) {
      int commit_rc = SQLITE_OK;
      if (run(commit_, "COMMIT", commit_rc, message)) return {};
      rc = commit_rc;
    }
    if (message.empty()) message = sqlite3_errstr(rc);
    message = std::string(what) + " stream '" + id + "' in " + path_ + ": " + message;
    if (sqlite3_get_autocommit(db_) == 0) {
      int ignored = SQLITE_OK;
      std::string ignored_message;
      run(rollback_, "ROLLBACK", ignored, ignored_message);
    }
    return sqlite_error(rc);
  }

  // `create`: a plain INSERT, refused with file_exists (not logged) when the id exists.
  std::error_code write_put(const StoredStream& s, bool create, std::string& message) {
    const std::optional<std::string> allowed = join_patterns(s.allowed_things);
    sqlite3_stmt* const stream_stmt = create ? insert_stream_ : upsert_stream_;
    int rc = SQLITE_OK;
    if (!run(begin_write_, "BEGIN IMMEDIATE", rc, message)) {
      return finish_write(false, rc, s.id, "put", message);
    }
    bool ok =
        bind_text(delete_tags_, 1, s.id, rc) && run(delete_tags_, "delete tags", rc, message) &&
        bind_text(delete_files_, 1, s.id, rc) && run(delete_files_, "delete files", rc, message);
    ok = ok && bind_text(stream_stmt, 1, s.id, rc) &&
         bind_int(stream_stmt, 2, to_sql(s.version), rc) &&
         bind_text(stream_stmt, 3, s.description, rc) &&
         bind_text(stream_stmt, 4, s.role_arn, rc) && bind_text(stream_stmt, 5, s.created_at, rc) &&
         bind_text(stream_stmt, 6, s.updated_at, rc) &&
         bind_int(stream_stmt, 7, static_cast<sqlite3_int64>(s.files.size()), rc) &&
         bind_optional_text(stream_stmt, 8, allowed, rc);
    // The only constraint a stream row can break is its primary key: the id exists.
    const bool exists = ok && !run(stream_stmt, "insert stream", rc, message) && create &&
                        (rc & 0xff) == SQLITE_CONSTRAINT;
    ok = ok && rc == SQLITE_OK;
    for (std::size_t i = 0; ok && i < s.tags.size(); ++i) {
      ok = bind_text(insert_tag_, 1, s.id, rc) &&
           bind_int(insert_tag_, 2, static_cast<sqlite3_int64>(i), rc) &&
           bind_text(insert_tag_, 3, s.tags[i].first, rc) &&
           bind_text(insert_tag_, 4, s.tags[i].second, rc) &&
           run(insert_tag_, "insert tag", rc, message);
    }
    for (std::size_t i = 0; ok && i < s.files.size(); ++i) {
      const StoredFile& f = s.files[i];
      encode_manifest(f.manifest, manifest_bytes_);
      if (manifest_bytes_.size() > static_cast<std::size_t>(INT_MAX)) {
        rc = SQLITE_TOOBIG;
        ok = false;
        break;
      }
      ok = bind_text(insert_file_, 1, s.id, rc) &&
           bind_int(insert_file_, 2, static_cast<sqlite3_int64>(i), rc) &&
           bind_int(insert_file_, 3, f.file_id, rc) && bind_text(insert_file_, 4, f.bucket, rc) &&
           bind_text(insert_file_, 5, f.key, rc) &&
           bind_int(insert_file_, 6, to_sql(f.size_bytes), rc) &&
           bind_text(insert_file_, 7, f.digest, rc) &&
           bind_int(insert_file_, 8, f.extent_bytes, rc) &&
           bind_text(insert_file_, 10, f.source_etag, rc) &&
           bind_text(insert_file_, 11, f.source_version, rc);
      if (ok) {
        // An empty manifest is an empty blob, not NULL.
        rc = manifest_bytes_.empty()
                 ? sqlite3_bind_zeroblob(insert_file_, 9, 0)
                 : sqlite3_bind_blob(insert_file_, 9, manifest_bytes_.data(),
                                     static_cast<int>(manifest_bytes_.size()), nullptr);
        ok = rc == SQLITE_OK && run(insert_file_, "insert file", rc, message);
      }
    }
    if (!ok) {
      // A failed bind leaves the statement bound: clear it for the next job.
      for (sqlite3_stmt* stmt :
           {delete_tags_, delete_files_, stream_stmt, insert_tag_, insert_file_}) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
      }
    }
    const std::error_code error = finish_write(ok, rc, s.id, create ? "create" : "put", message);
    if (!exists) return error;
    message.clear();  // a refusal the caller expects, not a failure to log
    return std::make_error_code(std::errc::file_exists);
  }

  std::error_code write_erase(const std::string& id, std::string& message) {
    int rc = SQLITE_OK;
    if (!run(begin_write_, "BEGIN IMMEDIATE", rc, message)) {
      return finish_write(false, rc, id, "erase", message);
    }
    const bool ok =
        bind_text(delete_tags_, 1, id, rc) && run(delete_tags_, "delete tags", rc, message) &&
        bind_text(delete_files_, 1, id, rc) && run(delete_files_, "delete files", rc, message) &&
        bind_text(delete_stream_, 1, id, rc) && run(delete_stream_, "delete stream", rc, message);
    if (!ok) {
      for (sqlite3_stmt* stmt : {delete_tags_, delete_files_, delete_stream_}) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
      }
    }
    return finish_write(ok, rc, id, "erase", message);
  }

  void close_db() {
    for (sqlite3_stmt** stmt :
         {&begin_write_, &begin_read_, &commit_, &rollback_, &delete_tags_, &delete_files_,
          &delete_stream_, &upsert_stream_, &insert_stream_, &insert_tag_, &insert_file_,
          &select_streams_, &select_tags_, &select_files_}) {
      sqlite3_finalize(*stmt);
      *stmt = nullptr;
    }
    // The last connection to close checkpoints the WAL into the database file.
    const int rc = sqlite3_close(db_);
    if (rc != SQLITE_OK) {
      LOG_ERROR("registry", "closing %s: %s", path_.c_str(), sqlite3_errmsg(db_));
      sqlite3_close_v2(db_);  // let SQLite finish the close once it can
    }
    db_ = nullptr;
  }

  std::error_code read_all(std::vector<StoredStream>& streams, std::string& message) {
    int rc = SQLITE_OK;
    if (!run(begin_read_, "BEGIN", rc, message)) {
      message = "load " + path_ + ": " + message;
      return sqlite_error(rc);
    }
    std::error_code error = load_rows(streams, message);
    int end_rc = SQLITE_OK;
    std::string end_message;
    run(error ? rollback_ : commit_, "end read", end_rc, end_message);
    if (error) message = "load " + path_ + ": " + message;
    return error;
  }

  std::error_code load_rows(std::vector<StoredStream>& streams, std::string& message) {
    std::unordered_map<std::string, std::size_t> index;
    std::vector<std::uint64_t> file_counts;
    auto fail = [&](sqlite3_stmt* stmt, int rc, const std::string& what) {
      message = what +
                (rc == SQLITE_CORRUPT ? std::string(": inconsistent rows") : sqlite_cause(db_, rc));
      sqlite3_reset(stmt);
      return sqlite_error(rc);
    };

    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(select_streams_)) == SQLITE_ROW) {
      StoredStream s;
      s.id = column_text(select_streams_, 0);
      s.version = from_sql(sqlite3_column_int64(select_streams_, 1));
      s.description = column_text(select_streams_, 2);
      s.role_arn = column_text(select_streams_, 3);
      s.created_at = column_text(select_streams_, 4);
      s.updated_at = column_text(select_streams_, 5);
      file_counts.push_back(from_sql(sqlite3_column_int64(select_streams_, 6)));
      if (sqlite3_column_type(select_streams_, 7) != SQLITE_NULL) {
        s.allowed_things = split_patterns(column_text(select_streams_, 7));
      }
      index.emplace(s.id, streams.size());
      streams.push_back(std::move(s));
    }
    if (rc != SQLITE_DONE) return fail(select_streams_, rc, "read streams");
    sqlite3_reset(select_streams_);

    while ((rc = sqlite3_step(select_tags_)) == SQLITE_ROW) {
      const auto it = index.find(column_text(select_tags_, 0));
      if (it == index.end()) return fail(select_tags_, SQLITE_CORRUPT, "tag of unknown stream");
      streams[it->second].tags.emplace_back(column_text(select_tags_, 1),
                                            column_text(select_tags_, 2));
    }
    if (rc != SQLITE_DONE) return fail(select_tags_, rc, "read tags");
    sqlite3_reset(select_tags_);

    while ((rc = sqlite3_step(select_files_)) == SQLITE_ROW) {
      const std::string stream_id = column_text(select_files_, 0);
      const auto it = index.find(stream_id);
      if (it == index.end()) return fail(select_files_, SQLITE_CORRUPT, "file of unknown stream");
      StoredFile f;
      f.file_id = static_cast<std::uint32_t>(sqlite3_column_int64(select_files_, 1));
      f.bucket = column_text(select_files_, 2);
      f.key = column_text(select_files_, 3);
      f.size_bytes = from_sql(sqlite3_column_int64(select_files_, 4));
      f.digest = column_text(select_files_, 5);
      f.extent_bytes = static_cast<std::uint32_t>(sqlite3_column_int64(select_files_, 6));
      const void* blob = sqlite3_column_blob(select_files_, 7);
      const int blob_bytes = sqlite3_column_bytes(select_files_, 7);
      if (!decode_manifest(blob, blob_bytes, f.manifest)) {
        return fail(select_files_, SQLITE_CORRUPT,
                    "manifest of stream '" + stream_id + "' file " + std::to_string(f.file_id));
      }
      f.source_etag = column_text(select_files_, 8);
      f.source_version = column_text(select_files_, 9);
      streams[it->second].files.push_back(std::move(f));
    }
    if (rc != SQLITE_DONE) return fail(select_files_, rc, "read files");
    sqlite3_reset(select_files_);

    for (std::size_t i = 0; i < streams.size(); ++i) {
      if (streams[i].files.size() != file_counts[i]) {
        message = "stream '" + streams[i].id + "' has " + std::to_string(streams[i].files.size()) +
                  " of its " + std::to_string(file_counts[i]) + " files";
        return sqlite_error(SQLITE_CORRUPT);
      }
    }
    return {};
  }

  sqlite3* db_;
  std::string path_;
  SqliteWriter writer_;
  bool ready_ = false;                         // open() finished; set by mark_ready()
  std::vector<unsigned char> manifest_bytes_;  // worker scratch

  sqlite3_stmt* begin_write_ = nullptr;
  sqlite3_stmt* begin_read_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* rollback_ = nullptr;
  sqlite3_stmt* delete_tags_ = nullptr;
  sqlite3_stmt* delete_files_ = nullptr;
  sqlite3_stmt* delete_stream_ = nullptr;
  sqlite3_stmt* upsert_stream_ = nullptr;
  sqlite3_stmt* insert_stream_ = nullptr;
  sqlite3_stmt* insert_tag_ = nullptr;
  sqlite3_stmt* insert_file_ = nullptr;
  sqlite3_stmt* select_streams_ = nullptr;
  sqlite3_stmt* select_tags_ = nullptr;
  sqlite3_stmt* select_files_ = nullptr;
};

}  // namespace
}  // namespace detail

Expected<std::unique_ptr<RegistryStore>> RegistryStore::open(uv_loop_t* loop,
                                                             const std::string& dir) {
  return open(loop, dir, kDefaultMaxPendingWrites);
}

Expected<std::unique_ptr<RegistryStore>> RegistryStore::open(uv_loop_t* loop,
                                                             const std::string& dir,
                                                             std::size_t max_pending_writes) {
  using namespace detail;
  std::string path;
  auto opened = open_registry_database(dir, "", path);
  if (!opened) return Unexpected{opened.error()};
  sqlite3* db = *opened;

  auto store = std::make_unique<SqliteRegistryStore>(
      loop, db, path, max_pending_writes == 0 ? 1 : max_pending_writes);
  // On failure the destructor closes the connection.
  if (auto ready = store->prepare_all(); !ready) return Unexpected{ready.error()};
  store->mark_ready();
  return std::unique_ptr<RegistryStore>(std::move(store));
}

}  // namespace chunkd::io

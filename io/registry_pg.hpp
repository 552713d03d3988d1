// The stream registry several chunkd instances share, in PostgreSQL (RegistryStore::open_shared,
// [registry] url in the config). Same contract as the SQLite store (io/registry_store.hpp):
// acknowledged = committed (PostgreSQL's default synchronous_commit), each put/create/update/erase
// one transaction (one statement: the function chunkd_put_stream, or a DELETE), writes one at a
// time in submission order, at most `max_pending_writes` queued (over it:
// resource_unavailable_try_again at once), operation_canceled after close().
//
// The loop never waits: after start-up one connection runs on libpq's asynchronous API
// (PQsendQueryParams, PQconsumeInput/PQisBusy/PQgetResult, PQconnectStart/PQconnectPoll to
// reconnect) driven by a uv_poll on PQsocket. open_shared() (connect, schema, LISTEN) and
// load_all() block, like SQLite's, and are meant for start-up. A host name in the URL is resolved
// by libpq with a blocking lookup when reconnecting: give an address to avoid it.
//
// Changes: every write sends NOTIFY chunkd_streams with the stream id in its own transaction; the
// store LISTENs on the same connection and reports other connections' notifications through
// on_change (its own are skipped by backend pid). load(id) / load(nullopt) read asynchronously,
// in order with the writes.
//
// Connection loss (server restart, network): the write in flight fails with
// std::errc::connection_aborted (logged: it may or may not have committed; not retried, since a
// retried create could answer 409 for its own insert), queued operations and every operation
// submitted until the store is back fail at once with std::errc::not_connected (the caller answers
// 503 and the client retries). The store reconnects with back-off (100 ms doubling to 5 s, each
// attempt bounded by 10 s), LISTENs again, then calls on_change(nullopt): notifications may have
// been missed, reload everything.
//
// Errors: a failed statement is logged with PostgreSQL's message and SQLSTATE; its code maps the
// SQLSTATE: unique violation (create of an existing id) → file_exists, CK409 (an update whose
// stream another writer changed or erased since it was read) → changed_meanwhile() and CK423 (an
// erase of a stream an unfinished job uses, io/job_lease_pg.hpp) → device_or_resource_busy (the
// three expected refusals, not logged), CK404 (a job whose stream does not exist) →
// no_such_file_or_directory, disk full →
// no_space_on_device, out of memory → not_enough_memory, insufficient privilege / invalid
// authorization → permission_denied, connection exceptions → connection_aborted, anything else →
// io_error. open_shared()'s error detail carries PostgreSQL's message.
//
// Schema (version 2 in table registry_schema, created or migrated under an advisory lock by the
// first instance; a database of a newer version is refused): streams, stream_tags, stream_files
// (the manifest a bytea of little-endian 64-bit hashes, as in SQLite; unsigned 64-bit values as
// the bigint of the same bits) and the function chunkd_put_stream (version 1); the jobs tables
// and the functions chunkd_write_jobs and chunkd_erase_stream (version 2, io/job_lease_pg.hpp;
// a version-1 database gets them when opened). An erase is chunkd_erase_stream: it locks the
// stream row, refuses (CK423) while a job with status IN_PROGRESS names the stream, and deletes
// it, in one transaction. Every row read back is checked (numbers, manifest, file count) before
// it reaches the engine.
//
// Private to io/: engine code includes io/registry_store.hpp.
// Thread: the loop thread. REQUIRES: destroy only after close()'s callback has run.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "base/expected.hpp"
#include "io/registry_store.hpp"

namespace chunkd::io::detail {

inline constexpr const char* kPgChannel = "chunkd_streams";
// The SQLSTATEs chunkd's functions raise. chunkd_put_stream: an update's precondition does not
// hold; chunkd_erase_stream: an unfinished job uses the stream; chunkd_write_jobs: a job's stream
// does not exist.
inline constexpr std::string_view kPgChangedMeanwhile = "CK409";
inline constexpr std::string_view kPgStreamInUse = "CK423";
inline constexpr std::string_view kPgNoStream = "CK404";

// The errc for a SQLSTATE (see above).
std::errc pg_errc(std::string_view sqlstate);
// "<message> (SQLSTATE <code>)" of a failed result, trimmed of libpq's trailing newline.
std::string pg_result_message(const PGresult* result);
std::string pg_conn_message(const PGconn* conn);

// A PostgreSQL array literal ("{...}"), built element by element: each text quoted and escaped.
class PgArray {
 public:
  void add(std::string_view text);
  void add_null();
  // The literal; the builder starts again empty.
  std::string take();

 private:
  std::string out_ = "{";
};

// `text` as a whole decimal number in [min, max].
bool pg_parse_int(std::string_view text, long long min, long long max, long long& out);
// The value of a result's cell, with its length (NUL bytes cannot occur in text).
std::string pg_text(const PGresult* result, int row, int column);

// The version-2 tables and functions (io/job_lease_pg_sql.cpp).
extern const char* const kPgJobsSchema;

// Creates the schema when missing, checks its version; blocking (start-up).
Expected<void> prepare_pg_schema(PGconn* conn);

// The statements and their parameters. Params hold the text of each parameter; nullopt is NULL.
struct PgParams {
  std::vector<std::optional<std::string>> values;
};
extern const char* const kPgPutSql;    // $1 create, $2.. the stream, expectation (pg_put_params)
extern const char* const kPgEraseSql;  // $1 the id (chunkd_erase_stream)
extern const char* const kPgLoadSql;   // $1 the id, or NULL for every stream
// False (`problem` set) when a field cannot be sent (a NUL byte: PostgreSQL text cannot hold it).
// `expected`: an update's precondition (nullopt: a put or create).
bool pg_put_params(const StoredStream& stream, bool create,
                   const std::optional<RegistryStore::Expectation>& expected, PgParams& out,
                   std::string& problem);

// The streams of a kPgLoadSql result, checked; the error's detail says which row is wrong.
Expected<std::vector<StoredStream>> pg_parse_streams(const PGresult* result);

}  // namespace chunkd::io::detail

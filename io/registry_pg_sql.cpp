// The shared registry's SQL (io/registry_pg.hpp): the schema and its version, the statements,
// their parameters, the checked reading of rows and the mapping of SQLSTATEs.
#include <charconv>
#include <cstdlib>
#include <limits>
#include <map>
#include <utility>

#include "io/registry_pg.hpp"
#include "io/registry_sqlite.hpp"

namespace chunkd::io::detail {
namespace {

constexpr int kPgSchemaVersion = 2;
constexpr long long kSchemaLockKey = 0x63686b6472656731;  // "chkdreg1": serialises set-ups

// Version 1: the streams (version 2 adds kPgJobsSchema).
constexpr const char* kPgSchema = R"sql(
CREATE TABLE streams (
  id             text PRIMARY KEY,
  version        bigint NOT NULL,
  description    text NOT NULL,
  role_arn       text NOT NULL,
  created_at     text NOT NULL,
  updated_at     text NOT NULL,
  file_count     integer NOT NULL,
  allowed_things text  -- NULL: every thing may read the stream; else patterns joined by '\n'
);
CREATE TABLE stream_tags (
  stream_id text NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
  ord       integer NOT NULL,
  key       text NOT NULL,
  value     text NOT NULL,
  PRIMARY KEY (stream_id, ord)
);
CREATE TABLE stream_files (
  stream_id      text NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
  ord            integer NOT NULL,
  file_id        bigint NOT NULL,
  bucket         text NOT NULL,
  key            text NOT NULL,
  size_bytes     bigint NOT NULL,  -- the unsigned size as the bigint of the same bits
  digest         text NOT NULL,
  extent_bytes   bigint NOT NULL,
  manifest       bytea NOT NULL,   -- little-endian 64-bit hashes, one per extent
  source_etag    text NOT NULL,
  source_version text NOT NULL,
  PRIMARY KEY (stream_id, ord),
  UNIQUE (stream_id, file_id)
);
-- One statement per write, so each is one transaction; the NOTIFY is sent when it commits.
CREATE FUNCTION chunkd_put_stream(
    p_create boolean, p_id text, p_version bigint, p_description text, p_role_arn text,
    p_created_at text, p_updated_at text, p_allowed_things text,
    p_tag_keys text[], p_tag_values text[],
    p_file_ids bigint[], p_buckets text[], p_keys text[], p_sizes bigint[], p_digests text[],
    p_extents bigint[], p_manifests bytea[], p_etags text[], p_source_versions text[],
    p_expected_version bigint, p_expected_updated_at text)  -- an update's precondition, or NULL
  RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF p_create THEN
    INSERT INTO streams VALUES (p_id, p_version, p_description, p_role_arn, p_created_at,
                                p_updated_at, cardinality(p_file_ids), p_allowed_things);
  ELSIF p_expected_version IS NOT NULL THEN
    UPDATE streams SET version = p_version, description = p_description, role_arn = p_role_arn,
        created_at = p_created_at, updated_at = p_updated_at,
        file_count = cardinality(p_file_ids), allowed_things = p_allowed_things
      WHERE id = p_id AND version = p_expected_version AND updated_at = p_expected_updated_at;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'stream % was changed or deleted by another writer since it was read', p_id
        USING ERRCODE = 'CK409';
    END IF;
    DELETE FROM stream_tags WHERE stream_id = p_id;
    DELETE FROM stream_files WHERE stream_id = p_id;
  ELSE
    INSERT INTO streams VALUES (p_id, p_version, p_description, p_role_arn, p_created_at,
                                p_updated_at, cardinality(p_file_ids), p_allowed_things)
      ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version,
        description = EXCLUDED.description, role_arn = EXCLUDED.role_arn,
        created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
        file_count = EXCLUDED.file_count, allowed_things = EXCLUDED.allowed_things;
    DELETE FROM stream_tags WHERE stream_id = p_id;
    DELETE FROM stream_files WHERE stream_id = p_id;
  END IF;
  INSERT INTO stream_tags (stream_id, ord, key, value)
    SELECT p_id, t.ord - 1, t.k, t.v
      FROM unnest(p_tag_keys, p_tag_values) WITH ORDINALITY AS t(k, v, ord);
  INSERT INTO stream_files (stream_id, ord, file_id, bucket, key, size_bytes, digest,
                            extent_bytes, manifest, source_etag, source_version)
    SELECT p_id, f.ord - 1, f.i, f.b, f.k, f.s, f.d, f.e, f.m, f.t, f.v
      FROM unnest(p_file_ids, p_buckets, p_keys, p_sizes, p_digests, p_extents, p_manifests,
                  p_etags, p_source_versions) WITH ORDINALITY AS f(i, b, k, s, d, e, m, t, v, ord);
  PERFORM pg_notify('chunkd_streams', p_id);
END $$;
)sql";

// Runs `sql` (blocking); the result, or the error naming `step`.
Expected<PGresult*> exec(PGconn* conn, const std::string& sql, const char* step) {
  PGresult* result = PQexec(conn, sql.c_str());
  const ExecStatusType status = PQresultStatus(result);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
  std::string message = result != nullptr ? pg_result_message(result) : pg_conn_message(conn);
  const std::errc code = result != nullptr
                             ? pg_errc(PQresultErrorField(result, PG_DIAG_SQLSTATE) != nullptr
                                           ? PQresultErrorField(result, PG_DIAG_SQLSTATE)
                                           : "")
                             : std::errc::connection_aborted;
  PQclear(result);
  return fail(code, std::string("registry: cannot ") + step + ": " + message);
}

// An array literal of `n` elements, element(i) the text of each.
template <typename F>
std::string array_literal(std::size_t n, F element) {
  PgArray out;
  for (std::size_t i = 0; i < n; ++i) out.add(element(i));
  return out.take();
}

std::string hex_manifest(const std::vector<std::uint64_t>& manifest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::vector<unsigned char> bytes;
  encode_manifest(manifest, bytes);
  std::string out = "\\x";
  for (unsigned char b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

bool decode_hex_manifest(std::string_view hex, std::vector<std::uint64_t>& out) {
  if (hex.size() % 16 != 0) return false;
  std::vector<unsigned char> bytes(hex.size() / 2);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    auto r = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, bytes[i], 16);
    if (r.ec != std::errc{} || r.ptr != hex.data() + 2 * i + 2) return false;
  }
  return decode_manifest(bytes.data(), static_cast<int>(bytes.size()), out);
}

}  // namespace

void PgArray::add(std::string_view text) {
  if (out_.size() > 1) out_ += ',';
  out_ += '"';
  for (char c : text) {
    if (c == '\\' || c == '"') out_ += '\\';
    out_ += c;
  }
  out_ += '"';
}

void PgArray::add_null() {
  if (out_.size() > 1) out_ += ',';
  out_ += "NULL";
}

std::string PgArray::take() {
  std::string out = std::move(out_) + "}";
  out_ = "{";
  return out;
}

bool pg_parse_int(std::string_view text, long long min, long long max, long long& out) {
  auto r = std::from_chars(text.data(), text.data() + text.size(), out);
  return r.ec == std::errc{} && r.ptr == text.data() + text.size() && out >= min && out <= max;
}

std::string pg_text(const PGresult* r, int row, int column) {
  return std::string(PQgetvalue(r, row, column),
                     static_cast<std::size_t>(PQgetlength(r, row, column)));
}

std::errc pg_errc(std::string_view sqlstate) {
  if (sqlstate == "23505") return std::errc::file_exists;
  if (sqlstate == kPgStreamInUse) return std::errc::device_or_resource_busy;
  if (sqlstate == kPgNoStream) return std::errc::no_such_file_or_directory;
  if (sqlstate == "53100") return std::errc::no_space_on_device;
  if (sqlstate == "53200") return std::errc::not_enough_memory;
  if (sqlstate == "42501" || sqlstate.starts_with("28")) return std::errc::permission_denied;
  if (sqlstate.starts_with("08") || sqlstate.starts_with("57P")) {
    return std::errc::connection_aborted;
  }
  return std::errc::io_error;
}

namespace {

// libpq's messages span lines ("ERROR:  ...\nDETAIL: ...\n"): one line for the log.
std::string one_line(std::string_view text) {
  std::string out;
  for (char c : text) {
    const bool space = c == '\n' || c == '\t' || c == '\r' || c == ' ';
    if (space && (out.empty() || out.back() == ' ')) continue;
    out += space ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

std::string pg_result_message(const PGresult* result) {
  std::string message = one_line(PQresultErrorMessage(result));
  if (const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE)) {
    message += std::string(" (SQLSTATE ") + state + ")";
  }
  return message;
}

std::string pg_conn_message(const PGconn* conn) {
  return conn != nullptr ? one_line(PQerrorMessage(conn)) : "out of memory";
}

Expected<void> prepare_pg_schema(PGconn* conn) {
  auto version = exec(conn,
                      "BEGIN; SELECT pg_advisory_xact_lock(" + std::to_string(kSchemaLockKey) +
                          "); CREATE TABLE IF NOT EXISTS registry_schema (version integer NOT "
                          "NULL); SELECT version FROM registry_schema",
                      "read the schema version");
  if (!version) {
    PQclear(PQexec(conn, "ROLLBACK"));
    return Unexpected{version.error()};
  }
  const int rows = PQntuples(*version);
  const int found = rows == 0 ? 0 : std::atoi(PQgetvalue(*version, 0, 0));
  PQclear(*version);
  std::string script;
  if (rows == 0) {
    script = std::string(kPgSchema) + kPgJobsSchema + "INSERT INTO registry_schema VALUES (" +
             std::to_string(kPgSchemaVersion) + ");";
  } else if (rows == 1 && found == 1) {
    // 1 → 2: the jobs tables and functions (chunkd_erase_stream replaces the plain DELETE).
    script = std::string(kPgJobsSchema) + "UPDATE registry_schema SET version = 2;";
  } else if (rows != 1 || found != kPgSchemaVersion) {
    PQclear(PQexec(conn, "ROLLBACK"));
    return fail(std::errc::protocol_not_supported,
                "registry: schema version " + std::to_string(found) + " (" + std::to_string(rows) +
                    " rows in registry_schema) is not the " + std::to_string(kPgSchemaVersion) +
                    " this chunkd understands (written by a later chunkd release?)");
  }
  auto created = exec(conn, script + "COMMIT", "create the schema");
  if (!created) {
    PQclear(PQexec(conn, "ROLLBACK"));
    return Unexpected{created.error()};
  }
  PQclear(*created);
  return {};
}

const char* const kPgPutSql =
    "SELECT chunkd_put_stream($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
    "$16, $17, $18, $19, $20, $21)";
const char* const kPgEraseSql = "SELECT chunkd_erase_stream($1)";
// One statement, so one snapshot: a stream row (kind 0), its tags (1), its files (2), in order.
const char* const kPgLoadSql =
    "SELECT * FROM ("
    "SELECT 0 AS kind, id AS sid, 0 AS ord, version::text, description, role_arn, created_at, "
    "updated_at, file_count::text, allowed_things, NULL, NULL "
    "FROM streams WHERE $1::text IS NULL OR id = $1 "
    "UNION ALL SELECT 1, stream_id, ord, key, value, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    "FROM stream_tags WHERE $1::text IS NULL OR stream_id = $1 "
    "UNION ALL SELECT 2, stream_id, ord, file_id::text, bucket, key, size_bytes::text, digest, "
    "extent_bytes::text, encode(manifest, 'hex'), source_etag, source_version "
    "FROM stream_files WHERE $1::text IS NULL OR stream_id = $1"
    ") AS r ORDER BY sid COLLATE \"C\", kind, ord";

bool pg_put_params(const StoredStream& s, bool create,
                   const std::optional<RegistryStore::Expectation>& expected, PgParams& out,
                   std::string& problem) {
  auto& v = out.values;
  v.clear();
  v.emplace_back(create ? "t" : "f");
  v.emplace_back(s.id);
  v.emplace_back(std::to_string(static_cast<long long>(s.version)));
  v.emplace_back(s.description);
  v.emplace_back(s.role_arn);
  v.emplace_back(s.created_at);
  v.emplace_back(s.updated_at);
  v.emplace_back(join_patterns(s.allowed_things));
  const auto& tags = s.tags;
  v.emplace_back(array_literal(tags.size(), [&](std::size_t i) { return tags[i].first; }));
  v.emplace_back(array_literal(tags.size(), [&](std::size_t i) { return tags[i].second; }));
  const auto& f = s.files;
  auto files = [&](auto field) {
    std::vector<std::string> texts;
    for (const StoredFile& file : f) texts.push_back(field(file));
    v.emplace_back(array_literal(texts.size(), [&](std::size_t i) { return texts[i]; }));
  };
  files([](const StoredFile& x) { return std::to_string(x.file_id); });
  files([](const StoredFile& x) { return x.bucket; });
  files([](const StoredFile& x) { return x.key; });
  files([](const StoredFile& x) { return std::to_string(static_cast<long long>(x.size_bytes)); });
  files([](const StoredFile& x) { return x.digest; });
  files([](const StoredFile& x) { return std::to_string(x.extent_bytes); });
  files([](const StoredFile& x) { return hex_manifest(x.manifest); });
  files([](const StoredFile& x) { return x.source_etag; });
  files([](const StoredFile& x) { return x.source_version; });
  if (expected) {
    v.emplace_back(std::to_string(static_cast<long long>(expected->version)));
    v.emplace_back(expected->updated_at);
  } else {
    v.emplace_back(std::nullopt);
    v.emplace_back(std::nullopt);
  }
  for (const auto& value : v) {
    if (value && value->find('\0') != std::string::npos) {
      problem = "stream '" + s.id + "' holds a NUL byte, which PostgreSQL text cannot store";
      return false;
    }
  }
  return true;
}

namespace {

// Fills `s` from a stream row; false when a number is out of range.
bool read_stream_row(const PGresult* r, int row, StoredStream& s, long long& file_count) {
  long long version = 0;
  s.id = pg_text(r, row, 1);
  s.description = pg_text(r, row, 4);
  s.role_arn = pg_text(r, row, 5);
  s.created_at = pg_text(r, row, 6);
  s.updated_at = pg_text(r, row, 7);
  if (!PQgetisnull(r, row, 9)) s.allowed_things = split_patterns(pg_text(r, row, 9));
  if (!pg_parse_int(pg_text(r, row, 3), std::numeric_limits<long long>::min(),
                    std::numeric_limits<long long>::max(), version) ||
      !pg_parse_int(pg_text(r, row, 8), 0, std::numeric_limits<int>::max(), file_count)) {
    return false;
  }
  s.version = static_cast<std::uint64_t>(version);
  return true;
}

// Fills `f` from a file row; false when a number or the manifest is not valid.
bool read_file_row(const PGresult* r, int row, StoredFile& f) {
  constexpr long long kMin = std::numeric_limits<long long>::min();
  constexpr long long kMax = std::numeric_limits<long long>::max();
  long long file_id = 0, size = 0, extent = 0;
  if (!pg_parse_int(pg_text(r, row, 3), 0, std::numeric_limits<std::uint32_t>::max(), file_id) ||
      !pg_parse_int(pg_text(r, row, 6), kMin, kMax, size) ||
      !pg_parse_int(pg_text(r, row, 8), 1, std::numeric_limits<std::uint32_t>::max(), extent) ||
      !decode_hex_manifest(pg_text(r, row, 9), f.manifest)) {
    return false;
  }
  f.file_id = static_cast<std::uint32_t>(file_id);
  f.bucket = pg_text(r, row, 4);
  f.key = pg_text(r, row, 5);
  f.size_bytes = static_cast<std::uint64_t>(size);
  f.digest = pg_text(r, row, 7);
  f.extent_bytes = static_cast<std::uint32_t>(extent);
  f.source_etag = pg_text(r, row, 10);
  f.source_version = pg_text(r, row, 11);
  return true;
}

}  // namespace

Expected<std::vector<StoredStream>> pg_parse_streams(const PGresult* r) {
  if (PQnfields(r) != 12) {
    return fail(std::errc::bad_message,
                "registry: the load returned " + std::to_string(PQnfields(r)) + " columns, not 12");
  }
  std::vector<StoredStream> streams;
  std::vector<long long> file_counts;
  const int rows = PQntuples(r);
  for (int row = 0; row < rows; ++row) {
    const std::string kind = pg_text(r, row, 0);
    const std::string id = pg_text(r, row, 1);
    const bool of_last = !streams.empty() && streams.back().id == id;
    bool ok = false;
    if (kind == "0" && !of_last) {
      streams.emplace_back();
      file_counts.push_back(0);
      ok = read_stream_row(r, row, streams.back(), file_counts.back());
    } else if (kind == "1" && of_last) {
      streams.back().tags.emplace_back(pg_text(r, row, 3), pg_text(r, row, 4));
      ok = true;
    } else if (kind == "2" && of_last) {
      streams.back().files.emplace_back();
      ok = read_file_row(r, row, streams.back().files.back());
    }
    if (!ok) {
      return fail(std::errc::bad_message, "registry: row " + std::to_string(row) + " (kind " +
                                              kind + ") of stream '" + id + "' is not valid");
    }
  }
  for (std::size_t i = 0; i < streams.size(); ++i) {
    if (streams[i].files.size() != static_cast<std::size_t>(file_counts[i])) {
      return fail(std::errc::bad_message, "registry: stream '" + streams[i].id + "' has " +
                                              std::to_string(streams[i].files.size()) + " of its " +
                                              std::to_string(file_counts[i]) + " files");
    }
  }
  return streams;
}

}  // namespace chunkd::io::detail

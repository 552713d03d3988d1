// The jobs lease's SQL (io/job_lease_pg.hpp): the version-2 tables and functions of the shared
// registry, the lease's statements, a write's parameters and the checked reading of a load.
#include <limits>
#include <unordered_set>
#include <utility>

#include "io/job_lease_pg_internal.hpp"

namespace chunkd::io::detail {

// Mirrors io/registry_sqlite.cpp's kJobsSchema (times in milliseconds since the Unix epoch); a
// status detail list is two arrays of the same length, in order.
const char* const kPgJobsSchema = R"sql(
CREATE TABLE jobs (
  id                 text PRIMARY KEY,
  spec               text NOT NULL,  -- the create body as chunkd re-reads it (JSON)
  document           text NOT NULL,  -- the job document devices get (JSON)
  stream_id          text,           -- an OTA job's stream, else NULL
  status             text NOT NULL,
  reason_code        text NOT NULL,
  comment            text NOT NULL,
  created_at_ms      bigint NOT NULL,
  last_updated_at_ms bigint NOT NULL,
  completed_at_ms    bigint NOT NULL
);
CREATE INDEX jobs_by_stream ON jobs (stream_id) WHERE stream_id IS NOT NULL;
CREATE TABLE job_executions (
  job_id             text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  thing              text NOT NULL,
  status             text NOT NULL,
  detail_keys        text[] NOT NULL,
  detail_values      text[] NOT NULL,
  queued_at_ms       bigint NOT NULL,
  started_at_ms      bigint NOT NULL,
  last_updated_at_ms bigint NOT NULL,
  version_number     bigint NOT NULL,
  execution_number   bigint NOT NULL,
  step_deadline_ms   bigint NOT NULL,  -- the step timer; 0: none
  PRIMARY KEY (job_id, thing),
  CHECK (cardinality(detail_keys) = cardinality(detail_values))
);
CREATE TABLE job_things (  -- things that talked to the jobs API: patterns match them later
  thing text PRIMARY KEY
);
-- One write of the jobs store, one statement, so one transaction, in JobBatch's order: things,
-- deleted jobs, jobs (p_insert: new rows, else upserts, the last of an id winning), job changes
-- (each needs its job), executions (upserts, the last of a (job, thing) winning).
CREATE FUNCTION chunkd_write_jobs(
    p_insert boolean, p_things text[], p_deleted text[],
    p_ids text[], p_specs text[], p_documents text[], p_streams text[], p_statuses text[],
    p_reasons text[], p_comments text[], p_created bigint[], p_updated bigint[],
    p_completed bigint[],
    p_change_ids text[], p_change_statuses text[], p_change_reasons text[],
    p_change_comments text[], p_change_updated bigint[], p_change_completed bigint[],
    p_exec_jobs text[], p_exec_things text[], p_exec_statuses text[], p_exec_queued bigint[],
    p_exec_started bigint[], p_exec_updated bigint[], p_exec_versions bigint[],
    p_exec_numbers bigint[], p_exec_deadlines bigint[],
    p_detail_execs bigint[], p_detail_keys text[], p_detail_values text[])
  RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  v_stream text;
BEGIN
  INSERT INTO job_things (thing) SELECT unnest(p_things) ON CONFLICT DO NOTHING;
  DELETE FROM jobs WHERE id = ANY (p_deleted);
  -- A new (or running) job's stream stays locked until the commit: chunkd_erase_stream, which
  -- locks it FOR UPDATE, either waits and then sees the job, or deleted it before (CK404 here).
  FOR v_stream IN SELECT DISTINCT u.s FROM unnest(p_streams, p_statuses) AS u(s, st)
      WHERE u.s IS NOT NULL AND (p_insert OR u.st = 'IN_PROGRESS') ORDER BY 1 LOOP
    PERFORM 1 FROM streams WHERE id = v_stream FOR SHARE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'stream % does not exist', v_stream USING ERRCODE = 'CK404';
    END IF;
  END LOOP;
  IF p_insert THEN
    INSERT INTO jobs SELECT * FROM unnest(p_ids, p_specs, p_documents, p_streams, p_statuses,
        p_reasons, p_comments, p_created, p_updated, p_completed);
  ELSE
    INSERT INTO jobs SELECT DISTINCT ON (u.i) u.i, u.sp, u.d, u.s, u.st, u.r, u.c, u.cr, u.up, u.co
        FROM unnest(p_ids, p_specs, p_documents, p_streams, p_statuses, p_reasons, p_comments,
                    p_created, p_updated, p_completed)
             WITH ORDINALITY AS u(i, sp, d, s, st, r, c, cr, up, co, ord)
        ORDER BY u.i, u.ord DESC
      ON CONFLICT (id) DO UPDATE SET spec = EXCLUDED.spec, document = EXCLUDED.document,
        stream_id = EXCLUDED.stream_id, status = EXCLUDED.status,
        reason_code = EXCLUDED.reason_code, comment = EXCLUDED.comment,
        created_at_ms = EXCLUDED.created_at_ms, last_updated_at_ms = EXCLUDED.last_updated_at_ms,
        completed_at_ms = EXCLUDED.completed_at_ms;
  END IF;
  FOR i IN 1 .. coalesce(cardinality(p_change_ids), 0) LOOP
    UPDATE jobs SET status = p_change_statuses[i], reason_code = p_change_reasons[i],
        comment = p_change_comments[i], last_updated_at_ms = p_change_updated[i],
        completed_at_ms = p_change_completed[i]
      WHERE id = p_change_ids[i];
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no job %', p_change_ids[i] USING ERRCODE = 'foreign_key_violation';
    END IF;
  END LOOP;
  INSERT INTO job_executions
    SELECT DISTINCT ON (e.j, e.t) e.j, e.t, e.st, coalesce(d.ks, '{}'), coalesce(d.vs, '{}'),
        e.q, e.s, e.u, e.v, e.n, e.dl
      FROM unnest(p_exec_jobs, p_exec_things, p_exec_statuses, p_exec_queued, p_exec_started,
                  p_exec_updated, p_exec_versions, p_exec_numbers, p_exec_deadlines)
           WITH ORDINALITY AS e(j, t, st, q, s, u, v, n, dl, ord)
      LEFT JOIN (SELECT x.i, array_agg(x.k ORDER BY x.ord) AS ks, array_agg(x.v ORDER BY x.ord) AS vs
                   FROM unnest(p_detail_execs, p_detail_keys, p_detail_values)
                        WITH ORDINALITY AS x(i, k, v, ord)
                   GROUP BY x.i) AS d ON d.i = e.ord
      ORDER BY e.j, e.t, e.ord DESC
    ON CONFLICT (job_id, thing) DO UPDATE SET status = EXCLUDED.status,
      detail_keys = EXCLUDED.detail_keys, detail_values = EXCLUDED.detail_values,
      queued_at_ms = EXCLUDED.queued_at_ms, started_at_ms = EXCLUDED.started_at_ms,
      last_updated_at_ms = EXCLUDED.last_updated_at_ms, version_number = EXCLUDED.version_number,
      execution_number = EXCLUDED.execution_number, step_deadline_ms = EXCLUDED.step_deadline_ms;
END $$;
-- The registry's erase: refused while an unfinished job uses the stream, atomically.
CREATE OR REPLACE FUNCTION chunkd_erase_stream(p_id text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM streams WHERE id = p_id FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM jobs WHERE stream_id = p_id AND status = 'IN_PROGRESS') THEN
    RAISE EXCEPTION 'stream % is used by an unfinished job', p_id USING ERRCODE = 'CK423';
  END IF;
  DELETE FROM streams WHERE id = p_id;
  PERFORM pg_notify('chunkd_streams', p_id);
END $$;
)sql";

const std::string& pg_try_lease_sql() {
  static const std::string sql = [] {
    const auto key = static_cast<std::uint64_t>(kPgJobLeaseKey);
    // pg_locks shows a bigint key as classid (high half) and objid (low half), objsubid 1.
    return "WITH t AS MATERIALIZED (SELECT pg_try_advisory_lock(" + std::to_string(kPgJobLeaseKey) +
           ") AS got) SELECT t.got, CASE WHEN t.got THEN NULL ELSE (SELECT a.application_name "
           "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = "
           "'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = " +
           std::to_string(key >> 32) + " AND l.objid = " + std::to_string(key & 0xffffffffu) +
           " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
           "LIMIT 1) END FROM t";
  }();
  return sql;
}

// Byte order ("C"), as SQLite compares text. One snapshot for the whole load.
const char* const kPgLoadJobsSql =
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
    "SELECT id, spec, document, stream_id, status, reason_code, comment, created_at_ms, "
    "last_updated_at_ms, completed_at_ms FROM jobs ORDER BY id COLLATE \"C\"; "
    "SELECT job_id, thing, status, cardinality(detail_keys), queued_at_ms, started_at_ms, "
    "last_updated_at_ms, version_number, execution_number, step_deadline_ms FROM job_executions "
    "ORDER BY job_id COLLATE \"C\", thing COLLATE \"C\"; "
    "SELECT e.job_id, e.thing, d.k, d.v FROM job_executions e, "
    "unnest(e.detail_keys, e.detail_values) WITH ORDINALITY AS d(k, v, ord) "
    "ORDER BY e.job_id COLLATE \"C\", e.thing COLLATE \"C\", d.ord; "
    "SELECT thing FROM job_things ORDER BY thing COLLATE \"C\"; "
    "COMMIT";

const char* const kPgWriteJobsSql =
    "SELECT chunkd_write_jobs($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
    "$16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31)";

namespace {

// Adds one array parameter: field(row) of each row, as text (nullopt: NULL).
template <typename Rows, typename F>
void add_array(PgParams& params, const Rows& rows, F field) {
  PgArray array;
  for (const auto& row : rows) {
    const std::optional<std::string> value = field(row);
    if (value) {
      array.add(*value);
    } else {
      array.add_null();
    }
  }
  params.values.emplace_back(array.take());
}

std::optional<std::string> number(std::int64_t v) { return std::to_string(v); }

void add_jobs(PgParams& p, const std::vector<StoredJob>& jobs) {
  add_array(p, jobs, [](const StoredJob& j) { return std::optional(j.id); });
  add_array(p, jobs, [](const StoredJob& j) { return std::optional(j.spec); });
  add_array(p, jobs, [](const StoredJob& j) { return std::optional(j.document); });
  add_array(p, jobs, [](const StoredJob& j) { return j.stream_id; });
  add_array(p, jobs, [](const StoredJob& j) { return std::optional(j.status); });
  add_array(p, jobs, [](const StoredJob& j) { return std::optional(j.reason_code); });
  add_array(p, jobs, [](const StoredJob& j) { return std::optional(j.comment); });
  add_array(p, jobs, [](const StoredJob& j) { return number(j.created_at_ms); });
  add_array(p, jobs, [](const StoredJob& j) { return number(j.last_updated_at_ms); });
  add_array(p, jobs, [](const StoredJob& j) { return number(j.completed_at_ms); });
}

void add_changes(PgParams& p, const std::vector<JobStatusChange>& changes) {
  using C = JobStatusChange;
  add_array(p, changes, [](const C& c) { return std::optional(c.job_id); });
  add_array(p, changes, [](const C& c) { return std::optional(c.status); });
  add_array(p, changes, [](const C& c) { return std::optional(c.reason_code); });
  add_array(p, changes, [](const C& c) { return std::optional(c.comment); });
  add_array(p, changes, [](const C& c) { return number(c.last_updated_at_ms); });
  add_array(p, changes, [](const C& c) { return number(c.completed_at_ms); });
}

void add_executions(PgParams& p, const std::vector<StoredExecution>& executions) {
  using E = StoredExecution;
  add_array(p, executions, [](const E& e) { return std::optional(e.job_id); });
  add_array(p, executions, [](const E& e) { return std::optional(e.thing); });
  add_array(p, executions, [](const E& e) { return std::optional(e.status); });
  add_array(p, executions, [](const E& e) { return number(e.queued_at_ms); });
  add_array(p, executions, [](const E& e) { return number(e.started_at_ms); });
  add_array(p, executions, [](const E& e) { return number(e.last_updated_at_ms); });
  add_array(p, executions, [](const E& e) { return number(e.version_number); });
  add_array(p, executions, [](const E& e) { return number(e.execution_number); });
  add_array(p, executions, [](const E& e) { return number(e.step_deadline_ms); });
  // The details of all executions in one list each: execution (1-based), key, value.
  PgArray owners, keys, values;
  for (std::size_t i = 0; i < executions.size(); ++i) {
    for (const auto& [key, value] : executions[i].status_details) {
      owners.add(std::to_string(i + 1));
      keys.add(key);
      values.add(value);
    }
  }
  p.values.emplace_back(owners.take());
  p.values.emplace_back(keys.take());
  p.values.emplace_back(values.take());
}

// The bytes of the batch's texts: at most what its parameters take (they add quotes, escapes
// and numbers), so a batch over the bound is refused before its parameters are built.
std::size_t text_bytes(const JobBatch& b) {
  std::size_t n = 0;
  for (const std::string& t : b.things) n += t.size();
  for (const std::string& t : b.deleted) n += t.size();
  for (const StoredJob& j : b.upserts) {
    n += j.id.size() + j.spec.size() + j.document.size() + j.stream_id.value_or("").size() +
         j.status.size() + j.reason_code.size() + j.comment.size();
  }
  for (const JobStatusChange& c : b.jobs) {
    n += c.job_id.size() + c.status.size() + c.reason_code.size() + c.comment.size();
  }
  for (const StoredExecution& e : b.executions) {
    n += e.job_id.size() + e.thing.size() + e.status.size();
    for (const auto& [key, value] : e.status_details) n += key.size() + value.size();
  }
  return n;
}

}  // namespace

std::errc pg_job_write_params(bool insert, const JobBatch& batch, PgParams& out,
                              std::string& problem) {
  out.values.clear();
  if (const std::size_t bytes = text_bytes(batch); bytes > kMaxJobWriteBytes) {
    problem = "the write holds at least " + std::to_string(bytes) + " bytes, over the bound of " +
              std::to_string(kMaxJobWriteBytes);
    return std::errc::argument_list_too_long;
  }
  out.values.emplace_back(insert ? "t" : "f");
  add_array(out, batch.things, [](const std::string& t) { return std::optional(t); });
  add_array(out, batch.deleted, [](const std::string& t) { return std::optional(t); });
  add_jobs(out, batch.upserts);
  add_changes(out, batch.jobs);
  add_executions(out, batch.executions);
  std::size_t bytes = 0;
  for (const auto& value : out.values) {
    bytes += value ? value->size() : 0;
    if (value && value->find('\0') != std::string::npos) {
      problem = "a text holds a NUL byte, which PostgreSQL text cannot store";
      return std::errc::invalid_argument;
    }
  }
  if (bytes > kMaxJobWriteBytes) {
    problem = "the write is " + std::to_string(bytes) + " bytes, over the bound of " +
              std::to_string(kMaxJobWriteBytes);
    return std::errc::argument_list_too_long;
  }
  return std::errc{};
}

namespace {

constexpr long long kMin = std::numeric_limits<long long>::min();
constexpr long long kMax = std::numeric_limits<long long>::max();

// Reads columns [first, first + n) of `row` as numbers into `out`; false when one is not.
bool numbers(const PGresult* r, int row, int first, std::initializer_list<std::int64_t*> out) {
  int column = first;
  for (std::int64_t* value : out) {
    long long v = 0;
    if (PQgetisnull(r, row, column) || !pg_parse_int(pg_text(r, row, column), kMin, kMax, v)) {
      return false;
    }
    *value = v;
    ++column;
  }
  return true;
}

Unexpected<base::Error> bad(const std::string& what) {
  return fail(std::errc::bad_message, "jobs: the load from PostgreSQL: " + what);
}

Expected<void> read_jobs(const PGresult* r, std::vector<StoredJob>& out) {
  if (PQnfields(r) != 10) return bad("jobs have " + std::to_string(PQnfields(r)) + " columns");
  for (int row = 0; row < PQntuples(r); ++row) {
    StoredJob& j = out.emplace_back();
    j.id = pg_text(r, row, 0);
    j.spec = pg_text(r, row, 1);
    j.document = pg_text(r, row, 2);
    if (!PQgetisnull(r, row, 3)) j.stream_id = pg_text(r, row, 3);
    j.status = pg_text(r, row, 4);
    j.reason_code = pg_text(r, row, 5);
    j.comment = pg_text(r, row, 6);
    if (!numbers(r, row, 7, {&j.created_at_ms, &j.last_updated_at_ms, &j.completed_at_ms})) {
      return bad("job '" + j.id + "' has a time that is not a number");
    }
  }
  return {};
}

// The executions (`r`), each given its status details (`d`: job, thing, key, value, in the same
// order) and checked against the jobs loaded.
Expected<void> read_executions(const PGresult* r, const PGresult* d,
                               const std::vector<StoredJob>& jobs,
                               std::vector<StoredExecution>& out) {
  if (PQnfields(r) != 10 || PQnfields(d) != 4) return bad("executions have the wrong columns");
  std::unordered_set<std::string> ids;
  for (const StoredJob& j : jobs) ids.insert(j.id);
  int detail = 0;
  for (int row = 0; row < PQntuples(r); ++row) {
    StoredExecution& e = out.emplace_back();
    e.job_id = pg_text(r, row, 0);
    e.thing = pg_text(r, row, 1);
    e.status = pg_text(r, row, 2);
    const std::string where = "execution of job '" + e.job_id + "' thing '" + e.thing + "'";
    std::int64_t details = 0;
    if (ids.count(e.job_id) == 0) return bad(where + ": no such job");
    if (!numbers(r, row, 3,
                 {&details, &e.queued_at_ms, &e.started_at_ms, &e.last_updated_at_ms,
                  &e.version_number, &e.execution_number, &e.step_deadline_ms}) ||
        details < 0 || details > PQntuples(d) - detail) {
      return bad(where + ": a number is not valid");
    }
    for (std::int64_t i = 0; i < details; ++i, ++detail) {
      if (pg_text(d, detail, 0) != e.job_id || pg_text(d, detail, 1) != e.thing) {
        return bad(where + ": its status details are not in order");
      }
      e.status_details.emplace_back(pg_text(d, detail, 2), pg_text(d, detail, 3));
    }
  }
  if (detail != PQntuples(d)) return bad("status details of no execution");
  return {};
}

}  // namespace

Expected<StoredJobs> pg_parse_jobs(const PGresult* jobs, const PGresult* executions,
                                   const PGresult* details, const PGresult* things) {
  StoredJobs out;
  if (auto read = read_jobs(jobs, out.jobs); !read) return Unexpected{read.error()};
  if (auto read = read_executions(executions, details, out.jobs, out.executions); !read) {
    return Unexpected{read.error()};
  }
  if (PQnfields(things) != 1) return bad("things have the wrong columns");
  for (int row = 0; row < PQntuples(things); ++row) out.things.push_back(pg_text(things, row, 0));
  return out;
}

}  // namespace chunkd::io::detail

// The jobs lease (io/job_lease_pg.hpp) against a real PostgreSQL 15 started by the test
// (tests/support/postgres.hpp): exactly one holder; a follower sees who holds it and takes over
// with what the holder committed; a terminated holder session loses the lease and its writes;
// JobStore's batch semantics and bounds; the migration of a version-1 registry; the stream erase
// refused while an unfinished job uses the stream. One ctest test (one server) for the binary.
// Skipped, saying why, when the PostgreSQL binaries are not installed.
#include "io/job_lease_pg.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/registry_store.hpp"
#include "tests/io/outcome.hpp"
#include "tests/io/postgres_fixture.hpp"
#include "tests/support/loop.hpp"

namespace chunkd::io {
namespace {

using test::capture;
using test::Outcome;

// One chunkd instance's lease and what it was told.
struct Instance {
  std::unique_ptr<PgJobLease> lease;
  std::vector<StoredJobs> acquired;
  std::vector<std::string> lost;
};

StoredJob job(const std::string& id, std::optional<std::string> stream,
              const std::string& status = "IN_PROGRESS") {
  StoredJob j;
  j.id = id;
  j.spec = R"({"targets":["thing-\"1\""],"note":"{a,b} \\ NULL"})";
  j.document = R"({"operation":"update","url":"ü €"})";
  j.stream_id = std::move(stream);
  j.status = status;
  j.comment = status == "IN_PROGRESS" ? "" : "done, \"really\"";
  j.reason_code = status == "IN_PROGRESS" ? "" : "NULL";
  j.created_at_ms = 1'700'000'000'000;
  j.last_updated_at_ms = 1'700'000'000'001;
  j.completed_at_ms = status == "IN_PROGRESS" ? 0 : -1;
  return j;
}

StoredExecution execution(const std::string& job_id, const std::string& thing,
                          std::vector<std::pair<std::string, std::string>> details = {}) {
  StoredExecution e;
  e.job_id = job_id;
  e.thing = thing;
  e.status = "QUEUED";
  e.status_details = std::move(details);
  e.queued_at_ms = 1'700'000'000'002;
  e.started_at_ms = 0;
  e.last_updated_at_ms = 1'700'000'000'003;
  e.version_number = 7;
  e.execution_number = 3;
  e.step_deadline_ms = 9'223'372'036'854'775'807;
  return e;
}

class JobLeasePgTest : public test::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    empty_registry("jobs, job_executions, job_things, streams");
  }

  void TearDown() override {
    if (!loop_open_) return;
    for (Instance* i : {&a_, &b_}) close(*i);
    if (registry_) {
      bool closed = false;
      registry_->close([&closed] { closed = true; });
      run_until([&] { return closed; });
      registry_.reset();
    }
    close_loop();
  }

  bool open(Instance& in, const std::string& name, std::size_t max_pending = 64) {
    JobLeaseOptions options;
    options.url = pg_->url();
    options.holder = name;
    options.retry_ms = 20;
    options.max_pending_writes = max_pending;
    auto opened = PgJobLease::open(
        &loop_, options, [&in](StoredJobs jobs) { in.acquired.push_back(std::move(jobs)); },
        [&in](std::string_view why) { in.lost.emplace_back(why); });
    EXPECT_TRUE(opened) << opened.error().message();
    if (opened) in.lease = std::move(*opened);
    return in.lease != nullptr;
  }

  void close(Instance& in) {
    if (!in.lease) return;
    bool closed = false;
    in.lease->close([&closed] { closed = true; });
    run_until([&] { return closed; });
    in.lease.reset();
  }

  void run_until(const std::function<bool()>& done) {
    ASSERT_TRUE(test::run_until(&loop_, done)) << "not reached";
  }

  std::error_code wait(const std::function<void(JobStore::Done)>& submit) {
    Outcome outcome;
    submit(capture(outcome));
    run_until([&] { return outcome.called; });
    return outcome.error;
  }
  std::error_code put(Instance& in, StoredJob j, std::vector<StoredExecution> e = {}) {
    return wait([&](JobStore::Done done) {
      in.lease->store().put_job(std::move(j), std::move(e), std::move(done));
    });
  }
  std::error_code apply(Instance& in, JobBatch batch) {
    return wait(
        [&](JobStore::Done done) { in.lease->store().apply(std::move(batch), std::move(done)); });
  }
  std::error_code erase_job(Instance& in, std::string id) {
    return wait(
        [&](JobStore::Done done) { in.lease->store().erase_job(std::move(id), std::move(done)); });
  }
  // Opens `a_` and waits until it holds the lease.
  void hold_a() {
    ASSERT_TRUE(open(a_, "instance-a"));
    run_until([&] { return a_.lease->held(); });
    ASSERT_EQ(a_.acquired.size(), 1u);
  }
  void add_stream(const std::string& id) {
    pg_->psql("INSERT INTO streams VALUES ('" + id + "', 1, '', '', '', '', 0, NULL)");
  }
  std::string terminate(const std::string& name) {
    return pg_->psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '" + name +
        "'");
  }

  Instance a_;
  Instance b_;
  std::unique_ptr<RegistryStore> registry_;
};

TEST_F(JobLeasePgTest, ExactlyOneHoldsAndTheNextTakesOverWithWhatWasCommitted) {
  hold_a();
  EXPECT_TRUE(a_.acquired[0].jobs.empty());
  EXPECT_EQ(a_.lease->holder(), "");
  ASSERT_TRUE(open(b_, "instance-b"));
  run_until([&] { return b_.lease->holder() == "instance-a"; });
  EXPECT_FALSE(b_.lease->held());
  EXPECT_TRUE(b_.acquired.empty());

  add_stream("s1");
  StoredJobs expected;
  expected.jobs = {job("job-1", "s1"), job("job-2", std::nullopt, "COMPLETED")};
  expected.executions = {
      execution("job-1", "thing-a", {{"step", "1/3"}, {"", ""}, {"quote\"s", "{x,y}\\z"}}),
      execution("job-1", "thing-b", {{"NULL", "null"}, {"ü", "€ \n\t"}}),
      execution("job-2", "thing-a")};
  expected.things = {"thing-a", "thing-b", "thing-c"};
  ASSERT_FALSE(put(a_, expected.jobs[0], {expected.executions[1]}));
  JobBatch batch;
  batch.things = {"thing-c", "thing-a", "thing-b", "thing-a"};
  batch.upserts = {expected.jobs[1]};
  batch.executions = {expected.executions[2], execution("job-1", "thing-a"),
                      expected.executions[0]};  // the last of a (job, thing) wins
  ASSERT_FALSE(apply(a_, batch));
  EXPECT_EQ(a_.lease->stats().writes_ok, 2u);

  close(a_);
  run_until([&] { return b_.lease->held(); });
  ASSERT_EQ(b_.acquired.size(), 1u);
  const StoredJobs& loaded = b_.acquired[0];
  EXPECT_EQ(loaded.jobs, expected.jobs);
  EXPECT_EQ(loaded.executions, expected.executions);
  EXPECT_EQ(loaded.things, expected.things);
  EXPECT_EQ(b_.lease->holder(), "");
  EXPECT_TRUE(b_.lost.empty());
  EXPECT_EQ(b_.lease->stats().acquisitions, 1u);
}

TEST_F(JobLeasePgTest, ATerminatedHolderLosesTheLeaseAndHoldsAgainOnlyAfterANewLoad) {
  hold_a();
  ASSERT_TRUE(open(b_, "instance-b"));
  run_until([&] { return b_.lease->holder() == "instance-a"; });
  ASSERT_FALSE(put(a_, job("job-1", std::nullopt, "COMPLETED")));

  EXPECT_EQ(terminate("instance-a"), "t\n");
  run_until([&] { return !a_.lost.empty(); });
  EXPECT_FALSE(a_.lease->held());
  EXPECT_EQ(put(a_, job("job-2", std::nullopt)), std::errc::not_connected);
  run_until([&] { return b_.lease->held(); });
  ASSERT_EQ(b_.acquired.size(), 1u);
  ASSERT_EQ(b_.acquired[0].jobs.size(), 1u);
  EXPECT_EQ(b_.acquired[0].jobs[0].id, "job-1");
  // A reconnects and follows: it sees B, and never holds while B does.
  run_until([&] { return a_.lease->holder() == "instance-b"; });
  EXPECT_FALSE(a_.lease->held());
  EXPECT_EQ(a_.acquired.size(), 1u);
  EXPECT_EQ(a_.lost.size(), 1u);
  EXPECT_EQ(a_.lease->stats().losses, 1u);
  ASSERT_FALSE(put(b_, job("job-3", std::nullopt, "CANCELED")));

  close(b_);
  run_until([&] { return a_.lease->held(); });
  ASSERT_EQ(a_.acquired.size(), 2u) << "held again only with a new load";
  ASSERT_EQ(a_.acquired[1].jobs.size(), 2u);
  EXPECT_EQ(a_.acquired[1].jobs[1].id, "job-3");
  EXPECT_FALSE(put(a_, job("job-4", std::nullopt, "CANCELED")));
}

TEST_F(JobLeasePgTest, AServerRestartLosesTheLeaseAndItIsTakenAgainWithAFreshLoad) {
  hold_a();
  ASSERT_FALSE(put(a_, job("job-1", std::nullopt, "COMPLETED")));
  pg_->stop();
  run_until([&] { return !a_.lost.empty(); });
  EXPECT_FALSE(a_.lease->held());
  EXPECT_FALSE(a_.lease->stats().connected);
  EXPECT_EQ(put(a_, job("job-2", std::nullopt)), std::errc::not_connected);
  ASSERT_TRUE(pg_->start()) << pg_->error();
  run_until([&] { return a_.lease->held(); });
  ASSERT_EQ(a_.acquired.size(), 2u);
  ASSERT_EQ(a_.acquired[1].jobs.size(), 1u);
  EXPECT_EQ(a_.acquired[1].jobs[0].id, "job-1");
  EXPECT_TRUE(a_.lease->stats().connected);
  EXPECT_FALSE(put(a_, job("job-2", std::nullopt)));
}

TEST_F(JobLeasePgTest, AWriteInFlightWhenTheSessionDiesFails) {
  hold_a();
  // Another session holds job_things: the write waits in PostgreSQL, uncommitted.
  PGconn* blocker = PQconnectdb(pg_->url().c_str());
  ASSERT_EQ(PQstatus(blocker), CONNECTION_OK) << PQerrorMessage(blocker);
  PQclear(PQexec(blocker, "BEGIN; LOCK TABLE job_things IN ACCESS EXCLUSIVE MODE"));
  Outcome outcome;
  JobBatch batch;
  batch.things = {"thing-in-flight"};
  a_.lease->store().apply(batch, capture(outcome));
  EXPECT_EQ(a_.lease->store().pending_writes(), 1u);
  EXPECT_EQ(terminate("instance-a"), "t\n");
  run_until([&] { return outcome.called; });
  EXPECT_TRUE(outcome.error) << "a write whose session died is not acknowledged";
  EXPECT_EQ(outcome.error, std::errc::connection_aborted) << outcome.error.message();
  EXPECT_EQ(a_.lost.size(), 1u);
  EXPECT_FALSE(a_.lease->held());
  PQclear(PQexec(blocker, "ROLLBACK"));
  PQfinish(blocker);
  EXPECT_EQ(pg_->psql("SELECT count(*) FROM job_things"), "0\n");
  // The lease comes back (nobody else holds it), with a fresh load.
  run_until([&] { return a_.lease->held(); });
  EXPECT_EQ(a_.acquired.size(), 2u);
  EXPECT_EQ(a_.lease->stats().writes_failed, 1u);
}

TEST_F(JobLeasePgTest, BatchesAreAllOrNothingAndTheBoundsHold) {
  ASSERT_TRUE(open(a_, "instance-a", 1));
  run_until([&] { return a_.lease->held(); });
  JobStore& store = a_.lease->store();
  EXPECT_EQ(store.load_all().error().code, std::errc::operation_not_supported);
  ASSERT_FALSE(put(a_, job("job-1", std::nullopt), {execution("job-1", "thing-a")}));
  EXPECT_EQ(put(a_, job("job-1", std::nullopt, "COMPLETED")), std::errc::file_exists);

  JobBatch batch;
  batch.things = {"thing-new"};
  batch.deleted = {"job-1"};
  batch.upserts = {job("job-2", std::nullopt)};
  batch.jobs = {{"job-missing", "CANCELED", "", "", 1, 1}};
  batch.executions = {execution("job-2", "thing-a")};
  EXPECT_TRUE(apply(a_, batch));
  EXPECT_EQ(pg_->psql("SELECT (SELECT string_agg(id, ',') FROM jobs), (SELECT count(*) FROM "
                      "job_executions), (SELECT count(*) FROM job_things)"),
            "job-1|1|0\n")
      << "nothing of a failed batch remains";
  batch.jobs = {{"job-2", "CANCELED", "USER", "stop", 5, 6}};
  ASSERT_FALSE(apply(a_, batch));
  EXPECT_EQ(pg_->psql("SELECT id, status, reason_code, comment, last_updated_at_ms, "
                      "completed_at_ms FROM jobs"),
            "job-2|CANCELED|USER|stop|5|6\n");
  EXPECT_FALSE(erase_job(a_, "never-existed"));
  ASSERT_FALSE(erase_job(a_, "job-2"));
  EXPECT_EQ(pg_->psql("SELECT count(*) FROM jobs UNION ALL SELECT count(*) FROM job_executions"),
            "0\n0\n");

  Outcome first, second, too_many, nul;
  store.apply(JobBatch{{"thing-1"}, {}, {}, {}, {}}, capture(first));
  store.apply(JobBatch{{"thing-2"}, {}, {}, {}, {}}, capture(second));
  ASSERT_TRUE(second.called) << "over max_pending_writes: refused at once";
  EXPECT_EQ(second.error, std::errc::resource_unavailable_try_again);
  run_until([&] { return first.called; });
  EXPECT_FALSE(first.error);
  JobBatch huge;
  huge.things.assign(JobStore::kMaxBatchRows + 1, "t");
  store.apply(std::move(huge), capture(too_many));
  ASSERT_TRUE(too_many.called);
  EXPECT_EQ(too_many.error, std::errc::argument_list_too_long);
  Outcome too_big;
  StoredJob big = job("job-big", std::nullopt);
  big.document.assign(kMaxJobWriteBytes, 'x');
  store.put_job(std::move(big), {}, capture(too_big));
  ASSERT_TRUE(too_big.called);
  EXPECT_EQ(too_big.error, std::errc::argument_list_too_long);
  JobBatch escaped;  // under the bound as given, over it as sent: every '"' is escaped
  escaped.things = {std::string(kMaxJobWriteBytes / 2 + 1, '"')};
  Outcome too_big_escaped;
  store.apply(std::move(escaped), capture(too_big_escaped));
  ASSERT_TRUE(too_big_escaped.called);
  EXPECT_EQ(too_big_escaped.error, std::errc::argument_list_too_long);
  JobBatch with_nul;
  with_nul.things = {std::string("a\0b", 3)};
  store.apply(std::move(with_nul), capture(nul));
  ASSERT_TRUE(nul.called);
  EXPECT_EQ(nul.error, std::errc::invalid_argument);

  ASSERT_TRUE(open(b_, "instance-b"));
  EXPECT_EQ(put(b_, job("job-9", std::nullopt)), std::errc::not_connected) << "not held";
}

TEST_F(JobLeasePgTest, AStreamAnUnfinishedJobUsesIsNotErasedAndAJobNeedsItsStream) {
  hold_a();
  auto opened = RegistryStore::open_shared(&loop_, pg_->url());
  ASSERT_TRUE(opened) << opened.error().message();
  registry_ = std::move(*opened);
  auto erase_stream = [&](const std::string& id) {
    Outcome outcome;
    registry_->erase(id, capture(outcome));
    run_until([&] { return outcome.called; });
    return outcome.error;
  };
  add_stream("s1");
  add_stream("s2");
  ASSERT_FALSE(put(a_, job("job-1", "s1")));
  ASSERT_FALSE(put(a_, job("job-2", "s2")));
  EXPECT_EQ(erase_stream("s1"), std::errc::device_or_resource_busy);
  EXPECT_EQ(erase_stream("s2"), std::errc::device_or_resource_busy);
  JobBatch finish;
  finish.jobs = {{"job-1", "COMPLETED", "", "", 2, 2}, {"job-2", "CANCELED", "", "", 2, 2}};
  ASSERT_FALSE(apply(a_, finish));
  EXPECT_FALSE(erase_stream("s1"));
  EXPECT_FALSE(erase_stream("s2"));
  EXPECT_FALSE(erase_stream("s1")) << "an unknown stream: nothing to erase";
  EXPECT_EQ(pg_->psql("SELECT count(*) FROM streams"), "0\n");

  EXPECT_EQ(put(a_, job("job-3", "s1")), std::errc::no_such_file_or_directory);
  EXPECT_EQ(put(a_, job("job-4", "never-existed")), std::errc::no_such_file_or_directory);
  JobBatch resumed;
  resumed.upserts = {job("job-1", "s1")};  // back to IN_PROGRESS on an erased stream
  EXPECT_EQ(apply(a_, resumed), std::errc::no_such_file_or_directory);

  // A create racing an erase: the erase holds the stream row until it commits; the job insert
  // waits for it, then finds no stream.
  add_stream("s3");
  PGconn* eraser = PQconnectdb(pg_->url().c_str());
  ASSERT_EQ(PQstatus(eraser), CONNECTION_OK) << PQerrorMessage(eraser);
  PGresult* begun = PQexec(eraser, "BEGIN; SELECT chunkd_erase_stream('s3')");
  EXPECT_EQ(PQresultStatus(begun), PGRES_TUPLES_OK) << PQresultErrorMessage(begun);
  PQclear(begun);
  Outcome racing;
  a_.lease->store().put_job(job("job-5", "s3"), {}, capture(racing));
  PQclear(PQexec(eraser, "COMMIT"));
  PQfinish(eraser);
  run_until([&] { return racing.called; });
  EXPECT_EQ(racing.error, std::errc::no_such_file_or_directory);
  EXPECT_EQ(pg_->psql("SELECT count(*) FROM jobs WHERE stream_id = 's3'"), "0\n");
}

// The version-1 registry (io/registry_pg_sql.cpp before the jobs), its tables as they were.
constexpr const char* kVersion1 = R"sql(
SET ROLE chunkd;
CREATE TABLE registry_schema (version integer NOT NULL);
INSERT INTO registry_schema VALUES (1);
CREATE TABLE streams (
  id text PRIMARY KEY, version bigint NOT NULL, description text NOT NULL,
  role_arn text NOT NULL, created_at text NOT NULL, updated_at text NOT NULL,
  file_count integer NOT NULL, allowed_things text);
CREATE TABLE stream_tags (
  stream_id text NOT NULL REFERENCES streams(id) ON DELETE CASCADE, ord integer NOT NULL,
  key text NOT NULL, value text NOT NULL, PRIMARY KEY (stream_id, ord));
CREATE TABLE stream_files (
  stream_id text NOT NULL REFERENCES streams(id) ON DELETE CASCADE, ord integer NOT NULL,
  file_id bigint NOT NULL, bucket text NOT NULL, key text NOT NULL, size_bytes bigint NOT NULL,
  digest text NOT NULL, extent_bytes bigint NOT NULL, manifest bytea NOT NULL,
  source_etag text NOT NULL, source_version text NOT NULL,
  PRIMARY KEY (stream_id, ord), UNIQUE (stream_id, file_id));
INSERT INTO streams VALUES ('old-stream', 3, 'kept', '', '', '', 0, NULL);
)sql";

TEST_F(JobLeasePgTest, AVersion1RegistryIsMigratedAndANewerOneRefused) {
  pg_->psql(
      "DROP TABLE IF EXISTS job_executions, jobs, job_things, stream_files, stream_tags, streams, "
      "registry_schema CASCADE; DROP FUNCTION IF EXISTS chunkd_put_stream, chunkd_write_jobs, "
      "chunkd_erase_stream");
  ASSERT_EQ(pg_->psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0\n");
  pg_->psql(kVersion1);
  ASSERT_EQ(pg_->psql("SELECT version FROM registry_schema"), "1\n") << pg_->error();
  hold_a();
  EXPECT_EQ(pg_->psql("SELECT version FROM registry_schema"), "2\n");
  EXPECT_EQ(pg_->psql("SELECT description FROM streams"), "kept\n");
  ASSERT_FALSE(put(a_, job("job-1", "old-stream")));
  close(a_);

  pg_->psql("UPDATE registry_schema SET version = 99");
  JobLeaseOptions options;
  options.url = pg_->url();
  options.holder = "instance-a";
  auto newer = PgJobLease::open(&loop_, options, nullptr, nullptr);
  pg_->psql("UPDATE registry_schema SET version = 2");
  ASSERT_FALSE(newer);
  EXPECT_NE(newer.error().message().find("schema version 99"), std::string::npos)
      << newer.error().message();
  EXPECT_NE(newer.error().message().find("registry.url"), std::string::npos);
  auto unreachable = PgJobLease::open(
      &loop_, {"postgresql://chunkd@127.0.0.1:1/chunkd?connect_timeout=5", "x"}, nullptr, nullptr);
  ASSERT_FALSE(unreachable);
  EXPECT_NE(unreachable.error().message().find("registry.url: cannot connect"), std::string::npos)
      << unreachable.error().message();
}

}  // namespace
}  // namespace chunkd::io

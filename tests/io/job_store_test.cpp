// JobStore: round trips, one-transaction batches, bounds, reopening, and the upgrade of a
// registry written before jobs existed (its streams kept, the jobs tables added).
#include "io/job_store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <uv.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/registry_store.hpp"
#include "tests/io/outcome.hpp"

namespace chunkd::io {
namespace {

namespace fs = std::filesystem;

StoredJob ota_job(const std::string& id) {
  StoredJob j;
  j.id = id;
  j.spec = R"({"targets":["dev-*"],"ota":{"streamId":"fw-1","fileId":0}})";
  j.document = R"({"afr_ota":{"protocols":["MQTT"],"streamname":"fw-1"}})";
  j.stream_id = "fw-1";
  j.status = "IN_PROGRESS";
  j.created_at_ms = 1795773600000;
  j.last_updated_at_ms = 1795773600000;
  return j;
}

StoredJob document_job(const std::string& id) {
  StoredJob j;
  j.id = id;
  j.spec = R"({"targets":["a"],"document":{"op":"reboot \u00e9"}})";
  j.document = "{\"op\":\"reboot \xC3\xA9\"}";
  j.status = "COMPLETED";
  j.reason_code = "";
  j.comment = "done \"quoted\"";
  j.created_at_ms = 1;
  j.last_updated_at_ms = 2;
  j.completed_at_ms = 3;
  return j;
}

StoredExecution execution(const std::string& job, const std::string& thing,
                          std::string status = "QUEUED") {
  StoredExecution e;
  e.job_id = job;
  e.thing = thing;
  e.status = std::move(status);
  e.queued_at_ms = 1795773600000;
  e.last_updated_at_ms = 1795773600000;
  return e;
}

using test::capture;
using test::Outcome;

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    std::string pattern = ::testing::TempDir() + "chunkd-jobs-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    dir_ = root_ + "/state/registry";
  }

  void TearDown() override {
    close_store();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  void open_store(std::size_t max_pending = JobStore::kDefaultMaxPendingWrites) {
    auto opened = JobStore::open(&loop_, dir_, max_pending);
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

  std::error_code wait(Outcome& outcome) {
    run_until([&] { return outcome.called; });
    return outcome.error;
  }

  std::error_code put(StoredJob job, std::vector<StoredExecution> executions = {}) {
    Outcome outcome;
    store_->put_job(std::move(job), std::move(executions), capture(outcome));
    return wait(outcome);
  }

  std::error_code apply(JobBatch batch) {
    Outcome outcome;
    store_->apply(std::move(batch), capture(outcome));
    return wait(outcome);
  }

  StoredJobs load() {
    auto loaded = store_->load_all();
    EXPECT_TRUE(loaded) << loaded.error().message();
    return loaded ? std::move(*loaded) : StoredJobs{};
  }

  uv_loop_t loop_{};
  std::string root_;
  std::string dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(JobStoreTest, PutThenLoadRoundTripsEveryField) {
  open_store();
  EXPECT_TRUE(load().jobs.empty());
  StoredExecution rich = execution("ota-1", "dev:1", "IN_PROGRESS");
  rich.status_details = {{"receive", "12/40"}, {"", ""}, {"nul", std::string("a\0b", 3)}};
  rich.started_at_ms = std::numeric_limits<std::int64_t>::max();
  rich.version_number = 7;
  rich.execution_number = 2;
  rich.step_deadline_ms = 1'798'000'600'000;
  ASSERT_FALSE(put(ota_job("ota-1"), {execution("ota-1", "dev:2"), rich}));
  ASSERT_FALSE(put(document_job("doc-1")));

  const StoredJobs loaded = load();
  ASSERT_EQ(loaded.jobs.size(), 2u);
  EXPECT_EQ(loaded.jobs[0], document_job("doc-1"));  // ordered by id
  EXPECT_EQ(loaded.jobs[1], ota_job("ota-1"));
  EXPECT_FALSE(loaded.jobs[0].stream_id);
  ASSERT_EQ(loaded.executions.size(), 2u);
  EXPECT_EQ(loaded.executions[0], rich);  // "dev:1" < "dev:2"
  EXPECT_EQ(loaded.executions[1], execution("ota-1", "dev:2"));
}

TEST_F(JobStoreTest, PutOfAnExistingJobFailsAndKeepsTheFirst) {
  open_store();
  ASSERT_FALSE(put(ota_job("j"), {execution("j", "a")}));
  StoredJob again = document_job("j");
  const std::error_code error = put(again, {execution("j", "b")});
  ASSERT_TRUE(error);
  EXPECT_EQ(error.category(), sqlite_category());
  EXPECT_EQ(error.value() & 0xff, SQLITE_CONSTRAINT) << error.message();
  const StoredJobs loaded = load();
  ASSERT_EQ(loaded.jobs.size(), 1u);
  EXPECT_EQ(loaded.jobs[0], ota_job("j"));
  ASSERT_EQ(loaded.executions.size(), 1u);
  EXPECT_EQ(loaded.executions[0].thing, "a");
}

TEST_F(JobStoreTest, ApplyInsertsAndReplacesExecutionsAndChangesJobs) {
  open_store();
  ASSERT_FALSE(put(ota_job("j"), {execution("j", "a"), execution("j", "b")}));
  StoredExecution a = execution("j", "a", "SUCCEEDED");
  a.version_number = 3;
  a.status_details = {{"self_test", "ready"}};
  JobBatch batch;
  batch.executions = {a, execution("j", "c")};
  batch.jobs = {{"j", "COMPLETED", "", "all done", 5, 6}};
  ASSERT_FALSE(apply(batch));
  const StoredJobs loaded = load();
  ASSERT_EQ(loaded.executions.size(), 3u);
  EXPECT_EQ(loaded.executions[0], a);
  EXPECT_EQ(loaded.executions[1], execution("j", "b"));
  EXPECT_EQ(loaded.executions[2], execution("j", "c"));
  ASSERT_EQ(loaded.jobs.size(), 1u);
  EXPECT_EQ(loaded.jobs[0].status, "COMPLETED");
  EXPECT_EQ(loaded.jobs[0].comment, "all done");
  EXPECT_EQ(loaded.jobs[0].last_updated_at_ms, 5);
  EXPECT_EQ(loaded.jobs[0].completed_at_ms, 6);
  EXPECT_EQ(loaded.jobs[0].spec, ota_job("j").spec) << "a status change keeps the spec";
}

// Deletes go first, then whole job rows: a job deleted and created again in one batch keeps none
// of its old executions, and an upsert of a job keeps its executions.
TEST_F(JobStoreTest, ApplyDeletesThenUpsertsJobs) {
  open_store();
  ASSERT_FALSE(put(ota_job("again"), {execution("again", "old")}));
  ASSERT_FALSE(put(document_job("kept"), {execution("kept", "a")}));
  StoredJob changed = document_job("kept");
  changed.status = "CANCELED";
  changed.comment = "by the operator";
  JobBatch batch;
  batch.deleted = {"again"};
  batch.upserts = {document_job("again"), changed, ota_job("new")};
  batch.executions = {execution("again", "fresh"), execution("new", "b")};
  ASSERT_FALSE(apply(batch));
  const StoredJobs loaded = load();
  ASSERT_EQ(loaded.jobs.size(), 3u);
  EXPECT_EQ(loaded.jobs[0], document_job("again"));
  EXPECT_EQ(loaded.jobs[1], changed);
  EXPECT_EQ(loaded.jobs[2], ota_job("new"));
  ASSERT_EQ(loaded.executions.size(), 3u);
  EXPECT_EQ(loaded.executions[0].thing, "fresh") << "the deleted job's \"old\" is gone";
  EXPECT_EQ(loaded.executions[1], execution("kept", "a")) << "an upsert keeps executions";
  EXPECT_EQ(loaded.executions[2], execution("new", "b"));
}

TEST_F(JobStoreTest, ThingsAreRememberedOnce) {
  open_store();
  JobBatch batch;
  batch.things = {"sensor-2", "sensor-1"};
  ASSERT_FALSE(apply(batch));
  batch.things = {"sensor-1", "gw-1"};
  ASSERT_FALSE(apply(batch));
  EXPECT_EQ(load().things, (std::vector<std::string>{"gw-1", "sensor-1", "sensor-2"}));
}

// A batch whose last row cannot be written leaves nothing of the batch behind.
TEST_F(JobStoreTest, BatchIsAllOrNothing) {
  open_store();
  ASSERT_FALSE(put(ota_job("j"), {execution("j", "a")}));
  const StoredJobs before = load();

  JobBatch unknown_job;
  unknown_job.executions = {execution("j", "a", "CANCELED"), execution("j", "b")};
  unknown_job.jobs = {{"j", "CANCELED", "ABORTED", "", 9, 9}, {"ghost", "CANCELED", "", "", 9, 9}};
  std::error_code error = apply(unknown_job);
  ASSERT_TRUE(error);
  EXPECT_EQ(error.value() & 0xff, SQLITE_CONSTRAINT) << error.message();
  StoredJobs after = load();
  EXPECT_EQ(after.jobs, before.jobs);
  EXPECT_EQ(after.executions, before.executions);

  JobBatch orphan;  // an execution of a job that does not exist: the foreign key refuses it
  orphan.jobs = {{"j", "CANCELED", "", "", 9, 9}};
  orphan.executions = {execution("j", "a", "CANCELED"), execution("ghost", "x")};
  error = apply(orphan);
  ASSERT_TRUE(error);
  EXPECT_EQ(error.value() & 0xff, SQLITE_CONSTRAINT) << error.message();
  after = load();
  EXPECT_EQ(after.jobs, before.jobs);
  EXPECT_EQ(after.executions, before.executions);

  // The connection is usable afterwards.
  JobBatch good;
  good.executions = {execution("j", "b")};
  ASSERT_FALSE(apply(good));
  EXPECT_EQ(load().executions.size(), 2u);
}

TEST_F(JobStoreTest, EraseRemovesTheJobAndItsExecutions) {
  open_store();
  ASSERT_FALSE(put(ota_job("j1"), {execution("j1", "a"), execution("j1", "b")}));
  ASSERT_FALSE(put(ota_job("j2"), {execution("j2", "a")}));
  Outcome erased;
  store_->erase_job("j1", capture(erased));
  ASSERT_FALSE(wait(erased));
  Outcome unknown;
  store_->erase_job("never", capture(unknown));
  ASSERT_FALSE(wait(unknown));
  const StoredJobs loaded = load();
  ASSERT_EQ(loaded.jobs.size(), 1u);
  EXPECT_EQ(loaded.jobs[0].id, "j2");
  ASSERT_EQ(loaded.executions.size(), 1u);
  EXPECT_EQ(loaded.executions[0].job_id, "j2");
}

TEST_F(JobStoreTest, ReopenAfterCloseKeepsEverything) {
  open_store();
  StoredExecution e = execution("j", "dev-9", "IN_PROGRESS");
  e.status_details = {{"receive", "40/40"}, {"self_test", "ready"}};
  ASSERT_FALSE(put(ota_job("j"), {e}));
  ASSERT_FALSE(put(document_job("k")));
  JobBatch batch;
  batch.jobs = {{"k", "CANCELED", "ABORTED", "failures over threshold", 10, 11}};
  ASSERT_FALSE(apply(batch));
  const StoredJobs before = load();
  close_store();
  open_store();
  const StoredJobs after = load();
  EXPECT_EQ(after.jobs, before.jobs);
  EXPECT_EQ(after.executions, before.executions);
  ASSERT_EQ(after.jobs.size(), 2u);
  EXPECT_EQ(after.jobs[1].reason_code, "ABORTED");
}

TEST_F(JobStoreTest, QueueAndBatchBoundsFailAtOnce) {
  open_store(2);
  Outcome first;
  Outcome second;
  Outcome third;
  store_->put_job(ota_job("a"), {}, capture(first));
  store_->put_job(ota_job("b"), {}, capture(second));
  store_->put_job(ota_job("c"), {}, capture(third));
  EXPECT_TRUE(third.called) << "over the bound: refused at once";
  EXPECT_EQ(third.error, std::errc::resource_unavailable_try_again);
  EXPECT_EQ(store_->pending_writes(), 2u);

  auto busy = store_->load_all();
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, std::errc::device_or_resource_busy);
  ASSERT_FALSE(wait(first));
  ASSERT_FALSE(wait(second));

  JobBatch huge;
  huge.executions.resize(JobStore::kMaxBatchRows + 1);
  Outcome refused;
  store_->apply(std::move(huge), capture(refused));
  EXPECT_TRUE(refused.called);
  EXPECT_EQ(refused.error, std::errc::argument_list_too_long);
  EXPECT_EQ(load().jobs.size(), 2u);
}

TEST_F(JobStoreTest, WritesAfterCloseAreCanceled) {
  open_store();
  bool closed = false;
  store_->close([&closed] { closed = true; });
  Outcome late;
  store_->put_job(ota_job("late"), {}, capture(late));
  EXPECT_TRUE(late.called);
  EXPECT_EQ(late.error, std::errc::operation_canceled);
  run_until([&] { return closed; });
  store_.reset();
}

TEST_F(JobStoreTest, DamagedStatusDetailsAreReported) {
  open_store();
  ASSERT_FALSE(put(ota_job("j"), {execution("j", "a")}));
  close_store();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/registry.sqlite3").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE job_executions SET status_details = x'05000000414243'",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  open_store();
  auto loaded = store_->load_all();
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code.value() & 0xff, SQLITE_CORRUPT);
  EXPECT_NE(loaded.error().message().find("thing 'a'"), std::string::npos)
      << loaded.error().message();
}

// A registry of the release before jobs (schema version 2) gains the jobs tables on open and
// keeps its streams; both stores then work on the one file side by side.
TEST_F(JobStoreTest, UpgradeFromVersion2KeepsStreams) {
  fs::create_directories(dir_);
  const std::string path = dir_ + "/registry.sqlite3";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* v2 = R"sql(
    CREATE TABLE streams (id TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL,
      description TEXT NOT NULL, role_arn TEXT NOT NULL, created_at TEXT NOT NULL,
      updated_at TEXT NOT NULL, file_count INTEGER NOT NULL, allowed_things TEXT);
    CREATE TABLE stream_tags (stream_id TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
      ord INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
      PRIMARY KEY (stream_id, ord)) WITHOUT ROWID;
    CREATE TABLE stream_files (stream_id TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
      ord INTEGER NOT NULL, file_id INTEGER NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
      size_bytes INTEGER NOT NULL, digest TEXT NOT NULL, extent_bytes INTEGER NOT NULL,
      manifest BLOB NOT NULL, PRIMARY KEY (stream_id, ord), UNIQUE (stream_id, file_id))
      WITHOUT ROWID;
    INSERT INTO streams VALUES ('fw-1', 4, 'from v2', 'arn:aws:iam::123456789012:role/chunkd',
      '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', 1, 'dev-*');
    INSERT INTO stream_files VALUES ('fw-1', 0, 0, 'fw', 'a.bin', 16,
      '00112233445566778899aabbccddeeff', 262144, x'0102030405060708');
    PRAGMA user_version=2;)sql";
  ASSERT_EQ(sqlite3_exec(db, v2, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  open_store();
  EXPECT_TRUE(load().jobs.empty());
  ASSERT_FALSE(put(ota_job("j"), {execution("j", "dev-1")}));

  auto registry = RegistryStore::open(&loop_, dir_);
  ASSERT_TRUE(registry) << registry.error().message();
  auto streams = (*registry)->load_all();
  ASSERT_TRUE(streams) << streams.error().message();
  ASSERT_EQ(streams->size(), 1u);
  EXPECT_EQ((*streams)[0].id, "fw-1");
  EXPECT_EQ((*streams)[0].description, "from v2");
  EXPECT_EQ((*streams)[0].allowed_things, std::vector<std::string>{"dev-*"});
  ASSERT_EQ((*streams)[0].files.size(), 1u);
  EXPECT_EQ((*streams)[0].files[0].manifest, std::vector<std::uint64_t>{0x0807060504030201ull});

  // Writes from both connections interleave on the one file.
  Outcome stream_put;
  StoredStream second = (*streams)[0];
  second.id = "fw-2";
  (*registry)->put(second, capture(stream_put));
  JobBatch batch;
  batch.executions = {execution("j", "dev-2")};
  ASSERT_FALSE(apply(batch));
  ASSERT_FALSE(wait(stream_put));
  bool registry_closed = false;
  (*registry)->close([&registry_closed] { registry_closed = true; });
  run_until([&] { return registry_closed; });
  registry->reset();

  close_store();
  open_store();
  const StoredJobs loaded = load();
  ASSERT_EQ(loaded.jobs.size(), 1u);
  EXPECT_EQ(loaded.jobs[0], ota_job("j"));
  EXPECT_EQ(loaded.executions.size(), 2u);
}

}  // namespace
}  // namespace chunkd::io

// Private to io/job_lease_pg*.cpp: the jobs lease's class (io/job_lease_pg.hpp says what it does).
// job_lease_pg.cpp keeps the session (connect, try, load, loss, close); job_lease_pg_store.cpp
// runs the writes; job_lease_pg_sql.cpp holds the SQL.
//
// States: Down (no session; the timer reconnects), Connecting (PQconnectPoll in progress),
// Trying (a follower: a try in flight, or the timer waits retry_ms), Loading (the lock is ours,
// the load in flight), Held (on_acquired called: writes run). One statement at a time is in
// flight (`running_`); writes queue behind it only while Held.
//
// Thread: the loop thread.
#pragma once

#include <libpq-fe.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "io/job_lease_pg.hpp"
#include "io/pg_session.hpp"
#include "io/registry_pg.hpp"

namespace chunkd::io::detail {

inline constexpr long long kPgJobLeaseKey = 0x63686b646a6f6231;  // "chkdjob1"

// The try: one row, (got the lock, the holder's application_name or NULL).
const std::string& pg_try_lease_sql();
extern const char* const kPgLoadJobsSql;   // no parameters; results: BEGIN, 4 selects, COMMIT
extern const char* const kPgWriteJobsSql;  // chunkd_write_jobs, pg_job_write_params
// A write's parameters; std::errc{}, or the refusal with `problem` set (a NUL byte, too big).
std::errc pg_job_write_params(bool insert, const JobBatch& batch, PgParams& out,
                              std::string& problem);
// The jobs of kPgLoadJobsSql's four selects, checked.
Expected<StoredJobs> pg_parse_jobs(const PGresult* jobs, const PGresult* executions,
                                   const PGresult* details, const PGresult* things);

struct PgJobWrite {
  const char* verb = "";  // "put job", "apply a batch to jobs", "erase job"
  std::string id;         // the job of a put or erase, else ""
  // "put job 'x'", for the log.
  std::string what() const { return id.empty() ? verb : std::string(verb) + " '" + id + "'"; }
  PgParams params;
  JobStore::Done done;
};

class PgJobLeaseImpl;

// store(): the writes go to the lease.
class PgLeaseJobStore final : public JobStore {
 public:
  explicit PgLeaseJobStore(PgJobLeaseImpl& lease) : lease_(lease) {}
  Expected<StoredJobs> load_all() override;
  void put_job(StoredJob job, std::vector<StoredExecution> executions, Done done) override;
  void apply(JobBatch batch, Done done) override;
  void erase_job(std::string job_id, Done done) override;
  std::size_t pending_writes() const override;
  void close(std::function<void()> done) override;

 private:
  PgJobLeaseImpl& lease_;
};

class PgJobLeaseImpl final : public PgJobLease {
 public:
  PgJobLeaseImpl(uv_loop_t* loop, JobLeaseOptions options, Acquired on_acquired, Lost on_lost,
                 PGconn* conn);
  ~PgJobLeaseImpl() override;

  // Nonblocking mode, the handles, the first try. Fails when libpq or libuv refuses.
  Expected<void> start();

  bool held() const override { return state_ == State::Held; }
  const std::string& holder() const override { return holder_; }
  JobStore& store() override { return store_; }
  JobLeaseStats stats() const override;
  void close(std::function<void()> done) override;

  // The store's side (job_lease_pg_store.cpp). `insert`: put_job.
  void submit(const char* verb, std::string id, bool insert, const JobBatch& batch,
              JobStore::Done done);
  std::size_t pending_writes() const { return queue_.size() + (writing_ ? 1 : 0); }

 private:
  enum class State { Down, Connecting, Trying, Loading, Held };
  enum class Running { None, Try, Load, Write };

  // Session (job_lease_pg.cpp).
  void try_lease();
  void on_tried();
  void on_loaded();
  void lost(const std::string& why);
  void schedule_reconnect();
  void reconnect();
  void continue_connect();
  void drop_session();
  void maybe_closed();
  // One timer, its meaning by state: Down reconnects, Connecting gives up, Trying tries again.
  void arm_timer(std::uint64_t ms);
  void on_timer();

  // Statements (job_lease_pg_store.cpp).
  bool send(Running what, const char* sql, const PgParams* params);
  void flush();
  void on_io(int status, int events);
  void read_results();
  void finish_running();
  // The first failed result's "message (SQLSTATE)", its SQLSTATE in `sqlstate`; "" when none.
  std::string failure(std::string& sqlstate) const;
  void clear_results();
  void pump();
  void finish_write(std::error_code error, const std::string& message);
  void fail_queued(std::errc code);

  uv_loop_t* loop_;
  JobLeaseOptions options_;
  Acquired on_acquired_;
  Lost on_lost_;
  PGconn* conn_;
  PgLeaseJobStore store_{*this};
  State state_ = State::Trying;
  bool started_ = false;
  bool closing_ = false;
  bool closed_ = false;
  std::function<void()> close_done_;

  PgPoll poll_;
  uv_timer_t* timer_ = nullptr;
  int timers_open_ = 0;
  std::uint64_t backoff_ms_ = kFirstBackoffMs;

  Running running_ = Running::None;
  std::vector<PGresult*> results_;  // of the running statement (a load has 6)
  std::unique_ptr<PgJobWrite> writing_;
  std::deque<std::unique_ptr<PgJobWrite>> queue_;
  std::string holder_;
  JobLeaseStats stats_;
};

}  // namespace chunkd::io::detail

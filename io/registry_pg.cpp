// The shared registry's operations (io/registry_pg_store.hpp): one in flight at a time on the
// nonblocking connection, the others queued; results collected as the socket becomes readable;
// other connections' NOTIFYs reported through on_change.
#include <libpq-fe.h>

#include <utility>

#include "base/assert.hpp"
#include "io/log.hpp"
#include "io/registry_pg_store.hpp"

namespace chunkd::io::detail {

void log_pg_notice(void*, const char* message) {
  std::string text = message;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  LOG_DEBUG("registry", "PostgreSQL: %s", text.c_str());
}

Expected<void> PgRegistryStore::start() {
  if (PQsetnonblocking(conn_, 1) != 0) {
    return fail(std::errc::io_error, "registry: nonblocking mode: " + pg_conn_message(conn_));
  }
  watch(UV_READABLE);
  if (!poll_.active()) {
    return fail(std::errc::io_error, "registry: cannot watch the PostgreSQL connection's socket");
  }
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  handles_open_++;
  started_ = true;
  return {};
}

Expected<std::vector<StoredStream>> PgRegistryStore::load_all() {
  if (closing_) return fail(std::errc::operation_canceled, "registry: closed");
  if (running_ || !queue_.empty()) {
    return fail(std::errc::device_or_resource_busy,
                "registry: load_all() while writes are pending");
  }
  if (state_ != State::Ready) {
    return fail(std::errc::not_connected, "registry: not connected to PostgreSQL (reconnecting)");
  }
  const char* id = nullptr;
  // PQexecParams blocks even in nonblocking mode: meant for start-up.
  PGresult* result = PQexecParams(conn_, kPgLoadSql, 1, nullptr, &id, nullptr, nullptr, 0);
  Expected<std::vector<StoredStream>> out = fail(std::errc::io_error);
  if (PQresultStatus(result) == PGRES_TUPLES_OK) {
    out = pg_parse_streams(result);
  } else {
    const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    out = fail(state ? pg_errc(state) : std::errc::connection_aborted,
               "registry: load: " + (result ? pg_result_message(result) : pg_conn_message(conn_)));
  }
  PQclear(result);
  deliver_notifications();  // any that arrived meanwhile
  return out;
}

std::errc PgRegistryStore::refusal(bool write) const {
  if (closing_) return std::errc::operation_canceled;
  if (state_ != State::Ready) return std::errc::not_connected;
  if (write && pending_writes_ >= max_pending_) return std::errc::resource_unavailable_try_again;
  return std::errc{};
}

void PgRegistryStore::submit_write(PgOp::Kind kind, StoredStream stream,
                                   std::optional<Expectation> expected, Done done) {
  if (const std::errc why = refusal(true); why != std::errc{}) {
    done(std::make_error_code(why));
    return;
  }
  auto op = std::make_unique<PgOp>();
  op->kind = kind;
  op->id = stream.id;
  op->done = std::move(done);
  std::string problem;
  if (!pg_put_params(stream, kind == PgOp::Kind::Create, expected, op->params, problem)) {
    LOG_ERROR("registry", "%s", problem.c_str());
    op->done(std::make_error_code(std::errc::invalid_argument));
    return;
  }
  enqueue(std::move(op));
}

void PgRegistryStore::erase(std::string id, Done done) {
  if (const std::errc why = refusal(true); why != std::errc{}) {
    done(std::make_error_code(why));
    return;
  }
  auto op = std::make_unique<PgOp>();
  op->kind = PgOp::Kind::Erase;
  op->params.values.emplace_back(id);
  op->id = std::move(id);
  op->done = std::move(done);
  enqueue(std::move(op));
}

void PgRegistryStore::load(std::optional<std::string> id, Loaded done) {
  if (const std::errc why = refusal(false); why != std::errc{}) {
    done(fail(why, "registry: not connected to PostgreSQL"));
    return;
  }
  auto op = std::make_unique<PgOp>();
  op->kind = PgOp::Kind::Load;
  op->id = id.value_or("");
  op->params.values.push_back(std::move(id));
  op->loaded = std::move(done);
  enqueue(std::move(op));
}

void PgRegistryStore::enqueue(std::unique_ptr<PgOp> op) {
  op->submitted_ns = uv_hrtime();
  if (op->is_write()) pending_writes_++;
  queue_.push_back(std::move(op));
  pump();
}

void PgRegistryStore::pump() {
  if (running_ || queue_.empty() || conn_ == nullptr || state_ == State::Down) return;
  if (state_ == State::Connecting && queue_.front()->kind != PgOp::Kind::Listen) return;
  running_ = std::move(queue_.front());
  queue_.pop_front();
  if (!send(*running_)) {
    lost("cannot send a statement: " + pg_conn_message(conn_));
    return;
  }
  flush();
}

bool PgRegistryStore::send(PgOp& op) {
  if (op.kind == PgOp::Kind::Listen) {
    return PQsendQuery(conn_, (std::string("LISTEN ") + kPgChannel).c_str()) == 1;
  }
  std::vector<const char*> values;
  for (const auto& v : op.params.values) values.push_back(v ? v->c_str() : nullptr);
  const char* sql = op.kind == PgOp::Kind::Erase  ? kPgEraseSql
                    : op.kind == PgOp::Kind::Load ? kPgLoadSql
                                                  : kPgPutSql;
  return PQsendQueryParams(conn_, sql, static_cast<int>(values.size()), nullptr, values.data(),
                           nullptr, nullptr, 0) == 1;
}

// Sends what libpq buffered; watches for writability while some is left.
void PgRegistryStore::flush() {
  if (std::string error; !poll_.flush(conn_, error)) lost(error);
}

void PgRegistryStore::on_io(int status, int events) {
  if (status >= 0 && state_ == State::Connecting && !running_ && queue_.empty()) {
    continue_connect();
    return;
  }
  if (std::string error; !poll_.exchange(conn_, status, events, error)) {
    lost(error);
    return;
  }
  if ((events & UV_READABLE) != 0) {
    read_results();
    if (conn_ == nullptr) return;
    deliver_notifications();
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_BAD) lost(pg_conn_message(conn_));
  }
}

// Collects the running operation's results; once libpq says there are no more, finishes it.
void PgRegistryStore::read_results() {
  while (running_ && conn_ != nullptr && PQisBusy(conn_) == 0) {
    PGresult* result = PQgetResult(conn_);
    if (result == nullptr) {
      finish_running();
      continue;
    }
    const ExecStatusType status = PQresultStatus(result);
    const bool ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
    PGresult*& slot = ok ? running_->rows : running_->failure;
    if (slot == nullptr && (ok || running_->failure == nullptr)) {
      slot = result;
    } else {
      PQclear(result);
    }
  }
}

void PgRegistryStore::finish_running() {
  std::unique_ptr<PgOp> op = std::move(running_);
  std::error_code error;
  std::string message;
  if (op->failure != nullptr) {
    const char* state = PQresultErrorField(op->failure, PG_DIAG_SQLSTATE);
    const std::string_view sqlstate = state != nullptr ? state : "";
    error = sqlstate == kPgChangedMeanwhile ? changed_meanwhile()
                                            : std::make_error_code(pg_errc(sqlstate));
    message = pg_result_message(op->failure);
    if (error != std::errc::file_exists && error != changed_meanwhile() &&
        error != std::errc::device_or_resource_busy) {
      LOG_ERROR("registry", "%s stream '%s' in PostgreSQL: %s", op->verb(), op->id.c_str(),
                message.c_str());
    }
  } else if (op->rows == nullptr) {
    error = std::make_error_code(std::errc::io_error);
    message = "PostgreSQL sent no result";
  }
  if (op->kind == PgOp::Kind::Listen) {
    if (error) {
      lost("LISTEN failed");
      return;
    }
    connected();
    return;
  }
  complete(std::move(op), error, message);
  pump();
  maybe_closed();
}

// Runs the operation's callback with `error` (or its rows). The callback may submit more or
// close(): close()'s own callback runs later, from a handle's close callback, never in here.
void PgRegistryStore::complete(std::unique_ptr<PgOp> op, std::error_code error,
                               const std::string& message) {
  if (op->is_write()) {
    CHUNKD_ASSERT(pending_writes_ > 0);
    pending_writes_--;
    if (!error) {
      stats_.writes++;
      stats_.write_seconds += static_cast<double>(uv_hrtime() - op->submitted_ns) / 1e9;
    }
    Done done = std::move(op->done);
    op.reset();
    done(error);
  } else {
    Loaded loaded = std::move(op->loaded);
    Expected<std::vector<StoredStream>> result =
        error ? Expected<std::vector<StoredStream>>(fail(error, "registry: load: " + message))
              : pg_parse_streams(op->rows);
    op.reset();
    loaded(std::move(result));
  }
}

// Other connections' NOTIFYs (ours are skipped: this instance applied its own writes).
void PgRegistryStore::deliver_notifications() {
  std::vector<std::string> ids;
  const int self = PQbackendPID(conn_);
  while (PGnotify* notify = PQnotifies(conn_)) {
    if (notify->be_pid != self) ids.emplace_back(notify->extra);
    PQfreemem(notify);
  }
  for (const std::string& id : ids) {
    if (closing_ || !changed_) return;
    stats_.notifications++;
    changed_(id);
  }
}

}  // namespace chunkd::io::detail

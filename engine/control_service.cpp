#include "engine/control_service.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "base/assert.hpp"
#include "engine/control_service_internal.hpp"
#include "io/log.hpp"
#include "io/safe_open.hpp"
#include "protocol/control.hpp"

namespace chunkd::engine {
namespace {

using protocol::ApiError;
using protocol::ApiErrorCode;
using protocol::FieldProblem;
using Responder = io::HttpServer::Responder;
using control_detail::api_error;
using control_detail::json_response;
using control_detail::to_info;

// What a failed safe_open means to an operator, for files[i].s3Location.key.
std::string open_problem(const std::error_code& e, std::string_view bucket) {
  if (e.category() == io::safe_open_category()) return e.message();
  if (e == std::errc::no_such_file_or_directory || e == std::errc::not_a_directory) {
    return "no such file in bucket \"" + std::string(bucket) + "\"";
  }
  if (e == std::errc::permission_denied) return "the file cannot be read: permission denied";
  if (e == std::errc::filename_too_long) return "the path is too long";
  if (e == std::errc::too_many_symbolic_link_levels) return "too many levels of symbolic links";
  return "the file cannot be opened: " + e.message();
}

std::string file_field(std::size_t i, std::string_view leaf) {
  return "files[" + std::to_string(i) + "].s3Location." + std::string(leaf);
}

const char* kind_verb(int kind) {
  switch (kind) {
    case 0:
      return "created";
    case 1:
      return "updated";
    default:
      return "deleted";
  }
}

}  // namespace

struct ControlService::Op {
  enum class Kind { Create = 0, Update = 1, Delete = 2 };
  ControlService* service = nullptr;
  Kind kind = Kind::Create;
  std::string id;
  std::string route;
  Responder respond;
  std::uint64_t started_ms = 0;
  bool holds_ingest_slot = false;

  // Create/update: the fields to set (update: only those given).
  std::optional<std::string> description;
  std::optional<std::string> role_arn;
  std::vector<protocol::Tag> tags;
  bool sets_allowed_things = false;
  protocol::AllowedThings allowed_things;
  bool replace_files = false;
  std::vector<protocol::StreamFileSpec> files;
  StreamSnapshot previous;  // update

  // Opening (thread pool), then ingesting one file at a time.
  uv_work_t work{};
  std::vector<int> dir_fds;
  std::vector<io::OpenedFile> opened;
  std::vector<std::error_code> open_errors;
  std::vector<IngestResult> ingested;
  std::vector<std::string> pinned;
  std::vector<char> from_s3;             // files[i] was fetched from an S3 bucket
  std::vector<io::S3Object> s3_objects;  // ... the object it got (ETag, versionId)
  std::uint64_t bytes = 0;
  std::shared_ptr<IngestProgress> progress;  // the current file's, while it is ingested

  std::shared_ptr<io::StoredStream> stream;  // what commit() writes
};

ControlService::ControlService(uv_loop_t* loop, Catalog& catalog, io::RegistryStore& registry,
                               ContentStore& store, Metrics& metrics, const Clock& clock,
                               ControlOptions options, const StreamHealth* health)
    : loop_(loop),
      catalog_(catalog),
      registry_(registry),
      store_(store),
      metrics_(metrics),
      clock_(clock),
      options_(std::move(options)),
      health_(health),
      s3_(std::make_unique<S3Source>(loop, &metrics)) {
  CHUNKD_ASSERT(options_.max_streams > 0 && options_.max_concurrent_ingests > 0);
  metrics_.gauge_fn("chunkd_streams", "Streams in the registry.", "",
                    [this] { return static_cast<double>(catalog_.size()); });
}

ControlService::~ControlService() {
  CHUNKD_ASSERT(ops_.empty());
  for (const auto& [name, fd] : bucket_fds_) ::close(fd);
  for (int fd : retired_fds_) ::close(fd);
}

Expected<void> ControlService::open() {
  for (const auto& [name, dir] : options_.buckets) {
    if (bucket_fds_.count(name) != 0) continue;
    auto fd = io::open_bucket_dir(dir);
    if (!fd) {
      return fail(fd.error().code, "buckets." + name + ": cannot open " + dir);
    }
    bucket_fds_.emplace(name, *fd);
  }
  return {};
}

Expected<void> ControlService::set_buckets(const std::map<std::string, std::string>& buckets) {
  std::map<std::string, int, std::less<>> opened;  // added or moved
  for (const auto& [name, dir] : buckets) {
    auto was = options_.buckets.find(name);
    if (was != options_.buckets.end() && was->second == dir) continue;
    auto fd = io::open_bucket_dir(dir);
    if (!fd) {
      for (const auto& [n, f] : opened) ::close(f);
      return fail(fd.error().code, "buckets." + name + ": cannot open " + dir);
    }
    opened.emplace(name, *fd);
  }
  for (auto it = bucket_fds_.begin(); it != bucket_fds_.end();) {
    if (buckets.count(it->first) == 0 || opened.count(it->first) != 0) {
      retired_fds_.push_back(it->second);
      it = bucket_fds_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [name, fd] : opened) bucket_fds_.insert_or_assign(name, fd);
  options_.buckets = buckets;
  close_retired_fds();
  return {};
}

void ControlService::close_retired_fds() {
  if (!ops_.empty()) return;  // an operation may be opening files beneath one on the pool
  for (int fd : retired_fds_) ::close(fd);
  retired_fds_.clear();
}

std::size_t ControlService::operations_in_progress() const { return ops_.size(); }

std::optional<io::HttpResponse> ControlService::unknown_bucket_error(
    const std::vector<protocol::StreamFileSpec>& files) const {
  std::vector<FieldProblem> problems;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::string& bucket = files[i].location.bucket;
    if (bucket_fds_.find(bucket) == bucket_fds_.end() && options_.s3_buckets.count(bucket) == 0) {
      problems.push_back({file_field(i, "bucket"), "bucket \"" + bucket + "\" is not configured"});
    }
  }
  if (problems.empty()) return std::nullopt;
  return api_error(ApiErrorCode::ValidationError, "unknown bucket", std::move(problems));
}

io::HttpResponse ControlService::ingests_busy_error() const {
  io::HttpResponse r = api_error(ApiErrorCode::RateLimited,
                                 std::to_string(ingesting_) +
                                     " ingests in progress (control.max_concurrent_ingests); "
                                     "retry later");
  r.headers.emplace_back("Retry-After", "1");
  return r;
}

void ControlService::create(std::string id, const io::HttpRequest& request, Responder& respond) {
  auto body = protocol::parse_create_stream(request.body);
  if (!body) {
    respond(api_error(body.error()));
    return;
  }
  if (auto error = unknown_bucket_error(body->files)) {
    respond(std::move(*error));
    return;
  }
  if (catalog_.find(id) || ops_.count(id) != 0) {
    respond(api_error(ApiErrorCode::AlreadyExists, ops_.count(id) != 0 && !catalog_.find(id)
                                                       ? "stream " + id + " is being created"
                                                       : "stream " + id + " already exists"));
    return;
  }
  if (catalog_.size() + pending_creates_ >= options_.max_streams) {
    respond(api_error(
        ApiErrorCode::LimitExceeded,
        "at most " + std::to_string(options_.max_streams) + " streams (storage.max_streams)"));
    return;
  }
  if (ingesting_ >= options_.max_concurrent_ingests) {
    respond(ingests_busy_error());
    return;
  }
  auto op = std::make_unique<Op>();
  op->service = this;
  op->kind = Op::Kind::Create;
  op->id = id;
  op->respond = std::move(respond);
  op->started_ms = clock_.now_ms();
  op->description = std::move(body->description);
  op->role_arn = std::move(body->role_arn);
  op->tags = std::move(body->tags);
  op->sets_allowed_things = true;
  op->allowed_things = std::move(body->allowed_things);
  op->replace_files = true;
  op->files = std::move(body->files);
  op->holds_ingest_slot = true;
  ingesting_++;
  pending_creates_++;
  Op& ref = *op;
  ops_.emplace(std::move(id), std::move(op));
  open_files(ref);
}

void ControlService::update(std::string id, const io::HttpRequest& request, Responder& respond) {
  auto body = protocol::parse_update_stream(request.body);
  if (!body) {
    respond(api_error(body.error()));
    return;
  }
  if (auto error = body->files ? unknown_bucket_error(*body->files) : std::nullopt) {
    respond(std::move(*error));
    return;
  }
  StreamSnapshot previous = catalog_.find(id);
  if (ops_.count(id) != 0) {
    respond(api_error(ApiErrorCode::AlreadyExists,
                      "stream " + id + " has a change in progress; retry when it is done"));
    return;
  }
  if (!previous) {
    respond(api_error(ApiErrorCode::NotFound, "no stream " + id));
    return;
  }
  bool ingests = body->files.has_value();
  if (ingests && ingesting_ >= options_.max_concurrent_ingests) {
    respond(ingests_busy_error());
    return;
  }
  auto op = std::make_unique<Op>();
  op->service = this;
  op->kind = Op::Kind::Update;
  op->id = id;
  op->respond = std::move(respond);
  op->started_ms = clock_.now_ms();
  op->previous = std::move(previous);
  op->description = std::move(body->description);
  op->role_arn = std::move(body->role_arn);
  op->sets_allowed_things = body->sets_allowed_things;
  op->allowed_things = std::move(body->allowed_things);
  if (ingests) {
    op->replace_files = true;
    op->files = std::move(*body->files);
    op->holds_ingest_slot = true;
    ingesting_++;
  }
  Op& ref = *op;
  ops_.emplace(std::move(id), std::move(op));
  if (ingests) {
    open_files(ref);
  } else {
    commit(ref);
  }
}

void ControlService::remove(std::string id, Responder& respond) {
  if (ops_.count(id) != 0) {
    respond(api_error(ApiErrorCode::AlreadyExists,
                      "stream " + id + " has a change in progress; retry when it is done"));
    return;
  }
  if (!catalog_.find(id)) {
    respond(api_error(ApiErrorCode::NotFound, "no stream " + id));
    return;
  }
  if (auto job = jobs_ ? jobs_->job_using_stream(id) : std::nullopt) {
    respond(api_error(ApiErrorCode::AlreadyExists,
                      "stream " + id + " is delivered by job " + *job +
                          ", which is not finished: cancel or delete the job first"));
    return;
  }
  auto op = std::make_unique<Op>();
  op->service = this;
  op->kind = Op::Kind::Delete;
  op->id = id;
  op->respond = std::move(respond);
  op->started_ms = clock_.now_ms();
  Op& ref = *op;
  ops_.emplace(id, std::move(op));
  registry_.erase(id, [this, &ref](std::error_code error) {
    if (error) {
      LOG_ERROR("control", "delete of stream %s failed in the registry: %s", ref.id.c_str(),
                error.message().c_str());
      finish(ref, error == std::errc::resource_unavailable_try_again
                      ? api_error(ApiErrorCode::RateLimited, "the registry is busy; retry")
                      : api_error(ApiErrorCode::InternalError,
                                  "the registry could not be written: " + error.message()));
      return;
    }
    catalog_.erase(ref.id);
    finish(ref, json_response(200, protocol::delete_response(ref.id)));
  });
}

// Thread pool: open every key beneath its bucket directory.
void ControlService::open_files(Op& op) {
  const std::size_t n = op.files.size();
  op.dir_fds.resize(n);
  op.opened.resize(n);
  op.open_errors.resize(n);
  op.from_s3.assign(n, 0);
  op.s3_objects.assign(n, {});
  for (std::size_t i = 0; i < n; ++i) {
    auto dir = bucket_fds_.find(op.files[i].location.bucket);
    op.dir_fds[i] = dir == bucket_fds_.end() ? -1 : dir->second;  // -1: an S3 bucket
    op.from_s3[i] = dir == bucket_fds_.end() ? 1 : 0;
  }
  op.work.data = &op;
  int rc = uv_queue_work(
      loop_, &op.work,
      [](uv_work_t* req) {
        Op& o = *static_cast<Op*>(req->data);
        bool failed = false;
        for (std::size_t i = 0; i < o.files.size(); ++i) {
          if (o.dir_fds[i] < 0) continue;  // fetched later
          auto opened = io::safe_open(o.dir_fds[i], o.files[i].location.key);
          if (opened) {
            o.opened[i] = *opened;
          } else {
            o.open_errors[i] = opened.error().code;
            failed = true;
          }
        }
        if (failed) {
          for (auto& f : o.opened) {
            if (f.fd >= 0) ::close(f.fd);
            f.fd = -1;
          }
        }
      },
      [](uv_work_t* req, int status) {
        Op& o = *static_cast<Op*>(req->data);
        ControlService& self = *o.service;
        if (status != 0) {
          self.finish(o, api_error(ApiErrorCode::InternalError, "cannot open the files"));
          return;
        }
        std::vector<FieldProblem> problems;
        for (std::size_t i = 0; i < o.files.size(); ++i) {
          if (o.open_errors[i]) {
            problems.push_back(
                {file_field(i, "key"), open_problem(o.open_errors[i], o.files[i].location.bucket)});
          }
        }
        if (!problems.empty()) {
          self.finish(o, api_error(ApiErrorCode::ValidationError, "a source file cannot be used",
                                   std::move(problems)));
          return;
        }
        self.ingest_next(o);
      });
  if (rc != 0) {
    finish(op, api_error(ApiErrorCode::InternalError, "cannot queue the file opening"));
  }
}

void ControlService::ingest_next(Op& op) {
  const std::size_t i = op.ingested.size();
  if (i == op.files.size()) {
    // Every file is in the store: check pinned versions, then commit.
    std::vector<FieldProblem> problems;
    for (std::size_t k = 0; k < op.files.size(); ++k) {
      const auto& version = op.files[k].location.version;
      if (version && op.from_s3[k] == 0 && *version != op.ingested[k].digest) {
        problems.push_back({file_field(k, "version"),
                            "does not match the file's content digest " + op.ingested[k].digest});
      }
    }
    if (!problems.empty()) {
      finish(op, api_error(ApiErrorCode::ValidationError, "a file does not have the pinned version",
                           std::move(problems)));
      return;
    }
    if (op.holds_ingest_slot) {
      op.holds_ingest_slot = false;
      ingesting_--;
    }
    commit(op);
    return;
  }
  if (op.from_s3[i] != 0) {
    fetch_s3(op, i);
    return;
  }
  int fd = op.opened[i].fd;
  op.opened[i].fd = -1;  // the store owns it now
  op.progress = std::make_shared<IngestProgress>();
  store_.ingest(
      fd,
      [this, &op, i](std::error_code error, IngestResult result) {
        if (error) {
          finish(op, ingest_error(op.id, op.files[i], i, error, result));
          return;
        }
        ingested(op, std::move(result));
      },
      op.progress);
}

void ControlService::ingested(Op& op, IngestResult result) {
  op.pinned.push_back(result.digest);
  op.bytes += result.size_bytes;
  op.ingested.push_back(std::move(result));
  op.progress.reset();
  ingest_next(op);
}

io::HttpResponse ControlService::ingest_error(const std::string& id,
                                              const protocol::StreamFileSpec& spec, std::size_t i,
                                              const std::error_code& error,
                                              const IngestResult& seen) const {
  const std::string field = file_field(i, "key");
  if (error == IngestError::SourceChanged || error == std::errc::invalid_argument) {
    return api_error(ApiErrorCode::ValidationError, "a source file cannot be used",
                     {{field, error.message() + "; try again"}});
  }
  if (error == IngestError::TooLarge) {
    const std::uint64_t limit = store_.options().max_file_bytes;
    return api_error(ApiErrorCode::LimitExceeded, "a source file is over storage.max_file_mib",
                     {{field, "the file has " + std::to_string(seen.size_bytes) +
                                  " bytes; storage.max_file_mib allows " + std::to_string(limit) +
                                  " bytes (" + std::to_string(limit >> 20) + " MiB)"}});
  }
  if (storage_full(error)) {
    std::string message = "storage full: " + field + " needs " + std::to_string(seen.size_bytes) +
                          " bytes in storage.data_dir";
    if (error == IngestError::StorageFull) {
      message += ", " + std::to_string(seen.available_bytes) + " bytes available";
    } else {
      message += " (" + error.message() + ")";
    }
    LOG_WARN("control", "stream %s: %s", id.c_str(), message.c_str());
    return api_error(ApiErrorCode::StorageFull, std::move(message));
  }
  if (error == std::errc::resource_unavailable_try_again) {
    io::HttpResponse r =
        api_error(ApiErrorCode::RateLimited, "file reads are saturated; retry later");
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  if (error == IngestError::Closed) {
    return api_error(ApiErrorCode::ServiceUnavailable, "chunkd is shutting down");
  }
  LOG_ERROR("control", "ingest of %s/%s for stream %s failed: %s", spec.location.bucket.c_str(),
            spec.location.key.c_str(), id.c_str(), error.message().c_str());
  return api_error(ApiErrorCode::InternalError, "storing " + field + " failed: " + error.message());
}

std::optional<protocol::IngestProgressInfo> ControlService::progress_of(std::string_view id) const {
  auto it = ops_.find(id);
  if (it == ops_.end() || it->second->kind == Op::Kind::Delete || !it->second->replace_files) {
    return std::nullopt;
  }
  const Op& op = *it->second;
  protocol::IngestProgressInfo p;
  p.status = op.kind == Op::Kind::Create ? "CREATING" : "UPDATING";
  p.files = static_cast<std::uint32_t>(op.files.size());
  if (op.progress) {
    p.file = static_cast<std::uint32_t>(op.ingested.size());
    p.bytes_done = op.progress->done;
    p.bytes_total = op.progress->total;
  } else if (!op.ingested.empty()) {  // between files, or committing: the last one is done
    p.file = static_cast<std::uint32_t>(op.ingested.size() - 1);
    p.bytes_done = p.bytes_total = op.ingested.back().size_bytes;
  }
  return p;
}

void ControlService::fetch_s3(Op& op, std::size_t i) {
  const protocol::StreamFileSpec& spec = op.files[i];
  auto bucket = options_.s3_buckets.find(spec.location.bucket);
  if (bucket == options_.s3_buckets.end()) {  // removed by a reload meanwhile
    finish(op, api_error(ApiErrorCode::ValidationError, "unknown bucket",
                         {{file_field(i, "bucket"),
                           "bucket \"" + spec.location.bucket + "\" is not configured"}}));
    return;
  }
  op.progress = std::make_shared<IngestProgress>();
  s3_->fetch(bucket->second, spec.location.key, spec.location.version.value_or(""), store_,
             op.progress, [this, &op, i](S3Fetched fetched) {
               if (fetched.result.error) {
                 finish(op, s3_fetch_error(fetched.result, i, op.files[i].location.bucket,
                                           store_.options().max_file_bytes));
                 return;
               }
               if (fetched.store_error) {
                 finish(op,
                        ingest_error(op.id, op.files[i], i, fetched.store_error, fetched.stored));
                 return;
               }
               op.s3_objects[i] = std::move(fetched.result.object);
               ingested(op, std::move(fetched.stored));
             });
}

void ControlService::commit(Op& op) {
  auto stream = std::make_shared<io::StoredStream>();
  std::string now = rfc3339_utc(clock_.unix_ms());
  if (op.kind == Op::Kind::Create) {
    stream->id = op.id;
    stream->version = 1;
    stream->created_at = now;
    for (auto& tag : op.tags) stream->tags.emplace_back(tag.key, tag.value);
  } else {
    *stream = *op.previous;
    // Who may read is not what devices read: an update of allowedThings alone keeps the
    // version, so devices still allowed carry on with their downloads.
    const bool access_only = !op.description && !op.role_arn && !op.replace_files;
    stream->version = op.previous->version + (access_only ? 0 : 1);
  }
  stream->updated_at = now;
  if (op.description) stream->description = *op.description;
  if (op.role_arn) stream->role_arn = *op.role_arn;
  if (op.sets_allowed_things) stream->allowed_things = op.allowed_things;
  if (op.replace_files) {
    stream->files.clear();
    for (std::size_t i = 0; i < op.files.size(); ++i) {
      io::StoredFile f;
      f.file_id = op.files[i].file_id;
      f.bucket = op.files[i].location.bucket;
      f.key = op.files[i].location.key;
      f.size_bytes = op.ingested[i].size_bytes;
      f.digest = op.ingested[i].digest;
      f.extent_bytes = op.ingested[i].extent_bytes;
      f.manifest = op.ingested[i].manifest;
      f.source_etag = op.s3_objects[i].etag;
      f.source_version = op.s3_objects[i].version_id;
      stream->files.push_back(std::move(f));
    }
  }
  op.stream = stream;
  registry_.put(*stream, [this, &op](std::error_code error) {
    if (error) {
      LOG_ERROR("control", "stream %s: the registry write failed: %s", op.id.c_str(),
                error.message().c_str());
      if (error == std::errc::resource_unavailable_try_again) {
        finish(op, api_error(ApiErrorCode::RateLimited, "the registry is busy; retry"));
      } else if (error == std::errc::operation_canceled) {
        finish(op, api_error(ApiErrorCode::ServiceUnavailable, "chunkd is shutting down"));
      } else {
        finish(op, api_error(ApiErrorCode::InternalError,
                             "the registry could not be written: " + error.message()));
      }
      return;
    }
    catalog_.put(op.stream);
    std::vector<std::string> warnings;
    if (auto w = protocol::stream_id_warning(op.id)) warnings.push_back(std::move(*w));
    int status = op.kind == Op::Kind::Create ? 201 : 200;
    finish(op, json_response(status, protocol::create_response(to_info(*op.stream), warnings)));
  });
}

void ControlService::finish(Op& op, io::HttpResponse response) {
  for (auto& f : op.opened) {
    if (f.fd >= 0) ::close(f.fd);
    f.fd = -1;
  }
  if (op.holds_ingest_slot) ingesting_--;
  if (op.kind == Op::Kind::Create) pending_creates_--;
  bool committed = response.status < 300;
  // Blobs are pinned until now: the catalog references them (committed) or nothing will.
  for (const auto& digest : op.pinned) store_.unpin(digest);
  if (committed) {
    std::uint64_t ms = clock_.now_ms() - op.started_ms;
    if (op.kind == Op::Kind::Delete) {
      LOG_INFO("control", "deleted stream %s (%llu ms)", op.id.c_str(),
               static_cast<unsigned long long>(ms));
    } else {
      LOG_INFO("control", "%s stream %s version %llu: %zu files, %llu bytes ingested, %llu ms",
               kind_verb(static_cast<int>(op.kind)), op.id.c_str(),
               static_cast<unsigned long long>(op.stream->version), op.stream->files.size(),
               static_cast<unsigned long long>(op.bytes), static_cast<unsigned long long>(ms));
    }
  }
  bool collect = (committed && op.kind != Op::Kind::Create) || (!committed && !op.pinned.empty());
  Responder respond = std::move(op.respond);
  auto it = ops_.find(op.id);
  CHUNKD_ASSERT(it != ops_.end() && it->second.get() == &op);
  ops_.erase(it);  // `op` is gone from here on
  if (collect) store_.collect_garbage();
  respond(std::move(response));
  close_retired_fds();
  maybe_closed();
}

void ControlService::close(std::function<void()> done) {
  closing_ = true;
  close_done_ = std::move(done);
  s3_->close([this] {
    s3_closed_ = true;
    maybe_closed();
  });
}

void ControlService::maybe_closed() {
  if (!closing_ || !ops_.empty() || !s3_closed_ || !close_done_) return;
  auto done = std::move(close_done_);
  close_done_ = nullptr;
  done();
}

}  // namespace chunkd::engine

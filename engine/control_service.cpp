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
using control_detail::file_field;
using control_detail::json_response;
using control_detail::to_info;

// The answer to a registry write that failed with `error` (`id`: the stream).
io::HttpResponse registry_error(const std::error_code& error, const std::string& id) {
  if (error == std::errc::file_exists) {  // a create another instance committed first
    return api_error(ApiErrorCode::AlreadyExists, "stream " + id + " already exists");
  }
  if (error == io::changed_meanwhile()) {  // an update racing another instance's change
    return api_error(ApiErrorCode::AlreadyExists,
                     "stream " + id +
                         " was changed or deleted by another instance meanwhile; describe it "
                         "and retry");
  }
  if (error == std::errc::device_or_resource_busy) {  // the shared registry's own check
    return api_error(ApiErrorCode::AlreadyExists,
                     "stream " + id +
                         " is delivered by a job that is not finished: cancel or delete the job "
                         "first");
  }
  if (error == std::errc::resource_unavailable_try_again) {
    return api_error(ApiErrorCode::RateLimited, "the registry is busy; retry");
  }
  if (error == std::errc::operation_canceled) {
    return api_error(ApiErrorCode::ServiceUnavailable, "chunkd is shutting down");
  }
  if (error == std::errc::not_connected) {
    return api_error(ApiErrorCode::ServiceUnavailable,
                     "the shared registry is not reachable (reconnecting); retry");
  }
  if (error == std::errc::connection_aborted) {
    return api_error(ApiErrorCode::ServiceUnavailable,
                     "the connection to the shared registry was lost before it answered; the "
                     "change may or may not have been made: describe stream " +
                         id + " before retrying");
  }
  return api_error(ApiErrorCode::InternalError,
                   "the registry could not be written: " + error.message());
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
      if (error != std::errc::device_or_resource_busy) {
        LOG_ERROR("control", "delete of stream %s failed in the registry: %s", ref.id.c_str(),
                  error.message().c_str());
      }
      finish(ref, registry_error(error, ref.id));
      return;
    }
    catalog_.erase(ref.id);
    finish(ref, json_response(200, protocol::delete_response(ref.id)));
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
  auto written = [this, &op](std::error_code error) {
    if (error) {
      if (error != std::errc::file_exists && error != io::changed_meanwhile()) {
        LOG_ERROR("control", "stream %s: the registry write failed: %s", op.id.c_str(),
                  error.message().c_str());
      }
      finish(op, registry_error(error, op.id));
      return;
    }
    catalog_.put(op.stream);
    std::vector<std::string> warnings;
    if (auto w = protocol::stream_id_warning(op.id)) warnings.push_back(std::move(*w));
    int status = op.kind == Op::Kind::Create ? 201 : 200;
    finish(op, json_response(status, protocol::create_response(to_info(*op.stream), warnings)));
  };
  // With a shared registry, a create must not replace a stream another instance created
  // meanwhile, nor an update one another instance changed since this one read it.
  if (op.kind == Op::Kind::Create) {
    registry_.create(*stream, std::move(written));
  } else {
    registry_.update(*stream, {op.previous->version, op.previous->updated_at}, std::move(written));
  }
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

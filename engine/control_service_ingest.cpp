// The control service's ingest steps (engine/control_service.hpp): a create's or update's files
// are opened beneath their bucket directories on the thread pool (or fetched from an S3 bucket),
// ingested into the ContentStore one after the other, checked against a pinned version, and then
// handed to commit(); a failure at any step answers the request through finish().
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "engine/control_service.hpp"
#include "engine/control_service_internal.hpp"
#include "io/log.hpp"
#include "io/safe_open.hpp"
#include "protocol/control.hpp"

namespace chunkd::engine {
namespace {

using control_detail::api_error;
using control_detail::file_field;
using protocol::ApiErrorCode;
using protocol::FieldProblem;

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

}  // namespace

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
    upload_next(op, 0);
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

void ControlService::upload_next(Op& op, std::size_t i) {
  if (content_ != nullptr && i < op.ingested.size()) {
    content_->upload(op.ingested[i], [this, &op, i](std::error_code error, const std::string& why) {
      if (!error) {
        upload_next(op, i + 1);
        return;
      }
      LOG_ERROR("control", "stream %s: %s", op.id.c_str(), why.c_str());
      io::HttpResponse r = api_error(
          ApiErrorCode::ServiceUnavailable,
          "the content could not be written to the shared content bucket: " + why,
          {{file_field(i, "key"), "not stored in content bucket \"" + content_->name() + "\""}});
      r.headers.emplace_back("Retry-After", "5");
      finish(op, std::move(r));
    });
    return;
  }
  if (op.holds_ingest_slot) {
    op.holds_ingest_slot = false;
    ingesting_--;
  }
  commit(op);
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

}  // namespace chunkd::engine

// The HTTP control API of SPEC.md §2: the handler plugged into io::HttpServer.
//
// Routes: POST/GET/PUT/DELETE /streams/{id}, GET /streams (paginated), GET /healthz, GET /metrics;
// HEAD wherever GET; /jobs and /jobs/... handed to the jobs service (set_jobs) once auth passed.
// An unknown path is 404 NOT_FOUND; a known path with another method is 405 METHOD_NOT_ALLOWED with
// an Allow header. Every answer is the envelope of protocol/control.hpp.
//
// Auth: with a token configured, every /streams route needs "Authorization: Bearer <token>"
// (compared in constant time); otherwise 401 UNAUTHORIZED with "WWW-Authenticate: Bearer".
// /healthz (200 once set_ready(true), else 503) and /metrics never need it.
//
// Create/update (Path of a stream, DESIGN.md): validate the body; every s3Location.bucket must be
// configured; every key is opened beneath its bucket directory with io::safe_open on the thread
// pool (an escape, a missing, unreadable or non-regular file is a VALIDATION_ERROR naming
// files[i].s3Location.key); the files are ingested into the ContentStore one after the other; a
// given `version` must equal the digest (else VALIDATION_ERROR naming files[i].s3Location.version,
// the blob being left for GC); then the registry write (fsync'd) and only then the Catalog update
// and the reply: 201 for create, 200 for update. Decisions:
// - while a create, update or delete of an id is in progress, another create, update or delete of
//   the same id is 409 ALREADY_EXISTS (the id is reserved); list shows the last committed state;
//   describe too, plus "status" ("UPDATING") and "progress" while an update ingests its files; a
//   create that is ingesting is described by creating_response (status "CREATING", progress);
// - at most `max_concurrent_ingests` creates/updates with files run at once; more are 429
//   RATE_LIMITED with Retry-After: 1;
// - streams at most `max_streams` (creates in progress count): more is 422 LIMIT_EXCEEDED;
// - stream ids over 44 characters are accepted with a warning in the create/update reply;
// - allowedThings (who may read; Delivery enforces it) is set at create, replaced or removed
//   (null) by an update; an update of allowedThings alone keeps the stream version, so devices
//   still allowed carry on with their downloads;
// - streamArn is "arn:chunkd:stream/<id>";
// - GC of the content store runs after every update and delete;
// - a create is written with RegistryStore::create: when another instance sharing the registry
//   committed the id first, the answer is the same 409 ALREADY_EXISTS as for a local one; an
//   update is written with RegistryStore::update, expecting the version and updatedAt it read:
//   when another instance changed or deleted the stream meanwhile, 409 ALREADY_EXISTS (describe,
//   then retry), so two instances never commit different streams under one version; a shared
//   registry that is not reachable is 503 SERVICE_UNAVAILABLE (retry);
// - a file over storage.max_file_mib is 422 LIMIT_EXCEEDED naming both sizes; a full store
//   (ContentStore's free-space check, ENOSPC, EDQUOT) is 507 STORAGE_FULL with the bytes needed and
//   available; /healthz is 503 "degraded: ..." while storage.data_dir is not writable, and while
//   the shared registry (registry.url) is not connected.
//
// S3 buckets: a key of an S3 bucket is fetched straight into the store (engine/s3_source.hpp),
// hashed as it arrives; its `version` is the object's versionId (not a digest), the stream records
// the versionId and ETag fetched, and a failed fetch answers with s3_fetch_error.
//
// Content bucket (set_content_bucket): after the files are in the store and before the registry
// write, each is written to the shared bucket once (skipped when already there), so another
// instance can serve the stream the moment it appears in a shared registry.
//
// Metrics: chunkd_http_requests_total{route,status} (route "refused": refused by io::HttpServer
// before routing, see count_refused), chunkd_streams, and the ingest and store
// metrics of the ContentStore.
//
// Thread: loop thread only. Call open() before serving; close() before destruction.
#pragma once

#include <uv.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "base/expected.hpp"
#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/content_bucket.hpp"
#include "engine/content_store.hpp"
#include "engine/jobs_http.hpp"
#include "engine/metrics.hpp"
#include "engine/s3_bucket.hpp"
#include "engine/s3_source.hpp"
#include "engine/stream_health.hpp"
#include "io/http_server.hpp"
#include "io/registry_store.hpp"
#include "protocol/control.hpp"

namespace chunkd::engine {

struct ControlOptions {
  std::map<std::string, std::string> buckets;  // s3Location.bucket → directory
  std::map<std::string, S3Bucket> s3_buckets;  // s3Location.bucket → an S3 bucket
  std::string token;                           // empty: no auth
  std::size_t max_streams = 10000;
  std::size_t max_concurrent_ingests = 2;
};

class ControlService {
 public:
  // `health` (may be null) supplies describe's "health" (engine/stream_health.hpp).
  ControlService(uv_loop_t* loop, Catalog& catalog, io::RegistryStore& registry,
                 ContentStore& store, Metrics& metrics, const Clock& clock, ControlOptions options,
                 const StreamHealth* health = nullptr);
  ~ControlService();
  ControlService(const ControlService&) = delete;
  ControlService& operator=(const ControlService&) = delete;

  // Opens every bucket directory. Start-up only; the error's detail names the bucket.
  Expected<void> open();

  // A reload. The token every later request is checked against ("" turns auth off).
  void set_token(std::string token) { options_.token = std::move(token); }
  // A reload: opens the directories of buckets added (or moved to another directory) and closes
  // those of buckets removed. All or nothing: when a directory cannot be opened, nothing changes
  // and the error's detail names the bucket. Requests already in progress keep the directories
  // they started with (a removed bucket's descriptor is closed once no operation is in progress);
  // streams already created keep working, their content being in the store.
  Expected<void> set_buckets(const std::map<std::string, std::string>& buckets);
  // A reload: the S3 buckets (engine/s3_bucket.hpp) later requests use; fetches in progress keep
  // the settings they started with.
  void set_s3_buckets(std::map<std::string, S3Bucket> buckets) {
    options_.s3_buckets = std::move(buckets);
  }

  // The io::HttpServer handler. Answers every request exactly once.
  void handle(io::HttpRequest&& request, io::HttpServer::Responder respond);
  // The io::HttpServer Authorize hook: the 401 of a route needing the token, decided on the head
  // alone (before any body byte is buffered), or nullopt. Counted like handle()'s answers.
  std::optional<io::HttpResponse> authorize(const io::HttpRequest& head);

  // The jobs routes (/jobs, /jobs/...: 404 while unset) and the check that a stream an unfinished
  // job delivers is not deleted (409). `jobs` outlives this service or is reset to null first.
  void set_jobs(JobsHttp* jobs) { jobs_ = jobs; }

  // The shared content bucket (engine/content_bucket.hpp): with one, every file a create or update
  // ingests is written there before the registry write, and a failed upload fails the request
  // with 503 SERVICE_UNAVAILABLE naming the bucket (nothing committed). `bucket` outlives this
  // service or is reset to null first.
  void set_content_bucket(ContentBucket* bucket) { content_ = bucket; }

  // /healthz answers 200 while ready (the MQTT pool connected and subscribed).
  void set_ready(bool ready) { ready_ = ready; }

  // The error envelope for the responses io::HttpServer makes itself.
  static std::string error_body(int status, std::string_view message);
  // io::HttpServer's RefusedObserver: a request refused before routing (malformed, too large, too
  // slow, ...) is counted in chunkd_http_requests_total{route="refused",status}.
  void count_refused(int status) { count_request("refused", status); }

  std::size_t operations_in_progress() const;

  // New requests get 503; waits for the operations in progress (ingests fail fast once the
  // ContentStore closes), then calls `done`.
  void close(std::function<void()> done);

 private:
  struct Op;
  void create(std::string id, const io::HttpRequest& request, io::HttpServer::Responder& respond);
  void update(std::string id, const io::HttpRequest& request, io::HttpServer::Responder& respond);
  // The VALIDATION_ERROR for files naming an unconfigured bucket, if any does.
  std::optional<io::HttpResponse> unknown_bucket_error(
      const std::vector<protocol::StreamFileSpec>& files) const;
  // The 429 for a create/update arriving while every ingest slot is taken.
  io::HttpResponse ingests_busy_error() const;
  void remove(std::string id, io::HttpServer::Responder& respond);
  void describe(std::string_view id, io::HttpServer::Responder& respond);
  // The progress of a create or update of `id` that is ingesting files, or nullopt.
  std::optional<protocol::IngestProgressInfo> progress_of(std::string_view id) const;
  void list(const io::HttpRequest& request, io::HttpServer::Responder& respond);
  void health(io::HttpServer::Responder& respond);
  void metrics_page(io::HttpServer::Responder& respond);

  // The route table (control_service_routes.cpp): the route serving `method` on a resource, or
  // nullptr.
  struct Route;
  static const Route* find_route(int resource, std::string_view method);
  // chunkd_http_requests_total{route,status} += 1.
  void count_request(std::string_view route, int status);
  // True when no token is configured or the request carries it.
  bool authorized(const io::HttpRequest& request) const;
  static io::HttpResponse unauthorized(const io::HttpRequest& request);

  void open_files(Op& op);
  void ingest_next(Op& op);
  // The answer to a failed ingest of files[i] (`seen`: the sizes the store reported).
  io::HttpResponse ingest_error(const std::string& id, const protocol::StreamFileSpec& spec,
                                std::size_t i, const std::error_code& error,
                                const IngestResult& seen) const;
  // Fetches files[i] of an S3 bucket straight into the store (engine/s3_source.hpp).
  void fetch_s3(Op& op, std::size_t i);
  // Writes files[i..] to the content bucket, then commits.
  void upload_next(Op& op, std::size_t i);
  // files[i] is in the store (pinned): on to the next file.
  void ingested(Op& op, IngestResult result);
  void commit(Op& op);
  void finish(Op& op, io::HttpResponse response);
  void maybe_closed();
  void close_retired_fds();

  uv_loop_t* loop_;
  Catalog& catalog_;
  io::RegistryStore& registry_;
  ContentStore& store_;
  Metrics& metrics_;
  const Clock& clock_;
  ControlOptions options_;
  const StreamHealth* health_;
  JobsHttp* jobs_ = nullptr;
  ContentBucket* content_ = nullptr;
  std::map<std::string, int, std::less<>> bucket_fds_;
  std::unique_ptr<S3Source> s3_;
  bool s3_closed_ = false;
  std::vector<int> retired_fds_;  // removed buckets' directories, closed when ops_ is empty

  std::map<std::string, std::unique_ptr<Op>, std::less<>> ops_;  // by stream id: reservations
  std::size_t ingesting_ = 0;                                    // ops holding an ingest slot
  std::size_t pending_creates_ = 0;                              // creates not yet committed
  bool ready_ = false;
  bool closing_ = false;
  std::function<void()> close_done_;
};

}  // namespace chunkd::engine

// JobService: the jobs API of docs/jobs.md, over MQTT for devices (their OTA agents) and over HTTP
// for operators, with the policy of engine/job_book.hpp and the durability of
// engine/job_writer.hpp.
//
// Path of a device request (on_message): the topic (protocol/jobs_topic.hpp) → the per-thing rate
// (RequestThrottled beyond jobs.thing_requests_per_s for get, describe and start-next; updates are
// refused only while the writer is full, since an agent never reads update/rejected) → the thing is
// seen (pattern targets match it) → the payload (protocol/jobs_request.hpp) → the decision
// (protocol/jobs_update.hpp) applied to the book → the reply encoded at once
// (protocol/jobs_reply.hpp) → sent, with notify-next and notify to every thing whose next pending
// execution changed, once the writer says the change is durable.
//
// The OTA agent never subscribes to $next/get/accepted: DescribeJobExecution of $next is also
// answered on notify-next (the same execution, or none).
//
// A reply the transport refuses (backpressure, no connection) is dropped and counted; a refused
// notify-next is owed and sent again (with the state of then) on the next tick, since an agent
// waits for it and never asks again.
//
// A tick each second: rollout releases, in-progress time-outs, owed notifications.
//
// Metrics: chunkd_jobs{status}, chunkd_job_executions{status}, chunkd_jobs_requests_total{api,
// result}, chunkd_jobs_released_total, chunkd_jobs_aborted_total, chunkd_jobs_timed_out_total,
// chunkd_jobs_notifications_total{result}, and the writer's.
//
// Thread: loop thread only. open() before serving, close() before destruction.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/job_book.hpp"
#include "engine/job_options.hpp"
#include "engine/job_writer.hpp"
#include "engine/jobs_http.hpp"
#include "engine/metrics.hpp"
#include "engine/token_bucket.hpp"
#include "engine/transport.hpp"
#include "protocol/job_control.hpp"
#include "protocol/jobs_request.hpp"
#include "protocol/jobs_topic.hpp"

namespace chunkd::engine {

// Whether `topic` is under <prefix>/<thing>/jobs (a request for the jobs service, valid or not).
bool is_jobs_topic(std::string_view prefix, std::string_view topic);

class JobService final : public JobsHttp {
 public:
  // `store` writes a batch (engine/job_writer.hpp). The catalog gives OTA jobs their file sizes.
  JobService(uv_loop_t* loop, const Catalog& catalog, Transport& transport, JobWriter::Store store,
             Metrics& metrics, const Clock& clock, JobOptions options);
  ~JobService() override;
  JobService(const JobService&) = delete;
  JobService& operator=(const JobService&) = delete;

  // The jobs and the things remembered, as stored; starts the tick and the gauges.
  void open(std::vector<Job> stored, std::vector<std::string> things);

  // A device message. False when `topic` is not under <prefix>/<thing>/jobs/ (the caller hands
  // it to the stream delivery); true when it was handled (answered, rejected or dropped). `tag` is
  // finished (Transport::finished) once its reply was handed to the transport — after the change
  // it shows is durable — or at once when it is dropped; never when the service closes first (an
  // acknowledging transport then hands the request to whoever serves jobs next).
  bool on_message(std::string_view topic, std::span<const std::byte> payload,
                  Transport::RequestTag tag = Transport::kNoRequestTag);

  void serve(const io::HttpRequest& request, io::HttpServer::Responder respond) override;
  std::optional<std::string> job_using_stream(std::string_view stream_id) const override;

  const JobBook& book() const { return book_; }

  // Stops the tick, waits for the writer (bounded by `timeout_ms`), then `done`.
  void close(std::uint64_t timeout_ms, std::function<void()> done);

 private:
  // Replies and notifications, encoded when decided, sent once what they show is durable.
  struct Outgoing {
    struct Message {
      std::string thing;
      std::string topic;
      std::string payload;
      bool notify_next = false;  // owed again when refused
    };
    std::vector<Message> messages;
    std::set<std::string> notified;  // things whose notify-next is in `messages`
    Transport::RequestTag tag = Transport::kNoRequestTag;  // finished once `messages` are sent
    void add(std::string thing, std::string topic, std::string payload, bool notify_next = false) {
      messages.push_back({std::move(thing), std::move(topic), std::move(payload), notify_next});
    }
  };

  void device_request(const protocol::ParsedJobsTopic& t, std::string_view topic,
                      std::span<const std::byte> payload, Transport::RequestTag tag);
  void finish(Transport::RequestTag tag);
  bool throttled(std::string_view thing);
  JobChanges get_pending(const protocol::ParsedJobsTopic& t, std::span<const std::byte> payload,
                         Outgoing& out);
  JobChanges describe(const protocol::ParsedJobsTopic& t, std::span<const std::byte> payload,
                      Outgoing& out);
  JobChanges start_next(const protocol::ParsedJobsTopic& t, std::span<const std::byte> payload,
                        Outgoing& out);
  JobChanges update(const protocol::ParsedJobsTopic& t, std::span<const std::byte> payload,
                    Outgoing& out);
  void reject(const protocol::ParsedJobsTopic& t, protocol::JobsErrorCode code, std::string message,
              const std::optional<std::string>& client_token, const protocol::JobExecution* state,
              Outgoing& out);
  // notify-next and notify for each thing of `changes`, encoded now, into `out`.
  void add_notifications(const JobChanges& changes, Outgoing& out);
  void add_notify_next(const std::string& thing, Outgoing& out);
  // Records `changes`; once they are durable sends `out`, then runs `then` (an HTTP answer).
  void commit(JobChanges changes, Outgoing out, std::function<void()> then = {});
  void send(Outgoing& out);  // queued for flush(), on the next loop iteration
  void flush();
  void tick();
  void count(std::string_view api, std::string_view result);
  void register_metrics();
  void register_gauges();
  void drop_gauges();
  std::optional<std::string_view> document_of(const protocol::JobExecution& e) const;
  std::int64_t unix_ms() const { return clock_.unix_ms(); }

  // HTTP (engine/job_service_http.cpp).
  using Responder = io::HttpServer::Responder;
  void create_job(std::string id, const io::HttpRequest& request, Responder& respond);
  void describe_job(std::string_view id, Responder& respond);
  void list_jobs(const io::HttpRequest& request, Responder& respond);
  void list_executions(std::string_view id, const io::HttpRequest& request, Responder& respond);
  void cancel_job(std::string id, const io::HttpRequest& request, Responder& respond);
  void delete_job(std::string id, const io::HttpRequest& request, Responder& respond);
  Expected<std::string, protocol::ApiError> document_for(const protocol::JobSpec& spec) const;

  uv_loop_t* loop_;
  const Catalog& catalog_;
  Transport& transport_;
  Metrics& metrics_;
  const Clock& clock_;
  JobOptions options_;
  protocol::JobsTopicCodec topics_;
  JobBook book_;
  JobWriter writer_;
  RateLimit rate_;
  std::map<std::string, RateLimit::Bucket, std::less<>> buckets_;  // per thing, idle ones evicted
  std::set<std::string, std::less<>> owed_notify_;                 // refused notify-next
  std::set<std::string, std::less<>> creating_;  // created, not durable yet: a second is 409
  uv_timer_t* tick_ = nullptr;                   // freed by its close callback
  uv_idle_t* flush_ = nullptr;  // runs flush() while outbox_ has messages; freed likewise
  std::vector<Outgoing::Message> outbox_;
  std::vector<Transport::RequestTag> finishing_;  // finished by flush(), after outbox_ is sent
  bool closing_ = false;
  Counter* released_ = nullptr;
  Counter* aborted_ = nullptr;
  Counter* timed_out_ = nullptr;
};

}  // namespace chunkd::engine

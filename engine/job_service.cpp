#include "engine/job_service.hpp"

#include <utility>

#include "base/assert.hpp"
#include "io/log.hpp"
#include "protocol/jobs_reply.hpp"
#include "protocol/jobs_request.hpp"
#include "protocol/jobs_update.hpp"

namespace chunkd::engine {
namespace {

using protocol::JobExecution;
using protocol::JobsApi;
using protocol::JobsErrorCode;
using protocol::ParsedJobsTopic;

constexpr std::uint64_t kTickMs = 1000;
constexpr std::uint64_t kIdleBucketMs = 60'000;
constexpr std::size_t kMaxWaitingAnswers = 10'000;

std::string_view api_name(JobsApi api) {
  switch (api) {
    case JobsApi::GetPending:
      return "get_pending";
    case JobsApi::StartNext:
      return "start_next";
    case JobsApi::Describe:
      return "describe";
    case JobsApi::Update:
      return "update";
  }
  return "other";
}

std::string result_name(JobsErrorCode code) {
  std::string name(protocol::to_string(code));
  return name;
}

}  // namespace

bool is_jobs_topic(std::string_view prefix, std::string_view topic) {
  if (topic.size() <= prefix.size() + 1 || topic.compare(0, prefix.size(), prefix) != 0 ||
      topic[prefix.size()] != '/') {
    return false;
  }
  std::string_view rest = topic.substr(prefix.size() + 1);
  std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos || rest.substr(slash + 1).rfind("jobs", 0) != 0) {
    return false;
  }
  std::string_view after = rest.substr(slash + 1 + 4);
  return after.empty() || after.front() == '/';  // "jobsX": not a jobs topic
}

JobService::JobService(uv_loop_t* loop, const Catalog& catalog, Transport& transport,
                       JobWriter::Store store, Metrics& metrics, const Clock& clock,
                       JobOptions options)
    : loop_(loop),
      catalog_(catalog),
      transport_(transport),
      metrics_(metrics),
      clock_(clock),
      options_(std::move(options)),
      topics_(options_.topic_prefix),
      writer_(loop, book_, std::move(store), kMaxWaitingAnswers, &metrics),
      rate_(options_.thing_requests_per_s) {
  register_metrics();
}

JobService::~JobService() { CHUNKD_ASSERT(tick_ == nullptr && flush_ == nullptr); }

void JobService::open(std::vector<Job> stored, std::vector<std::string> things) {
  for (std::string& thing : things) book_.remember(std::move(thing));
  for (Job& job : stored) book_.restore(std::move(job), clock_.now_ms(), unix_ms());
  LOG_INFO("jobs", "%zu jobs with %llu executions loaded, %zu things known", book_.jobs(),
           static_cast<unsigned long long>(book_.executions()), book_.known_things());
  register_gauges();
  flush_ = new uv_idle_t;
  uv_idle_init(loop_, flush_);
  flush_->data = this;
  tick_ = new uv_timer_t;
  uv_timer_init(loop_, tick_);
  tick_->data = this;
  uv_timer_start(
      tick_, [](uv_timer_t* t) { static_cast<JobService*>(t->data)->tick(); }, kTickMs, kTickMs);
}

bool JobService::on_message(std::string_view topic, std::span<const std::byte> payload,
                            Transport::RequestTag tag) {
  if (!is_jobs_topic(topics_.prefix(), topic)) return false;
  ParsedJobsTopic t = topics_.parse(topic);
  if (closing_) {
    count("other", "dropped");  // not finished: whoever serves jobs next answers it
    return true;
  }
  if (t.status == ParsedJobsTopic::Status::Drop) {
    count("other", "dropped");
    finish(tag);
    return true;
  }
  device_request(t, topic, payload, tag);
  return true;
}

void JobService::finish(Transport::RequestTag tag) {
  if (tag != Transport::kNoRequestTag) transport_.finished(tag);
}

bool JobService::throttled(std::string_view thing) {
  if (writer_.full()) return true;
  if (!rate_.on()) return false;
  std::uint64_t now = clock_.now_ms();
  auto it = buckets_.find(thing);
  if (it == buckets_.end()) it = buckets_.emplace(std::string(thing), rate_.full(now)).first;
  rate_.refill(it->second, now);
  if (it->second.tokens < 1.0) return true;
  it->second.tokens -= 1.0;
  return false;
}

void JobService::device_request(const ParsedJobsTopic& t, std::string_view topic,
                                std::span<const std::byte> payload, Transport::RequestTag tag) {
  Outgoing out;
  out.tag = tag;
  if (t.status == ParsedJobsTopic::Status::InvalidTopic) {
    std::string reply_topic;
    protocol::JobsTopicCodec::invalid_topic_reply(reply_topic, topic);
    std::string body;
    protocol::encode_jobs_rejected(body, JobsErrorCode::InvalidTopic, "no jobs API has this topic",
                                   std::nullopt, unix_ms());
    out.add(std::string(t.thing), std::move(reply_topic), std::move(body));
    count("other", "InvalidTopic");
    send(out);
    return;
  }
  // An update is never refused for its rate: an agent never reads update/rejected, so a lost
  // self-test or outcome report would strand its execution. The writer's bound still holds.
  if (t.api == JobsApi::Update ? writer_.full() : throttled(t.thing)) {
    reject(t, JobsErrorCode::RequestThrottled,
           "too many jobs requests from this thing (jobs.thing_requests_per_s)", std::nullopt,
           nullptr, out);
    send(out);
    return;
  }
  JobChanges seen;
  // Things known and executions are both bounded by jobs.max_executions.
  if (!book_.known(t.thing) && book_.known_things() < options_.max_executions &&
      book_.executions() < options_.max_executions) {
    seen = book_.thing_seen(t.thing, clock_.now_ms(), unix_ms());
  }
  JobChanges changes;
  switch (t.api) {
    case JobsApi::GetPending:
      changes = get_pending(t, payload, out);
      break;
    case JobsApi::Describe:
      changes = describe(t, payload, out);
      break;
    case JobsApi::StartNext:
      changes = start_next(t, payload, out);
      break;
    case JobsApi::Update:
      changes = update(t, payload, out);
      break;
  }
  changes.merge(std::move(seen));
  add_notifications(changes, out);
  commit(std::move(changes), std::move(out));
}

JobChanges JobService::get_pending(const ParsedJobsTopic& t, std::span<const std::byte> payload,
                                   Outgoing& out) {
  auto request = protocol::decode_jobs_get_pending(payload);
  if (!request) {
    reject(t, request.error().code, request.error().message, request.error().client_token, nullptr,
           out);
    return {};
  }
  std::vector<JobExecution> pending;
  for (const JobExecution* e : book_.pending(t.thing)) pending.push_back(*e);
  std::string topic;
  std::string body;
  topics_.reply_topic(topic, t.thing, t.api, t.job_id, protocol::JobsReplyKind::Accepted);
  protocol::encode_get_pending_accepted(body, request->client_token, unix_ms(), pending);
  out.add(std::string(t.thing), std::move(topic), std::move(body));
  count(api_name(t.api), "accepted");
  return {};
}

JobChanges JobService::describe(const ParsedJobsTopic& t, std::span<const std::byte> payload,
                                Outgoing& out) {
  auto request = protocol::decode_jobs_describe(payload);
  if (!request) {
    reject(t, request.error().code, request.error().message, request.error().client_token, nullptr,
           out);
    return {};
  }
  const JobExecution* e =
      t.next() ? book_.next_pending(t.thing) : book_.execution(t.thing, t.job_id);
  if (!t.next()) {
    if (e == nullptr) {
      reject(t, JobsErrorCode::ResourceNotFound,
             "no execution of job " + std::string(t.job_id) + " for this thing",
             request->client_token, nullptr, out);
      return {};
    }
    if (auto rejection = protocol::check_describe(*e, *request)) {
      reject(t, rejection->code, rejection->message, request->client_token, nullptr, out);
      return {};
    }
  }
  std::string topic;
  std::string body;
  topics_.reply_topic(topic, t.thing, t.api, t.job_id, protocol::JobsReplyKind::Accepted);
  protocol::encode_execution_accepted(
      body, request->client_token, unix_ms(), e,
      e != nullptr && request->include_job_document ? document_of(*e) : std::nullopt);
  out.add(std::string(t.thing), std::move(topic), std::move(body));
  // OTA agents listen on notify-next only: $next is answered there too.
  if (t.next()) add_notify_next(std::string(t.thing), out);
  count(api_name(t.api), "accepted");
  return {};
}

JobChanges JobService::start_next(const ParsedJobsTopic& t, std::span<const std::byte> payload,
                                  Outgoing& out) {
  auto request = protocol::decode_jobs_start_next(payload);
  if (!request) {
    reject(t, request.error().code, request.error().message, request.error().client_token, nullptr,
           out);
    return {};
  }
  auto outcome = protocol::decide_start_next(book_.next_pending(t.thing), *request, unix_ms());
  JobChanges changes;
  if (outcome.changed) changes = book_.update(*outcome.execution, unix_ms());
  const JobExecution* e = outcome.execution ? &*outcome.execution : nullptr;
  std::string topic;
  std::string body;
  topics_.reply_topic(topic, t.thing, t.api, t.job_id, protocol::JobsReplyKind::Accepted);
  protocol::encode_execution_accepted(body, request->client_token, unix_ms(), e,
                                      e != nullptr ? document_of(*e) : std::nullopt);
  out.add(std::string(t.thing), std::move(topic), std::move(body));
  count(api_name(t.api), "accepted");
  return changes;
}

JobChanges JobService::update(const ParsedJobsTopic& t, std::span<const std::byte> payload,
                              Outgoing& out) {
  auto request = protocol::decode_jobs_update(payload);
  if (!request) {
    reject(t, request.error().code, request.error().message, request.error().client_token, nullptr,
           out);
    return {};
  }
  const JobExecution* current = book_.execution(t.thing, t.job_id);
  if (current == nullptr) {
    reject(t, JobsErrorCode::ResourceNotFound,
           "no execution of job " + std::string(t.job_id) + " for this thing",
           request->client_token, nullptr, out);
    return {};
  }
  auto outcome = protocol::decide_update(*current, *request, unix_ms());
  if (!outcome) {
    reject(t, outcome.error().code, outcome.error().message, request->client_token, current, out);
    return {};
  }
  JobChanges changes = book_.update(outcome->execution, unix_ms());
  const JobExecution* updated = book_.execution(t.thing, t.job_id);
  std::string topic;
  std::string body;
  topics_.reply_topic(topic, t.thing, t.api, t.job_id, protocol::JobsReplyKind::Accepted);
  protocol::encode_update_accepted(
      body, request->client_token, unix_ms(),
      request->include_job_execution_state ? updated : nullptr,
      request->include_job_document ? document_of(*updated) : std::nullopt);
  out.add(std::string(t.thing), std::move(topic), std::move(body));
  count(api_name(t.api), "accepted");
  return changes;
}

void JobService::reject(const ParsedJobsTopic& t, JobsErrorCode code, std::string message,
                        const std::optional<std::string>& client_token, const JobExecution* state,
                        Outgoing& out) {
  std::string topic;
  std::string body;
  topics_.reply_topic(topic, t.thing, t.api, t.job_id, protocol::JobsReplyKind::Rejected);
  protocol::encode_jobs_rejected(body, code, message, client_token, unix_ms(), state);
  out.add(std::string(t.thing), std::move(topic), std::move(body));
  count(api_name(t.api), result_name(code));
}

void JobService::add_notifications(const JobChanges& changes, Outgoing& out) {
  for (const std::string& thing : changes.notify_next) {
    if (out.notified.count(thing) == 0) add_notify_next(thing, out);
  }
}

void JobService::add_notify_next(const std::string& thing, Outgoing& out) {
  out.notified.insert(thing);
  const JobExecution* next = book_.next_pending(thing);
  std::string topic;
  std::string body;
  topics_.notify_next_topic(topic, thing);
  protocol::encode_notify_next(body, unix_ms(), next,
                               next != nullptr ? document_of(*next) : std::nullopt);
  out.add(thing, std::move(topic), std::move(body), true);
  std::vector<JobExecution> pending;
  for (const JobExecution* e : book_.pending(thing)) pending.push_back(*e);
  topics_.notify_topic(topic, thing);
  body.clear();
  protocol::encode_notify(body, unix_ms(), pending);
  out.add(thing, std::move(topic), std::move(body));
}

void JobService::commit(JobChanges changes, Outgoing out, std::function<void()> then) {
  released_->inc(changes.released);
  timed_out_->inc(changes.timed_out);
  for (const std::string& id : changes.aborted) {
    aborted_->inc();
    const Job* job = book_.job(id);
    LOG_WARN("jobs", "job %s aborted: %s", id.c_str(), job ? job->comment.c_str() : "");
  }
  writer_.record(std::move(changes),
                 [this, out = std::move(out), then = std::move(then)]() mutable {
                   send(out);
                   if (then) then();
                 });
}

void JobService::send(Outgoing& out) {
  // Never from inside the transport's message callback (libmosquitto holds its own locks there):
  // the next loop iteration sends them.
  for (auto& m : out.messages) outbox_.push_back(std::move(m));
  out.messages.clear();
  if (out.tag != Transport::kNoRequestTag) finishing_.push_back(std::exchange(out.tag, {}));
  if (flush_ != nullptr && !uv_is_active(reinterpret_cast<uv_handle_t*>(flush_))) {
    uv_idle_start(flush_, [](uv_idle_t* h) { static_cast<JobService*>(h->data)->flush(); });
  }
}

void JobService::flush() {
  if (flush_ != nullptr) uv_idle_stop(flush_);
  auto messages = std::move(outbox_);
  outbox_.clear();
  auto tags = std::move(finishing_);
  finishing_.clear();
  for (auto& m : messages) {
    auto bytes = std::as_bytes(std::span(m.payload.data(), m.payload.size()));
    Transport::SendResult r = transport_.send(m.thing, m.topic, bytes, options_.qos);
    const bool ok = r == Transport::SendResult::Ok;
    if (!ok && m.notify_next && !closing_) owed_notify_.insert(m.thing);
    metrics_
        .counter("chunkd_jobs_messages_total",
                 "Jobs replies and notifications handed to the transport, or refused by it.",
                 ok ? "result=\"sent\"" : "result=\"refused\"")
        .inc();
  }
  for (Transport::RequestTag tag : tags) finish(tag);  // after the replies they wait for
}

void JobService::tick() {
  std::uint64_t now = clock_.now_ms();
  JobChanges changes = book_.tick(now, unix_ms());
  Outgoing out;
  auto owed = std::move(owed_notify_);
  owed_notify_.clear();
  for (const std::string& thing : owed) add_notify_next(thing, out);
  add_notifications(changes, out);
  if (!changes.empty() || !out.messages.empty()) commit(std::move(changes), std::move(out));
  std::erase_if(buckets_, [&](const auto& kv) {
    return now - kv.second.last_ms > kIdleBucketMs;  // full again long ago: a fresh one is equal
  });
}

void JobService::count(std::string_view api, std::string_view result) {
  metrics_
      .counter("chunkd_jobs_requests_total", "Jobs requests from devices, by API and result.",
               "api=\"" + std::string(api) + "\",result=\"" + std::string(result) + "\"")
      .inc();
}

namespace {
constexpr protocol::JobStatus kJobStatuses[] = {
    protocol::JobStatus::InProgress, protocol::JobStatus::Canceled, protocol::JobStatus::Completed};
template <typename Status>
std::string status_label(Status status) {
  return "status=\"" + std::string(protocol::to_string(status)) + "\"";
}
}  // namespace

// The counters now; the gauges, which read the book, from open() to close().
void JobService::register_metrics() {
  released_ = &metrics_.counter("chunkd_jobs_released_total",
                                "Executions released to things by the rollout.");
  aborted_ = &metrics_.counter("chunkd_jobs_aborted_total", "Jobs canceled by abort criteria.");
  timed_out_ =
      &metrics_.counter("chunkd_jobs_timed_out_total", "Executions timed out in progress.");
}

void JobService::register_gauges() {
  for (std::size_t i = 0; i < protocol::kExecutionStatusCount; ++i) {
    metrics_.gauge_fn("chunkd_job_executions", "Job executions, by status.",
                      status_label(static_cast<protocol::ExecutionStatus>(i)),
                      [this, i] { return static_cast<double>(book_.counts()[i]); });
  }
  for (auto status : kJobStatuses) {
    metrics_.gauge_fn("chunkd_jobs", "Jobs, by status.", status_label(status),
                      [this, status] { return static_cast<double>(book_.jobs_in(status)); });
  }
}

// Gone once the service closes (a cluster instance that lost the jobs lease has no book, and the
// holder's gauges count the jobs; the next service of this instance registers its own).
void JobService::drop_gauges() {
  for (std::size_t i = 0; i < protocol::kExecutionStatusCount; ++i) {
    metrics_.drop_fn("chunkd_job_executions",
                     status_label(static_cast<protocol::ExecutionStatus>(i)));
  }
  for (auto status : kJobStatuses) metrics_.drop_fn("chunkd_jobs", status_label(status));
}

std::optional<std::string_view> JobService::document_of(const JobExecution& e) const {
  const Job* job = book_.job(e.job_id);
  if (job == nullptr) return std::nullopt;
  return std::string_view(job->plan.document);
}

std::optional<std::string> JobService::job_using_stream(std::string_view stream_id) const {
  return book_.job_using_stream(stream_id);
}

void JobService::close(std::uint64_t timeout_ms, std::function<void()> done) {
  if (!closing_ && tick_ != nullptr) drop_gauges();
  closing_ = true;
  if (tick_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(tick_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    tick_ = nullptr;
  }
  writer_.close(timeout_ms, [this, done = std::move(done)] {
    flush();  // what the last writes answered
    if (flush_ != nullptr) {
      uv_close(reinterpret_cast<uv_handle_t*>(flush_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
      flush_ = nullptr;
    }
    done();
  });
}

}  // namespace chunkd::engine

#include "tools/chunkload/ota_device.hpp"

#include <utility>

#include "protocol/request.hpp"

namespace chunkd::chunkload {
namespace {

using protocol::ExecutionStatus;

std::span<const std::byte> as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

Outgoing publish(std::string topic, std::string_view payload) {
  Outgoing o;
  o.payload.assign(as_bytes(payload).begin(), as_bytes(payload).end());
  o.topic = std::move(topic);
  o.qos = 1;
  return o;
}

Outgoing subscription(Action action, std::string topic, int qos) {
  Outgoing o;
  o.action = action;
  o.topic = std::move(topic);
  o.qos = qos;
  return o;
}

}  // namespace

bool simulated_failure(std::uint32_t index, std::uint32_t percent) {
  const std::uint64_t i = index;
  return (i + 1) * percent / 100 > i * percent / 100;
}

std::string_view to_string(OtaOutcome o) {
  switch (o) {
    case OtaOutcome::None:
      return "none";
    case OtaOutcome::Succeeded:
      return "succeeded";
    case OtaOutcome::Failed:
      return "failed";
    case OtaOutcome::Rejected:
      return "rejected";
    case OtaOutcome::TimedOut:
      return "timed_out";
    case OtaOutcome::Error:
      return "error";
  }
  return "none";
}

OtaDevice::OtaDevice(const OtaConfig& config, Device& download, std::string thing,
                     std::uint32_t index)
    : config_(config),
      download_(download),
      thing_(std::move(thing)),
      simulated_failure_(simulated_failure(index, config.fail_percent)),
      notify_topic_(config.topic_prefix + "/" + thing_ + "/jobs/notify-next") {}

OtaDevice::~OtaDevice() = default;

void OtaDevice::send_next_get(Outbox& out) {
  out.push_back(publish(config_.topic_prefix + "/" + thing_ + "/jobs/$next/get",
                        next_get_payload(++next_get_count_, thing_)));
}

void OtaDevice::send_update(ExecutionStatus status, protocol::StatusDetails details, Outbox& out) {
  out.push_back(publish(update_topic_, update_payload(status, details)));
  ++stats_.updates;
}

void OtaDevice::start(TimePoint now, Outbox& out) {
  if (phase_ != Phase::Idle) return;
  stats_.started = now;
  phase_ = Phase::WaitingJob;
  send_next_get(out);
}

bool OtaDevice::on_message(std::string_view topic, std::span<const std::byte> payload,
                           TimePoint now, Outbox& out) {
  if (topic == notify_topic_) {
    ++stats_.notifies;
    if (!terminal()) on_notify(payload, now, out);
    return true;
  }
  if (data_topic_.empty() || topic != data_topic_) return false;
  if (phase_ == Phase::Downloading) {
    download_.on_data(payload, now, download_out_);
    forward(download_out_, out);
    after_download_step(now, out);
  }
  return true;
}

void OtaDevice::on_notify(std::span<const std::byte> payload, TimePoint now, Outbox& out) {
  auto parsed = parse_notify_next(
      std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
  if (!parsed) {
    ++stats_.bad_notifies;
    return;
  }
  std::optional<NotifiedExecution>& execution = *parsed;
  switch (phase_) {
    case Phase::WaitingJob:
      if (execution) accept_job(std::move(*execution), now, out);  // else: nothing to do yet
      return;
    case Phase::Subscribing:
    case Phase::Downloading:
      // The same job again is no news; no execution at all means it went away.
      if (!execution) stop(OtaOutcome::Error, "the job went away during the download", now);
      return;
    case Phase::SelfTest:
      confirm_self_test(execution, now, out);
      return;
    default:
      return;  // rebooting: a device that is off hears nothing
  }
}

void OtaDevice::accept_job(NotifiedExecution execution, TimePoint now, Outbox& out) {
  stats_.job_id = execution.job_id;
  update_topic_ = config_.topic_prefix + "/" + thing_ + "/jobs/" + execution.job_id + "/update";
  if (!execution.document) {
    report(OtaOutcome::Rejected, ExecutionStatus::Rejected,
           "job document: " + execution.document_error, now, out);
    return;
  }
  stats_.job = now;
  job_ = std::move(*execution.document);
  protocol::TopicCodec topics(config_.topic_prefix);
  topics.reply_topic(data_topic_, thing_, job_->stream, protocol::ReplyKind::Data, config_.format);
  topics.request_topic(get_topic_, thing_, job_->stream, protocol::Verb::Get, config_.format);
  total_blocks_ = protocol::block_count(job_->file.filesize, config_.block_size_bytes);
  next_progress_ = config_.progress_every_blocks;
  phase_ = Phase::Subscribing;
  out.push_back(subscription(Action::Subscribe, data_topic_, config_.data_qos));
}

void OtaDevice::on_subscribed(bool granted, TimePoint now, Outbox& out) {
  if (terminal()) return;
  if (!granted) {
    stop(OtaOutcome::Error, "the broker refused a subscription", now);
    return;
  }
  if (phase_ == Phase::Subscribing) {
    check_ = std::make_unique<SignatureCheck>(*config_.key);
    phase_ = Phase::Downloading;
    download_.start_file(job_->file.fileid, job_->file.filesize, this, now, download_out_);
    forward(download_out_, out);
    after_download_step(now, out);
  } else if (phase_ == Phase::Resubscribing) {
    phase_ = Phase::SelfTest;
    phase_deadline_ = now + config_.self_test_window;
    send_next_get(out);
  }
}

void OtaDevice::consume(std::span<const std::byte> bytes) {
  if (check_) check_->update(bytes);
}

void OtaDevice::forward(Outbox& download_out, Outbox& out) {
  for (Outgoing& o : download_out) {
    o.topic = o.verb == protocol::Verb::Get ? get_topic_ : std::string();
    if (!o.topic.empty()) out.push_back(std::move(o));  // only GetStream in this mode
  }
  download_out.clear();
}

void OtaDevice::after_download_step(TimePoint now, Outbox& out) {
  const std::uint64_t blocks = download_.stats().blocks;
  while (config_.progress_every_blocks > 0 && blocks >= next_progress_ &&
         next_progress_ <= total_blocks_) {
    send_update(ExecutionStatus::InProgress,
                {{"receive", std::to_string(next_progress_) + "/" + std::to_string(total_blocks_)}},
                out);
    next_progress_ += config_.progress_every_blocks;
  }
  if (download_.state() == DeviceState::Done) {
    downloaded(now, out);
  } else if (download_.state() == DeviceState::Failed) {
    out.push_back(subscription(Action::Unsubscribe, data_topic_, 0));
    report(OtaOutcome::Failed, ExecutionStatus::Failed, "download: " + download_.failure(), now,
           out);
  }
}

void OtaDevice::downloaded(TimePoint now, Outbox& out) {
  stats_.downloaded = now;
  out.push_back(subscription(Action::Unsubscribe, data_topic_, 0));
  if (simulated_failure_) {
    stats_.simulated = true;
    report(OtaOutcome::Failed, ExecutionStatus::Failed, "simulated failure", now, out);
    return;
  }
  if (auto bad = check_->finish(job_->file.signature)) {
    report(OtaOutcome::Failed, ExecutionStatus::Failed, *bad, now, out);
    return;
  }
  check_.reset();
  if (job_->file.file_type != 0) {
    report(OtaOutcome::Succeeded, ExecutionStatus::Succeeded, "accepted", now, out);
    return;
  }
  send_update(ExecutionStatus::InProgress, {{"self_test", "ready"}, {"updatedBy", config_.version}},
              out);
  out.push_back(subscription(Action::Unsubscribe, notify_topic_, 0));
  phase_ = Phase::Rebooting;
  phase_deadline_ = now + config_.reboot;
}

void OtaDevice::confirm_self_test(const std::optional<NotifiedExecution>& execution, TimePoint now,
                                  Outbox& out) {
  std::string why;
  if (!execution) {
    why = "no execution";
  } else if (execution->job_id != stats_.job_id) {
    why = "job " + execution->job_id + " instead of " + stats_.job_id;
  } else if (execution->status != "IN_PROGRESS") {
    why = "status " + execution->status + " instead of IN_PROGRESS";
  } else if (const std::string* st = execution->detail("self_test"); st == nullptr) {
    why = "no statusDetails.self_test";
  } else if (*st != "ready") {
    why = "statusDetails.self_test \"" + *st + "\" instead of \"ready\"";
  }
  if (!why.empty()) {
    stop(OtaOutcome::Error, "self-test: the notify-next after the reboot has " + why, now);
    return;
  }
  report(OtaOutcome::Succeeded, ExecutionStatus::Succeeded, "accepted", now, out);
}

void OtaDevice::on_tick(TimePoint now, Outbox& out) {
  if (phase_ == Phase::Downloading) {
    download_.on_tick(now, download_out_);
    forward(download_out_, out);
    after_download_step(now, out);
  } else if (phase_ == Phase::Rebooting && now >= phase_deadline_) {
    phase_ = Phase::Resubscribing;
    out.push_back(subscription(Action::Subscribe, notify_topic_, 1));
  } else if (phase_ == Phase::SelfTest && now >= phase_deadline_) {
    stop(OtaOutcome::Error, "self-test: no notify-next within the self-test window", now);
  }
}

void OtaDevice::report(OtaOutcome outcome, ExecutionStatus status, std::string reason,
                       TimePoint now, Outbox& out) {
  send_update(status, {{"reason", reason}}, out);
  stats_.reported = now;
  stop(outcome, std::move(reason), now);
}

void OtaDevice::stop(OtaOutcome outcome, std::string reason, TimePoint now) {
  if (terminal()) return;
  stats_.outcome = outcome;
  stats_.reason = std::move(reason);
  stats_.ended = now;
  phase_ = Phase::Over;
  check_.reset();
  download_.fail(stats_.reason, now);  // no-op once its download is over
}

void OtaDevice::fail(std::string reason, TimePoint now, bool timed_out) {
  stop(timed_out ? OtaOutcome::TimedOut : OtaOutcome::Error, std::move(reason), now);
}

}  // namespace chunkd::chunkload

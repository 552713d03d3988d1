// The session thread of AmqpClient (io/amqp_client.hpp): rabbitmq-c's blocking calls, kept off
// the loop. One Session is one connection: set up, then a poll() loop over its socket and the
// eventfd until it fails or stop is requested; run_amqp_sessions() strings sessions together
// with fail-over and back-off.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <thread>

#include "io/amqp_session_internal.hpp"
#include "io/log.hpp"

namespace chunkd::io {
namespace detail {
std::string Session::run() {
  bool stopping = false;
  Clock::time_point flush_deadline{};
  last_rx_ = Clock::now();
  const auto dead_after = std::chrono::seconds(2 * std::max(1, o_.heartbeat_s) + 1);
  for (;;) {
    if (!stopping) {
      std::lock_guard lock(s_.mu);
      if (s_.stop_requested) {
        stopping = true;
        flush_deadline = Clock::now() + std::chrono::milliseconds(s_.flush_timeout_ms);
      }
    }
    if (stopping) {
      std::lock_guard lock(s_.mu);
      if ((idle() && s_.commands.empty()) || Clock::now() >= flush_deadline) return {};
    }
    if (std::string e = take_and_send(); !e.empty()) return e;
    if (std::string e = steer_jobs(); !e.empty()) return e;
    if (std::string e = read_frames(); !e.empty()) return e;
    if (std::string e = settle(); !e.empty()) return e;
    amqp_maybe_release_buffers(conn_);
    const bool room = unconfirmed_.size() < o_.max_unconfirmed;
    pollfd fds[2] = {{amqp_get_sockfd(conn_), POLLIN, 0}, {s_.wake_fd, POLLIN, 0}};
    const int n = ::poll(fds, room ? 2 : 1, stopping ? 20 : 250);
    if (n < 0 && errno != EINTR) return std::string("poll: ") + std::strerror(errno);
    if (n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) last_rx_ = Clock::now();
    if (room && n > 0 && (fds[1].revents & POLLIN) != 0) {
      std::uint64_t v = 0;
      [[maybe_unused]] ssize_t r = ::read(s_.wake_fd, &v, sizeof v);
    }
    if (Clock::now() - last_rx_ > dead_after) return "no heartbeat from the broker";
  }
}

// Moves the loop's commands here and sends them in order while confirms have room; the written
// publishes go back to the loop as spares.
std::string Session::take_and_send() {
  {
    std::lock_guard lock(s_.mu);
    while (!s_.commands.empty()) {
      pending_.push_back(std::move(s_.commands.front()));
      s_.commands.pop_front();
    }
  }
  std::string e;
  while (e.empty() && !pending_.empty() && unconfirmed_.size() < o_.max_unconfirmed) {
    AmqpCommand& c = pending_.front();
    e = send(c);
    // A publish that failed is dropped here, once: send() already took it off queued_bytes.
    if (!e.empty() && c.kind == AmqpCommand::Kind::Publish) s_.dropped_publishes++;
    if (c.kind == AmqpCommand::Kind::Publish) written_.push_back(std::move(c));
    pending_.pop_front();
  }
  if (!written_.empty()) {
    s_.give_spares(written_);
    written_.clear();  // over the bound: freed here, outside the lock
  }
  return e;
}

std::string Session::send(AmqpCommand& c) {
  if (c.kind == AmqpCommand::Kind::Finish) {
    if (c.session == id_) acks_.push_back({c.tag, next_seq_, c.requeue});
    return {};
  }
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = 1;  // replies to QoS 0 subscribers: not persisted
  const amqp_bytes_t body{c.body.size(), c.body.data()};
  const int rc = amqp_basic_publish(conn_, kChannel, amqp_cstring_bytes(o_.exchange.c_str()),
                                    amqp_cstring_bytes(c.routing_key.c_str()), 0, 0, &props, body);
  const std::size_t bytes = c.body.size();
  const std::size_t left = s_.queued_bytes.fetch_sub(bytes) - bytes;
  if (rc != AMQP_STATUS_OK) return std::string("publish: ") + amqp_error_string2(rc);
  unconfirmed_.insert(++next_seq_);
  s_.publishes++;
  s_.confirms_pending = unconfirmed_.size();
  if (left < o_.max_queued_bytes / 2 && s_.want_writable.exchange(false)) {
    s_.post({AmqpEvent::Kind::Written, {}, {}, {}});
  }
  return {};
}

// Every frame already readable, without blocking.
std::string Session::read_frames() {
  for (;;) {
    amqp_frame_t frame;
    timeval zero{0, 0};
    const int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) return {};
    if (rc != AMQP_STATUS_OK) return std::string("read: ") + amqp_error_string2(rc);
    last_rx_ = Clock::now();
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // content outside a delivery: ignored
    if (std::string e = on_method(frame); !e.empty()) return e;
  }
}

std::string Session::on_method(const amqp_frame_t& frame) {
  const amqp_method_t& m = frame.payload.method;
  switch (m.id) {
    case AMQP_BASIC_DELIVER_METHOD:
      return on_deliver(*static_cast<const amqp_basic_deliver_t*>(m.decoded));
    case AMQP_BASIC_ACK_METHOD: {
      const auto* a = static_cast<const amqp_basic_ack_t*>(m.decoded);
      confirmed(a->delivery_tag, a->multiple != 0, false);
      return {};
    }
    case AMQP_BASIC_NACK_METHOD: {
      const auto* a = static_cast<const amqp_basic_nack_t*>(m.decoded);
      confirmed(a->delivery_tag, a->multiple != 0, true);
      return {};
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD: {
      amqp_rpc_reply_t r{};
      r.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION;
      r.reply = m;
      int code = 0;
      std::string e = reply_error(r, "session", code);
      if (code == AMQP_INTERNAL_ERROR) s_.broker_internal_errors++;
      if (m.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_ok_t ok{};
        amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        closed_by_broker_ = true;
      }
      return e;
    }
    case AMQP_BASIC_CONSUME_OK_METHOD:
    case AMQP_BASIC_CANCEL_OK_METHOD: {
      const bool consume = m.id == AMQP_BASIC_CONSUME_OK_METHOD;
      const amqp_bytes_t tag =
          consume ? static_cast<const amqp_basic_consume_ok_t*>(m.decoded)->consumer_tag
                  : static_cast<const amqp_basic_cancel_ok_t*>(m.decoded)->consumer_tag;
      if (text_of(tag) != kJobsConsumer) return {};
      s_.jobs_consuming = consume;
      LOG_INFO(kTag, "%s %s", consume ? "consuming" : "stopped consuming", o_.jobs_queue.c_str());
      return {};
    }
    case AMQP_BASIC_CANCEL_METHOD: {
      const auto* c = static_cast<const amqp_basic_cancel_t*>(m.decoded);
      const bool jobs = text_of(c->consumer_tag) == kJobsConsumer;
      return "the broker cancelled the consumer (queue " + (jobs ? o_.jobs_queue : o_.queue) +
             " deleted?)";
    }
    default:
      return {};  // connection.blocked/unblocked and the like
  }
}

std::string Session::on_deliver(const amqp_basic_deliver_t& d) {
  AmqpEvent event;
  event.kind = AmqpEvent::Kind::Delivery;
  event.delivery.session = id_;
  event.delivery.tag = d.delivery_tag;
  event.delivery.redelivered = d.redelivered != 0;
  event.delivery.routing_key = text_of(d.routing_key);
  event.delivery.jobs = text_of(d.consumer_tag) == kJobsConsumer;
  amqp_message_t message;
  const amqp_rpc_reply_t r = amqp_read_message(conn_, kChannel, &message, 0);
  int code = 0;
  if (std::string e = reply_error(r, "read a delivery", code); !e.empty()) return e;
  const auto* p = static_cast<const std::byte*>(message.body.bytes);
  event.delivery.body.assign(p, p + message.body.len);
  amqp_destroy_message(&message);
  s_.deliveries++;
  s_.post(std::move(event));
  return {};
}

void Session::confirmed(std::uint64_t tag, bool multiple, bool nack) {
  std::uint64_t first = tag;
  const std::size_t before = unconfirmed_.size();
  if (multiple) {
    if (!unconfirmed_.empty()) first = std::min(first, *unconfirmed_.begin());
    unconfirmed_.erase(unconfirmed_.begin(), unconfirmed_.upper_bound(tag));
  } else {
    unconfirmed_.erase(tag);
  }
  s_.confirms_pending = unconfirmed_.size();
  (nack ? s_.nacks : s_.confirms) += before - unconfirmed_.size();
  if (!nack) return;
  for (PendingAck& a : acks_) {
    if (a.through >= first) a.requeue = true;
  }
}

// Acks (or requeues) the finished deliveries whose publishes are all confirmed, in order.
std::string Session::settle() {
  const std::uint64_t lowest =
      unconfirmed_.empty() ? std::numeric_limits<std::uint64_t>::max() : *unconfirmed_.begin();
  while (!acks_.empty() && acks_.front().through < lowest) {
    const PendingAck& a = acks_.front();
    const int rc = a.requeue ? amqp_basic_nack(conn_, kChannel, a.tag, 0, 1)
                             : amqp_basic_ack(conn_, kChannel, a.tag, 0);
    if (rc != AMQP_STATUS_OK) return std::string("ack: ") + amqp_error_string2(rc);
    (a.requeue ? s_.requeued : s_.acks)++;
    acks_.pop_front();
  }
  return {};
}

void Session::close() {
  if (conn_ == nullptr) return;
  if (logged_in_ && !closed_by_broker_ && amqp_get_socket(conn_) != nullptr &&
      amqp_get_sockfd(conn_) >= 0) {
    amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);  // bounded by the RPC timeout
  }
  amqp_destroy_connection(conn_);
  conn_ = nullptr;
  std::size_t dropped = 0;
  for (const AmqpCommand& c : pending_) {
    if (c.kind == AmqpCommand::Kind::Publish) {
      s_.queued_bytes -= c.body.size();
      ++dropped;
    }
  }
  s_.dropped_publishes += dropped;
  s_.confirms_pending = 0;
  s_.jobs_consuming = false;
  pending_.clear();
}

}  // namespace detail

namespace {

using namespace detail;

// Waits `ms` or until stop is requested; true when it was.
bool wait_or_stop(AmqpClient::Shared& s, int ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    {
      std::lock_guard lock(s.mu);
      if (s.stop_requested) return true;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd fd{s.wake_fd, POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(left.count())) > 0) {
      std::uint64_t v = 0;
      [[maybe_unused]] ssize_t r = ::read(s.wake_fd, &v, sizeof v);
    }
  }
}

// Commands queued for a session that ended: its publishes are dropped (their requests come back
// from the broker), its finishes are void.
void drop_commands(AmqpClient::Shared& s) {
  std::lock_guard lock(s.mu);
  for (const AmqpCommand& c : s.commands) {
    if (c.kind != AmqpCommand::Kind::Publish) continue;
    s.queued_bytes -= c.body.size();
    s.dropped_publishes++;
  }
  s.commands.clear();
}

struct Served {
  bool up = false;            // a session consumed (and has ended)
  std::string why;            // "" : stop was requested
  AmqpFailureReport failure;  // when !up: why the attempt failed
};

AmqpFailureReport classify(const AmqpClient::Shared& s, const std::string& uri,
                           const Expected<AmqpUri>& parsed, const AmqpAttempt& attempt,
                           const std::string& why) {
  AmqpAttemptContext context{uri, parsed ? parsed->user : "", parsed ? parsed->vhost : "",
                             s.options.ca_file};
  if (!parsed) return {AmqpFailure::Other, false, amqp_uri_without_password(uri), why};
  return classify_amqp_failure(attempt, context);
}

// One session on `uri`, from the connection attempt to its end.
Served serve(AmqpClient::Shared& s, const std::string& uri, std::uint64_t id,
             std::string& last_up) {
  Served out;
  {
    Session session(s, id);
    auto parsed = parse_amqp_uri(uri);
    out.why = parsed ? session.open(*parsed) : parsed.error().message();
    if (!out.why.empty()) {
      s.connect_failures++;
      out.failure = classify(s, uri, parsed, session.attempt(), out.why);
      s.failures_by_cause[static_cast<std::size_t>(out.failure.cause)]++;
      return out;
    }
    out.up = true;
    if (!last_up.empty() && last_up != uri) s.failovers++;
    last_up = uri;
    s.sessions++;
    {
      std::lock_guard lock(s.mu);
      s.uri = uri;
    }
    s.session = id;
    s.post({AmqpEvent::Kind::Up, {}, {}, {}});
    out.why = session.run();
    s.session = 0;
  }
  drop_commands(s);
  if (!out.why.empty()) s.post({AmqpEvent::Kind::Down, {}, out.why, {}});
  return out;
}

// The failures of attempts since the last session: each reported once, and a permanent verdict
// only once every URI failed permanently in a row (a node refusing while another may accept is
// that node's problem: retried).
class FailureBook {
 public:
  explicit FailureBook(std::size_t uris) : refused_(uris, false) {}
  void up() {
    std::fill(refused_.begin(), refused_.end(), false);
    reported_.clear();
  }
  // The report to post, or nothing when it was reported already.
  std::optional<AmqpFailureReport> failed(std::size_t index, AmqpFailureReport r) {
    refused_[index] = r.permanent;
    r.permanent = std::all_of(refused_.begin(), refused_.end(), [](bool b) { return b; });
    if (r.permanent && refused_.size() > 1) r.message += " (and every other URI in amqp.uris)";
    // One final verdict per outage (with several URIs, each one's refusal would repeat it).
    if (!reported_.insert(r.permanent ? std::string("!") : r.message).second) return std::nullopt;
    return r;
  }

 private:
  std::vector<bool> refused_;
  std::set<std::string> reported_;
};

}  // namespace

void run_amqp_sessions(AmqpClient::Shared& s) {
  const AmqpClientOptions& o = s.options;
  std::uint64_t id = 0;
  std::size_t index = 0;
  std::size_t failed_in_round = 0;
  int backoff = o.backoff_min_ms;
  std::string last_up;
  FailureBook book(o.uris.size());
  for (;;) {
    {
      std::lock_guard lock(s.mu);
      if (s.stop_requested) break;
    }
    const std::string& uri = o.uris[index];
    Served served = serve(s, uri, ++id, last_up);
    if (served.up) {  // start a fresh round
      if (served.why.empty()) break;
      LOG_WARN(kTag, "session on %s ended: %s; failing over",
               amqp_uri_without_password(uri).c_str(), served.why.c_str());
      failed_in_round = 0;
      backoff = o.backoff_min_ms;
      book.up();
    } else if (auto report = book.failed(index, std::move(served.failure))) {
      s.post({AmqpEvent::Kind::Failure, {}, {}, std::move(*report)});
    }
    index = (index + 1) % o.uris.size();
    if (!served.up && ++failed_in_round >= o.uris.size()) {
      failed_in_round = 0;
      if (wait_or_stop(s, backoff)) break;
      backoff = std::min(backoff * 2, o.backoff_max_ms);
    }
  }
  drop_commands(s);
  s.post({AmqpEvent::Kind::Stopped, {}, {}, {}});
}

}  // namespace chunkd::io

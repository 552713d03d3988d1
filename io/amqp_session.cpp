// The session thread of AmqpClient (io/amqp_client.hpp): rabbitmq-c's blocking calls, kept off
// the loop. One Session is one connection: set up, then a poll() loop over its socket and the
// eventfd until it fails or stop is requested; run_amqp_sessions() strings sessions together
// with fail-over and back-off.
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
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

#include "io/amqp_failure.hpp"
#include "io/amqp_internal.hpp"
#include "io/amqp_uri.hpp"
#include "io/log.hpp"

namespace chunkd::io {
namespace {

constexpr const char* kTag = "amqp";
constexpr amqp_channel_t kChannel = 1;
// Consumer tags (unique per channel): they tell a delivery's queue.
constexpr const char* kRequestsConsumer = "requests";
constexpr const char* kJobsConsumer = "jobs";
using Clock = std::chrono::steady_clock;

std::string text_of(amqp_bytes_t b) {
  return b.len == 0 ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

timeval timeval_of(int ms) {
  return timeval{ms / 1000, static_cast<suseconds_t>(ms % 1000) * 1000};
}

// The first verification error of the broker's certificate in this thread's TLS handshake
// (rabbitmq-c leaves the verify mode at none and checks the result after the handshake: this
// callback only watches).
thread_local int t_verify_error = X509_V_OK;

int watch_verify(int ok, X509_STORE_CTX* store) {
  if (ok == 0 && t_verify_error == X509_V_OK) t_verify_error = X509_STORE_CTX_get_error(store);
  return ok;
}

// "what: why" for an RPC reply that is not normal; `code` gets the broker's reply code (or 0),
// `attempt` (when given) the library status and the broker's words.
std::string reply_error(const amqp_rpc_reply_t& r, const char* what, int& code,
                        AmqpAttempt* attempt = nullptr) {
  code = 0;
  if (attempt != nullptr) {
    attempt->what = what;
    attempt->status = r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? r.library_error : 0;
  }
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return {};
    case AMQP_RESPONSE_NONE:
      return std::string(what) + ": no reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return std::string(what) + ": " + amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      break;
  }
  if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_connection_close_t*>(r.reply.decoded);
    code = m->reply_code;
    if (attempt != nullptr) attempt->reply_text = text_of(m->reply_text);
    return std::string(what) + ": the broker closed the connection (" +
           std::to_string(m->reply_code) + " " + text_of(m->reply_text) + ")";
  }
  if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_channel_close_t*>(r.reply.decoded);
    code = m->reply_code;
    if (attempt != nullptr) attempt->reply_text = text_of(m->reply_text);
    return std::string(what) + ": the broker closed the channel (" + std::to_string(m->reply_code) +
           " " + text_of(m->reply_text) + ")";
  }
  return std::string(what) + ": unexpected method from the broker";
}

class Session {
 public:
  Session(AmqpClient::Shared& shared, std::uint64_t id) : s_(shared), o_(shared.options), id_(id) {}
  ~Session() { close(); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // "" when the session consumes; else why not, with `attempt_` saying how.
  std::string open(const AmqpUri& uri);
  const AmqpAttempt& attempt() const { return attempt_; }
  // Serves until the connection fails (returns why) or stop was requested and the flush ended
  // (returns "").
  std::string run();

 private:
  std::string check(const char* what) {
    int code = 0;
    std::string e = reply_error(amqp_get_rpc_reply(conn_), what, code, &attempt_);
    attempt_.reply_code = code;
    if (code == AMQP_INTERNAL_ERROR) s_.broker_internal_errors++;
    return e;
  }
  std::string open_socket(const AmqpUri& uri);
  std::string login(const AmqpUri& uri);
  std::string declare();
  std::string declare_queue(const std::string& name, const std::vector<std::string>& keys);
  std::string steer_jobs();
  std::string take_and_send();
  std::string send(AmqpCommand& c);
  std::string read_frames();
  std::string on_method(const amqp_frame_t& frame);
  std::string on_deliver(const amqp_basic_deliver_t& d);
  void confirmed(std::uint64_t tag, bool multiple, bool nack);
  std::string settle();
  bool idle() const { return pending_.empty() && acks_.empty(); }
  void close();

  struct PendingAck {
    std::uint64_t tag = 0;
    std::uint64_t through = 0;  // the last publish sent before finish()
    bool requeue = false;       // one of the publishes before it was nacked
  };

  AmqpClient::Shared& s_;
  const AmqpClientOptions& o_;
  std::uint64_t id_;
  amqp_connection_state_t conn_ = nullptr;
  bool closed_by_broker_ = false;
  bool logged_in_ = false;  // worth a connection.close when closing
  AmqpAttempt attempt_;
  bool jobs_asked_ = false;           // the last jobs_queue method sent was basic.consume
  std::deque<AmqpCommand> pending_;   // taken from the shared queue, in order
  std::vector<AmqpCommand> written_;  // publishes written, to hand back as spares
  std::uint64_t next_seq_ = 0;        // publishes sent in this session (confirm sequence)
  std::set<std::uint64_t> unconfirmed_;
  std::deque<PendingAck> acks_;
  Clock::time_point last_rx_ = Clock::now();
};

// The TCP (or TLS, verified against amqp.ca_file or the system's CAs) connection.
std::string Session::open_socket(const AmqpUri& uri) {
  attempt_.stage = AmqpAttempt::Stage::Connect;
  amqp_socket_t* socket = uri.tls ? amqp_ssl_socket_new(conn_) : amqp_tcp_socket_new(conn_);
  if (socket == nullptr) return "cannot make a socket";
  if (uri.tls) {
    std::string ca = o_.ca_file;
    if (ca.empty() && ::access(X509_get_default_cert_file(), R_OK) == 0) {
      ca = X509_get_default_cert_file();
    }
    if (!ca.empty()) {
      if (int rc = amqp_ssl_socket_set_cacert(socket, ca.c_str()); rc != AMQP_STATUS_OK) {
        attempt_.tls_files = true;
        attempt_.status = rc;
        return "load the CA certificates " + ca + ": " + amqp_error_string2(rc);
      }
    }
    // OpenSSL checks the host (a DNS name or an IP address) as part of the chain: rabbitmq-c
    // 0.11's own check reads DNS names only, so it refuses a certificate for an IP address.
    auto* ctx = static_cast<SSL_CTX*>(amqp_ssl_socket_get_context(socket));
    if (ctx == nullptr) return "cannot make a TLS context";
    amqp_ssl_socket_set_verify_hostname(socket, 0);
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, uri.host.c_str()) != 1 &&
        X509_VERIFY_PARAM_set1_host(param, uri.host.c_str(), 0) != 1) {
      return "cannot check the host " + uri.host + " of the broker's certificate";
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, watch_verify);
  }
  timeval timeout = timeval_of(o_.connect_timeout_ms);
  amqp_set_handshake_timeout(conn_, &timeout);
  amqp_set_rpc_timeout(conn_, &timeout);
  t_verify_error = X509_V_OK;
  if (int rc = amqp_socket_open_noblock(socket, uri.host.c_str(), uri.port, &timeout); rc != 0) {
    attempt_.status = rc;
    attempt_.what = "connect to " + uri.host + ":" + std::to_string(uri.port);
    if (t_verify_error != X509_V_OK) {
      attempt_.verify_code = t_verify_error;
      attempt_.verify_error = X509_verify_cert_error_string(t_verify_error);
    }
    return attempt_.what + ": " + amqp_error_string2(rc);
  }
  return {};
}

std::string Session::login(const AmqpUri& uri) {
  attempt_.stage = AmqpAttempt::Stage::Login;
  const std::string& password = o_.password.empty() ? uri.password : o_.password;
  int code = 0;
  std::string e =
      reply_error(amqp_login(conn_, uri.vhost.c_str(), 0, 131072, o_.heartbeat_s,
                             AMQP_SASL_METHOD_PLAIN, uri.user.c_str(), password.c_str()),
                  "login", code, &attempt_);
  attempt_.reply_code = code;
  if (!e.empty()) return e + " (user " + uri.user + ", vhost " + uri.vhost + ")";
  logged_in_ = true;
  attempt_.stage = AmqpAttempt::Stage::Setup;
  return {};
}

std::string Session::open(const AmqpUri& uri) {
  conn_ = amqp_new_connection();
  if (conn_ == nullptr) return "out of memory";
  if (std::string e = open_socket(uri); !e.empty()) return e;
  if (std::string e = login(uri); !e.empty()) return e;
  amqp_channel_open(conn_, kChannel);
  if (std::string e = check("channel.open"); !e.empty()) return e;
  amqp_confirm_select(conn_, kChannel);
  if (std::string e = check("confirm.select"); !e.empty()) return e;
  return declare();
}

// A durable quorum queue with the delivery limit, bound on `exchange` with `keys`.
std::string Session::declare_queue(const std::string& name, const std::vector<std::string>& keys) {
  amqp_table_entry_t args[2];
  args[0].key = amqp_cstring_bytes("x-queue-type");
  args[0].value.kind = AMQP_FIELD_KIND_UTF8;
  args[0].value.value.bytes = amqp_cstring_bytes("quorum");
  args[1].key = amqp_cstring_bytes("x-delivery-limit");
  args[1].value.kind = AMQP_FIELD_KIND_I64;
  args[1].value.value.i64 = o_.delivery_limit;
  const amqp_table_t table{2, args};
  const amqp_bytes_t queue = amqp_cstring_bytes(name.c_str());
  amqp_queue_declare(conn_, kChannel, queue, 0, 1, 0, 0, table);
  if (std::string e = check(("queue.declare " + name).c_str()); !e.empty()) return e;
  for (const std::string& key : keys) {
    amqp_queue_bind(conn_, kChannel, queue, amqp_cstring_bytes(o_.exchange.c_str()),
                    amqp_cstring_bytes(key.c_str()), amqp_empty_table);
    if (std::string e = check(("queue.bind " + key).c_str()); !e.empty()) return e;
  }
  return {};
}

// The request queue, the jobs queue (consumed later, by steer_jobs), the prefetch and the
// request consumer.
std::string Session::declare() {
  if (std::string e = declare_queue(o_.queue, o_.binding_keys); !e.empty()) return e;
  if (!o_.jobs_queue.empty()) {
    if (std::string e = declare_queue(o_.jobs_queue, o_.jobs_binding_keys); !e.empty()) return e;
  }
  amqp_basic_qos(conn_, kChannel, 0,
                 static_cast<std::uint16_t>(std::min<std::uint32_t>(
                     o_.prefetch, std::numeric_limits<std::uint16_t>::max())),
                 0);
  if (std::string e = check("basic.qos"); !e.empty()) return e;
  amqp_basic_consume(conn_, kChannel, amqp_cstring_bytes(o_.queue.c_str()),
                     amqp_cstring_bytes(kRequestsConsumer), 0, 0, 0, amqp_empty_table);
  return check("basic.consume");
}

// Sends basic.consume / basic.cancel for jobs_queue when the loop's wish changed, without waiting
// for the answer (on_method hears consume-ok and cancel-ok among the other frames).
std::string Session::steer_jobs() {
  const bool want = s_.jobs_wanted.load();
  if (o_.jobs_queue.empty() || want == jobs_asked_) return {};
  const amqp_bytes_t tag = amqp_cstring_bytes(kJobsConsumer);
  int rc = AMQP_STATUS_OK;
  if (want) {
    amqp_basic_consume_t m{};
    m.queue = amqp_cstring_bytes(o_.jobs_queue.c_str());
    m.consumer_tag = tag;
    m.arguments = amqp_empty_table;
    rc = amqp_send_method(conn_, kChannel, AMQP_BASIC_CONSUME_METHOD, &m);
  } else {
    amqp_basic_cancel_t m{};
    m.consumer_tag = tag;
    rc = amqp_send_method(conn_, kChannel, AMQP_BASIC_CANCEL_METHOD, &m);
  }
  if (rc != AMQP_STATUS_OK) {
    return std::string(want ? "basic.consume " : "basic.cancel ") + o_.jobs_queue + ": " +
           amqp_error_string2(rc);
  }
  jobs_asked_ = want;
  return {};
}

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
    if (c.session == id_) acks_.push_back({c.tag, next_seq_, false});
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

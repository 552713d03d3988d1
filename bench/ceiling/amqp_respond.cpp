// fleet_ceiling --mode amqp-respond: chunkd's part behind RabbitMQ, with nothing but pre-encoded
// replies (bench/fleet --amqp's ceiling).
//
// What chunkd's AMQP transport does (io/amqp_session.cpp), minus the engine: one AMQP connection
// (rabbitmq-c), confirm.select, a durable quorum queue (--queue, x-delivery-limit 5) bound on
// amq.topic with `<prefix>.*.streams.*.get.*` and `.describe.*` (RabbitMQ's MQTT plugin turns a
// device's topic into a routing key with `/` → `.`), basic.qos(--prefetch), manual acks. Each
// GetStream request's blocks go out as basic.publish of replies encoded once at start-up, with the
// reply routing key and delivery mode 1, and the request is acked once every publish before it
// was confirmed by the broker — chunkd's acknowledgement rule. Nothing is read from disk, nothing
// is encoded per block, there is no hand-off between threads: one thread, blocking calls.
//
// Requests it cannot answer from what it pre-encoded count as `unanswered` (and are acked). When
// stopped (SIGTERM) it acks what is confirmed and deletes its queue: every run starts empty.
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <poll.h>
#include <sys/signalfd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <set>

#include "bench/ceiling/ceiling.hpp"
#include "protocol/reply.hpp"
#include "protocol/request.hpp"

namespace chunkd::ceiling {
namespace {

constexpr amqp_channel_t kChannel = 1;
constexpr const char* kExchange = "amq.topic";

std::string text_of(amqp_bytes_t b) {
  return b.len == 0 ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

// An MQTT topic (or filter) as RabbitMQ's MQTT plugin routes it: levels joined by '.', '+' → '*'.
std::string routing_key_of(std::string_view topic) {
  std::string key(topic);
  for (char& c : key) {
    if (c == '/') c = '.';
    if (c == '+') c = '*';
  }
  return key;
}

Error rpc_error(const amqp_rpc_reply_t& r, const char* what) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return std::nullopt;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return std::string(what) + ": " + amqp_error_string2(r.library_error);
    default:
      return std::string(what) + ": refused by the broker (method " + std::to_string(r.reply.id) +
             ")";
  }
}

struct PendingAck {
  std::uint64_t tag = 0;
  std::uint64_t through = 0;  // the last publish sent for it
};

class AmqpResponder {
 public:
  AmqpResponder(const Options& o, Bytes file)
      : o_(o), file_(std::move(file)), codec_(o.topic_prefix) {
    std::optional<std::string_view> token;
    if (!o.token.empty()) token = o.token;
    const std::uint64_t blocks = protocol::block_count(file_.size(), o.block_size);
    for (std::uint64_t i = 0; i < blocks; ++i) {
      const std::size_t at = static_cast<std::size_t>(i * o.block_size);
      auto slice = std::span<const std::byte>(file_).subspan(
          at, std::min<std::size_t>(o.block_size, file_.size() - at));
      Bytes out(protocol::data_reply_max_bytes(o.format, slice.size(), o.token.size()));
      out.resize(protocol::encode_data_reply(o.format, out, token, 0, static_cast<std::uint32_t>(i),
                                             slice));
      payloads_.push_back(std::move(out));
    }
  }
  ~AmqpResponder() {
    if (conn_ != nullptr) {
      if (opened_) amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
      amqp_destroy_connection(conn_);
    }
  }
  AmqpResponder(const AmqpResponder&) = delete;
  AmqpResponder& operator=(const AmqpResponder&) = delete;

  Error setup() {
    conn_ = amqp_new_connection();
    amqp_socket_t* socket = conn_ != nullptr ? amqp_tcp_socket_new(conn_) : nullptr;
    if (socket == nullptr) return std::string("cannot make an AMQP connection");
    timeval timeout{10, 0};
    amqp_set_rpc_timeout(conn_, &timeout);
    if (int rc = amqp_socket_open_noblock(socket, o_.amqp_host.c_str(), o_.amqp_port, &timeout);
        rc != AMQP_STATUS_OK) {
      return "connect to " + o_.amqp_host + ":" + std::to_string(o_.amqp_port) + ": " +
             amqp_error_string2(rc);
    }
    opened_ = true;
    if (auto e = rpc_error(
            amqp_login(conn_, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
            "login")) {
      return e;
    }
    amqp_channel_open(conn_, kChannel);
    if (auto e = rpc_error(amqp_get_rpc_reply(conn_), "channel.open")) return e;
    amqp_confirm_select(conn_, kChannel);
    if (auto e = rpc_error(amqp_get_rpc_reply(conn_), "confirm.select")) return e;
    return declare();
  }

  Error run(int signal_fd, Clock::time_point deadline) {
    for (;;) {
      if (Clock::now() >= deadline) return std::string("timed out (--timeout-s)");
      if (auto e = read_frames()) return e;
      if (auto e = settle()) return e;
      amqp_maybe_release_buffers(conn_);
      pollfd fds[2] = {{amqp_get_sockfd(conn_), POLLIN, 0}, {signal_fd, POLLIN, 0}};
      if (::poll(fds, 2, 200) < 0 && errno != EINTR) return errno_text("poll");
      if ((fds[1].revents & POLLIN) != 0) return std::nullopt;  // asked to stop
    }
  }

  // Once asked to stop: acks what is confirmed within a bound, then deletes the queue, so a
  // request taken and not yet acked is not redelivered to the next run (another scenario's
  // responder could not answer it).
  Error finish() {
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (!acks_pending_.empty() && Clock::now() < deadline) {
      if (auto e = read_frames()) return e;
      if (auto e = settle()) return e;
      pollfd fd{amqp_get_sockfd(conn_), POLLIN, 0};
      if (!acks_pending_.empty() && ::poll(&fd, 1, 50) < 0 && errno != EINTR) {
        return errno_text("poll");
      }
    }
    amqp_queue_delete(conn_, kChannel, amqp_cstring_bytes(o_.queue.c_str()), 0, 0);
    return rpc_error(amqp_get_rpc_reply(conn_), "queue.delete");
  }

  void report(const Error& error, double cpu) const {
    double seconds = 0;
    if (first_request_ && last_publish_) {
      seconds = std::chrono::duration<double>(*last_publish_ - *first_request_).count();
    }
    auto per_s = [&](double amount) { return seconds > 0 ? amount / seconds : 0.0; };
    JsonLine json;
    json.str("tool", "fleet_ceiling");
    json.str("mode", "amqp-respond");
    json.boolean("complete", !error.has_value());
    json.str("format", protocol::to_string(o_.format));
    json.num("block_size_bytes", o_.block_size);
    json.num("file_bytes", file_.size());
    json.num("prefetch", o_.prefetch);
    json.num("requests", requests_);
    json.num("describes", describes_);
    json.num("unanswered", unanswered_);
    json.num("messages", messages_);
    json.num("payload_bytes", payload_bytes_);
    json.num("confirms", confirms_);
    json.num("nacks", nacks_);
    json.num("acks", acks_);
    json.real("seconds", seconds);  // first request → last reply published
    json.real("msgs_per_s", per_s(static_cast<double>(messages_)));
    json.real("mib_per_s", per_s(static_cast<double>(payload_bytes_) / (1024.0 * 1024.0)));
    json.real("cpu_seconds", cpu);
    json.str("error", error.value_or(""));
    std::fputs(json.finish().c_str(), stdout);
    std::fflush(stdout);
  }

 private:
  Error declare() {
    amqp_table_entry_t args[2];
    args[0].key = amqp_cstring_bytes("x-queue-type");
    args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    args[0].value.value.bytes = amqp_cstring_bytes("quorum");
    args[1].key = amqp_cstring_bytes("x-delivery-limit");
    args[1].value.kind = AMQP_FIELD_KIND_I64;
    args[1].value.value.i64 = 5;
    const amqp_table_t table{2, args};
    const amqp_bytes_t queue = amqp_cstring_bytes(o_.queue.c_str());
    amqp_queue_declare(conn_, kChannel, queue, 0, 1, 0, 0, table);
    if (auto e = rpc_error(amqp_get_rpc_reply(conn_), "queue.declare")) return e;
    for (protocol::Verb verb : {protocol::Verb::Get, protocol::Verb::Describe}) {
      const std::string key = routing_key_of(codec_.subscription(verb));
      amqp_queue_bind(conn_, kChannel, queue, amqp_cstring_bytes(kExchange),
                      amqp_cstring_bytes(key.c_str()), amqp_empty_table);
      if (auto e = rpc_error(amqp_get_rpc_reply(conn_), "queue.bind")) return e;
    }
    amqp_basic_qos(conn_, kChannel, 0, static_cast<std::uint16_t>(o_.prefetch), 0);
    if (auto e = rpc_error(amqp_get_rpc_reply(conn_), "basic.qos")) return e;
    amqp_basic_consume(conn_, kChannel, queue, amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    return rpc_error(amqp_get_rpc_reply(conn_), "basic.consume");
  }

  // Every frame already readable, without blocking.
  Error read_frames() {
    for (;;) {
      amqp_frame_t frame;
      timeval zero{0, 0};
      const int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &zero);
      if (rc == AMQP_STATUS_TIMEOUT) return std::nullopt;
      if (rc != AMQP_STATUS_OK) return std::string("read: ") + amqp_error_string2(rc);
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      const amqp_method_t& m = frame.payload.method;
      if (m.id == AMQP_BASIC_DELIVER_METHOD) {
        if (auto e = on_deliver(*static_cast<const amqp_basic_deliver_t*>(m.decoded))) return e;
      } else if (m.id == AMQP_BASIC_ACK_METHOD || m.id == AMQP_BASIC_NACK_METHOD) {
        if (m.id == AMQP_BASIC_ACK_METHOD) {
          const auto* a = static_cast<const amqp_basic_ack_t*>(m.decoded);
          confirms_ += confirmed(a->delivery_tag, a->multiple != 0);
        } else {
          const auto* a = static_cast<const amqp_basic_nack_t*>(m.decoded);
          nacks_ += confirmed(a->delivery_tag, a->multiple != 0);  // counted; bench fails on any
        }
      } else if (m.id == AMQP_CHANNEL_CLOSE_METHOD || m.id == AMQP_CONNECTION_CLOSE_METHOD) {
        return std::string("the broker closed the channel or connection");
      }
    }
  }

  // Forgets publish `tag` (and every earlier one when `multiple`); how many it forgot.
  std::size_t confirmed(std::uint64_t tag, bool multiple) {
    const std::size_t before = unconfirmed_.size();
    if (multiple) {
      unconfirmed_.erase(unconfirmed_.begin(), unconfirmed_.upper_bound(tag));
    } else {
      unconfirmed_.erase(tag);
    }
    return before - unconfirmed_.size();
  }

  Error on_deliver(const amqp_basic_deliver_t& d) {
    const std::uint64_t tag = d.delivery_tag;
    std::string topic = text_of(d.routing_key);
    std::replace(topic.begin(), topic.end(), '.', '/');
    amqp_message_t message;
    if (auto e = rpc_error(amqp_read_message(conn_, kChannel, &message, 0), "read a delivery")) {
      return e;
    }
    const auto* p = static_cast<const std::byte*>(message.body.bytes);
    body_.assign(p, p + message.body.len);
    amqp_destroy_message(&message);
    if (!first_request_) first_request_ = Clock::now();
    if (auto e = answer(topic)) return e;
    acks_pending_.push_back({tag, next_seq_});
    return std::nullopt;
  }

  Error answer(const std::string& topic) {
    protocol::ParsedTopic t = codec_.parse(topic);
    if (t.status != protocol::ParsedTopic::Status::Ok) {
      ++unanswered_;
      return std::nullopt;
    }
    if (t.verb == protocol::Verb::Describe) {
      ++describes_;
      auto req = protocol::decode_describe_request(t.format, body_);
      std::optional<std::string_view> token;
      if (req && req->client_token) token = *req->client_token;
      const protocol::FileEntry files[1] = {{0, file_.size()}};
      Bytes reply = protocol::encode_description(t.format, token, o_.version, "", files);
      codec_.reply_topic(topic_, t.thing, t.stream, protocol::ReplyKind::Description, t.format);
      return publish(routing_key_of(topic_), reply);
    }
    ++requests_;
    auto req = protocol::decode_get_request(t.format, body_);
    if (!req || t.format != o_.format || req->block_size != o_.block_size || req->file_id != 0 ||
        protocol::select_blocks(*req, file_.size(), blocks_).has_value()) {
      ++unanswered_;
      return std::nullopt;
    }
    codec_.reply_topic(topic_, t.thing, t.stream, protocol::ReplyKind::Data, t.format);
    const std::string key = routing_key_of(topic_);
    for (std::uint32_t b : blocks_) {
      if (auto e = publish(key, payloads_[b])) return e;
      ++messages_;
      const std::uint64_t at = std::uint64_t{b} * o_.block_size;
      payload_bytes_ += std::min<std::uint64_t>(o_.block_size, file_.size() - at);
    }
    return std::nullopt;
  }

  Error publish(const std::string& key, const Bytes& body) {
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = 1;
    const amqp_bytes_t bytes{body.size(), const_cast<std::byte*>(body.data())};
    const int rc = amqp_basic_publish(conn_, kChannel, amqp_cstring_bytes(kExchange),
                                      amqp_cstring_bytes(key.c_str()), 0, 0, &props, bytes);
    if (rc != AMQP_STATUS_OK) return std::string("publish: ") + amqp_error_string2(rc);
    unconfirmed_.insert(++next_seq_);
    last_publish_ = Clock::now();
    return std::nullopt;
  }

  // Acks the requests whose publishes are all confirmed, in order.
  Error settle() {
    const std::uint64_t lowest = unconfirmed_.empty() ? ~std::uint64_t{0} : *unconfirmed_.begin();
    while (!acks_pending_.empty() && acks_pending_.front().through < lowest) {
      if (int rc = amqp_basic_ack(conn_, kChannel, acks_pending_.front().tag, 0);
          rc != AMQP_STATUS_OK) {
        return std::string("ack: ") + amqp_error_string2(rc);
      }
      ++acks_;
      acks_pending_.pop_front();
    }
    return std::nullopt;
  }

  const Options& o_;
  Bytes file_;
  protocol::TopicCodec codec_;
  std::vector<Bytes> payloads_;  // the data reply of every block, encoded once
  amqp_connection_state_t conn_ = nullptr;
  bool opened_ = false;
  Bytes body_;
  std::vector<std::uint32_t> blocks_;
  std::string topic_;
  std::uint64_t next_seq_ = 0;
  std::set<std::uint64_t> unconfirmed_;
  std::deque<PendingAck> acks_pending_;
  std::uint64_t requests_ = 0, describes_ = 0, unanswered_ = 0, messages_ = 0;
  std::uint64_t payload_bytes_ = 0, confirms_ = 0, nacks_ = 0, acks_ = 0;
  std::optional<Clock::time_point> first_request_;
  std::optional<Clock::time_point> last_publish_;
};

}  // namespace

int run_amqp_respond(const Options& o) {
  std::ifstream in(o.file_path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fleet_ceiling: cannot read %s\n", o.file_path.c_str());
    return 1;
  }
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Bytes file(raw.size());
  std::memcpy(file.data(), raw.data(), raw.size());
  raw = {};

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  Fd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (sfd.get() < 0) {
    std::fprintf(stderr, "fleet_ceiling: %s\n", errno_text("signalfd").c_str());
    return 1;
  }
  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  AmqpResponder responder(o, std::move(file));
  Error error = responder.setup();
  const double cpu0 = cpu_seconds();
  if (!error) {
    std::fputs("ready\n", stdout);
    std::fflush(stdout);
    error = responder.run(sfd.get(), deadline);
    if (!error) error = responder.finish();
  }
  responder.report(error, cpu_seconds() - cpu0);
  return error ? 1 : 0;
}

}  // namespace chunkd::ceiling

// Private to io/amqp_session*.cpp: the session thread's Session (io/amqp_session.cpp runs it;
// io/amqp_session_setup.cpp opens it: socket, TLS, login, queues, the jobs consumer).
#pragma once

#include <amqp.h>
#include <sys/time.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <vector>

#include "io/amqp_failure.hpp"
#include "io/amqp_internal.hpp"
#include "io/amqp_uri.hpp"

namespace chunkd::io::detail {

inline constexpr const char* kTag = "amqp";
inline constexpr amqp_channel_t kChannel = 1;
// Consumer tags (unique per channel): they tell a delivery's queue.
inline constexpr const char* kRequestsConsumer = "requests";
inline constexpr const char* kJobsConsumer = "jobs";
using Clock = std::chrono::steady_clock;

inline std::string text_of(amqp_bytes_t b) {
  return b.len == 0 ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

inline timeval timeval_of(int ms) {
  return timeval{ms / 1000, static_cast<suseconds_t>(ms % 1000) * 1000};
}

// "what: why" for an RPC reply that is not normal; `code` gets the broker's reply code (or 0),
// `attempt` (when given) the library status and the broker's words.
std::string reply_error(const amqp_rpc_reply_t& r, const char* what, int& code,
                        AmqpAttempt* attempt = nullptr);

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

}  // namespace chunkd::io::detail

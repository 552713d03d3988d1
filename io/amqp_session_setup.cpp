// The session thread's set-up (io/amqp_session_internal.hpp): the TCP or TLS socket (verified
// against amqp.ca_file or the system's CAs), the login, the queues and their bindings, and the
// jobs queue's consumer started and cancelled as the loop asks.
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <unistd.h>

#include <string>

#include "io/amqp_session_internal.hpp"
#include "io/log.hpp"

namespace chunkd::io::detail {
namespace {

// The first verification error of the broker's certificate in this thread's TLS handshake
// (rabbitmq-c leaves the verify mode at none and checks the result after the handshake: this
// callback only watches).
thread_local int t_verify_error = X509_V_OK;

int watch_verify(int ok, X509_STORE_CTX* store) {
  if (ok == 0 && t_verify_error == X509_V_OK) t_verify_error = X509_STORE_CTX_get_error(store);
  return ok;
}

}  // namespace

std::string reply_error(const amqp_rpc_reply_t& r, const char* what, int& code,
                        AmqpAttempt* attempt) {
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

}  // namespace chunkd::io::detail

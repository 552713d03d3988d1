// MqttConnection: one libmosquitto client (no library threads) driven by the libuv loop, one of
// an MqttPool's connections.
//
// Owns: the mosquitto handle; the uv_poll_t on its socket (readable always, writable only while
// libmosquitto or the writer has bytes waiting); its reconnect timer; a name lookup in flight;
// the connection's state machine; its direct QoS 0 writer (io/mqtt_writer.hpp) and the rule that
// keeps the writer and libmosquitto from interleaving on the socket.
//
// State machine:  Backoff --timer--> (Resolving -->) Connecting --CONNACK--> Connected
//                 any failure or loss --> Backoff (exponential, jittered, reconnect_min..max_ms)
//                 stop: --> Closed (after DISCONNECT when connected and drained).
// A host name is resolved on the loop (uv_getaddrinfo); each attempt takes the next address.
// MQTT 5 (io/mqtt_connect.cpp): CONNECT carries Maximum Packet Size (options.max_packet_bytes).
// libmosquitto 2.0 sends CONNECT properties only from its blocking connect
// (mosquitto_connect_bind_v5; eclipse/mosquitto#1835), so Connecting first makes a non-blocking
// TCP connect to the address (the probe, bounded by keepalive_s) and only once the broker has
// accepted it makes the blocking one, which then returns within a round trip. With
// MqttProtocol::Auto a CONNACK "unsupported protocol version" switches to 3.1.1 for good.
// Keep-alive: the pool's 1 s timer calls misc_tick(); while the writer has bytes waiting,
// libmosquitto's keep-alive waits (a PINGREQ would land inside the writer's packets), and a socket
// that takes no byte for 1.5 keep-alive periods is dropped.
//
// Failures: every failed attempt becomes one MqttFailureReport (io/mqtt_failure.hpp) handed to
// Events::failed and logged at debug only; the pool decides what to say. While an attempt is in
// progress libmosquitto's log callback is set and its lines (and the TLS verify result) are kept
// in an MqttAttemptTrace, since they are the only place it names a TLS failure; once connected the
// callback is removed again (libmosquitto formats a line per packet while one is set) unless the
// log level is debug, where every line is forwarded.
//
// It reports to its pool through Events, always on the loop thread and possibly from inside
// libmosquitto calls (where libmosquitto only queues what it is asked to write). A C callback that
// throws is a bug: the trampolines are noexcept, so the exception terminates the process.
//
// Thread: loop thread only.
// REQUIRES: options and uri outlive the connection; the pool validated options (mqtt_options.hpp).
#pragma once

#include <mosquitto.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "io/mqtt_failure.hpp"
#include "io/mqtt_handles.hpp"
#include "io/mqtt_options.hpp"
#include "io/mqtt_uri.hpp"
#include "io/mqtt_writer.hpp"

namespace chunkd::io {

class MqttConnection {
 public:
  enum class State { Idle, Backoff, Resolving, Connecting, Connected, Closed };

  // What the pool hears from a connection.
  class Events {
   public:
    virtual void state_changed(MqttConnection& c) = 0;       // ready-ness may have changed
    virtual void dropped(MqttConnection& c) = 0;             // every queued byte of `c` is gone
    virtual void published(MqttConnection& c, int mid) = 0;  // libmosquitto wrote/acked `mid`
    virtual void written(MqttConnection& c, std::size_t bytes) = 0;  // the writer flushed bytes
    virtual void message(const mosquitto_message* msg) = 0;
    virtual void serviced(MqttConnection& c) = 0;  // after a socket event was handled
    virtual void failed(MqttConnection& c, const MqttFailureReport& r) = 0;  // an attempt failed

   protected:
    ~Events() = default;
  };

  MqttConnection(std::size_t index, const MqttOptions& options, const MqttUri& uri,
                 LoopHandles& handles, Events& events, MqttStats& stats);
  ~MqttConnection();
  MqttConnection(const MqttConnection&) = delete;
  MqttConnection& operator=(const MqttConnection&) = delete;

  // Creates and configures the libmosquitto client (TLS files are read here).
  Expected<void> init();
  // Connects soon (a zero-delay reconnect timer). REQUIRES: init() succeeded, once.
  void start();

  std::size_t index() const { return index_; }
  const std::string& id() const { return id_; }
  State state() const { return state_; }
  bool connected() const { return state_ == State::Connected; }
  bool subscribed() const { return subscribed_; }
  bool resolving() const { return resolve_ != nullptr; }
  const MqttWriter& writer() const { return writer_; }
  // The current (or next) attempt speaks MQTT 5; false: 3.1.1.
  bool mqtt5() const { return protocol_version_ == MQTT_PROTOCOL_V5; }

  // The pool's own QoS 0 path: the bytes the socket took now, or nullopt when the write failed
  // and the connection was dropped. REQUIRES: connected().
  std::optional<std::size_t> write_direct(const PublishHead& head, std::string_view topic,
                                          std::span<const std::span<const std::byte>> parts);
  // Writes what the writer holds (see MqttWriter::flush).
  void flush();
  // mosquitto_publish(); on failure the socket is re-checked. REQUIRES: the writer holds nothing.
  int publish(const char* topic, std::span<const std::byte> payload, int qos, int* mid);
  // Re-arms the poll for what libmosquitto and the writer want to write.
  void update_poll();

  // The pool's keep-alive tick (every second).
  void misc_tick(std::uint64_t now_ms);

  // Stopping: no reconnect from now on; a lost connection goes to Closed.
  void begin_stop();
  // One step towards Closed; `drained`: nothing of this connection is queued any more.
  void advance_stop(bool drained);
  // Gives up at once (the flush timeout): closes the socket's poll, drops what waits.
  void abandon();
  // Stops watching the socket (the last step of a stop).
  void close_poll();
  // Destroys the libmosquitto client once stopped. REQUIRES: state() == Closed, no poll.
  void release_client();

 private:
  struct ResolveReq;

  void connect_now();
  void resolved(int status, const addrinfo* res);
  void begin_connect(const std::string& addr);
  void open_client(const std::string& addr);
  // io/mqtt_connect.cpp: the protocol version, the probe, the fallback.
  int init_protocol();
  int connect_client(const std::string& addr);
  bool start_probe(const std::string& addr);
  void probe_done(int error);
  void cancel_probe();
  bool fall_back_to_v311(int rc);
  void connect_failed(const MqttFailureReport& report);
  void schedule_reconnect();
  void check_socket();
  void service(LoopHandle* h, int status, int events);
  void read_some(LoopHandle* h);
  void run_misc();
  void on_connack(int rc);
  void subscribe();
  void on_suback(int mid, int count, const int* granted);
  // `err`: the errno that came with rc == MOSQ_ERR_ERRNO.
  void lost(int rc, const char* detail = nullptr, int err = 0);
  void write_failed(const char* why);
  Expected<void> configure_tls();
  void set_callbacks();
  void log_line(mosquitto* mosq, const char* text);
  void note_handshake();

  static void on_poll(uv_poll_t* poll, int status, int events) noexcept;
  static void on_reconnect_timer(uv_timer_t* timer) noexcept;
  static void on_probe_poll(uv_poll_t* poll, int status, int events) noexcept;
  static void on_probe_timeout(uv_timer_t* timer) noexcept;
  static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept;
  static void on_connect_cb(mosquitto*, void* self, int rc) noexcept;
  static void on_disconnect_cb(mosquitto*, void* self, int rc) noexcept;
  static void on_publish_cb(mosquitto*, void* self, int mid) noexcept;
  static void on_message_cb(mosquitto*, void* self, const mosquitto_message* msg) noexcept;
  static void on_subscribe_cb(mosquitto*, void* self, int mid, int count,
                              const int* granted) noexcept;
  static void on_log_cb(mosquitto*, void* self, int level, const char* text) noexcept;

  const std::size_t index_;
  const MqttOptions& options_;
  const MqttUri& uri_;
  LoopHandles& handles_;
  Events& events_;
  MqttStats& stats_;
  std::string id_;
  mosquitto* mosq_ = nullptr;
  mosquitto_property* connect_props_ = nullptr;  // MQTT 5 CONNECT: Maximum Packet Size
  int protocol_version_ = MQTT_PROTOCOL_V311;
  bool v311_only_ = false;       // the broker refused MQTT 5 (MqttProtocol::Auto)
  bool recreate_ = false;        // the client keeps MQTT 5 CONNECT properties: make a fresh one
  LoopHandle* probe_ = nullptr;  // the probe's poll (its socket: probe_fd_)
  int probe_fd_ = -1;
  std::string probe_addr_;
  State state_ = State::Idle;
  bool stopping_ = false;
  LoopHandle* poll_ = nullptr;
  int poll_fd_ = -1;
  int poll_events_ = 0;
  LoopHandle* reconnect_timer_ = nullptr;
  ResolveReq* resolve_ = nullptr;
  std::vector<std::string> addrs_;  // resolved addresses of a host name, tried in turn
  std::size_t next_addr_ = 0;
  int backoff_ms_ = 0;
  unsigned failures_ = 0;                     // consecutive failed attempts
  MqttAttemptTrace trace_;                    // what libmosquitto said during the current attempt
  std::optional<MqttFailureReport> refused_;  // the CONNACK refusal of the current attempt
  bool quiet_retry_ = false;  // the current attempt ends in an expected retry (3.1.1 fallback)
  bool ever_connected_ = false;
  bool subscribed_ = false;
  int subscribe_mid_ = -1;
  bool disconnect_sent_ = false;
  bool misc_due_ = false;  // a keep-alive tick waits for the writer to drain
  std::vector<char*> sub_ptrs_;
  MqttWriter writer_;
  std::minstd_rand rng_;
};

}  // namespace chunkd::io

// The raw engine: the same devices as Fleet (tools/chunkload/device.hpp: requests, verification,
// retries, latency), on MQTT 3.1.1 spoken by chunkload itself over non-blocking TCP sockets in one
// epoll loop, instead of paho's async client. Chosen for tcp:// and mqtt:// URIs outside --ota
// (--engine; docs/chunkload.md, "Engines").
//
// Why: paho's receive path mallocs and copies every message under a global lock and wakes its
// threads per message; here a connection reads up to 256 KiB per recv() into its own buffer and
// every PUBLISH in it is routed and handed to its device as a view into that buffer. A device's
// requests are appended to its connection's output buffer and written once per loop turn.
//
// Per connection: CONNECT and the SUBSCRIBEs (32 devices, 3 reply topics each, per packet) are
// written at once after the TCP connect; a device starts when its SUBACK says granted (and its
// ramp time has come). QoS 1 replies are acknowledged with PUBACK. PINGREQ every 15 s keeps the
// 30 s keep-alive. A connection whose devices are all done sends DISCONNECT and closes. A lost
// connection, a refused CONNECT or SUBSCRIBE, or a malformed packet fails that connection's
// devices with the reason; there is no reconnect (as with paho).
//
// Thread: run() and everything it calls on the caller's thread; devices need no lock.
#pragma once

#include <netdb.h>

#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "tools/chunkload/device.hpp"
#include "tools/chunkload/mqtt_wire.hpp"
#include "tools/chunkload/options.hpp"
#include "tools/chunkload/report.hpp"

namespace chunkd::chunkload {

// "tcp://host:port" or "mqtt://host:port" (port 1883 when left out; [v6] in brackets) → host and
// port. Error: a message for the user.
struct BrokerAddress {
  std::string host;
  std::string port;
};
Expected<BrokerAddress, std::string> parse_tcp_uri(std::string_view uri);

class RawFleet {
 public:
  // `config` must outlive the fleet.
  RawFleet(const Options& options, const DeviceConfig& config);
  ~RawFleet();
  RawFleet(const RawFleet&) = delete;
  RawFleet& operator=(const RawFleet&) = delete;

  // Runs until every device is done or failed, --max-seconds passes, or `stop` becomes true
  // (checked at least every 100 ms). An error means set-up failed (bad address, no epoll).
  Expected<RunResult, std::string> run(const std::atomic<bool>& stop, ProgressLine& progress);

 private:
  struct Dev {
    Dev(const DeviceConfig& config, std::uint32_t index) : device(config, index) {}
    Device device;
    std::uint32_t conn = 0;
    std::string thing;
    std::string get_topic;
    std::string describe_topic;
    TimePoint start_at;
    bool started = false;     // its ramp time has come
    bool subscribed = false;  // SUBACK granted
    bool counted = false;     // counted in terminal_
  };
  struct Batch {
    std::uint32_t first = 0;  // devices [first, first + count)
    std::uint32_t count = 0;
  };
  // A connection's read buffer, not zero-filled: its pages become resident only as reads reach
  // them, so 10,000 connections of one quiet device each cost what they receive, not 256 KiB each.
  class ReadBuffer {
   public:
    std::byte* data() { return bytes_.get(); }
    std::size_t capacity() const { return capacity_; }
    // Grows to `n` bytes, keeping the first `keep`.
    void reserve(std::size_t n, std::size_t keep = 0) {
      if (n <= capacity_) return;
      auto grown = std::make_unique_for_overwrite<std::byte[]>(n);
      if (keep > 0) std::memcpy(grown.get(), bytes_.get(), keep);
      bytes_ = std::move(grown);
      capacity_ = n;
    }

   private:
    std::unique_ptr<std::byte[]> bytes_;
    std::size_t capacity_ = 0;
  };
  enum class ConnState : std::uint8_t { Idle, Connecting, Up, Closed };
  struct Conn {
    int fd = -1;
    ConnState state = ConnState::Idle;
    std::uint32_t index = 0;
    std::uint32_t first = 0;  // devices [first, first + count)
    std::uint32_t count = 0;
    std::uint32_t terminal = 0;  // of its devices, done or failed
    std::string client_id;
    std::vector<Batch> batches;  // SUBSCRIBE packet id = index + 1
    bool connack = false;
    TimePoint start_at;
    TimePoint connect_deadline;
    TimePoint last_sent;
    ReadBuffer in;  // bytes [in_begin, in_end) not parsed yet
    std::size_t in_begin = 0;
    std::size_t in_end = 0;
    mqtt::Buffer out;  // bytes [out_begin, out.size()) still to write
    std::size_t out_begin = 0;
    bool watching_out = false;  // EPOLLOUT registered
    bool dirty = false;         // on dirty_ (has bytes to write)
  };

  // raw_fleet.cpp: devices, routing, the run.
  void route(Conn& conn, const mqtt::Publish& msg);
  void subscribed(const Batch& batch, std::span<const std::byte> codes);
  void send_outbox(Dev& dev, Outbox& out);
  void note_terminal(Dev& dev);
  void fail_conn_devices(Conn& conn, const std::string& reason);
  void tick(TimePoint now);
  RunResult collect(TimePoint end, const std::string& stopped);

  // raw_conn.cpp: sockets and packets.
  Expected<bool, std::string> open_loop();
  void start_connect(Conn& conn, TimePoint now);
  void on_connected(Conn& conn, TimePoint now);
  void on_event(Conn& conn, std::uint32_t events, TimePoint now);
  // Reads what the socket has, parses and dispatches every whole packet. False: conn closed.
  bool read_conn(Conn& conn);
  bool dispatch(Conn& conn, const mqtt::Packet& packet);
  void mark_dirty(Conn& conn);
  void flush_dirty(TimePoint now);
  bool write_conn(Conn& conn);
  void watch(Conn& conn, bool out);
  void close_conn(Conn& conn, const std::string& reason);  // reason empty: a clean goodbye
  void service_conns(TimePoint now);                       // connects, timeouts, pings, goodbyes
  void close_all();

  const Options& options_;
  const DeviceConfig& config_;
  BrokerAddress address_;
  addrinfo* addrs_ = nullptr;
  int epoll_fd_ = -1;
  protocol::TopicCodec topics_;
  std::string route_head_;                  // "<topic_prefix>/<thing_prefix>"
  std::string route_mid_;                   // "/streams/<stream>/"
  std::array<std::string, 3> route_tails_;  // "data/<fmt>", "description/<fmt>", "rejected/<fmt>"
  std::vector<std::unique_ptr<Dev>> devs_;
  std::vector<Conn> conns_;
  std::vector<std::uint32_t> dirty_;  // connections with bytes to write
  TimePoint t0_;
  std::uint32_t terminal_ = 0;
  std::uint32_t failed_ = 0;
  std::uint64_t unroutable_ = 0;
  Outbox outbox_;  // reused for every device call
};

}  // namespace chunkd::chunkload

// MQTT 5 in the pool: the writer's PUBLISH encoding in both versions, the fallback to 3.1.1 when a
// broker refuses MQTT 5, and Maximum Packet Size honoured by a real broker.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/mqtt_pool.hpp"
#include "io/mqtt_writer.hpp"
#include "tests/support/broker.hpp"

namespace {

using chunkd::io::MqttOptions;
using chunkd::io::MqttPool;
using chunkd::io::MqttProtocol;
using chunkd::io::PublishResult;

bool run_until(uv_loop_t* loop, const std::function<bool()>& pred, int guard_ms = 30000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(guard_ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    uv_run(loop, UV_RUN_NOWAIT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

void stop_pool(uv_loop_t* loop, MqttPool& pool) {
  bool done = false;
  pool.stop(1000, [&] { done = true; });
  ASSERT_TRUE(run_until(loop, [&] { return done; }));
}

std::vector<unsigned> head_bytes(const chunkd::io::PublishHead& h) {
  std::vector<unsigned> out;
  for (std::size_t i = 0; i < h.size; ++i) out.push_back(std::to_integer<unsigned>(h.bytes[i]));
  return out;
}

TEST(PublishHead, Mqtt311HasNoPropertiesMqtt5OnePropertyLengthByte) {
  const auto v3 = chunkd::io::encode_publish_head(5, 10, false);
  ASSERT_TRUE(v3);
  EXPECT_EQ(head_bytes(*v3), (std::vector<unsigned>{0x30, 17, 0, 5}));
  EXPECT_EQ(v3->properties, 0u);
  EXPECT_EQ(v3->wire_bytes, 4u + 5 + 10);
  const auto v5 = chunkd::io::encode_publish_head(5, 10, true);
  ASSERT_TRUE(v5);
  EXPECT_EQ(head_bytes(*v5), (std::vector<unsigned>{0x30, 18, 0, 5}));
  EXPECT_EQ(v5->properties, 1u);
  EXPECT_EQ(v5->wire_bytes, 4u + 5 + 1 + 10);
  // The property byte counts towards the largest remaining length.
  EXPECT_TRUE(chunkd::io::encode_publish_head(1, 268435455 - 3, false));
  EXPECT_FALSE(chunkd::io::encode_publish_head(1, 268435455 - 3, true));
}

// A broker that speaks only MQTT 3.1.1: it answers a CONNECT of protocol level 5 with a 3.1.1
// CONNACK "unacceptable protocol version" (as such brokers do) and accepts level 4.
class V311OnlyBroker {
 public:
  V311OnlyBroker() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~V311OnlyBroker() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (int fd : accepted_) ::close(fd);
    ::close(fd_);
  }
  int port() const { return port_; }
  std::vector<int> levels() {
    std::lock_guard lock(mu_);
    return levels_;
  }

 private:
  bool wait_readable(int fd) {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }
  void run() {
    while (wait_readable(fd_)) {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      accepted_.push_back(c);
      // CONNECT: 0x10, remaining length (short here), 00 04 "MQTT", level.
      unsigned char buf[9] = {};
      std::size_t got = 0;
      while (got < sizeof buf && wait_readable(c)) {
        const ssize_t n = ::recv(c, buf + got, sizeof buf - got, 0);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
      }
      if (got < sizeof buf) continue;  // a TCP probe, closed before CONNECT
      {
        std::lock_guard lock(mu_);
        levels_.push_back(buf[8]);
      }
      const unsigned char return_code = buf[8] == 4 ? 0x00 : 0x01;  // 3.1.1 accepted, 5 refused (1)
      const unsigned char connack[4] = {0x20, 0x02, 0x00, return_code};
      (void)::send(c, connack, sizeof connack, MSG_NOSIGNAL);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<int> accepted_;
  std::mutex mu_;
  std::vector<int> levels_;
};

TEST(MqttProtocol, AutoFallsBackTo311WhenTheBrokerRefusesMqtt5) {
  V311OnlyBroker broker;
  ASSERT_GT(broker.port(), 0);
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    MqttOptions o;
    o.uri = "tcp://127.0.0.1:" + std::to_string(broker.port());
    o.connections = 1;
    o.reconnect_min_ms = 10;
    o.reconnect_max_ms = 50;
    MqttPool pool(&loop, o, nullptr, nullptr);
    ASSERT_TRUE(pool.start());
    ASSERT_TRUE(run_until(&loop, [&] { return pool.ready(); }));
    EXPECT_EQ(broker.levels(), (std::vector<int>{5, 4}));
    stop_pool(&loop, pool);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(MqttProtocol, ExplicitMqtt5DoesNotFallBack) {
  V311OnlyBroker broker;
  ASSERT_GT(broker.port(), 0);
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    MqttOptions o;
    o.uri = "tcp://127.0.0.1:" + std::to_string(broker.port());
    o.connections = 1;
    o.protocol = MqttProtocol::V5;
    o.reconnect_min_ms = 10;
    o.reconnect_max_ms = 20;
    MqttPool pool(&loop, o, nullptr, nullptr);
    ASSERT_TRUE(pool.start());
    ASSERT_TRUE(run_until(&loop, [&] { return broker.levels().size() >= 3; }));
    EXPECT_FALSE(pool.ready());
    for (int level : broker.levels()) EXPECT_EQ(level, 5);
    stop_pool(&loop, pool);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// A real broker honours Maximum Packet Size: the larger message never reaches the pool, the
// smaller one after it does; a 3.1.1 pool gets both.
TEST(MqttProtocol, BrokerDropsWhatExceedsMaxPacketBytes) {
  chunkd::test::TestBroker broker;
  ASSERT_TRUE(broker.start()) << broker.error();
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  for (MqttProtocol protocol : {MqttProtocol::Auto, MqttProtocol::V311}) {
    SCOPED_TRACE(protocol == MqttProtocol::Auto ? "auto" : "3.1.1");
    std::vector<std::string> topics;
    MqttOptions o;
    o.uri = broker.uri();
    o.client_id = protocol == MqttProtocol::Auto ? "mps-auto" : "mps-311";
    o.protocol = protocol;
    o.max_packet_bytes = 4096;
    o.subscriptions = {"mps/+"};
    MqttPool pool(
        &loop, o,
        [&](std::string_view topic, std::span<const std::byte>) { topics.emplace_back(topic); },
        nullptr);
    ASSERT_TRUE(pool.start());
    ASSERT_TRUE(run_until(&loop, [&] { return pool.ready(); })) << broker.log_contents();
    const std::string big(8192, 'b');
    const std::string small(100, 's');
    auto bytes = [](const std::string& s) {
      return std::span<const std::byte>(reinterpret_cast<const std::byte*>(s.data()), s.size());
    };
    ASSERT_EQ(pool.publish(1, "mps/big", bytes(big), 0), PublishResult::Ok);
    ASSERT_EQ(pool.publish(1, "mps/small", bytes(small), 0), PublishResult::Ok);
    ASSERT_TRUE(run_until(&loop, [&] {
      return std::find(topics.begin(), topics.end(), "mps/small") != topics.end();
    }));
    const std::vector<std::string> want = protocol == MqttProtocol::V311
                                              ? std::vector<std::string>{"mps/big", "mps/small"}
                                              : std::vector<std::string>{"mps/small"};
    EXPECT_EQ(topics, want);
    stop_pool(&loop, pool);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace

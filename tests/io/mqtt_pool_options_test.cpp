// MqttPool's options and the parts that need no test broker of their own: URIs and TLS files
// refused at start, options outside the config bounds (death tests), good URIs that only retry,
// TLS end to end against a Mosquitto TLS listener with throwaway certificates (openssl CLI), and
// the stable spread of things over connections (connection_for).
#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "io/mqtt_pool.hpp"
#include "tests/io/mqtt_pool_fixture.hpp"

namespace {

TEST(MqttPoolOptions, BadUrisFailAtStart) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  // Every refusal of io::parse_mqtt_uri (tests/io/mqtt_uri_test.cpp covers them all).
  for (const char* uri : {"", "http://127.0.0.1:1883", "tcp://:1883", "tcp://127.0.0.1:0",
                          "tcp://127.0.0.1:1883/path", "tcp://[::1"}) {
    MqttOptions o;
    o.uri = uri;
    MqttPool pool(&loop, o, nullptr, nullptr);
    auto started = pool.start();
    ASSERT_FALSE(started) << uri;
    EXPECT_EQ(started.error().code, std::errc::invalid_argument) << uri;
    EXPECT_NE(started.error().detail.find("mqtt.uri"), std::string::npos) << uri;
    bool done = false;
    pool.stop(0, [&] { done = true; });
    EXPECT_TRUE(done) << uri;
    EXPECT_FALSE(pool.ready());
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// Config can check a TLS file but not that it is still there when the pool starts.
TEST(MqttPoolOptions, UnreadableTlsFileFailsAtStart) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    MqttOptions o;
    o.uri = "ssl://127.0.0.1:8883";
    o.ca_file = "/nonexistent/chunkd/ca.pem";
    MqttPool pool(&loop, o, nullptr, nullptr);
    auto started = pool.start();
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().code, std::errc::no_such_file_or_directory);
    EXPECT_NE(started.error().message().find("mqtt.ca_file '/nonexistent/chunkd/ca.pem'"),
              std::string::npos)
        << started.error().message();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// Options are validated once, by the config loader; the pool asserts the same bounds
// (io/mqtt_options.hpp), so an out-of-bounds option is a bug that stops the process.
TEST(MqttPoolOptionsDeathTest, OptionsOutsideTheConfigBoundsAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto start_with = [](const std::function<void(MqttOptions&)>& change) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    MqttOptions o;
    o.uri = "tcp://127.0.0.1:1";
    change(o);
    MqttPool pool(&loop, o, nullptr, nullptr);
    (void)pool.start();
  };
  const std::pair<std::function<void(MqttOptions&)>, const char*> cases[] = {
      {[](MqttOptions& o) { o.connections = 0; }, "o.connections >= 1"},
      {[](MqttOptions& o) { o.connections = 65; }, "kMqttMaxConnections"},
      {[](MqttOptions& o) { o.client_id.clear(); }, "client_id"},
      {[](MqttOptions& o) { o.keepalive_s = 1; }, "keepalive_s"},
      {[](MqttOptions& o) { o.keepalive_s = 3601; }, "keepalive_s"},
      {[](MqttOptions& o) { o.reconnect_max_ms = 1; }, "reconnect_min_ms"},
      {[](MqttOptions& o) { o.max_queued_bytes = 0; }, "max_queued_bytes"},
      {[](MqttOptions& o) { o.subscriptions = {"a/#/b"}; }, "mosquitto_sub_topic_check"},
      {[](MqttOptions& o) { o.subscribe_qos = 3; }, "subscribe_qos"},
      {[](MqttOptions& o) { o.password = "secret"; }, "password"},
      {[](MqttOptions& o) { o.ca_file = "/etc/hostname"; }, "uri.tls"},
      {[](MqttOptions& o) {
         o.uri = "ssl://127.0.0.1:8883";
         o.cert_file = "/etc/hostname";
       },
       "key_file"},
  };
  for (const auto& [change, condition] : cases) {
    EXPECT_DEATH(start_with(change), std::string("invariant broken: .*") + condition) << condition;
  }
}

TEST(MqttPoolOptions, GoodUrisStartAndStop) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  // Nothing listens on port 1; the pool keeps retrying until stopped.
  for (const char* uri : {"tcp://127.0.0.1:1", "tcp://[::1]:1", "tcp://localhost:1"}) {
    MqttOptions o;
    o.uri = uri;
    o.reconnect_min_ms = 5;
    o.reconnect_max_ms = 20;
    MqttPool pool(&loop, o, nullptr, nullptr);
    EXPECT_TRUE(pool.start()) << uri;
    auto again = pool.start();
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, std::errc::operation_not_permitted);
    int spins = 0;  // let some connect attempts (and name lookups) happen before stopping
    run_until(&loop, [&] { return ++spins > 50; });
    EXPECT_FALSE(pool.ready());
    bool done = false;
    pool.stop(0, [&] { done = true; });
    EXPECT_TRUE(run_until(&loop, [&] { return done; })) << uri;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(MqttPoolOptions, TlsSetupWithReadableFiles) {
  const char* ca = "/etc/ssl/certs/ca-certificates.crt";
  if (::access(ca, R_OK) != 0) GTEST_SKIP() << "no system CA bundle";
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    MqttOptions o;
    o.uri = "ssl://127.0.0.1:1";
    o.ca_file = ca;
    MqttPool pool(&loop, o, nullptr, nullptr);
    EXPECT_TRUE(pool.start());
    bool done = false;
    pool.stop(0, [&] { done = true; });
    EXPECT_TRUE(run_until(&loop, [&] { return done; }));
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// TLS end to end: a throwaway CA and broker certificate (for IP 127.0.0.1), a TLS listener.
TEST(MqttPoolTls, ConnectsOverTlsAndChecksTheBrokerCertificate) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl CLI";
  char dir_template[] = "/tmp/chunkd-tls-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string script =
      "cd " + dir +
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      " -keyout ca.key -out ca.crt -days 2 -subj /CN=chunkd-test-ca"
      " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      " -keyout server.key -out server.csr -subj /CN=127.0.0.1"
      " && printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf"
      " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
      " -out server.crt -days 2 -extfile ext.cnf"
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      " -keyout other.key -out other.crt -days 2 -subj /CN=unrelated-ca";
  ASSERT_EQ(std::system(("(" + script + ") >/dev/null 2>&1").c_str()), 0) << script;

  {
    TestBroker broker("cafile " + dir + "/ca.crt\ncertfile " + dir + "/server.crt\nkeyfile " + dir +
                      "/server.key");
    ASSERT_TRUE(broker.start()) << broker.error();
    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    auto options = [&](const std::string& ca) {
      MqttOptions o;
      o.uri = "ssl://127.0.0.1:" + std::to_string(broker.port());
      o.ca_file = ca;
      o.reconnect_min_ms = 20;
      o.reconnect_max_ms = 200;
      o.subscriptions = {"tls/+/get"};
      o.max_packet_bytes = 256u << 10;  // the 64 KiB message below must reach the pool
      return o;
    };
    {
      std::vector<std::string> topics;
      MqttPool pool(
          &loop, options(dir + "/ca.crt"),
          [&](std::string_view topic, std::span<const std::byte>) { topics.emplace_back(topic); },
          nullptr);
      ASSERT_TRUE(pool.start());
      ASSERT_TRUE(run_until(&loop, [&] { return pool.ready(); })) << broker.log_contents();
      // Over TLS the pool hears itself: publish on connection 1 to the filter of connection 0.
      const std::string big(64 * 1024, 'z');
      ASSERT_EQ(pool.publish(1, "tls/thing/get", bytes_of(big), 0), PublishResult::Ok);
      ASSERT_TRUE(run_until(&loop, [&] { return !topics.empty(); }));
      EXPECT_EQ(topics.front(), "tls/thing/get");
      bool done = false;
      pool.stop(5000, [&] { done = true; });
      ASSERT_TRUE(run_until(&loop, [&] { return done; }));
    }
    {
      // A CA that did not sign the broker's certificate: the handshake must fail, every time.
      MqttPool pool(&loop, options(dir + "/other.crt"), nullptr, nullptr);
      ASSERT_TRUE(pool.start());
      int spins = 0;
      run_until(&loop, [&] { return ++spins > 100 || pool.ready(); });
      EXPECT_FALSE(pool.ready());
      EXPECT_EQ(pool.publish(0, "tls/x", bytes_of("x"), 0), PublishResult::NotConnected);
      bool done = false;
      pool.stop(0, [&] { done = true; });
      ASSERT_TRUE(run_until(&loop, [&] { return done; }));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop), 0);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(MqttPoolHash, ConnectionForIsStableAndSpreads) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    MqttOptions o;
    o.connections = 4;
    MqttPool a(&loop, o, nullptr, nullptr);
    MqttPool b(&loop, o, nullptr, nullptr);
    std::vector<int> counts(4, 0);
    for (int i = 0; i < 4000; ++i) {
      const std::string thing = "thing-" + std::to_string(i);
      const std::size_t c = a.connection_for(thing);
      ASSERT_LT(c, 4u);
      EXPECT_EQ(c, a.connection_for(thing));
      EXPECT_EQ(c, b.connection_for(thing));
      ++counts[c];
    }
    for (int n : counts) EXPECT_GT(n, 800);  // 1000 expected each
    // FNV-1a 64 is fixed: a thing keeps its connection across restarts and versions.
    EXPECT_EQ(a.connection_for(""), 14695981039346656037ull % 4);
  }
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace

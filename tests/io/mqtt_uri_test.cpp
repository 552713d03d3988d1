// The one MQTT URI parser (io/mqtt_uri.hpp): what it accepts, its defaults, and a detail that
// names the problem for each refusal.
#include "io/mqtt_uri.hpp"

#include <gtest/gtest.h>

#include <string>
#include <system_error>

namespace {

using chunkd::io::parse_mqtt_uri;

TEST(MqttUri, TcpWithPort) {
  auto u = parse_mqtt_uri("tcp://127.0.0.1:1884");
  ASSERT_TRUE(u) << u.error().message();
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 1884);
  EXPECT_TRUE(u->host_is_ip);
}

TEST(MqttUri, DefaultPortsPerScheme) {
  auto tcp = parse_mqtt_uri("tcp://broker.example");
  ASSERT_TRUE(tcp);
  EXPECT_EQ(tcp->port, 1883);
  EXPECT_FALSE(tcp->host_is_ip);
  auto ssl = parse_mqtt_uri("ssl://broker.example");
  ASSERT_TRUE(ssl);
  EXPECT_TRUE(ssl->tls);
  EXPECT_EQ(ssl->port, 8883);
}

TEST(MqttUri, BracketedIpv6) {
  auto u = parse_mqtt_uri("ssl://[::1]:8884");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 8884);
  EXPECT_TRUE(u->host_is_ip);
  auto no_port = parse_mqtt_uri("tcp://[::1]");
  ASSERT_TRUE(no_port);
  EXPECT_EQ(no_port->port, 1883);
}

TEST(MqttUri, PortBounds) {
  EXPECT_TRUE(parse_mqtt_uri("tcp://h:1"));
  EXPECT_TRUE(parse_mqtt_uri("tcp://h:65535"));
  EXPECT_FALSE(parse_mqtt_uri("tcp://h:0"));
  EXPECT_FALSE(parse_mqtt_uri("tcp://h:65536"));
  EXPECT_FALSE(parse_mqtt_uri("tcp://h:000001"));
}

TEST(MqttUri, RefusalsNameTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "expected tcp://host:port"},
      {"127.0.0.1:1883", "expected tcp://host:port"},
      {"http://127.0.0.1:1883", "unknown scheme 'http'"},
      {"mqtt://127.0.0.1", "unknown scheme 'mqtt'"},
      {"tcp://", "missing host"},
      {"tcp://:1883", "missing host"},
      {"tcp://[]:1883", "missing host"},
      {"tcp://127.0.0.1:http", "port must be"},
      {"tcp://127.0.0.1:", "port must be"},
      {"tcp://a:b:1883", "port must be"},
      {"tcp://127.0.0.1:1883/path", "unexpected path"},
      {"tcp://user@127.0.0.1", "unexpected path"},
      {"tcp://host name", "unexpected path"},
      {"tcp://host\tname", "control character"},
      {"tcp://[::1", "unterminated"},
      {"tcp://[::1]1883", "expected :port after ]"},
  };
  for (const auto& [uri, detail] : cases) {
    auto u = parse_mqtt_uri(uri);
    ASSERT_FALSE(u) << uri;
    EXPECT_EQ(u.error().code, std::errc::invalid_argument) << uri;
    EXPECT_NE(u.error().detail.find(detail), std::string::npos) << uri << ": " << u.error().detail;
  }
}

}  // namespace

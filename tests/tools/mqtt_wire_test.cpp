// chunkload's MQTT 3.1.1 packets (tools/chunkload/mqtt_wire.hpp): what it writes is what the
// specification says, and what it reads from a broker is bounded and checked — whole packets only,
// lengths limited, PUBLISH topics inside their packet, nothing read past the bytes given.
#include "tools/chunkload/mqtt_wire.hpp"

#include <gtest/gtest.h>

#include <random>

namespace chunkd::chunkload::mqtt {
namespace {

Buffer bytes(std::initializer_list<int> values) {
  Buffer out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

std::string text(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

TEST(MqttWire, WritesConnectSubscribeAndPublishAsTheSpecificationSays) {
  Buffer out;
  append_connect(out, "dev", 30);
  EXPECT_EQ(out, bytes({0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 3, 'd', 'e', 'v'}));
  out.clear();
  const std::vector<std::string> filters = {"a/b", "c"};
  append_subscribe(out, 7, filters, 1);
  EXPECT_EQ(out, bytes({0x82, 12, 0, 7, 0, 3, 'a', '/', 'b', 1, 0, 1, 'c', 1}));
  out.clear();
  const Buffer payload(200, std::byte{0xab});
  append_publish(out, "t", payload);
  ASSERT_EQ(out.size(), 1u + 2 + 2 + 1 + 200);  // two length bytes for 203
  EXPECT_EQ(out[0], std::byte{0x30});
  EXPECT_EQ(out[1], std::byte{0x80 | (203 % 128)});
  EXPECT_EQ(out[2], std::byte{203 / 128});
  out.clear();
  append_puback(out, 0x1234);
  append_pingreq(out);
  append_disconnect(out);
  EXPECT_EQ(out, bytes({0x40, 2, 0x12, 0x34, 0xc0, 0, 0xe0, 0}));
}

TEST(MqttWire, FindsWholePacketsAndWaitsForTheRest) {
  Buffer in;
  append_publish(in, "x/y", Buffer(300, std::byte{1}));
  append_pingreq(in);
  Packet p;
  std::string error;
  for (std::size_t cut = 0; cut < in.size() - 2; ++cut) {
    ASSERT_EQ(next_packet(std::span(in).first(cut), 1 << 20, p, error), Parse::NeedMore) << cut;
  }
  ASSERT_EQ(next_packet(in, 1 << 20, p, error), Parse::Packet);
  EXPECT_EQ(p.type(), Type::Publish);
  Publish msg;
  ASSERT_TRUE(parse_publish(p, msg, error)) << error;
  EXPECT_EQ(msg.topic, "x/y");
  EXPECT_EQ(msg.payload.size(), 300u);
  EXPECT_EQ(msg.qos, 0);
  ASSERT_EQ(next_packet(std::span(in).subspan(p.size), 1 << 20, p, error), Parse::Packet);
  EXPECT_EQ(p.type(), Type::Pingreq);
}

TEST(MqttWire, ReadsAQosOnePublishWithItsPacketId) {
  const Buffer in = bytes({0x32, 8, 0, 2, 't', '/', 0x01, 0x02, 'h', 'i'});
  Packet p;
  Publish msg;
  std::string error;
  ASSERT_EQ(next_packet(in, 1024, p, error), Parse::Packet);
  ASSERT_TRUE(parse_publish(p, msg, error)) << error;
  EXPECT_EQ(msg.qos, 1);
  EXPECT_EQ(msg.packet_id, 0x0102);
  EXPECT_EQ(text(msg.payload), "hi");
}

TEST(MqttWire, RefusesWhatABrokerMustNotSend) {
  Packet p;
  Publish msg;
  std::string error;
  // A remaining length of five bytes, and one past the bound.
  EXPECT_EQ(next_packet(bytes({0x30, 0xff, 0xff, 0xff, 0xff, 0x01}), 1 << 20, p, error),
            Parse::Error);
  EXPECT_EQ(next_packet(bytes({0x30, 0x81, 0x08}), 1000, p, error), Parse::Error);  // 1025
  EXPECT_NE(error.find("1025 bytes"), std::string::npos) << error;
  // A topic longer than its packet; QoS 2; no topic at all; QoS 1 without room for its id.
  for (const Buffer& in : {bytes({0x30, 4, 0, 9, 'a', 'b'}), bytes({0x34, 5, 0, 1, 't', 0, 1}),
                           bytes({0x30, 1, 0}), bytes({0x32, 3, 0, 1, 't'})}) {
    ASSERT_EQ(next_packet(in, 1024, p, error), Parse::Packet);
    EXPECT_FALSE(parse_publish(p, msg, error)) << text(in);
  }
  // CONNACK and SUBACK of the wrong shape, and a SUBACK with a refusal.
  const Buffer connack = bytes({0x20, 3, 0, 0, 0});
  ASSERT_EQ(next_packet(connack, 1024, p, error), Parse::Packet);
  EXPECT_EQ(parse_connack(p), -1);
  std::uint16_t id = 0;
  std::span<const std::byte> codes;
  const Buffer empty_suback = bytes({0x90, 2, 0, 1});
  ASSERT_EQ(next_packet(empty_suback, 1024, p, error), Parse::Packet);
  EXPECT_FALSE(parse_suback(p, id, codes));
  const Buffer suback = bytes({0x90, 4, 0, 3, 1, 0x80});
  ASSERT_EQ(next_packet(suback, 1024, p, error), Parse::Packet);
  ASSERT_TRUE(parse_suback(p, id, codes));
  EXPECT_EQ(id, 3);
  ASSERT_EQ(codes.size(), 2u);
  EXPECT_EQ(codes[1], std::byte{0x80});
}

// Random bytes: every packet found lies inside the input, and parsing never reads past it
// (AddressSanitizer watches the exact-size copies).
TEST(MqttWire, RandomBytesStayInsideTheirBuffer) {
  std::mt19937 rng(15);
  for (int round = 0; round < 20000; ++round) {
    Buffer in(rng() % 40);
    for (auto& b : in) b = static_cast<std::byte>(rng() % 4 == 0 ? 0x30 : rng());
    std::span<const std::byte> view(in);
    Packet p;
    std::string error;
    while (next_packet(view, 64, p, error) == Parse::Packet) {
      ASSERT_LE(p.size, view.size());
      ASSERT_EQ(p.body.data() + p.body.size(), view.data() + p.size);
      Publish msg;
      if (p.type() == Type::Publish && parse_publish(p, msg, error)) {
        ASSERT_LE(msg.payload.data() + msg.payload.size(), p.body.data() + p.body.size());
      }
      view = view.subspan(p.size);
    }
  }
}

}  // namespace
}  // namespace chunkd::chunkload::mqtt

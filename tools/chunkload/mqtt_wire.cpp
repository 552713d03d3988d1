#include "tools/chunkload/mqtt_wire.hpp"

namespace chunkd::chunkload::mqtt {
namespace {

constexpr std::size_t kMaxRemainingLength = 268435455;  // 4 length bytes

void put_u8(Buffer& out, std::uint8_t v) { out.push_back(std::byte{v}); }
void put_u16(Buffer& out, std::size_t v) {
  put_u8(out, static_cast<std::uint8_t>((v >> 8) & 0xff));
  put_u8(out, static_cast<std::uint8_t>(v & 0xff));
}
void put_bytes(Buffer& out, const void* data, std::size_t size) {
  const auto* b = static_cast<const std::byte*>(data);
  out.insert(out.end(), b, b + size);
}
void put_text(Buffer& out, std::string_view s) {
  put_u16(out, s.size());
  put_bytes(out, s.data(), s.size());
}
// 7 bits a byte, low first, high bit = more.
void put_remaining_length(Buffer& out, std::size_t length) {
  do {
    auto digit = static_cast<std::uint8_t>(length % 128);
    length /= 128;
    if (length > 0) digit = static_cast<std::uint8_t>(digit | 0x80);
    put_u8(out, digit);
  } while (length > 0);
}
std::uint16_t get_u16(std::span<const std::byte> in, std::size_t at) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(in[at]) << 8 |
                                    std::to_integer<unsigned>(in[at + 1]));
}

}  // namespace

void append_connect(Buffer& out, std::string_view client_id, std::uint16_t keep_alive_s) {
  put_u8(out, 0x10);
  put_remaining_length(out, 10 + 2 + client_id.size());
  put_text(out, "MQTT");
  put_u8(out, 4);     // protocol level: 3.1.1
  put_u8(out, 0x02);  // clean session
  put_u16(out, keep_alive_s);
  put_text(out, client_id);
}

void append_subscribe(Buffer& out, std::uint16_t packet_id, std::span<const std::string> filters,
                      int qos) {
  std::size_t length = 2;
  for (const std::string& f : filters) length += 2 + f.size() + 1;
  put_u8(out, 0x82);
  put_remaining_length(out, length);
  put_u16(out, packet_id);
  for (const std::string& f : filters) {
    put_text(out, f);
    put_u8(out, static_cast<std::uint8_t>(qos));
  }
}

void append_publish(Buffer& out, std::string_view topic, std::span<const std::byte> payload) {
  put_u8(out, 0x30);
  put_remaining_length(out, 2 + topic.size() + payload.size());
  put_text(out, topic);
  put_bytes(out, payload.data(), payload.size());
}

void append_puback(Buffer& out, std::uint16_t packet_id) {
  put_u8(out, 0x40);
  put_u8(out, 0x02);
  put_u16(out, packet_id);
}

void append_pingreq(Buffer& out) {
  put_u8(out, 0xc0);
  put_u8(out, 0x00);
}

void append_disconnect(Buffer& out) {
  put_u8(out, 0xe0);
  put_u8(out, 0x00);
}

Parse next_packet(std::span<const std::byte> in, std::size_t max_packet, Packet& packet,
                  std::string& error) {
  if (in.size() < 2) return Parse::NeedMore;
  std::size_t length = 0;
  std::size_t at = 1;
  for (unsigned shift = 0;; shift += 7) {
    if (at == in.size()) return Parse::NeedMore;
    if (at > 4) {
      error = "the broker sent a remaining length of more than 4 bytes";
      return Parse::Error;
    }
    const auto b = std::to_integer<std::uint8_t>(in[at++]);
    length |= static_cast<std::size_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) break;
  }
  if (length > max_packet || length > kMaxRemainingLength) {
    error = "the broker sent a packet of " + std::to_string(length) + " bytes (chunkload reads " +
            std::to_string(max_packet) + " at most)";
    return Parse::Error;
  }
  if (in.size() - at < length) return Parse::NeedMore;
  packet.first = std::to_integer<std::uint8_t>(in[0]);
  packet.body = in.subspan(at, length);
  packet.size = at + length;
  return Parse::Packet;
}

bool parse_publish(const Packet& packet, Publish& out, std::string& error) {
  const std::span<const std::byte> b = packet.body;
  out.qos = (packet.flags() >> 1) & 3;
  if (out.qos > 1) {
    error = "the broker sent a PUBLISH at QoS " + std::to_string(out.qos) +
            " (chunkload subscribes at QoS 0 or 1)";
    return false;
  }
  if (b.size() < 2) {
    error = "the broker sent a PUBLISH without a topic";
    return false;
  }
  const std::size_t topic_len = get_u16(b, 0);
  const std::size_t id_len = out.qos > 0 ? 2 : 0;
  if (b.size() < 2 + topic_len + id_len) {
    error = "the broker sent a PUBLISH whose topic does not fit in it";
    return false;
  }
  out.topic = std::string_view(reinterpret_cast<const char*>(b.data()) + 2, topic_len);
  out.packet_id = id_len != 0 ? get_u16(b, 2 + topic_len) : 0;
  out.payload = b.subspan(2 + topic_len + id_len);
  return true;
}

int parse_connack(const Packet& packet) {
  if (packet.type() != Type::Connack || packet.body.size() != 2) return -1;
  return std::to_integer<int>(packet.body[1]);
}

bool parse_suback(const Packet& packet, std::uint16_t& packet_id,
                  std::span<const std::byte>& codes) {
  if (packet.type() != Type::Suback || packet.body.size() < 3) return false;
  packet_id = get_u16(packet.body, 0);
  codes = packet.body.subspan(2);
  return true;
}

}  // namespace chunkd::chunkload::mqtt

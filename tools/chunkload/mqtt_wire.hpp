// MQTT 3.1.1 on the wire, for chunkload's raw engine (raw_fleet.hpp): the few packets a device
// sends, appended to a connection's output buffer, and a parser that finds whole packets in a
// read buffer and hands out views into it (no copy, no allocation per message).
//
// Everything read is from the network: the parser bounds the remaining length (`max_packet`),
// rejects malformed lengths and PUBLISH bodies whose topic does not fit, and never reads past
// what it was given. Pure: no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace chunkd::chunkload::mqtt {

using Buffer = std::vector<std::byte>;

// Control packet types (the high nibble of the first byte).
enum class Type : std::uint8_t {
  Connect = 1,
  Connack = 2,
  Publish = 3,
  Puback = 4,
  Subscribe = 8,
  Suback = 9,
  Pingreq = 12,
  Pingresp = 13,
  Disconnect = 14,
};

// CONNECT: MQTT 3.1.1, clean session, no will, no credentials.
void append_connect(Buffer& out, std::string_view client_id, std::uint16_t keep_alive_s);
// SUBSCRIBE with every filter at `qos`.
void append_subscribe(Buffer& out, std::uint16_t packet_id, std::span<const std::string> filters,
                      int qos);
// A QoS 0 PUBLISH.
void append_publish(Buffer& out, std::string_view topic, std::span<const std::byte> payload);
void append_puback(Buffer& out, std::uint16_t packet_id);
void append_pingreq(Buffer& out);
void append_disconnect(Buffer& out);

// One whole packet found at the start of a buffer.
struct Packet {
  std::uint8_t first = 0;           // type << 4 | flags
  std::span<const std::byte> body;  // the variable header and payload
  std::size_t size = 0;             // fixed header + body: bytes to consume
  Type type() const { return static_cast<Type>(first >> 4); }
  std::uint8_t flags() const { return first & 0x0f; }
};

enum class Parse : std::uint8_t {
  Packet,    // `packet` is set
  NeedMore,  // not a whole packet yet
  Error,     // malformed or too large: the connection cannot continue (`error` says why)
};

// Looks for one whole packet at the start of `in`. `max_packet` bounds the body.
Parse next_packet(std::span<const std::byte> in, std::size_t max_packet, Packet& packet,
                  std::string& error);

// A PUBLISH body taken apart (views into the packet).
struct Publish {
  std::string_view topic;
  std::uint16_t packet_id = 0;  // QoS > 0 only
  int qos = 0;
  std::span<const std::byte> payload;
};
bool parse_publish(const Packet& packet, Publish& out, std::string& error);

// CONNACK: the return code (0 accepted), or -1 when malformed.
int parse_connack(const Packet& packet);

// SUBACK: the packet id and the granted QoS per filter (0x80: refused). False when malformed.
bool parse_suback(const Packet& packet, std::uint16_t& packet_id,
                  std::span<const std::byte>& codes);

}  // namespace chunkd::chunkload::mqtt

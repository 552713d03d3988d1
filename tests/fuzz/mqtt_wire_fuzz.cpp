// Fuzzes chunkload's MQTT packet parser (tools/chunkload/mqtt_wire.hpp), which reads whatever the
// broker sends: no crash, no view outside the input, and the framing agrees with itself — a
// packet found in a buffer is NeedMore in every shorter prefix of it, and a QoS 0 PUBLISH parsed
// from it survives append_publish → next_packet → parse_publish unchanged.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "tools/chunkload/mqtt_wire.hpp"

namespace {

using namespace chunkd::chunkload::mqtt;

void check(bool condition) {
  if (!condition) std::abort();
}

bool inside(std::span<const std::byte> part, std::span<const std::byte> whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

void publish_round_trip(const Publish& p) {
  Buffer out;
  append_publish(out, p.topic, p.payload);
  Packet again;
  std::string error;
  check(next_packet(out, out.size(), again, error) == Parse::Packet);
  check(again.size == out.size());
  Publish q;
  check(parse_publish(again, q, error));
  check(q.topic == p.topic && q.qos == 0);
  check(std::equal(q.payload.begin(), q.payload.end(), p.payload.begin(), p.payload.end()));
}

void check_packet(const Packet& packet, std::span<const std::byte> in, std::size_t max_packet) {
  check(packet.size <= in.size() && packet.body.size() <= max_packet);
  check(inside(packet.body, in.first(packet.size)));
  Packet shorter;
  std::string error;
  for (std::size_t cut : {std::size_t{0}, std::size_t{1}, packet.size / 2, packet.size - 1}) {
    if (cut < packet.size) {
      check(next_packet(in.first(cut), max_packet, shorter, error) == Parse::NeedMore);
    }
  }
  switch (packet.type()) {
    case Type::Publish: {
      Publish p;
      if (parse_publish(packet, p, error)) {
        check(p.qos <= 1);
        check(inside(std::as_bytes(std::span(p.topic.data(), p.topic.size())), packet.body));
        check(inside(p.payload, packet.body));
        if (p.qos == 0) publish_round_trip(p);
      } else {
        check(!error.empty());
      }
      break;
    }
    case Type::Connack:
      check(parse_connack(packet) >= -1 && parse_connack(packet) <= 255);
      break;
    case Type::Suback: {
      std::uint16_t id = 0;
      std::span<const std::byte> codes;
      if (parse_suback(packet, id, codes)) check(inside(codes, packet.body) && !codes.empty());
      break;
    }
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the bound, so that "too large" is reached with small inputs too.
  const std::size_t max_packet = std::size_t{data[0]} * 64 + 2;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  while (!in.empty()) {
    Packet packet;
    std::string error;
    const Parse r = next_packet(in, max_packet, packet, error);
    if (r == Parse::Error) {
      check(!error.empty());
      return 0;
    }
    if (r == Parse::NeedMore) return 0;
    check_packet(packet, in, max_packet);
    in = in.subspan(packet.size);
  }
  return 0;
}

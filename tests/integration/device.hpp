// Simulated devices for integration tests: a device speaking the stream protocol (Device) through
// a paho.mqtt.c async MQTT client (MqttClient, tests/integration/mqtt_client.hpp), as the device
// libraries do: describe, GetStream requests, and whole-file downloads in window or bitmap mode.
//
// Owns: one MqttClient each (and through it the queue of the messages it received).
// Threads: every public call is for one test thread at a time and blocks at most for the timeout
// it is given.
// Header-only; integration tests link paho-mqtt3as (paho with TLS) and chunkd_engine (for
// protocol/).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "protocol/device.hpp"
#include "protocol/request.hpp"
#include "protocol/topic.hpp"
#include "tests/integration/mqtt_client.hpp"

namespace chunkd::test {

// A unique MQTT client id for a test device.
inline std::string device_client_id(std::string_view thing) {
  static std::atomic<unsigned> counter{0};
  return "dev-" + std::string(thing.substr(0, 40)) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1));
}

enum class DownloadMode {
  Window,  // o/n windows of 131072 / l blocks, one request at a time
  Bitmap,  // o = 0, a bitmap of the whole file's missing blocks, n blocks per request
};

struct DownloadOptions {
  std::uint32_t block_size = 4096;
  DownloadMode mode = DownloadMode::Window;
  std::uint32_t bitmap_blocks_per_request = 1;  // `n` in bitmap mode (the OTA agent sends 1)
  std::optional<std::string> client_token;
  std::optional<std::uint64_t> version;  // `s`; unset: the version describe reported
  bool send_version = true;
  int idle_timeout_ms = 3000;  // no message for this long: request the missing blocks again
  int deadline_ms = 600000;    // the whole download
  int max_rerequests = 200;
  bool retry_throttled = true;                     // RequestThrottled: wait a little and ask again
  std::atomic<std::uint64_t>* progress = nullptr;  // when set: blocks received so far
};

struct DownloadResult {
  bool ok = false;
  std::string error;
  std::vector<std::byte> bytes;
  std::uint64_t version = 0;
  std::size_t requests = 0;
  std::size_t rerequests = 0;
  std::size_t duplicates = 0;
  std::size_t throttled = 0;
};

// One reply received by a Device, decoded by its topic.
struct Reply {
  protocol::ReplyKind kind = protocol::ReplyKind::Rejected;
  protocol::Format format = protocol::Format::Json;
  std::string topic;
  std::vector<std::byte> raw;
  std::string decode_error;  // empty when decoded
  protocol::DataReply data;
  protocol::DescriptionReply description;
  protocol::RejectedReply rejected;
};

class Device {
 public:
  Device(std::string uri, std::string thing, std::string prefix = "$aws/things")
      : thing_(std::move(thing)),
        codec_(std::move(prefix)),
        mqtt_(std::move(uri), device_client_id(thing_)) {}

  bool connect(int timeout_ms = 30000) { return mqtt_.connect(timeout_ms); }
  MqttClient& mqtt() { return mqtt_; }
  const std::string& thing() const { return thing_; }
  const protocol::TopicCodec& codec() const { return codec_; }

  std::string reply_topic(std::string_view stream, protocol::ReplyKind kind,
                          protocol::Format format) const {
    std::string out;
    codec_.reply_topic(out, thing_, stream, kind, format);
    return out;
  }
  std::string request_topic(std::string_view stream, protocol::Verb verb,
                            protocol::Format format) const {
    std::string out;
    codec_.request_topic(out, thing_, stream, verb, format);
    return out;
  }
  // "<prefix>/<thing>/streams/<stream>/<verb>/<fmt>" with any verb and format text.
  std::string raw_topic(std::string_view stream, std::string_view verb,
                        std::string_view format) const {
    return codec_.prefix() + "/" + thing_ + "/streams/" + std::string(stream) + "/" +
           std::string(verb) + "/" + std::string(format);
  }

  // Subscribes to the data, description and rejected topics of `stream` in both formats.
  bool watch(std::string_view stream, int timeout_ms = 30000) {
    std::vector<std::string> filters;
    for (auto fmt : {protocol::Format::Json, protocol::Format::Cbor}) {
      for (auto kind : {protocol::ReplyKind::Data, protocol::ReplyKind::Description,
                        protocol::ReplyKind::Rejected}) {
        filters.push_back(reply_topic(stream, kind, fmt));
      }
    }
    return mqtt_.subscribe(filters, timeout_ms);
  }

  bool send_get(std::string_view stream, protocol::Format format,
                const protocol::GetStreamArgs& args) {
    auto payload = protocol::encode_get_request(format, args);
    return mqtt_.publish(request_topic(stream, protocol::Verb::Get, format), payload);
  }
  bool send_describe(std::string_view stream, protocol::Format format,
                     std::optional<std::string_view> token = std::nullopt) {
    auto payload = protocol::encode_describe_request(format, token);
    return mqtt_.publish(request_topic(stream, protocol::Verb::Describe, format), payload);
  }
  bool send_raw(const std::string& topic, std::span<const std::byte> payload) {
    return mqtt_.publish(topic, payload);
  }

  // The next reply on a watched topic (decoded), or nullopt after timeout_ms.
  std::optional<Reply> next_reply(int timeout_ms) {
    auto m = mqtt_.next(timeout_ms);
    if (!m) return std::nullopt;
    return decode(std::move(*m));
  }

  // The next reply of `kind`, skipping others (e.g. stray data blocks), or nullopt.
  std::optional<Reply> wait_for(protocol::ReplyKind kind, int timeout_ms = 20000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto r = next_reply(static_cast<int>(left.count()));
      if (!r) return std::nullopt;
      if (r->kind == kind) return r;
    }
  }

  // DescribeStream round trip; retried (every 3 s) while no reply comes, at most timeout_ms.
  std::optional<Reply> describe(std::string_view stream, protocol::Format format,
                                std::optional<std::string_view> token = std::nullopt,
                                int timeout_ms = 30000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      send_describe(stream, format, token);
      auto r = wait_for_any({protocol::ReplyKind::Description, protocol::ReplyKind::Rejected},
                            static_cast<int>(std::min<long long>(3000, left.count())));
      if (r) return r;
    }
  }

  // Sends one GetStream request and returns the first rejected or data reply.
  std::optional<Reply> get_once(std::string_view stream, protocol::Format format,
                                const protocol::GetStreamArgs& args, int timeout_ms = 20000) {
    if (!send_get(stream, format, args)) return std::nullopt;
    return wait_for_any({protocol::ReplyKind::Data, protocol::ReplyKind::Rejected}, timeout_ms);
  }

  // Describes the stream, then downloads file `file_id` whole, verifying every reply's shape.
  DownloadResult download(std::string_view stream, protocol::Format format, std::uint32_t file_id,
                          const DownloadOptions& options) {
    DownloadResult result;
    auto d = describe(stream, format, std::nullopt, 60000);
    if (!d) {
      result.error = "no description reply";
      return result;
    }
    if (d->kind != protocol::ReplyKind::Description) {
      result.error =
          "describe rejected: " + d->rejected.code + " " + d->rejected.message + d->decode_error;
      return result;
    }
    std::optional<std::uint64_t> size;
    for (const auto& f : d->description.files) {
      if (f.file_id == file_id) size = f.size_bytes;
    }
    if (!size) {
      result.error = "file " + std::to_string(file_id) + " not in the description";
      return result;
    }
    result.version = d->description.version;
    return download_known(stream, format, file_id, *size, d->description.version, options,
                          std::move(result));
  }

  DownloadResult download_known(std::string_view stream, protocol::Format format,
                                std::uint32_t file_id, std::uint64_t size, std::uint64_t version,
                                const DownloadOptions& options, DownloadResult result = {}) {
    using Clock = std::chrono::steady_clock;
    const std::uint32_t l = options.block_size;
    const std::uint64_t blocks = protocol::block_count(size, l);
    result.bytes.assign(size, std::byte{0});
    if (blocks == 0) {
      result.ok = true;
      return result;
    }
    std::vector<bool> have(blocks, false);
    std::uint64_t missing = blocks;
    const std::uint32_t window = protocol::kMaxRequestPayloadBytes / l;
    std::uint64_t window_start = 0;  // window mode: first block of the current window
    const std::string data_topic = reply_topic(stream, protocol::ReplyKind::Data, format);
    const std::string rejected_topic = reply_topic(stream, protocol::ReplyKind::Rejected, format);
    const auto deadline = Clock::now() + std::chrono::milliseconds(options.deadline_ms);
    std::vector<bool> wanted(blocks, false);  // what the last request should bring
    std::size_t expected_in_flight = 0;       // of those, not yet received

    auto block_len = [&](std::uint64_t i) -> std::uint64_t {
      return std::min<std::uint64_t>(l, size - i * l);
    };
    auto fail = [&](std::string text) {
      result.ok = false;
      result.error = std::move(text);
      return std::move(result);
    };
    // Sends the next request; counts how many blocks it should bring.
    auto request = [&]() {
      protocol::GetStreamArgs args;
      args.client_token = options.client_token;
      if (options.send_version) args.version = options.version.value_or(version);
      args.file_id = file_id;
      args.block_size = l;
      expected_in_flight = 0;
      std::fill(wanted.begin(), wanted.end(), false);
      if (options.mode == DownloadMode::Window) {
        while (window_start < blocks && have[window_start]) {
          // Skip a window once all of it arrived.
          std::uint64_t end = std::min<std::uint64_t>(window_start + window, blocks);
          bool all = true;
          for (std::uint64_t i = window_start; i < end; ++i) all = all && have[i];
          if (!all) break;
          window_start = end;
        }
        std::uint64_t end = std::min<std::uint64_t>(window_start + window, blocks);
        args.offset = static_cast<std::uint32_t>(window_start);
        args.count = window;
        for (std::uint64_t i = window_start; i < end; ++i) {
          if (have[i]) continue;
          wanted[i] = true;
          ++expected_in_flight;
        }
      } else {
        std::vector<std::uint8_t> bitmap((blocks + 7) / 8, 0);
        std::uint64_t bytes_budget = protocol::kMaxRequestPayloadBytes;
        std::uint32_t n = options.bitmap_blocks_per_request;
        for (std::uint64_t i = 0; i < blocks; ++i) {
          if (have[i]) continue;
          bitmap[i >> 3] = static_cast<std::uint8_t>(bitmap[i >> 3] | (1u << (i & 7)));
          if ((n == 0 || expected_in_flight < n) && block_len(i) <= bytes_budget) {
            bytes_budget -= block_len(i);
            wanted[i] = true;
            ++expected_in_flight;
          } else {
            bytes_budget = 0;  // selection stops at the first block that does not fit
          }
        }
        args.offset = 0;
        if (n > 0) args.count = n;
        args.bitmap = std::move(bitmap);
      }
      ++result.requests;
      send_get(stream, format, args);  // a failed publish is retried after the idle timeout
    };

    request();
    while (missing > 0) {
      if (Clock::now() > deadline) {
        return fail("download deadline passed with " + std::to_string(missing) + " of " +
                    std::to_string(blocks) + " blocks missing");
      }
      auto m = mqtt_.next(options.idle_timeout_ms);
      if (!m) {
        if (static_cast<int>(++result.rerequests) > options.max_rerequests) {
          return fail("no progress after " + std::to_string(options.max_rerequests) +
                      " re-requests; " + std::to_string(missing) + " blocks missing");
        }
        request();
        continue;
      }
      if (m->topic == rejected_topic) {
        auto rej = protocol::decode_rejected(format, m->payload);
        if (!rej) return fail("undecodable rejected reply: " + rej.error());
        if (rej->code == "RequestThrottled" && options.retry_throttled) {
          ++result.throttled;
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          request();
          continue;
        }
        return fail("rejected: " + rej->code + ": " + rej->message);
      }
      if (m->topic != data_topic) continue;  // description or other format: not ours
      auto data = protocol::decode_data_reply(format, m->payload);
      if (!data) return fail("undecodable data reply: " + data.error());
      if (data->client_token != options.client_token) {
        return fail("client token not echoed as sent: got '" +
                    data->client_token.value_or("<none>") + "'");
      }
      if (data->file_id != file_id) return fail("data for file " + std::to_string(data->file_id));
      const std::uint64_t i = data->block_index;
      if (i >= blocks) return fail("block index " + std::to_string(i) + " past the end");
      if (data->payload.size() != block_len(i) || data->length != data->payload.size()) {
        return fail("block " + std::to_string(i) + " has length " +
                    std::to_string(data->payload.size()) + " (l=" + std::to_string(data->length) +
                    "), expected " + std::to_string(block_len(i)));
      }
      if (have[i]) {
        ++result.duplicates;
        continue;
      }
      have[i] = true;
      --missing;
      if (options.progress != nullptr) options.progress->fetch_add(1);
      std::memcpy(result.bytes.data() + i * l, data->payload.data(), data->payload.size());
      if (wanted[i] && expected_in_flight > 0) --expected_in_flight;
      if (expected_in_flight == 0 && missing > 0) request();
    }
    if (mqtt_.overflowed() > 0) return fail("the device's receive queue overflowed");
    result.ok = true;
    return result;
  }

 private:
  std::optional<Reply> wait_for_any(std::initializer_list<protocol::ReplyKind> kinds,
                                    int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto r = next_reply(static_cast<int>(left.count()));
      if (!r) return std::nullopt;
      if (std::find(kinds.begin(), kinds.end(), r->kind) != kinds.end()) return r;
    }
  }

  Reply decode(MqttMessage m) const {
    Reply r;
    r.topic = std::move(m.topic);
    r.raw = std::move(m.payload);
    // ".../<kind>/<fmt>"
    auto slash = r.topic.rfind('/');
    auto prev = slash == std::string::npos ? std::string::npos : r.topic.rfind('/', slash - 1);
    std::string fmt = slash == std::string::npos ? "" : r.topic.substr(slash + 1);
    std::string kind = prev == std::string::npos ? "" : r.topic.substr(prev + 1, slash - prev - 1);
    r.format = fmt == "cbor" ? protocol::Format::Cbor : protocol::Format::Json;
    if (kind == "data") {
      r.kind = protocol::ReplyKind::Data;
      auto d = protocol::decode_data_reply(r.format, r.raw);
      if (d)
        r.data = std::move(*d);
      else
        r.decode_error = d.error();
    } else if (kind == "description") {
      r.kind = protocol::ReplyKind::Description;
      auto d = protocol::decode_description(r.format, r.raw);
      if (d)
        r.description = std::move(*d);
      else
        r.decode_error = d.error();
    } else {
      r.kind = protocol::ReplyKind::Rejected;
      auto d = protocol::decode_rejected(r.format, r.raw);
      if (d)
        r.rejected = std::move(*d);
      else
        r.decode_error = d.error();
    }
    return r;
  }

  std::string thing_;
  protocol::TopicCodec codec_;
  MqttClient mqtt_;
};

}  // namespace chunkd::test

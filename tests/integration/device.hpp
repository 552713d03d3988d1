// Simulated devices for integration tests: a paho.mqtt.c async MQTT client (MqttClient) and a
// device speaking the stream protocol through it (Device), as the device libraries do.
//
// Owns: one MQTTAsync client each, and a bounded queue of the messages it received.
// Threads: paho calls the callbacks on its own threads; they only touch the queue (under a mutex)
// and re-subscribe after an automatic reconnect. Every public call is for one test thread at a
// time and blocks at most for the timeout it is given.
// Header-only; integration tests link paho-mqtt3as (paho with TLS) and chunkd_engine (for
// protocol/).
#pragma once

#include <MQTTAsync.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <mutex>
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

namespace chunkd::test {

struct MqttMessage {
  std::string topic;
  std::vector<std::byte> payload;
};

inline std::span<const std::byte> as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}
inline std::string to_string(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

class MqttClient {
 public:
  static constexpr std::size_t kMaxQueuedMessages = 1 << 18;

  // A broker login and, for an ssl:// URI, the CA to trust and a client certificate (optional).
  struct Login {
    std::string username;
    std::string password;
    std::string ca_file;
    std::string cert_file;
    std::string key_file;
  };

  MqttClient(std::string uri, std::string client_id)
      : uri_(std::move(uri)), client_id_(std::move(client_id)) {
    MQTTAsync_createOptions create = MQTTAsync_createOptions_initializer;
    create.sendWhileDisconnected = 0;
    if (MQTTAsync_createWithOptions(&client_, uri_.c_str(), client_id_.c_str(),
                                    MQTTCLIENT_PERSISTENCE_NONE, nullptr,
                                    &create) != MQTTASYNC_SUCCESS) {
      client_ = nullptr;
      set_error("MQTTAsync_create failed");
      return;
    }
    MQTTAsync_setCallbacks(client_, this, &MqttClient::on_connection_lost, &MqttClient::on_message,
                           nullptr);
    MQTTAsync_setConnected(client_, this, &MqttClient::on_connected);
  }

  ~MqttClient() {
    if (client_ == nullptr) return;
    if (MQTTAsync_isConnected(client_) != 0) {
      MQTTAsync_disconnectOptions opts = MQTTAsync_disconnectOptions_initializer;
      opts.timeout = 1000;
      opts.onSuccess = &MqttClient::on_disconnected;
      opts.onFailure = &MqttClient::on_disconnect_failed;
      opts.context = this;
      if (MQTTAsync_disconnect(client_, &opts) == MQTTASYNC_SUCCESS) {
        std::unique_lock lock(mutex_);
        cv_.wait_for(lock, std::chrono::seconds(5), [&] { return disconnected_; });
      }
    }
    MQTTAsync_destroy(&client_);
  }

  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  // Used by the next connect().
  void set_login(Login login) { login_ = std::move(login); }

  // Connects with a clean session and automatic reconnect (1..2 s); after every reconnect the
  // subscriptions made so far are made again. Blocks until connected (at most timeout_ms).
  bool connect(int timeout_ms = 30000) {
    if (client_ == nullptr) return false;
    MQTTAsync_connectOptions opts = MQTTAsync_connectOptions_initializer;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    if (!login_.username.empty()) {
      opts.username = login_.username.c_str();
      opts.password = login_.password.c_str();
    }
    if (!login_.ca_file.empty()) {
      ssl.trustStore = login_.ca_file.c_str();
      ssl.enableServerCertAuth = 1;
      ssl.verify = 1;  // the host name too
      if (!login_.cert_file.empty()) {
        ssl.keyStore = login_.cert_file.c_str();
        ssl.privateKey = login_.key_file.c_str();
      }
      opts.ssl = &ssl;
    }
    opts.keepAliveInterval = 30;
    opts.cleansession = 1;
    opts.automaticReconnect = 1;
    opts.minRetryInterval = 1;
    opts.maxRetryInterval = 2;
    opts.connectTimeout = 10;
    opts.onSuccess = &MqttClient::on_connect_ok;
    opts.onFailure = &MqttClient::on_connect_failed;
    opts.context = this;
    {
      std::lock_guard lock(mutex_);
      connect_result_ = 0;
    }
    int rc = MQTTAsync_connect(client_, &opts);
    if (rc != MQTTASYNC_SUCCESS) {
      set_error("MQTTAsync_connect: " + std::to_string(rc));
      return false;
    }
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return connect_result_ != 0; })) {
      error_ = "connect timed out";
      return false;
    }
    return connect_result_ > 0;
  }

  // Subscribes at QoS 0 and waits for the SUBACK (at most timeout_ms).
  bool subscribe(const std::vector<std::string>& filters, int timeout_ms = 30000) {
    {
      std::lock_guard lock(mutex_);
      for (const auto& f : filters) subscriptions_.push_back(f);
    }
    return subscribe_now(filters, timeout_ms);
  }

  // QoS 0 publish; false when the client is not connected.
  bool publish(const std::string& topic, std::span<const std::byte> payload) {
    if (client_ == nullptr) return false;
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = const_cast<std::byte*>(payload.data());
    msg.payloadlen = static_cast<int>(payload.size());
    msg.qos = 0;
    msg.retained = 0;
    MQTTAsync_responseOptions opts = MQTTAsync_responseOptions_initializer;
    int rc = MQTTAsync_sendMessage(client_, topic.c_str(), &msg, &opts);
    if (rc != MQTTASYNC_SUCCESS) {
      set_error("MQTTAsync_sendMessage: " + std::to_string(rc));
      return false;
    }
    return true;
  }

  // The next message received, waiting at most timeout_ms.
  std::optional<MqttMessage> next(int timeout_ms) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return !queue_.empty(); })) {
      return std::nullopt;
    }
    MqttMessage m = std::move(queue_.front());
    queue_.pop_front();
    return m;
  }

  void clear() {
    std::lock_guard lock(mutex_);
    queue_.clear();
  }

  bool connected() const { return client_ != nullptr && MQTTAsync_isConnected(client_) != 0; }
  // Messages dropped because the queue was full.
  std::size_t overflowed() const { return overflowed_.load(); }
  int reconnects() const { return reconnects_.load(); }
  std::string error() const {
    std::lock_guard lock(mutex_);
    return error_;
  }
  const std::string& client_id() const { return client_id_; }
  // What the broker granted per filter in the last SUBACK (0..2, or 0x80 and up: refused).
  std::vector<int> granted() const {
    std::lock_guard lock(mutex_);
    return granted_;
  }

 private:
  bool subscribe_now(const std::vector<std::string>& filters, int timeout_ms) {
    if (client_ == nullptr || filters.empty()) return false;
    std::vector<char*> topics;
    std::vector<int> qos(filters.size(), 0);
    for (const auto& f : filters) topics.push_back(const_cast<char*>(f.c_str()));
    MQTTAsync_responseOptions opts = MQTTAsync_responseOptions_initializer;
    opts.onSuccess = &MqttClient::on_subscribe_ok;
    opts.onFailure = &MqttClient::on_subscribe_failed;
    opts.context = this;
    std::uint64_t ticket;
    {
      std::lock_guard lock(mutex_);
      ticket = ++subscribe_requests_;
      subscribe_count_ = filters.size();
    }
    int rc = MQTTAsync_subscribeMany(client_, static_cast<int>(filters.size()), topics.data(),
                                     qos.data(), &opts);
    if (rc != MQTTASYNC_SUCCESS) {
      set_error("MQTTAsync_subscribeMany: " + std::to_string(rc));
      return false;
    }
    if (timeout_ms <= 0) return true;
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return subscribe_answers_ >= ticket; })) {
      error_ = "subscribe timed out";
      return false;
    }
    return subscribe_failures_ == 0;
  }

  void set_error(std::string text) {
    std::lock_guard lock(mutex_);
    error_ = std::move(text);
  }

  static void on_connect_ok(void* context, MQTTAsync_successData*) {
    auto* self = static_cast<MqttClient*>(context);
    std::lock_guard lock(self->mutex_);
    self->connect_result_ = 1;
    self->cv_.notify_all();
  }
  static void on_connect_failed(void* context, MQTTAsync_failureData* response) {
    auto* self = static_cast<MqttClient*>(context);
    std::lock_guard lock(self->mutex_);
    self->connect_result_ = -1;
    self->error_ = "connect failed: " + std::to_string(response != nullptr ? response->code : 0);
    self->cv_.notify_all();
  }
  // Called after the first connect and after every automatic reconnect.
  static void on_connected(void* context, char*) {
    auto* self = static_cast<MqttClient*>(context);
    std::vector<std::string> filters;
    {
      std::lock_guard lock(self->mutex_);
      if (!self->ever_connected_) {
        self->ever_connected_ = true;
        return;
      }
      filters = self->subscriptions_;
    }
    self->reconnects_.fetch_add(1);
    if (!filters.empty()) self->subscribe_now(filters, 0);
  }
  static void on_connection_lost(void*, char*) {}
  // The granted QoS per filter is kept (granted()), not judged: a broker may grant a filter its
  // ACL then filters (Mosquitto 2.0.11 does).
  static void on_subscribe_ok(void* context, MQTTAsync_successData* response) {
    auto* self = static_cast<MqttClient*>(context);
    std::lock_guard lock(self->mutex_);
    self->granted_.clear();
    if (response != nullptr && self->subscribe_count_ == 1) {
      self->granted_.push_back(response->alt.qos);
    } else if (response != nullptr && response->alt.qosList != nullptr) {
      self->granted_.assign(response->alt.qosList, response->alt.qosList + self->subscribe_count_);
    }
    ++self->subscribe_answers_;
    self->cv_.notify_all();
  }
  static void on_subscribe_failed(void* context, MQTTAsync_failureData*) {
    auto* self = static_cast<MqttClient*>(context);
    std::lock_guard lock(self->mutex_);
    ++self->subscribe_failures_;
    ++self->subscribe_answers_;
    self->cv_.notify_all();
  }
  static void on_disconnected(void* context, MQTTAsync_successData*) {
    auto* self = static_cast<MqttClient*>(context);
    std::lock_guard lock(self->mutex_);
    self->disconnected_ = true;
    self->cv_.notify_all();
  }
  static void on_disconnect_failed(void* context, MQTTAsync_failureData*) {
    on_disconnected(context, nullptr);
  }
  static int on_message(void* context, char* topic_name, int topic_len,
                        MQTTAsync_message* message) {
    auto* self = static_cast<MqttClient*>(context);
    MqttMessage m;
    m.topic = topic_len > 0 ? std::string(topic_name, static_cast<std::size_t>(topic_len))
                            : std::string(topic_name);
    const auto* p = static_cast<const std::byte*>(message->payload);
    m.payload.assign(p, p + message->payloadlen);
    MQTTAsync_freeMessage(&message);
    MQTTAsync_free(topic_name);
    std::lock_guard lock(self->mutex_);
    if (self->queue_.size() >= kMaxQueuedMessages) {
      self->overflowed_.fetch_add(1);
      return 1;
    }
    self->queue_.push_back(std::move(m));
    self->cv_.notify_all();
    return 1;
  }

  std::string uri_;
  std::string client_id_;
  Login login_;
  MQTTAsync client_ = nullptr;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<MqttMessage> queue_;
  std::vector<std::string> subscriptions_;
  std::string error_;
  int connect_result_ = 0;  // 0 pending, 1 ok, -1 failed
  bool ever_connected_ = false;
  bool disconnected_ = false;
  std::uint64_t subscribe_requests_ = 0;
  std::uint64_t subscribe_answers_ = 0;
  std::uint64_t subscribe_failures_ = 0;
  std::size_t subscribe_count_ = 0;  // filters in the last SUBSCRIBE
  std::vector<int> granted_;
  std::atomic<std::size_t> overflowed_{0};
  std::atomic<int> reconnects_{0};
};

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

// A paho.mqtt.c async MQTT client for integration tests (MqttClient): connects (optionally
// with a login and TLS), subscribes, publishes at QoS 0 and queues what it receives, as a device's
// MQTT library does. tests/integration/device.hpp builds the simulated devices on it.
//
// Owns: one MQTTAsync client, and a bounded queue of the messages it received.
// Threads: paho calls the callbacks on its own threads; they only touch the queue (under a mutex)
// and re-subscribe after an automatic reconnect. Every public call is for one test thread at a
// time and blocks at most for the timeout it is given.
// Header-only; integration tests link paho-mqtt3as (paho with TLS).
#pragma once

#include <MQTTAsync.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

}  // namespace chunkd::test

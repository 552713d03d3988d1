// Fleet's MQTT side: the paho clients, their callbacks, subscriptions and what devices publish.
#include <MQTTAsync.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "tools/chunkload/fleet.hpp"
#include "tools/chunkload/fleet_state.hpp"

namespace chunkd::chunkload {
namespace {

constexpr int kKeepAliveSeconds = 30;
constexpr int kConnectTimeoutSeconds = 30;
constexpr int kDrainMs = 2000;

[[noreturn]] void die_in_callback() {
  std::fputs("chunkload: internal error (exception) in an MQTT callback\n", stderr);
  std::abort();
}

std::string describe_failure(const char* what, const MQTTAsync_failureData* response) {
  std::string s = what;
  if (response != nullptr) {
    s += " (code " + std::to_string(response->code);
    if (response->message != nullptr) s += ": " + std::string(response->message);
    s += ")";
  }
  return s;
}

int send(MQTTAsync client, const std::string& topic, std::vector<std::byte>& payload, int qos) {
  MQTTAsync_message msg = MQTTAsync_message_initializer;
  msg.payload = payload.data();
  msg.payloadlen = static_cast<int>(payload.size());
  msg.qos = qos;
  msg.retained = 0;
  return MQTTAsync_sendMessage(client, topic.c_str(), &msg, nullptr);
}

}  // namespace

// The C callbacks paho calls on its threads (with its global lock held).
struct FleetCallbacks {
  static int on_message(void* context, char* topic_name, int topic_len,
                        MQTTAsync_message* message) {
    try {
      auto* conn = static_cast<Fleet::Conn*>(context);
      const std::size_t len =
          topic_len > 0 ? static_cast<std::size_t>(topic_len) : std::strlen(topic_name);
      std::span<const std::byte> payload(static_cast<const std::byte*>(message->payload),
                                         static_cast<std::size_t>(message->payloadlen));
      conn->fleet->route(*conn, std::string_view(topic_name, len), payload);
    } catch (...) {
      die_in_callback();
    }
    MQTTAsync_freeMessage(&message);
    MQTTAsync_free(topic_name);
    return 1;
  }

  static void on_connected(void* context, MQTTAsync_successData* /*response*/) {
    try {
      auto* conn = static_cast<Fleet::Conn*>(context);
      conn->fleet->subscribe(*conn);
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_connect_failed(void* context, MQTTAsync_failureData* response) {
    try {
      auto* conn = static_cast<Fleet::Conn*>(context);
      conn->fleet->fail_devices(
          *conn, 0, conn->count,
          describe_failure(("connect to " + conn->fleet->options_.uri + " failed").c_str(),
                           response));
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_connection_lost(void* context, char* cause) {
    try {
      auto* conn = static_cast<Fleet::Conn*>(context);
      std::string reason = "connection lost";
      if (cause != nullptr) reason += std::string(" (") + cause + ")";
      conn->fleet->fail_devices(*conn, 0, conn->count, reason);
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_subscribed(void* context, MQTTAsync_successData* response) {
    try {
      auto* batch = static_cast<Fleet::Batch*>(context);
      const int* granted = nullptr;
      if (response != nullptr) {
        // paho: alt.qos for a single filter, alt.qosList for several.
        const std::size_t filters =
            std::size_t{batch->count} * batch->conn->fleet->filters_per_device_;
        granted = filters == 1 ? &response->alt.qos : response->alt.qosList;
      }
      batch->conn->fleet->subscribed(*batch, granted);
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_subscribe_failed(void* context, MQTTAsync_failureData* response) {
    try {
      auto* batch = static_cast<Fleet::Batch*>(context);
      Fleet::Conn& conn = *batch->conn;
      conn.fleet->fail_devices(conn, batch->first - conn.first, batch->count,
                               describe_failure("subscribe failed", response));
    } catch (...) {
      die_in_callback();
    }
  }

  // The SUBACK of a subscription one OTA device asked for (one filter).
  static void on_device_subscribed(void* context, MQTTAsync_successData* response) {
    try {
      auto* dev = static_cast<Fleet::Dev*>(context);
      const bool granted = response != nullptr && response->alt.qos >= 0 && response->alt.qos <= 2;
      dev->conn->fleet->device_subscribed(*dev, granted);
    } catch (...) {
      die_in_callback();
    }
  }

  static void on_device_subscribe_failed(void* context, MQTTAsync_failureData* /*response*/) {
    try {
      auto* dev = static_cast<Fleet::Dev*>(context);
      dev->conn->fleet->device_subscribed(*dev, false);
    } catch (...) {
      die_in_callback();
    }
  }
};

void Fleet::destroy_clients() {
  for (auto& conn : conns_) {
    if (conn->client != nullptr) MQTTAsync_destroy(&conn->client);
    conn->client = nullptr;
  }
}

Expected<bool, std::string> Fleet::create_clients() {
  for (auto& conn : conns_) {
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.sendWhileDisconnected = 0;
    // paho counts every queued command against this, connected or not: room for each device's
    // requests (first sends and re-sends) plus describes and subscribes.
    // An OTA device adds its job updates, $next/get and (un)subscribes.
    const std::uint64_t per_device = 2 * std::uint64_t{options_.in_flight} + (ota_ ? 12 : 4);
    co.maxBufferedMessages = static_cast<int>(
        std::min<std::uint64_t>(1u << 20, std::uint64_t{conn->count} * per_device + 64));
    co.MQTTVersion = MQTTVERSION_3_1_1;
    int rc =
        MQTTAsync_createWithOptions(&conn->client, options_.uri.c_str(), conn->client_id.c_str(),
                                    MQTTCLIENT_PERSISTENCE_NONE, nullptr, &co);
    if (rc != MQTTASYNC_SUCCESS) {
      conn->client = nullptr;
      std::string why = MQTTAsync_strerror(rc);
      return chunkd::unexpected<std::string>("cannot create an MQTT client for " + options_.uri +
                                             ": " + why);
    }
    rc = MQTTAsync_setCallbacks(conn->client, conn.get(), &FleetCallbacks::on_connection_lost,
                                &FleetCallbacks::on_message, nullptr);
    if (rc != MQTTASYNC_SUCCESS) {
      return chunkd::unexpected<std::string>("cannot set MQTT callbacks: " +
                                             std::string(MQTTAsync_strerror(rc)));
    }
  }
  return true;
}

void Fleet::connect(Conn& conn) {
  MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
  co.keepAliveInterval = kKeepAliveSeconds;
  co.cleansession = 1;
  co.connectTimeout =
      static_cast<int>(std::min<std::uint32_t>(kConnectTimeoutSeconds, options_.max_seconds));
  co.MQTTVersion = MQTTVERSION_3_1_1;
  co.automaticReconnect = 0;
  co.onSuccess = &FleetCallbacks::on_connected;
  co.onFailure = &FleetCallbacks::on_connect_failed;
  co.context = &conn;
  const int rc = MQTTAsync_connect(conn.client, &co);
  if (rc != MQTTASYNC_SUCCESS) {
    fail_devices(conn, 0, conn.count,
                 "connect to " + options_.uri + " failed: " + MQTTAsync_strerror(rc));
  }
}

void Fleet::subscribe(Conn& conn) {
  std::vector<std::string> filters;
  std::vector<char*> ptrs;
  std::vector<int> qos;
  for (Batch& batch : conn.batches) {
    filters.clear();
    qos.clear();
    for (std::uint32_t i = batch.first; i < batch.first + batch.count; ++i) {
      if (ota_ != nullptr) {  // the OTA agent's only subscription before a job arrives
        filters.push_back(devs_[i]->ota->notify_topic());
        qos.push_back(1);
        continue;
      }
      for (protocol::ReplyKind kind : {protocol::ReplyKind::Data, protocol::ReplyKind::Description,
                                       protocol::ReplyKind::Rejected}) {
        std::string t;
        topics_.reply_topic(t, devs_[i]->thing, options_.stream_id, kind, options_.format);
        filters.push_back(std::move(t));
        qos.push_back(options_.qos);
      }
    }
    ptrs.clear();
    for (std::string& f : filters) ptrs.push_back(f.data());
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = &FleetCallbacks::on_subscribed;
    ro.onFailure = &FleetCallbacks::on_subscribe_failed;
    ro.context = &batch;
    const int rc = MQTTAsync_subscribeMany(conn.client, static_cast<int>(ptrs.size()), ptrs.data(),
                                           qos.data(), &ro);
    if (rc != MQTTASYNC_SUCCESS) {
      fail_devices(conn, batch.first - conn.first, batch.count,
                   std::string("subscribe failed: ") + MQTTAsync_strerror(rc));
    }
  }
}

int Fleet::execute(Dev& dev, Outgoing& o) {
  MQTTAsync client = dev.conn->client;
  switch (o.action) {
    case Action::Publish: {
      const std::string& topic = !o.topic.empty()                ? o.topic
                                 : o.verb == protocol::Verb::Get ? dev.get_topic
                                                                 : dev.describe_topic;
      return send(client, topic, o.payload, o.qos);
    }
    case Action::Subscribe: {
      MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
      ro.onSuccess = &FleetCallbacks::on_device_subscribed;
      ro.onFailure = &FleetCallbacks::on_device_subscribe_failed;
      ro.context = &dev;
      return MQTTAsync_subscribe(client, o.topic.c_str(), o.qos, &ro);
    }
    case Action::Unsubscribe:
      return MQTTAsync_unsubscribe(client, o.topic.c_str(), nullptr);
  }
  return MQTTASYNC_FAILURE;
}

void Fleet::refused_locked(Dev& dev, const Outgoing& o, int rc, TimePoint now) {
  if (o.action == Action::Publish) {
    dev.device.on_send_failed();
  } else if (o.action == Action::Subscribe) {
    dev.fail(std::string("subscribe failed: ") + MQTTAsync_strerror(rc), now);
  }
}

void Fleet::publish_locked(Dev& dev, Outbox& out) {
  for (Outgoing& o : out) {
    if (const int rc = execute(dev, o); rc != MQTTASYNC_SUCCESS) {
      refused_locked(dev, o, rc, Clock::now());
    }
  }
  out.clear();
}

void Fleet::publish_unlocked(Dev& dev, Outbox& out) {
  std::vector<std::pair<std::size_t, int>> refused;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (const int rc = execute(dev, out[i]); rc != MQTTASYNC_SUCCESS) refused.emplace_back(i, rc);
  }
  if (!refused.empty()) {
    std::lock_guard lock(dev.mu);
    for (auto [i, rc] : refused) refused_locked(dev, out[i], rc, Clock::now());
    note_terminal_locked(dev);
  }
  out.clear();
}

void Fleet::disconnect(Conn& conn) {
  MQTTAsync_disconnectOptions dopts = MQTTAsync_disconnectOptions_initializer;
  // An OTA device's last word is a QoS 1 job update: give it time to be acknowledged.
  dopts.timeout = ota_ != nullptr ? kDrainMs : 0;
  MQTTAsync_disconnect(conn.client, &dopts);
}

void Fleet::drain() {
  if (ota_ == nullptr) return;
  for (auto& conn : conns_) {
    if (conn->connect_issued && !conn->disconnect_issued) {
      conn->disconnect_issued = true;
      disconnect(*conn);
    }
  }
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(kDrainMs + 500);
  for (auto& conn : conns_) {
    while (MQTTAsync_isConnected(conn->client) != 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

}  // namespace chunkd::chunkload

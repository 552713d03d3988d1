// The runtime checks of MqttOptions (io/mqtt_options.hpp) that MqttPool::start makes.
#include "io/mqtt_options.hpp"

#include <fcntl.h>
#include <mosquitto.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

#include "base/assert.hpp"
#include "io/mqtt_failure.hpp"

namespace chunkd::io {

namespace {

// A runtime check: the config loader checked the files too, but they may have changed since.
Expected<void> check_readable(const char* key, const std::string& path) {
  if (path.empty()) return {};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return fail(std::error_code(errno, std::generic_category()),
                std::string("mqtt.") + key + " '" + path + "' is not readable");
  }
  ::close(fd);
  return {};
}

}  // namespace

void assert_mqtt_options(const MqttOptions& o, bool uri_tls) {
  CHUNKD_ASSERT(o.connections >= 1 && o.connections <= kMqttMaxConnections);
  CHUNKD_ASSERT(!o.client_id.empty() && o.client_id.size() <= kMqttMaxClientIdBytes);
  CHUNKD_ASSERT(o.keepalive_s >= kMqttMinKeepaliveS && o.keepalive_s <= kMqttMaxKeepaliveS);
  CHUNKD_ASSERT(o.reconnect_min_ms >= 1 && o.reconnect_min_ms <= o.reconnect_max_ms);
  CHUNKD_ASSERT(o.max_queued_bytes >= 1 && o.max_queued_bytes <= kMqttMaxQueuedBytes);
  CHUNKD_ASSERT(o.subscribe_qos >= 0 && o.subscribe_qos <= kMqttMaxQos);
  for (const std::string& filter : o.subscriptions) {
    CHUNKD_ASSERT(!filter.empty() && mosquitto_sub_topic_check(filter.c_str()) == MOSQ_ERR_SUCCESS);
  }
  CHUNKD_ASSERT(!o.username.empty() || o.password.empty());
  CHUNKD_ASSERT(o.cert_file.empty() == o.key_file.empty());
  CHUNKD_ASSERT(uri_tls || (o.ca_file.empty() && o.cert_file.empty() && o.key_file.empty()));
}

Expected<void> check_mqtt_tls_files(const MqttOptions& o) {
  for (const auto& [key, path] :
       {std::pair{"ca_file", &o.ca_file}, std::pair{"cert_file", &o.cert_file},
        std::pair{"key_file", &o.key_file}}) {
    if (auto ok = check_readable(key, *path); !ok) return ok;
  }
  return check_tls_files(o);
}

}  // namespace chunkd::io

// The daemon's configuration: TOML (SPEC.md §3), every key documented with its default in
// chunkd.example.toml.
//
// Validation is strict and happens once, at start-up (and for `chunkd --check`): an unknown key, a
// wrong type or a value out of range is an error whose message starts with the key's dotted name,
// e.g. "mqtt.connections: must be an integer between 1 and 64 (got 0)". Relative paths (data_dir,
// bucket directories, token/password/TLS files) resolve against the config file's directory.
// Bucket directories must exist; the token and password files are read here, so a bad one fails
// start-up, not the first request.
//
// Renamed keys: the old name of a renamed key (storage.extent_kb → storage.extent_kib, ...) is
// still accepted for one release with a warning in Config::warnings; giving both names is an error
// naming both.
//
// Thread: any; blocking file-system calls, so start-up only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.hpp"
#include "engine/cluster_options.hpp"
#include "engine/content_store.hpp"
#include "engine/control_service.hpp"
#include "engine/delivery.hpp"
#include "engine/job_options.hpp"
#include "io/http_server.hpp"
#include "io/log.hpp"
#include "io/mqtt_pool.hpp"

namespace chunkd::engine {

// Each section fills the options struct of the module that uses it, so the daemon hands them on
// unchanged. A key's member is named with the member's unit (bytes), the key with the operator's
// unit (KiB, MiB); the loader converts once. Values one module needs from another section are
// copied by the loader, never by the daemon: mqtt.qos (mqtt.subscribe_qos, delivery.qos),
// mqtt.topic_prefix (delivery.topic_prefix, mqtt.subscriptions), storage.data_dir (store.data_dir,
// delivery.cache.data_dir).
struct Config {
  // [mqtt]. `password` is the first line of mqtt.password_file, trimmed.
  io::MqttOptions mqtt;
  std::string mqtt_password_file;  // absolute after loading; "" when unset

  // [control]
  struct Control {
    std::string listen = "127.0.0.1:8080";
    std::string listen_host = "127.0.0.1";  // parsed from `listen`
    std::uint16_t listen_port = 8080;
    std::string token_file;  // absolute after loading; "" when unset
    bool allow_insecure_listen = false;
    io::HttpLimits http;  // max_body_bytes, max_connections(_per_client), idle/request_timeout_ms,
                          // max_buffered_bytes
    // token (token_file's first line), buckets ([buckets]: name → absolute directory),
    // max_streams (storage.max_streams), max_concurrent_ingests
    ControlOptions service;
  } control;

  // [storage] data_dir (absolute; default "<config dir>/var/chunkd") and extent_kib.
  ContentStoreOptions store;

  // [delivery] (delivery.scheduler, delivery.cache.max_open_files), [cache] capacity_mib
  // (delivery.cache), and the mqtt/storage values above (engine/delivery_options.hpp).
  DeliveryOptions delivery;

  // [jobs] (engine/job_options.hpp); topic_prefix from mqtt.topic_prefix.
  JobOptions jobs;

  // [amqp], [registry], storage.content_bucket: several instances sharing one broker cluster,
  // registry and content bucket (engine/cluster_options.hpp).
  ClusterOptions cluster;

  // [log] level
  io::LogLevel log_level = io::LogLevel::Info;

  // One line per deprecated key used, naming its new key; chunkd logs them at start-up and
  // `--check` prints them.
  std::vector<std::string> warnings;
};

// Parses TOML text. `config_dir` is the directory relative paths resolve against (absolute).
// `source_name` names the text in syntax errors ("chunkd.toml:3:7: ...").
Expected<Config, std::string> parse_config(std::string_view toml_text,
                                           const std::string& config_dir,
                                           const std::string& source_name = "config");
// Reads and parses the file at `path`.
Expected<Config, std::string> load_config(const std::string& path);

// Every key the loader accepts, dotted ("mqtt.uri"), by its current name; [buckets] apart (its
// keys are bucket names).
std::vector<std::string> known_config_keys();

// True for 127.0.0.0/8 and ::1.
bool is_loopback_host(std::string_view host);

}  // namespace chunkd::engine

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
// Thread: any; blocking file-system calls, so start-up only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "base/expected.hpp"

namespace chunkd::engine {

struct Config {
  struct Mqtt {
    std::string uri = "tcp://127.0.0.1:1883";
    std::string client_id = "chunkd";
    std::size_t connections = 2;
    std::string username;
    std::string password_file;  // absolute after loading; "" when unset
    std::string password;       // the file's first line, trimmed
    std::string ca_file;
    std::string cert_file;
    std::string key_file;
    int qos = 0;  // replies and subscriptions
    std::string topic_prefix = "$aws/things";
    int keepalive_s = 30;
    std::size_t max_queued_bytes = 8u << 20;  // per connection (mqtt.max_queued_mb)
  } mqtt;

  struct Control {
    std::string listen = "127.0.0.1:8080";
    std::string listen_host = "127.0.0.1";  // parsed from `listen`
    std::uint16_t listen_port = 8080;
    std::string token_file;  // absolute after loading; "" when unset
    std::string token;       // the file's first line, trimmed; "" when no token_file
    bool allow_insecure_listen = false;
    std::size_t max_body_bytes = 1u << 20;
    std::size_t max_connections = 1024;
    int idle_timeout_ms = 60000;
    int request_timeout_ms = 10000;
    std::size_t max_concurrent_ingests = 2;
  } control;

  struct Storage {
    std::string data_dir;                     // absolute; default "<config dir>/var/chunkd"
    std::uint32_t extent_bytes = 256u << 10;  // storage.extent_kb
    std::size_t max_streams = 10000;
  } storage;

  std::map<std::string, std::string> buckets;  // name → absolute directory

  struct Cache {
    std::size_t capacity_bytes = 256u << 20;  // cache.capacity_mb
  } cache;

  struct Delivery {
    bool relax_version_check = false;
    std::size_t per_thing_queue = 16;
    std::size_t global_queue = 4096;
    double per_thing_blocks_per_s = 0;  // 0: unlimited
    double global_blocks_per_s = 0;
    std::size_t max_bytes_in_flight = 32u << 20;  // delivery.max_bytes_in_flight_mb
    std::size_t quantum_bytes = 32u << 10;        // delivery.quantum_kib
    std::size_t max_open_files = 256;
  } delivery;

  struct Log {
    std::string level = "info";
  } log;
};

// Parses TOML text. `config_dir` is the directory relative paths resolve against (absolute).
// `source_name` names the text in syntax errors ("chunkd.toml:3:7: ...").
Expected<Config, std::string> parse_config(std::string_view toml_text,
                                           const std::string& config_dir,
                                           const std::string& source_name = "config");
// Reads and parses the file at `path`.
Expected<Config, std::string> load_config(const std::string& path);

// True for 127.0.0.0/8 and ::1.
bool is_loopback_host(std::string_view host);

}  // namespace chunkd::engine

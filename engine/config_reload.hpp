// Reloading the configuration (SIGHUP): what changed between the running Config and a freshly
// loaded one, which of those changes take effect at once, and the one log line that says so.
//
// Live (applied by the daemon through the modules' setters): log.level; the token file (path and
// contents: ControlService::set_token); the buckets (added, removed, directory changed:
// ControlService::set_buckets); the delivery bounds per_thing/global_queue_requests,
// per_thing/global_blocks_per_s, quantum_kib and max_publish_in_flight_mib
// (Delivery::set_limits). Every other key needs a restart: its new value is reported and the
// running one stays in effect (merge_live keeps it).
//
// Pure functions of two Configs; no I/O. Secrets (the token, the MQTT password) are compared but
// never printed.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "engine/config.hpp"

namespace chunkd::engine {

struct ConfigChange {
  std::string key;   // dotted key, e.g. "log.level", "buckets.firmware"
  std::string from;  // in the operator's unit, as the file says it; "" for a secret or a new bucket
  std::string to;    // "" for a secret or a removed bucket
  bool secret = false;  // the value is not shown: "control.token_file (contents changed)"
};

struct ConfigDiff {
  std::vector<ConfigChange> live;     // take effect now
  std::vector<ConfigChange> restart;  // need a restart; the running values stay

  bool empty() const { return live.empty() && restart.empty(); }
  bool buckets_changed() const;
};

// Every setting whose value differs between `running` and `next`, split into live and needing a
// restart: the keys in the order of the file's sections, then the buckets by name.
ConfigDiff diff_config(const Config& running, const Config& next);

// The Config to run with after a reload: `running` with the live settings of `next` (and next's
// deprecation warnings); settings that need a restart keep their running values.
Config merge_live(const Config& running, const Config& next);

// Why the merged Config must not be applied, if it must not: a reload cannot remove the token
// while the (unchanged) listen address is not loopback, unless allow_insecure_listen.
std::optional<std::string> reload_problem(const Config& merged);

// The keys diff_config compares ([buckets] apart), each once: known_config_keys() must all be here.
std::vector<std::string> reload_setting_keys();

// "log.level info→debug, delivery.global_blocks_per_s 0→500; needs a restart: control.listen", or
// "no change".
std::string describe(const ConfigDiff& diff);

}  // namespace chunkd::engine

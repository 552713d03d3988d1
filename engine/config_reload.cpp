#include "engine/config_reload.hpp"

#include <charconv>
#include <cstdint>
#include <map>
#include <set>
#include <string_view>

#include "io/log.hpp"

namespace chunkd::engine {
namespace {

std::string show(std::uint64_t v) { return std::to_string(v); }
std::string show(bool v) { return v ? "true" : "false"; }
std::string show(double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::string("?");
}
std::string show(int v) { return std::to_string(v); }
std::string show(const std::string& v) { return v; }

// One setting of the file: its key, how its value reads in the operator's unit, and, for a live
// one, how merge_live takes it from the new Config. A secret is compared, never shown.
struct Setting {
  std::string_view key;
  std::string (*value)(const Config& c);
  void (*take)(Config& to, const Config& from) = nullptr;  // null: needs a restart
  bool secret = false;
};

// Every key of engine/config.cpp's known_keys(), in the file's order ([buckets] apart: its keys
// are the bucket names). config_reload_test checks that each one is here.
// clang-format off
const Setting kSettings[] = {
    {"mqtt.uri", [](const Config& c) { return show(c.mqtt.uri); }},
    {"mqtt.client_id", [](const Config& c) { return show(c.mqtt.client_id); }},
    {"mqtt.connections", [](const Config& c) { return show(std::uint64_t{c.mqtt.connections}); }},
    {"mqtt.username", [](const Config& c) { return show(c.mqtt.username); }},
    {"mqtt.password_file", [](const Config& c) { return show(c.mqtt_password_file); }},
    {"mqtt.password_file", [](const Config& c) { return show(c.mqtt.password); }, nullptr, true},
    {"mqtt.ca_file", [](const Config& c) { return show(c.mqtt.ca_file); }},
    {"mqtt.cert_file", [](const Config& c) { return show(c.mqtt.cert_file); }},
    {"mqtt.key_file", [](const Config& c) { return show(c.mqtt.key_file); }},
    {"mqtt.qos", [](const Config& c) { return show(c.mqtt.subscribe_qos); }},
    {"mqtt.topic_prefix", [](const Config& c) { return show(c.delivery.topic_prefix); }},
    {"mqtt.keepalive_s", [](const Config& c) { return show(c.mqtt.keepalive_s); }},
    {"mqtt.max_queued_mib",
     [](const Config& c) { return show(std::uint64_t{c.mqtt.max_queued_bytes >> 20}); }},
    {"mqtt.protocol",
     [](const Config& c) {
       switch (c.mqtt.protocol) {
         case io::MqttProtocol::V5: return std::string("5");
         case io::MqttProtocol::V311: return std::string("3.1.1");
         case io::MqttProtocol::Auto: break;
       }
       return std::string("auto");
     }},
    {"control.listen", [](const Config& c) { return show(c.control.listen); }},
    {"control.token_file", [](const Config& c) { return show(c.control.token_file); },
     [](Config& to, const Config& from) { to.control.token_file = from.control.token_file; }},
    {"control.token_file", [](const Config& c) { return show(c.control.service.token); },
     [](Config& to, const Config& from) { to.control.service.token = from.control.service.token; },
     true},
    {"control.allow_insecure_listen",
     [](const Config& c) { return show(c.control.allow_insecure_listen); }},
    {"control.max_body_bytes",
     [](const Config& c) { return show(std::uint64_t{c.control.http.max_body_bytes}); }},
    {"control.max_connections",
     [](const Config& c) { return show(std::uint64_t{c.control.http.max_connections}); }},
    {"control.idle_timeout_ms", [](const Config& c) { return show(c.control.http.idle_timeout_ms); }},
    {"control.request_timeout_ms",
     [](const Config& c) { return show(c.control.http.request_timeout_ms); }},
    {"control.max_buffered_mib",
     [](const Config& c) { return show(std::uint64_t{c.control.http.max_buffered_bytes >> 20}); }},
    {"control.max_connections_per_client",
     [](const Config& c) { return show(std::uint64_t{c.control.http.max_connections_per_client}); }},
    {"control.max_concurrent_ingests",
     [](const Config& c) { return show(std::uint64_t{c.control.service.max_concurrent_ingests}); }},
    {"storage.data_dir", [](const Config& c) { return show(c.store.data_dir); }},
    {"storage.extent_kib",
     [](const Config& c) { return show(std::uint64_t{c.store.extent_bytes >> 10}); }},
    {"storage.max_streams",
     [](const Config& c) { return show(std::uint64_t{c.control.service.max_streams}); }},
    {"storage.max_file_mib",
     [](const Config& c) { return show(std::uint64_t{c.store.max_file_bytes >> 20}); }},
    {"storage.content_bucket", [](const Config& c) { return show(c.cluster.content_bucket); }},
    {"storage.content_bucket_uploads",
     [](const Config& c) { return show(std::uint64_t{c.cluster.content_uploads}); }},
    {"storage.content_bucket_fills",
     [](const Config& c) { return show(std::uint64_t{c.cluster.content_fills}); }},
    {"cache.capacity_mib",
     [](const Config& c) { return show(std::uint64_t{c.delivery.cache.capacity_bytes >> 20}); }},
    {"delivery.relax_version_check",
     [](const Config& c) { return show(c.delivery.relax_version_check); }},
    {"delivery.per_thing_queue_requests",
     [](const Config& c) { return show(std::uint64_t{c.delivery.scheduler.per_thing_queue_requests}); },
     [](Config& to, const Config& from) {
       to.delivery.scheduler.per_thing_queue_requests =
           from.delivery.scheduler.per_thing_queue_requests;
     }},
    {"delivery.global_queue_requests",
     [](const Config& c) { return show(std::uint64_t{c.delivery.scheduler.global_queue_requests}); },
     [](Config& to, const Config& from) {
       to.delivery.scheduler.global_queue_requests = from.delivery.scheduler.global_queue_requests;
     }},
    {"delivery.per_thing_blocks_per_s",
     [](const Config& c) { return show(c.delivery.scheduler.per_thing_blocks_per_s); },
     [](Config& to, const Config& from) {
       to.delivery.scheduler.per_thing_blocks_per_s = from.delivery.scheduler.per_thing_blocks_per_s;
     }},
    {"delivery.global_blocks_per_s",
     [](const Config& c) { return show(c.delivery.scheduler.global_blocks_per_s); },
     [](Config& to, const Config& from) {
       to.delivery.scheduler.global_blocks_per_s = from.delivery.scheduler.global_blocks_per_s;
     }},
    {"delivery.max_publish_in_flight_mib",
     [](const Config& c) {
       return show(std::uint64_t{c.delivery.scheduler.max_publish_bytes_in_flight >> 20});
     },
     [](Config& to, const Config& from) {
       to.delivery.scheduler.max_publish_bytes_in_flight =
           from.delivery.scheduler.max_publish_bytes_in_flight;
     }},
    {"delivery.quantum_kib",
     [](const Config& c) { return show(std::uint64_t{c.delivery.scheduler.quantum_bytes >> 10}); },
     [](Config& to, const Config& from) {
       to.delivery.scheduler.quantum_bytes = from.delivery.scheduler.quantum_bytes;
     }},
    {"delivery.max_open_files",
     [](const Config& c) { return show(std::uint64_t{c.delivery.cache.max_open_files}); }},
    {"jobs.enabled", [](const Config& c) { return show(c.jobs.enabled); }},
    {"jobs.max_jobs", [](const Config& c) { return show(std::uint64_t{c.jobs.max_jobs}); }},
    {"jobs.max_executions", [](const Config& c) { return show(c.jobs.max_executions); }},
    {"jobs.thing_requests_per_s", [](const Config& c) { return show(c.jobs.thing_requests_per_s); }},
    {"log.level", [](const Config& c) { return std::string(io::log_level_name(c.log_level)); },
     [](Config& to, const Config& from) { to.log_level = from.log_level; }},
    {"amqp.uris",
     [](const Config& c) {
       std::string all;
       for (const std::string& uri : c.cluster.amqp.uris) all += (all.empty() ? "" : ",") + uri;
       return all;
     }},
    {"amqp.password_file", [](const Config& c) { return show(c.cluster.amqp.password_file); }},
    {"amqp.password_file", [](const Config& c) { return show(c.cluster.amqp.password); }, nullptr,
     true},
    {"amqp.ca_file", [](const Config& c) { return show(c.cluster.amqp.ca_file); }},
    {"amqp.queue", [](const Config& c) { return show(c.cluster.amqp.queue); }},
    {"amqp.jobs_queue", [](const Config& c) { return show(c.cluster.amqp.jobs_queue); }},
    {"amqp.exchange", [](const Config& c) { return show(c.cluster.amqp.exchange); }},
    {"amqp.prefetch", [](const Config& c) { return show(std::uint64_t{c.cluster.amqp.prefetch}); }},
    {"amqp.delivery_limit",
     [](const Config& c) { return show(std::uint64_t{c.cluster.amqp.delivery_limit}); }},
    {"registry.url", [](const Config& c) { return show(c.cluster.registry.url); }, nullptr, true},
};
// clang-format on

// Adds `change` unless the same key is already listed (a path and its secret contents changing
// together are one change).
void add(std::vector<ConfigChange>& list, ConfigChange change) {
  for (const ConfigChange& c : list) {
    if (c.key == change.key) return;
  }
  list.push_back(std::move(change));
}

// A bucket as a reload compares it: its directory, or its S3 settings (secrets apart).
std::map<std::string, std::string> bucket_views(const Config& c) {
  std::map<std::string, std::string> out(c.control.service.buckets.begin(),
                                         c.control.service.buckets.end());
  for (const auto& [name, s3] : c.control.service.s3_buckets) out[name] = s3.describe();
  return out;
}

void diff_buckets(const Config& running, const Config& next, std::vector<ConfigChange>& out) {
  const auto old_buckets = bucket_views(running);
  const auto new_buckets = bucket_views(next);
  std::set<std::string> names;
  for (const auto& [name, dir] : old_buckets) names.insert(name);
  for (const auto& [name, dir] : new_buckets) names.insert(name);
  for (const std::string& name : names) {
    auto o = old_buckets.find(name);
    auto n = new_buckets.find(name);
    std::string from = o == old_buckets.end() ? std::string() : o->second;
    std::string to = n == new_buckets.end() ? std::string() : n->second;
    if (from != to) {
      out.push_back({"buckets." + name, std::move(from), std::move(to)});
      continue;
    }
    // Same settings: the credentials may still have changed (compared, never shown).
    auto os = running.control.service.s3_buckets.find(name);
    auto ns = next.control.service.s3_buckets.find(name);
    if (os != running.control.service.s3_buckets.end() &&
        ns != next.control.service.s3_buckets.end() && !os->second.same_secrets(ns->second)) {
      out.push_back({"buckets." + name, {}, {}, true});
    }
  }
}

void append(std::string& out, const ConfigChange& c) {
  if (!out.empty() && out.back() != ' ') out += ", ";
  out += c.key;
  if (c.secret) {
    out += " (contents changed)";
  } else if (c.key.rfind("buckets.", 0) == 0 && c.from.empty()) {
    out += " added";
  } else if (c.key.rfind("buckets.", 0) == 0 && c.to.empty()) {
    out += " removed";
  } else {
    out += " " + (c.from.empty() ? "\"\"" : c.from) + "→" + (c.to.empty() ? "\"\"" : c.to);
  }
}

}  // namespace

bool ConfigDiff::buckets_changed() const {
  for (const ConfigChange& c : live) {
    if (c.key.rfind("buckets.", 0) == 0) return true;
  }
  return false;
}

std::vector<std::string> reload_setting_keys() {
  std::vector<std::string> out;
  for (const Setting& s : kSettings) {
    if (out.empty() || out.back() != s.key) out.emplace_back(s.key);
  }
  return out;
}

ConfigDiff diff_config(const Config& running, const Config& next) {
  ConfigDiff diff;
  for (const Setting& s : kSettings) {
    std::string from = s.value(running);
    std::string to = s.value(next);
    if (from == to) continue;
    if (s.secret) {
      from.clear();
      to.clear();
    }
    add(s.take != nullptr ? diff.live : diff.restart,
        ConfigChange{std::string(s.key), std::move(from), std::move(to), s.secret});
  }
  diff_buckets(running, next, diff.live);
  return diff;
}

Config merge_live(const Config& running, const Config& next) {
  Config merged = running;
  for (const Setting& s : kSettings) {
    if (s.take != nullptr) s.take(merged, next);
  }
  merged.control.service.buckets = next.control.service.buckets;
  merged.control.service.s3_buckets = next.control.service.s3_buckets;
  merged.warnings = next.warnings;
  return merged;
}

std::optional<std::string> reload_problem(const Config& merged) {
  const Config::Control& c = merged.control;
  if (!c.service.token.empty() || c.allow_insecure_listen || is_loopback_host(c.listen_host)) {
    return std::nullopt;
  }
  return "control.token_file: the running control.listen " + c.listen +
         " is not a loopback address, so the token cannot be removed by a reload (set a "
         "token_file, or change control.listen and restart)";
}

std::string describe(const ConfigDiff& diff) {
  if (diff.empty()) return "no change";
  std::string out;
  for (const ConfigChange& c : diff.live) append(out, c);
  if (diff.restart.empty()) return out;
  out += diff.live.empty() ? "needs a restart: " : "; needs a restart: ";
  for (std::size_t i = 0; i < diff.restart.size(); ++i) {
    if (i != 0) out += ", ";
    out += diff.restart[i].key;
  }
  return out;
}

}  // namespace chunkd::engine

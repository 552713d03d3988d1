#include "engine/config_cluster.hpp"

#include <string_view>

#include "engine/config_section.hpp"
#include "engine/config_values.hpp"

namespace chunkd::engine::config_cluster {
namespace {

using config_section::Section;
using config_values::absolute_path;
using config_values::has_control_chars;
using config_values::read_first_line;
using config_values::readable_file;

constexpr std::size_t kMaxUris = 16;
constexpr std::size_t kMaxNameBytes = 255;  // AMQP short strings: queue and exchange names

bool starts_with(std::string_view s, std::string_view prefix) { return s.starts_with(prefix); }

// An amqp:// or amqps:// URI without a password (that goes in amqp.password_file), or the problem.
std::string uri_problem(std::string_view uri) {
  if (uri.size() > 1024 || has_control_chars(uri))
    return "must be a short URI without control chars";
  if (!starts_with(uri, "amqp://") && !starts_with(uri, "amqps://")) {
    return "must be amqp://[user@]host[:port][/vhost] or amqps://… (got \"" + std::string(uri) +
           "\")";
  }
  const std::string_view rest = uri.substr(uri.find("//") + 2);
  const std::string_view authority = rest.substr(0, rest.find('/'));
  const std::size_t at = authority.rfind('@');
  if (at != std::string_view::npos && authority.substr(0, at).find(':') != std::string_view::npos) {
    return "must not hold a password: put it in amqp.password_file";
  }
  if (authority.substr(at == std::string_view::npos ? 0 : at + 1).empty()) return "has no host";
  return {};
}

void read_uris(const toml::table& amqp, AmqpOptions& o, std::string& error) {
  const toml::node* node = amqp.get("uris");
  const toml::array* list = node != nullptr ? node->as_array() : nullptr;
  if (list == nullptr || list->empty() || list->size() > kMaxUris) {
    if (error.empty()) error = "amqp.uris: must be a list of 1 to 16 amqp:// URIs";
    return;
  }
  for (const toml::node& item : *list) {
    const auto* uri = item.as_string();
    std::string problem = uri == nullptr ? "must hold strings" : uri_problem(uri->get());
    if (!problem.empty()) {
      if (error.empty()) error = "amqp.uris: " + problem;
      return;
    }
    o.uris.push_back(uri->get());
  }
}

void read_name(Section& s, std::string_view key, std::string& out) {
  if (s.string(key, out) && (out.empty() || out.size() > kMaxNameBytes || has_control_chars(out))) {
    s.fail(key, "must be 1 to 255 bytes without control chars");
  }
}

void read_amqp(const toml::table& root, Config& c, const std::string& config_dir,
               std::string& error) {
  const toml::table* table = root["amqp"].as_table();
  if (table == nullptr) return;
  AmqpOptions& o = c.cluster.amqp;
  o.enabled = true;
  read_uris(*table, o, error);
  Section s(table, "amqp", error);
  if (s.string("password_file", o.password_file)) {
    o.password_file = absolute_path(o.password_file, config_dir);
    std::string problem;
    if (!read_first_line(o.password_file, o.password, problem)) s.fail("password_file", problem);
  }
  if (s.string("ca_file", o.ca_file)) {
    o.ca_file = absolute_path(o.ca_file, config_dir);
    std::string problem;
    if (!readable_file(o.ca_file, problem)) s.fail("ca_file", problem);
  }
  read_name(s, "queue", o.queue);
  read_name(s, "exchange", o.exchange);
  read_name(s, "jobs_queue", o.jobs_queue);
  if (!s.failed() && o.jobs_queue == o.queue) {
    s.fail("jobs_queue", "must differ from amqp.queue (\"" + o.queue + "\")");
  }
  std::int64_t value = 0;
  if (s.integer("prefetch", value, 1, 65535)) o.prefetch = static_cast<std::uint32_t>(value);
  if (s.integer("delivery_limit", value, 1, 1000)) {
    o.delivery_limit = static_cast<std::uint32_t>(value);
  }
}

void read_registry(const toml::table& root, Config& c, std::string& error) {
  Section s(root["registry"].as_table(), "registry", error);
  std::string& url = c.cluster.registry.url;
  if (!s.string("url", url)) return;
  if (!starts_with(url, "postgresql://") && !starts_with(url, "postgres://")) {
    s.fail("url", "must be a postgresql:// URI (leave it out to keep the registry in data_dir)");
  } else if (url.size() > 4096 || has_control_chars(url)) {
    s.fail("url", "must be at most 4096 bytes without control chars");
  }
}

}  // namespace

void read(const toml::table& root, Config& c, const std::string& config_dir, std::string& error) {
  read_amqp(root, c, config_dir, error);
  read_registry(root, c, error);
  Section storage(root["storage"].as_table(), "storage", error);
  storage.string("content_bucket", c.cluster.content_bucket);
  std::int64_t value = 0;
  if (storage.integer("content_bucket_uploads", value, 1, 64)) {
    c.cluster.content_uploads = static_cast<std::size_t>(value);
  }
  if (storage.integer("content_bucket_fills", value, 1, 64)) {
    c.cluster.content_fills = static_cast<std::size_t>(value);
  }
}

void check(const toml::table& root, Config& c, std::string& error) {
  if (!error.empty()) return;
  const ClusterOptions& cluster = c.cluster;
  const std::string& bucket = cluster.content_bucket;
  const auto* storage = root["storage"].as_table();
  const char* tuning = nullptr;
  for (const char* key : {"content_bucket_uploads", "content_bucket_fills"}) {
    if (storage != nullptr && storage->contains(key)) tuning = key;
  }
  if (!bucket.empty() && !c.control.service.s3_buckets.contains(bucket)) {
    error = "storage.content_bucket: \"" + bucket + "\" is not an s3 bucket of [buckets]";
  } else if (bucket.empty() && tuning != nullptr) {
    error = std::string("storage.") + tuning + ": set without storage.content_bucket";
  } else if (cluster.shared() && bucket.empty()) {
    error = std::string(cluster.amqp.enabled ? "amqp" : "registry.url") +
            ": several instances share this config's state, so storage.content_bucket must name "
            "an s3 bucket they share the content through (a local data_dir is not shared)";
  } else if (cluster.amqp.enabled &&
             c.delivery.topic_prefix.find_first_of(".*") != std::string::npos) {
    // RabbitMQ's MQTT plugin turns '/' into '.', and '*' is a routing-key wildcard.
    error =
        "mqtt.topic_prefix: with [amqp] it must not contain '.' or '*' (RabbitMQ routes MQTT "
        "topics as routing keys whose words are the topic's levels)";
  } else if (cluster.shared() && c.jobs.enabled &&
             (!cluster.amqp.enabled || cluster.registry.url.empty())) {
    // One instance serves a cluster's jobs: it needs a queue only it consumes and shared state.
    const char* why =
        "jobs in a cluster need both [amqp] (a jobs queue that only the instance serving jobs "
        "consumes) and registry.url (the jobs state every instance can take over)";
    if (root["jobs"]["enabled"].node() != nullptr) {
      error = std::string("jobs.enabled: ") + why + "; set it to false, or add what is missing";
    } else {
      c.jobs.enabled = false;
      c.warnings.push_back(std::string("jobs: off, since ") + why);
    }
  }
  c.cluster.amqp.jobs = c.jobs.enabled && cluster.amqp.enabled && !cluster.registry.url.empty();
  c.cluster.amqp.topic_prefix = c.delivery.topic_prefix;
}

}  // namespace chunkd::engine::config_cluster

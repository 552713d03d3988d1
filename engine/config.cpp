#include "engine/config.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "engine/config_cluster.hpp"
#include "engine/config_s3.hpp"
#include "engine/config_section.hpp"
#include "engine/config_values.hpp"
#include "io/log.hpp"
#include "io/mqtt_options.hpp"
#include "io/mqtt_uri.hpp"
#include "protocol/jobs_topic.hpp"
#include "protocol/request.hpp"
#include "protocol/topic.hpp"

namespace chunkd::engine {
namespace {

using Result = Expected<Config, std::string>;
using config_section::dotted;
using config_section::kRenames;
using config_section::Rename;
using config_section::rename_of_new;
using config_section::rename_of_old;
using config_section::Section;
using config_values::absolute_path;
using config_values::has_control_chars;
using config_values::parse_listen;
using config_values::read_first_line;
using config_values::readable_file;
using config_values::valid_bucket_name;

// The keys each section accepts ([buckets] takes any bucket name), by their current names.
const std::map<std::string, std::set<std::string>, std::less<>>& known_keys() {
  static const std::map<std::string, std::set<std::string>, std::less<>> keys = {
      {"mqtt",
       {"uri", "client_id", "connections", "username", "password_file", "ca_file", "cert_file",
        "key_file", "qos", "topic_prefix", "keepalive_s", "max_queued_mib", "protocol"}},
      {"control",
       {"listen", "token_file", "allow_insecure_listen", "max_body_bytes", "max_connections",
        "idle_timeout_ms", "request_timeout_ms", "max_concurrent_ingests", "max_buffered_mib",
        "max_connections_per_client"}},
      {"storage",
       {"data_dir", "extent_kib", "max_streams", "max_file_mib", "content_bucket",
        "content_bucket_uploads", "content_bucket_fills"}},
      {"buckets", {}},
      {"cache", {"capacity_mib"}},
      {"delivery",
       {"relax_version_check", "per_thing_queue_requests", "global_queue_requests",
        "per_thing_blocks_per_s", "global_blocks_per_s", "max_publish_in_flight_mib", "quantum_kib",
        "max_open_files"}},
      {"jobs", {"enabled", "max_jobs", "max_executions", "thing_requests_per_s"}},
      {"log", {"level"}},
      {"amqp",
       {"uris", "password_file", "ca_file", "queue", "jobs_queue", "exchange", "prefetch",
        "delivery_limit"}},
      {"registry", {"url"}},
  };
  return keys;
}

// The numeric keys: bounds in the key's unit, and where the value goes (converted to the member's
// unit by `unit`). Keys needing more than a range are read by the section's step below.
// The key's unit, as the shift that converts it to the member's (bytes); Same: no conversion.
enum class Unit : unsigned { Same = 0, KiB = 10, MiB = 20 };

struct IntegerKey {
  std::string_view section;
  std::string_view key;
  std::int64_t min;
  std::int64_t max;
  Unit unit;
  void (*set)(Config& c, std::uint64_t value);  // value in the member's unit
  bool power_of_two = false;
};

template <class T>
T narrow(std::uint64_t v) {
  return static_cast<T>(v);  // the bounds above make it fit
}

// clang-format off
constexpr IntegerKey kIntegerKeys[] = {
    {"mqtt", "connections", 1, io::kMqttMaxConnections, Unit::Same,
     [](Config& c, std::uint64_t v) { c.mqtt.connections = v; }},
    {"mqtt", "qos", 0, io::kMqttMaxQos, Unit::Same,
     [](Config& c, std::uint64_t v) { c.mqtt.subscribe_qos = c.delivery.qos = narrow<int>(v); }},
    {"mqtt", "keepalive_s", io::kMqttMinKeepaliveS, io::kMqttMaxKeepaliveS, Unit::Same,
     [](Config& c, std::uint64_t v) { c.mqtt.keepalive_s = narrow<int>(v); }},
    {"mqtt", "max_queued_mib", 1, io::kMqttMaxQueuedBytes >> 20, Unit::MiB,
     [](Config& c, std::uint64_t v) { c.mqtt.max_queued_bytes = v; }},
    {"control", "max_body_bytes", 1024, 64 << 20, Unit::Same,
     [](Config& c, std::uint64_t v) { c.control.http.max_body_bytes = v; }},
    {"control", "max_connections", 1, 65536, Unit::Same,
     [](Config& c, std::uint64_t v) { c.control.http.max_connections = v; }},
    {"control", "idle_timeout_ms", 100, 3600000, Unit::Same,
     [](Config& c, std::uint64_t v) { c.control.http.idle_timeout_ms = narrow<int>(v); }},
    {"control", "request_timeout_ms", 100, 600000, Unit::Same,
     [](Config& c, std::uint64_t v) { c.control.http.request_timeout_ms = narrow<int>(v); }},
    {"control", "max_concurrent_ingests", 1, 64, Unit::Same,
     [](Config& c, std::uint64_t v) { c.control.service.max_concurrent_ingests = v; }},
    {"control", "max_buffered_mib", 1, 4096, Unit::MiB,
     [](Config& c, std::uint64_t v) { c.control.http.max_buffered_bytes = v; }},
    {"control", "max_connections_per_client", 1, 65536, Unit::Same,
     [](Config& c, std::uint64_t v) { c.control.http.max_connections_per_client = v; }},
    {"storage", "extent_kib", 64, 4096, Unit::KiB,
     [](Config& c, std::uint64_t v) { c.store.extent_bytes = narrow<std::uint32_t>(v); }, true},
    {"storage", "max_streams", 1, 1000000, Unit::Same,
     [](Config& c, std::uint64_t v) { c.control.service.max_streams = v; }},
    {"storage", "max_file_mib", 1, 1 << 20, Unit::MiB,
     [](Config& c, std::uint64_t v) { c.store.max_file_bytes = v; }},
    {"cache", "capacity_mib", 1, 1 << 20, Unit::MiB,
     [](Config& c, std::uint64_t v) { c.delivery.cache.capacity_bytes = v; }},
    {"delivery", "per_thing_queue_requests", 1, 4096, Unit::Same,
     [](Config& c, std::uint64_t v) { c.delivery.scheduler.per_thing_queue_requests = v; }},
    {"delivery", "global_queue_requests", 1, 1000000, Unit::Same,
     [](Config& c, std::uint64_t v) { c.delivery.scheduler.global_queue_requests = v; }},
    {"delivery", "max_publish_in_flight_mib", 1, 4096, Unit::MiB,
     [](Config& c, std::uint64_t v) { c.delivery.scheduler.max_publish_bytes_in_flight = v; }},
    {"delivery", "quantum_kib", 1, 4096, Unit::KiB,
     [](Config& c, std::uint64_t v) { c.delivery.scheduler.quantum_bytes = v; }},
    {"delivery", "max_open_files", 1, 65536, Unit::Same,
     [](Config& c, std::uint64_t v) { c.delivery.cache.max_open_files = v; }},
    {"jobs", "max_jobs", 1, 100000, Unit::Same,
     [](Config& c, std::uint64_t v) { c.jobs.max_jobs = v; }},
    {"jobs", "max_executions", 1, 10000000, Unit::Same,
     [](Config& c, std::uint64_t v) { c.jobs.max_executions = v; }},
};

struct NumberKey {
  std::string_view section;
  std::string_view key;
  double min;
  double max;
  double& (*field)(Config& c);
};

constexpr NumberKey kNumberKeys[] = {
    {"delivery", "per_thing_blocks_per_s", 0, 1e9,
     [](Config& c) -> double& { return c.delivery.scheduler.per_thing_blocks_per_s; }},
    {"delivery", "global_blocks_per_s", 0, 1e9,
     [](Config& c) -> double& { return c.delivery.scheduler.global_blocks_per_s; }},
    {"jobs", "thing_requests_per_s", 0.1, 1000,
     [](Config& c) -> double& { return c.jobs.thing_requests_per_s; }},
};
// clang-format on

// Reads the table's keys of section `s`.
void read_numeric_keys(Section& s, Config& c) {
  for (const IntegerKey& k : kIntegerKeys) {
    std::int64_t v = 0;
    if (k.section != s.name() || !s.integer(k.key, v, k.min, k.max)) continue;
    if (k.power_of_two && (v & (v - 1)) != 0) {
      s.fail(k.key, "must be a power of two (got " + std::to_string(v) + ")");
      continue;
    }
    k.set(c, static_cast<std::uint64_t>(v) << static_cast<unsigned>(k.unit));
  }
  for (const NumberKey& k : kNumberKeys) {
    if (k.section == s.name()) s.number(k.key, k.field(c), k.min, k.max);
  }
}

// Unknown sections and keys, and renamed keys given twice. Done first, so a typo is reported as
// such, not as a missing default.
std::optional<std::string> check_keys(const toml::table& root, std::vector<std::string>& warnings) {
  for (const auto& [key, node] : root) {
    auto section = known_keys().find(key.str());
    if (section == known_keys().end()) return "unknown key: " + std::string(key.str());
    if (!node.is_table()) {
      return std::string(key.str()) + ": must be a table ([" + std::string(key.str()) + "])";
    }
    if (section->first == "buckets") continue;
    for (const auto& [sub, subnode] : *node.as_table()) {
      (void)subnode;
      if (section->second.count(std::string(sub.str())) == 0 &&
          rename_of_old(section->first, sub.str()) == nullptr) {
        return "unknown key: " + dotted(section->first, sub.str());
      }
    }
  }
  for (const Rename& r : kRenames) {
    const toml::table* table = root[r.section].as_table();
    if (table == nullptr || table->get(r.old_key) == nullptr) continue;
    std::string old_name = dotted(r.section, r.old_key);
    std::string new_name = dotted(r.section, r.new_key);
    if (table->get(r.new_key) != nullptr) {
      return old_name + " and " + new_name + " are the same setting: keep only " + new_name + " (" +
             old_name + " is its deprecated name)";
    }
    warnings.push_back(old_name + " is deprecated: rename it to " + new_name +
                       " (same value and unit); the old name goes in the next release");
  }
  return std::nullopt;
}

// A file path key, made absolute. Returns true when present and non-empty.
bool path_key(Section& s, std::string_view key, std::string& out, const std::string& config_dir) {
  if (!s.string(key, out) || out.empty()) return false;
  out = absolute_path(out, config_dir);
  return true;
}

void read_mqtt_endpoint(Section& s, Config& c, bool& tls) {
  s.string("uri", c.mqtt.uri);
  if (auto uri = io::parse_mqtt_uri(c.mqtt.uri); !uri) {
    s.fail("uri", "must be tcp://host:port or ssl://host:port (" + uri.error().detail + "; got \"" +
                      c.mqtt.uri + "\")");
  } else {
    tls = uri->tls;
  }
  if (s.string("client_id", c.mqtt.client_id) &&
      (c.mqtt.client_id.empty() || c.mqtt.client_id.size() > io::kMqttMaxClientIdBytes ||
       has_control_chars(c.mqtt.client_id))) {
    s.fail("client_id", "must be 1 to 200 printable characters");
  }
  if (s.string("topic_prefix", c.delivery.topic_prefix) &&
      !protocol::TopicCodec::valid_prefix(c.delivery.topic_prefix)) {
    s.fail("topic_prefix", "must be a non-empty topic without '+', '#' or a trailing '/'");
  }
}

void read_mqtt_credentials(Section& s, Config& c, bool tls, const std::string& config_dir) {
  s.string("username", c.mqtt.username);
  if (path_key(s, "password_file", c.mqtt_password_file, config_dir)) {
    std::string problem;
    if (!read_first_line(c.mqtt_password_file, c.mqtt.password, problem)) {
      s.fail("password_file", problem);
    } else if (c.mqtt.username.empty()) {
      s.fail("password_file", "needs mqtt.username");
    }
  }
  for (auto [key, field] :
       {std::pair{"ca_file", &c.mqtt.ca_file}, std::pair{"cert_file", &c.mqtt.cert_file},
        std::pair{"key_file", &c.mqtt.key_file}}) {
    if (!path_key(s, key, *field, config_dir)) continue;
    std::string problem;
    if (!tls) {
      s.fail(key, "needs an ssl:// mqtt.uri");
    } else if (!readable_file(*field, problem)) {
      s.fail(key, problem);
    }
  }
  if (c.mqtt.cert_file.empty() != c.mqtt.key_file.empty()) {
    s.fail(c.mqtt.cert_file.empty() ? "cert_file" : "key_file",
           "cert_file and key_file go together");
  }
}

void read_mqtt_protocol(Section& s, Config& c) {
  std::string text;
  if (!s.string("protocol", text)) return;
  if (text == "auto") {
    c.mqtt.protocol = io::MqttProtocol::Auto;
  } else if (text == "5") {
    c.mqtt.protocol = io::MqttProtocol::V5;
  } else if (text == "3.1.1") {
    c.mqtt.protocol = io::MqttProtocol::V311;
  } else {
    s.fail("protocol", "must be \"auto\", \"5\" or \"3.1.1\" (got \"" + text + "\")");
  }
}

// The largest packet a broker may send chunkd (MQTT 5 Maximum Packet Size): a request of the
// largest payload decoded on the longest topic, plus 1 KiB for the fixed header and the
// properties a broker adds, rounded up to a power of two (64 KiB). Larger requests would be
// refused unparsed anyway; the broker now drops them before they reach chunkd.
constexpr std::size_t kRequestPacketBytes =
    std::bit_ceil(protocol::kMaxRequestMessageBytes + protocol::kMaxTopicPrefixBytes +
                  protocol::kMaxThingNameBytes + protocol::kMaxStreamIdBytes + 1024);
static_assert(kRequestPacketBytes >= io::kMqttMinMaxPacketBytes &&
              kRequestPacketBytes <= io::kMqttMaxMaxPacketBytes);

void read_mqtt(Section& s, Config& c, const std::string& config_dir) {
  bool tls = false;
  read_mqtt_endpoint(s, c, tls);
  read_mqtt_protocol(s, c);
  c.mqtt.max_packet_bytes = kRequestPacketBytes;
  read_mqtt_credentials(s, c, tls, config_dir);
  read_numeric_keys(s, c);
}

void read_control(Section& s, Config& c, const std::string& config_dir) {
  Config::Control& control = c.control;
  s.string("listen", control.listen);
  if (!parse_listen(control.listen, control.listen_host, control.listen_port)) {
    s.fail("listen", "must be an IP address and port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"");
  }
  std::string& token = control.service.token;
  if (path_key(s, "token_file", control.token_file, config_dir)) {
    std::string problem;
    if (!read_first_line(control.token_file, token, problem)) {
      s.fail("token_file", problem);
    } else if (token.empty()) {
      s.fail("token_file", control.token_file + " holds no token (its first line is empty)");
    }
  }
  s.boolean("allow_insecure_listen", control.allow_insecure_listen);
  read_numeric_keys(s, c);
  if (!s.failed() && control.token_file.empty() && !control.allow_insecure_listen &&
      !is_loopback_host(control.listen_host)) {
    s.fail("listen",
           control.listen +
               " is not a loopback address and control.token_file is empty: set a token_file, "
               "listen on 127.0.0.1, or set control.allow_insecure_listen = true");
  }
}

void read_storage(Section& s, Config& c, const std::string& config_dir) {
  std::string& data_dir = c.store.data_dir;
  if (s.string("data_dir", data_dir)) {
    if (data_dir.empty()) {
      s.fail("data_dir", "must not be empty");
    } else {
      data_dir = absolute_path(data_dir, config_dir);
    }
  }
  struct stat st {};
  if (!s.failed() && ::stat(data_dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    s.fail("data_dir", data_dir + " exists and is not a directory");
  }
  read_numeric_keys(s, c);
}

// The directory of bucket `name`, or the problem with it.
Expected<std::string, std::string> bucket_dir(const std::string& name, const toml::node& node,
                                              const std::string& config_dir) {
  if (!valid_bucket_name(name))
    return unexpected(std::string("a bucket name is 1 to 255 of [a-zA-Z0-9._-]"));
  if (!node.is_string() || node.as_string()->get().empty()) {
    return unexpected(std::string("must be a directory path (a non-empty string) or an s3 table"));
  }
  std::string dir = absolute_path(node.as_string()->get(), config_dir);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return unexpected(dir + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return unexpected(dir + " is not a directory");
  return dir;
}

void read_buckets(const toml::table* buckets, Config& c, const std::string& config_dir,
                  std::string& error) {
  if (buckets == nullptr) return;
  for (const auto& [key, node] : *buckets) {
    std::string name(key.str());
    if (node.is_table()) {
      if (!valid_bucket_name(name)) {
        if (error.empty())
          error = "buckets." + name + ": a bucket name is 1 to 255 of [a-zA-Z0-9._-]";
        continue;
      }
      auto s3 = read_s3_bucket(name, *node.as_table(), config_dir, &std::getenv);
      if (!s3 && error.empty()) error = "buckets." + name + "." + s3.error();
      if (s3) c.control.service.s3_buckets.emplace(std::move(name), std::move(*s3));
      continue;
    }
    auto dir = bucket_dir(name, node, config_dir);
    if (!dir) {
      if (error.empty()) error = "buckets." + name + ": " + dir.error();
      continue;
    }
    c.control.service.buckets.emplace(std::move(name), std::move(*dir));
  }
}

void read_delivery(Section& s, Config& c) {
  s.boolean("relax_version_check", c.delivery.relax_version_check);
  read_numeric_keys(s, c);
}

void read_log(Section& s, Config& c) {
  std::string level;
  if (s.string("level", level) && !io::parse_log_level(level, c.log_level)) {
    s.fail("level", "must be one of debug, info, warn, error (got \"" + level + "\")");
  }
}

// Values one section sets for modules configured by another.
void share_values(Config& c) {
  c.delivery.cache.data_dir = c.store.data_dir;
  c.jobs.topic_prefix = c.delivery.topic_prefix;
  c.jobs.qos = c.delivery.qos;
  protocol::TopicCodec codec(c.delivery.topic_prefix);
  c.mqtt.subscriptions = {codec.subscription(protocol::Verb::Get),
                          codec.subscription(protocol::Verb::Describe)};
  if (c.jobs.enabled) {
    for (std::string& filter : protocol::JobsTopicCodec(c.delivery.topic_prefix).subscriptions()) {
      c.mqtt.subscriptions.push_back(std::move(filter));
    }
  }
}

Result validate(const toml::table& root, const std::string& config_dir) {
  Config c;
  if (auto problem = check_keys(root, c.warnings)) return unexpected(std::move(*problem));
  c.store.data_dir = absolute_path("var/chunkd", config_dir);

  std::string error;
  const auto section = [&](const char* name) {
    return Section(root[name].as_table(), name, error);
  };
  {
    Section s = section("mqtt");
    read_mqtt(s, c, config_dir);
  }
  {
    Section s = section("control");
    read_control(s, c, config_dir);
  }
  {
    Section s = section("storage");
    read_storage(s, c, config_dir);
  }
  read_buckets(root["buckets"].as_table(), c, config_dir, error);
  {
    Section s = section("cache");
    read_numeric_keys(s, c);
  }
  {
    Section s = section("delivery");
    read_delivery(s, c);
  }
  {
    Section s = section("jobs");
    s.boolean("enabled", c.jobs.enabled);
    read_numeric_keys(s, c);
  }
  {
    Section s = section("log");
    read_log(s, c);
  }
  config_cluster::read(root, c, config_dir, error);
  config_cluster::check(root, c, error);
  if (!error.empty()) return unexpected(error);
  share_values(c);
  return c;
}

}  // namespace

std::vector<std::string> known_config_keys() {
  std::vector<std::string> out;
  for (const auto& [section, keys] : known_keys()) {
    for (const std::string& key : keys) out.push_back(dotted(section, key));
  }
  return out;
}

bool is_loopback_host(std::string_view host) {
  std::string h(host);
  in_addr a4{};
  if (inet_pton(AF_INET, h.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, h.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

Result parse_config(std::string_view toml_text, const std::string& config_dir,
                    const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    return unexpected(source_name + ":" + std::to_string(begin.line) + ":" +
                      std::to_string(begin.column) + ": " + std::string(e.description()));
  } catch (const std::exception& e) {
    return unexpected(source_name + ": " + e.what());
  }
  try {
    return validate(root, config_dir);
  } catch (const std::exception& e) {
    return unexpected(source_name + ": " + e.what());
  }
}

Result load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return unexpected("cannot read config " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return unexpected("cannot read config " + path + ": " + std::strerror(errno));
  std::string dir;
  std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    dir = ".";
  } else {
    dir = slash == 0 ? "/" : path.substr(0, slash);
  }
  if (dir.front() != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) == nullptr) {
      return unexpected(std::string("cannot resolve the config's directory: ") +
                        std::strerror(errno));
    }
    dir = absolute_path(dir == "." ? "" : dir, cwd);
  }
  return parse_config(text.str(), dir, path);
}

}  // namespace chunkd::engine

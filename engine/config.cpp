#include "engine/config.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "io/log.hpp"
#include "io/mqtt_uri.hpp"
#include "protocol/topic.hpp"

namespace chunkd::engine {
namespace {

using Result = Expected<Config, std::string>;

// The keys each section accepts ([buckets] takes any bucket name).
const std::map<std::string, std::set<std::string>, std::less<>>& known_keys() {
  static const std::map<std::string, std::set<std::string>, std::less<>> keys = {
      {"mqtt",
       {"uri", "client_id", "connections", "username", "password_file", "ca_file", "cert_file",
        "key_file", "qos", "topic_prefix", "keepalive_s", "max_queued_mb"}},
      {"control",
       {"listen", "token_file", "allow_insecure_listen", "max_body_bytes", "max_connections",
        "idle_timeout_ms", "request_timeout_ms", "max_concurrent_ingests"}},
      {"storage", {"data_dir", "extent_kb", "max_streams"}},
      {"buckets", {}},
      {"cache", {"capacity_mb"}},
      {"delivery",
       {"relax_version_check", "per_thing_queue", "global_queue", "per_thing_blocks_per_s",
        "global_blocks_per_s", "max_bytes_in_flight_mb", "quantum_kib", "max_open_files"}},
      {"log", {"level"}},
  };
  return keys;
}

std::string absolute_path(const std::string& path, const std::string& base_dir) {
  if (!path.empty() && path.front() == '/') return path;
  std::string out = base_dir;
  if (out.empty() || out.back() != '/') out += '/';
  std::string_view rest = path;
  while (rest.substr(0, 2) == "./") rest.remove_prefix(2);
  out += rest;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    default:
      return "a date or time";
  }
}

// Reads the typed keys of one section; the first problem found is kept in `error`.
class Section {
 public:
  Section(const toml::table* table, std::string name, std::string& error)
      : table_(table), name_(std::move(name)), error_(error) {}

  const toml::node* node(std::string_view key) const {
    return table_ == nullptr ? nullptr : table_->get(key);
  }
  std::string key_name(std::string_view key) const { return name_ + "." + std::string(key); }
  void fail(std::string_view key, const std::string& message) {
    if (error_.empty()) error_ = key_name(key) + ": " + message;
  }

  template <class T>
  void integer(std::string_view key, T& out, std::int64_t min, std::int64_t max) {
    const toml::node* n = node(key);
    if (n == nullptr) return;
    std::string range =
        "must be an integer between " + std::to_string(min) + " and " + std::to_string(max);
    if (!n->is_integer()) {
      fail(key, range + " (got " + type_name(*n) + ")");
      return;
    }
    std::int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      fail(key, range + " (got " + std::to_string(v) + ")");
      return;
    }
    out = static_cast<T>(v);
  }
  void number(std::string_view key, double& out, double min, double max) {
    const toml::node* n = node(key);
    if (n == nullptr) return;
    std::ostringstream range;
    range << "must be a number between " << min << " and " << max;
    double v = 0;
    if (n->is_integer()) {
      v = static_cast<double>(n->as_integer()->get());
    } else if (n->is_floating_point()) {
      v = n->as_floating_point()->get();
    } else {
      fail(key, range.str() + " (got " + type_name(*n) + ")");
      return;
    }
    if (!std::isfinite(v) || v < min || v > max) {
      range << " (got " << v << ")";
      fail(key, range.str());
      return;
    }
    out = v;
  }
  void boolean(std::string_view key, bool& out) {
    const toml::node* n = node(key);
    if (n == nullptr) return;
    if (!n->is_boolean()) {
      fail(key, "must be true or false (got " + type_name(*n) + ")");
      return;
    }
    out = n->as_boolean()->get();
  }
  // Returns true when the key is present and a string.
  bool string(std::string_view key, std::string& out) {
    const toml::node* n = node(key);
    if (n == nullptr) return false;
    if (!n->is_string()) {
      fail(key, "must be a string (got " + type_name(*n) + ")");
      return false;
    }
    out = n->as_string()->get();
    return true;
  }

 private:
  const toml::table* table_;
  std::string name_;
  std::string& error_;
};

bool has_control_chars(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// "host:port" or "[v6]:port" with an IP literal host.
bool parse_listen(const std::string& text, std::string& host, std::uint16_t& port) {
  std::string port_text;
  if (!text.empty() && text.front() == '[') {
    std::size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    in6_addr a6{};
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) return false;
  } else {
    std::size_t colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) != 1) return false;
  }
  if (port_text.empty() || port_text.size() > 5) return false;
  unsigned value = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return false;
  port = static_cast<std::uint16_t>(value);
  return true;
}

// First line of a small secret file, surrounding whitespace trimmed.
bool read_first_line(const std::string& path, std::string& out, std::string& problem) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    problem = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  std::string line;
  std::getline(in, line);
  const char* ws = " \t\r\n\v\f";
  std::size_t first = line.find_first_not_of(ws);
  if (first == std::string::npos) {
    out.clear();
    return true;
  }
  std::size_t last = line.find_last_not_of(ws);
  out = line.substr(first, last - first + 1);
  return true;
}

bool readable_file(const std::string& path, std::string& problem) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    problem = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    problem = path + " is not a regular file";
    return false;
  }
  if (::access(path.c_str(), R_OK) != 0) {
    problem = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

bool valid_bucket_name(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result validate(const toml::table& root, const std::string& config_dir) {
  std::string error;
  // Unknown sections and keys first, so a typo is reported as such, not as a missing default.
  for (const auto& [key, node] : root) {
    auto section = known_keys().find(key.str());
    if (section == known_keys().end()) return unexpected("unknown key: " + std::string(key.str()));
    if (!node.is_table()) {
      return unexpected(std::string(key.str()) + ": must be a table ([" + std::string(key.str()) +
                        "])");
    }
    if (section->first == "buckets") continue;
    for (const auto& [sub, subnode] : *node.as_table()) {
      (void)subnode;
      if (section->second.count(std::string(sub.str())) == 0) {
        return unexpected("unknown key: " + std::string(key.str()) + "." + std::string(sub.str()));
      }
    }
  }

  Config c;
  c.storage.data_dir = absolute_path("var/chunkd", config_dir);

  // [mqtt]
  {
    Section s(root["mqtt"].as_table(), "mqtt", error);
    bool tls = false;
    s.string("uri", c.mqtt.uri);
    if (auto uri = io::parse_mqtt_uri(c.mqtt.uri); !uri) {
      s.fail("uri", "must be tcp://host:port or ssl://host:port (" + uri.error().detail +
                        "; got \"" + c.mqtt.uri + "\")");
    } else {
      tls = uri->tls;
    }
    if (s.string("client_id", c.mqtt.client_id) &&
        (c.mqtt.client_id.empty() || c.mqtt.client_id.size() > 200 ||
         has_control_chars(c.mqtt.client_id))) {
      s.fail("client_id", "must be 1 to 200 printable characters");
    }
    s.integer("connections", c.mqtt.connections, 1, 64);
    s.string("username", c.mqtt.username);
    if (s.string("password_file", c.mqtt.password_file) && !c.mqtt.password_file.empty()) {
      c.mqtt.password_file = absolute_path(c.mqtt.password_file, config_dir);
      std::string problem;
      if (!read_first_line(c.mqtt.password_file, c.mqtt.password, problem)) {
        s.fail("password_file", problem);
      } else if (c.mqtt.username.empty()) {
        s.fail("password_file", "needs mqtt.username");
      }
    }
    for (auto [key, field] :
         {std::pair{"ca_file", &c.mqtt.ca_file}, std::pair{"cert_file", &c.mqtt.cert_file},
          std::pair{"key_file", &c.mqtt.key_file}}) {
      if (!s.string(key, *field) || field->empty()) continue;
      *field = absolute_path(*field, config_dir);
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
    s.integer("qos", c.mqtt.qos, 0, 1);
    if (s.string("topic_prefix", c.mqtt.topic_prefix) &&
        !protocol::TopicCodec::valid_prefix(c.mqtt.topic_prefix)) {
      s.fail("topic_prefix", "must be a non-empty topic without '+', '#' or a trailing '/'");
    }
    s.integer("keepalive_s", c.mqtt.keepalive_s, 5, 3600);
    std::size_t mb = c.mqtt.max_queued_bytes >> 20;
    s.integer("max_queued_mb", mb, 1, 4096);
    c.mqtt.max_queued_bytes = mb << 20;
  }

  // [control]
  {
    Section s(root["control"].as_table(), "control", error);
    s.string("listen", c.control.listen);
    if (!parse_listen(c.control.listen, c.control.listen_host, c.control.listen_port)) {
      s.fail("listen", "must be an IP address and port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"");
    }
    if (s.string("token_file", c.control.token_file) && !c.control.token_file.empty()) {
      c.control.token_file = absolute_path(c.control.token_file, config_dir);
      std::string problem;
      if (!read_first_line(c.control.token_file, c.control.token, problem)) {
        s.fail("token_file", problem);
      } else if (c.control.token.empty()) {
        s.fail("token_file", c.control.token_file + " holds no token (its first line is empty)");
      }
    }
    s.boolean("allow_insecure_listen", c.control.allow_insecure_listen);
    s.integer("max_body_bytes", c.control.max_body_bytes, 1024, 64 << 20);
    s.integer("max_connections", c.control.max_connections, 1, 65536);
    s.integer("idle_timeout_ms", c.control.idle_timeout_ms, 100, 3600000);
    s.integer("request_timeout_ms", c.control.request_timeout_ms, 100, 600000);
    s.integer("max_concurrent_ingests", c.control.max_concurrent_ingests, 1, 64);
    if (error.empty() && c.control.token_file.empty() && !c.control.allow_insecure_listen &&
        !is_loopback_host(c.control.listen_host)) {
      s.fail("listen",
             c.control.listen +
                 " is not a loopback address and control.token_file is empty: set a token_file, "
                 "listen on 127.0.0.1, or set control.allow_insecure_listen = true");
    }
  }

  // [storage]
  {
    Section s(root["storage"].as_table(), "storage", error);
    if (s.string("data_dir", c.storage.data_dir)) {
      if (c.storage.data_dir.empty()) {
        s.fail("data_dir", "must not be empty");
      } else {
        c.storage.data_dir = absolute_path(c.storage.data_dir, config_dir);
      }
    }
    struct stat st {};
    if (error.empty() && ::stat(c.storage.data_dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
      s.fail("data_dir", c.storage.data_dir + " exists and is not a directory");
    }
    std::int64_t extent_kb = c.storage.extent_bytes >> 10;
    s.integer("extent_kb", extent_kb, 64, 4096);
    if ((extent_kb & (extent_kb - 1)) != 0) {
      s.fail("extent_kb", "must be a power of two (got " + std::to_string(extent_kb) + ")");
    }
    c.storage.extent_bytes = static_cast<std::uint32_t>(extent_kb << 10);
    s.integer("max_streams", c.storage.max_streams, 1, 1000000);
  }

  // [buckets]
  if (const toml::table* buckets = root["buckets"].as_table()) {
    for (const auto& [key, node] : *buckets) {
      std::string name(key.str());
      std::string full = "buckets." + name;
      if (!valid_bucket_name(name)) {
        if (error.empty()) {
          error = full + ": a bucket name is 1 to 255 of [a-zA-Z0-9._-]";
        }
        continue;
      }
      if (!node.is_string() || node.as_string()->get().empty()) {
        if (error.empty()) error = full + ": must be a directory path (a non-empty string)";
        continue;
      }
      std::string dir = absolute_path(node.as_string()->get(), config_dir);
      struct stat st {};
      if (::stat(dir.c_str(), &st) != 0) {
        if (error.empty()) error = full + ": " + dir + ": " + std::strerror(errno);
        continue;
      }
      if (!S_ISDIR(st.st_mode)) {
        if (error.empty()) error = full + ": " + dir + " is not a directory";
        continue;
      }
      c.buckets.emplace(std::move(name), std::move(dir));
    }
  }

  // [cache]
  {
    Section s(root["cache"].as_table(), "cache", error);
    std::size_t mb = c.cache.capacity_bytes >> 20;
    s.integer("capacity_mb", mb, 1, 1 << 20);
    c.cache.capacity_bytes = mb << 20;
  }

  // [delivery]
  {
    Section s(root["delivery"].as_table(), "delivery", error);
    s.boolean("relax_version_check", c.delivery.relax_version_check);
    s.integer("per_thing_queue", c.delivery.per_thing_queue, 1, 4096);
    s.integer("global_queue", c.delivery.global_queue, 1, 1000000);
    s.number("per_thing_blocks_per_s", c.delivery.per_thing_blocks_per_s, 0, 1e9);
    s.number("global_blocks_per_s", c.delivery.global_blocks_per_s, 0, 1e9);
    std::size_t mb = c.delivery.max_bytes_in_flight >> 20;
    s.integer("max_bytes_in_flight_mb", mb, 1, 4096);
    c.delivery.max_bytes_in_flight = mb << 20;
    std::size_t kib = c.delivery.quantum_bytes >> 10;
    s.integer("quantum_kib", kib, 1, 4096);
    c.delivery.quantum_bytes = kib << 10;
    s.integer("max_open_files", c.delivery.max_open_files, 1, 65536);
  }

  // [log]
  {
    Section s(root["log"].as_table(), "log", error);
    io::LogLevel level{};
    if (s.string("level", c.log.level) && !io::parse_log_level(c.log.level, level)) {
      s.fail("level", "must be one of debug, info, warn, error (got \"" + c.log.level + "\")");
    }
  }

  if (!error.empty()) return unexpected(error);
  return c;
}

}  // namespace

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

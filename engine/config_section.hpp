// Reading one TOML section of the config file: typed keys with bounds, the first problem kept
// with the key named as the operator wrote it, and keys renamed to say their unit read under
// their old names too (kRenames). Internal to the config loader (config.cpp); start-up only.
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace chunkd::engine::config_section {

// Keys renamed to say their unit (or what they count). The old name is read as the new one, with
// a warning, for one release; then it goes from this table and becomes an unknown key.
struct Rename {
  std::string_view section;
  std::string_view old_key;
  std::string_view new_key;
};
inline constexpr Rename kRenames[] = {
    {"mqtt", "max_queued_mb", "max_queued_mib"},
    {"storage", "extent_kb", "extent_kib"},
    {"cache", "capacity_mb", "capacity_mib"},
    {"delivery", "per_thing_queue", "per_thing_queue_requests"},
    {"delivery", "global_queue", "global_queue_requests"},
    {"delivery", "max_bytes_in_flight_mb", "max_publish_in_flight_mib"},
};

// The rename whose old (resp. new) name is `key` in `section`, or nullptr.
const Rename* rename_of_old(std::string_view section, std::string_view key);
const Rename* rename_of_new(std::string_view section, std::string_view key);

// "section.key"
std::string dotted(std::string_view section, std::string_view key);

// Reads the typed keys of one section; the first problem found is kept in `error`.
class Section {
 public:
  Section(const toml::table* table, std::string name, std::string& error)
      : table_(table), name_(std::move(name)), error_(error) {}

  // The key's node under its current name or, failing that, its deprecated one.
  const toml::node* node(std::string_view key) const;
  // The key as the file spells it, so a message names what the operator wrote.
  std::string key_name(std::string_view key) const;
  const std::string& name() const { return name_; }
  bool failed() const { return !error_.empty(); }
  void fail(std::string_view key, const std::string& message) {
    if (error_.empty()) error_ = key_name(key) + ": " + message;
  }

  // Each returns true when the key is present and valid (and then sets `out`).
  bool integer(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max);
  bool number(std::string_view key, double& out, double min, double max);
  bool boolean(std::string_view key, bool& out);
  bool string(std::string_view key, std::string& out);

 private:
  const toml::table* table_;
  std::string name_;
  std::string& error_;
};

}  // namespace chunkd::engine::config_section

#include "engine/config_section.hpp"

#include <cmath>
#include <sstream>

namespace chunkd::engine::config_section {
namespace {

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

}  // namespace

const Rename* rename_of_old(std::string_view section, std::string_view key) {
  for (const Rename& r : kRenames) {
    if (r.section == section && r.old_key == key) return &r;
  }
  return nullptr;
}

const Rename* rename_of_new(std::string_view section, std::string_view key) {
  for (const Rename& r : kRenames) {
    if (r.section == section && r.new_key == key) return &r;
  }
  return nullptr;
}

std::string dotted(std::string_view section, std::string_view key) {
  return std::string(section) + "." + std::string(key);
}

const toml::node* Section::node(std::string_view key) const {
  if (table_ == nullptr) return nullptr;
  if (const toml::node* n = table_->get(key)) return n;
  const Rename* r = rename_of_new(name_, key);
  return r == nullptr ? nullptr : table_->get(r->old_key);
}
std::string Section::key_name(std::string_view key) const {
  const Rename* r = rename_of_new(name_, key);
  if (r != nullptr && table_ != nullptr && table_->get(key) == nullptr &&
      table_->get(r->old_key) != nullptr) {
    return dotted(name_, r->old_key);
  }
  return dotted(name_, key);
}
bool Section::integer(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max) {
  const toml::node* n = node(key);
  if (n == nullptr) return false;
  std::string range =
      "must be an integer between " + std::to_string(min) + " and " + std::to_string(max);
  if (!n->is_integer()) {
    fail(key, range + " (got " + type_name(*n) + ")");
    return false;
  }
  std::int64_t v = n->as_integer()->get();
  if (v < min || v > max) {
    fail(key, range + " (got " + std::to_string(v) + ")");
    return false;
  }
  out = v;
  return true;
}
bool Section::number(std::string_view key, double& out, double min, double max) {
  const toml::node* n = node(key);
  if (n == nullptr) return false;
  std::ostringstream range;
  range << "must be a number between " << min << " and " << max;
  double v = 0;
  if (n->is_integer()) {
    v = static_cast<double>(n->as_integer()->get());
  } else if (n->is_floating_point()) {
    v = n->as_floating_point()->get();
  } else {
    fail(key, range.str() + " (got " + type_name(*n) + ")");
    return false;
  }
  if (!std::isfinite(v) || v < min || v > max) {
    range << " (got " << v << ")";
    fail(key, range.str());
    return false;
  }
  out = v;
  return true;
}
bool Section::boolean(std::string_view key, bool& out) {
  const toml::node* n = node(key);
  if (n == nullptr) return false;
  if (!n->is_boolean()) {
    fail(key, "must be true or false (got " + type_name(*n) + ")");
    return false;
  }
  out = n->as_boolean()->get();
  return true;
}
bool Section::string(std::string_view key, std::string& out) {
  const toml::node* n = node(key);
  if (n == nullptr) return false;
  if (!n->is_string()) {
    fail(key, "must be a string (got " + type_name(*n) + ")");
    return false;
  }
  out = n->as_string()->get();
  return true;
}

}  // namespace chunkd::engine::config_section

// Values of the config file that need more than a type and a range: paths, listen addresses,
// secret files, bucket names. Internal to the config loader (config.cpp); start-up only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace chunkd::engine::config_values {

// `path` made absolute against `base_dir` ("./" prefixes dropped).
std::string absolute_path(const std::string& path, const std::string& base_dir);
bool has_control_chars(std::string_view s);
// "host:port" or "[v6]:port" with an IP literal host.
bool parse_listen(const std::string& text, std::string& host, std::uint16_t& port);
// First line of a small secret file, surrounding whitespace trimmed; false with `problem` set when
// it cannot be read.
bool read_first_line(const std::string& path, std::string& out, std::string& problem);
// A readable regular file, else false with `problem` set.
bool readable_file(const std::string& path, std::string& problem);
// 1 to 255 of [a-zA-Z0-9._-].
bool valid_bucket_name(std::string_view name);

}  // namespace chunkd::engine::config_values

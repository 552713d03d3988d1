// Reading [amqp], [registry] and storage.content_bucket (engine/cluster_options.hpp). Internal to
// the config loader (config.cpp); reads amqp.password_file, so start-up and reload only.
#pragma once

#include <toml++/toml.h>

#include <string>

#include "engine/config.hpp"

namespace chunkd::engine::config_cluster {

// Reads the three settings into c.cluster; the first problem goes to `error` (key named).
void read(const toml::table& root, Config& c, const std::string& config_dir, std::string& error);

// What the rest of the config must be for the cluster settings to hold, once every section is
// read: the content bucket names an s3 bucket, a shared config has one, jobs stay on one host.
void check(const toml::table& root, Config& c, std::string& error);

}  // namespace chunkd::engine::config_cluster

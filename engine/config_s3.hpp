// Reading `[buckets.<name>]` tables of type "s3" (engine/s3_bucket.hpp). Internal to the config
// loader (config.cpp); reads the credentials file, so start-up and reload only.
#pragma once

#include <toml++/toml.h>

#include <functional>
#include <string>

#include "base/expected.hpp"
#include "engine/s3_bucket.hpp"

namespace chunkd::engine {

// Reads `[buckets.<name>]`. `getenv` looks up the environment (tests pass their own). The error
// names the key ("endpoint: must be an http:// or https:// URL (got ...)"), never a secret.
using EnvLookup = std::function<const char*(const char* name)>;
Expected<S3Bucket, std::string> read_s3_bucket(const std::string& name, const toml::table& table,
                                               const std::string& config_dir,
                                               const EnvLookup& getenv);

}  // namespace chunkd::engine

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "engine/config_s3.hpp"
#include "engine/config_values.hpp"
#include "io/s3_text.hpp"

namespace chunkd::engine {
namespace {

constexpr const char* kKeys[] = {"type",       "endpoint",         "region",  "bucket",
                                 "addressing", "credentials_file", "profile", "ca_file",
                                 "timeout_s",  "retries",          nullptr};

using Result = Expected<S3Bucket, std::string>;

bool is_key(std::string_view key) {
  for (const char* const* k = kKeys; *k != nullptr; ++k) {
    if (key == *k) return true;
  }
  return false;
}

// A string key: nullopt when absent; an error when present and not a non-empty string.
Expected<std::optional<std::string>, std::string> string_key(const toml::table& t,
                                                             const char* key) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return std::optional<std::string>();
  if (!node->is_string() || node->as_string()->get().empty() ||
      config_values::has_control_chars(node->as_string()->get())) {
    return unexpected(std::string(key) + ": must be a non-empty string");
  }
  return std::optional<std::string>(node->as_string()->get());
}

Expected<std::uint32_t, std::string> integer_key(const toml::table& t, const char* key,
                                                 std::int64_t min, std::int64_t max,
                                                 std::uint32_t fallback) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return fallback;
  std::int64_t v = node->is_integer() ? node->as_integer()->get() : min - 1;
  if (v < min || v > max) {
    return unexpected(std::string(key) + ": must be an integer between " + std::to_string(min) +
                      " and " + std::to_string(max));
  }
  return static_cast<std::uint32_t>(v);
}

// "http(s)://host[:port]" with nothing after but an optional '/'.
std::optional<std::string> check_endpoint(std::string url) {
  std::size_t host = url.rfind("https://", 0) == 0 ? 8 : url.rfind("http://", 0) == 0 ? 7 : 0;
  if (host == 0) return std::nullopt;
  if (url.size() > host && url.back() == '/') url.pop_back();
  std::string_view rest = std::string_view(url).substr(host);
  if (rest.empty() || rest.size() > 255) return std::nullopt;
  for (char c : rest) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
    if (!ok) return std::nullopt;
  }
  return url;
}

Expected<io::S3Credentials, std::string> credentials(const S3Bucket& b, const EnvLookup& getenv) {
  if (b.credentials_file.empty()) {
    const char* id = getenv("AWS_ACCESS_KEY_ID");
    const char* secret = getenv("AWS_SECRET_ACCESS_KEY");
    const char* token = getenv("AWS_SESSION_TOKEN");
    if (id == nullptr || *id == '\0' || secret == nullptr || *secret == '\0') {
      return unexpected(std::string(
          "credentials_file: not set, and AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not "
          "both in the environment"));
    }
    return io::S3Credentials{id, secret, token != nullptr ? token : ""};
  }
  std::string problem;
  if (!config_values::readable_file(b.credentials_file, problem)) {
    return unexpected("credentials_file: " + problem);
  }
  std::ifstream in(b.credentials_file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in || text.str().size() > (1u << 20)) {
    return unexpected("credentials_file: " + b.credentials_file +
                      " cannot be read (or is over 1 MiB)");
  }
  auto parsed = io::parse_shared_credentials(text.str(), b.profile);
  if (!parsed) return unexpected("credentials_file: " + b.credentials_file + ": " + parsed.error());
  return *parsed;
}

// The first key an s3 bucket does not take, as an error (secrets get their own).
std::optional<std::string> unknown_key(const toml::table& table) {
  for (const auto& [key, node] : table) {
    if (!is_key(key.str())) {
      std::string k(key.str());
      if (k.find("secret") != std::string::npos || k.find("access_key") != std::string::npos) {
        return std::optional<std::string>(
            k +
            ": secrets never go in the config: use credentials_file (or the "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment)");
      }
      return std::optional<std::string>(
          k +
          ": unknown key (an s3 bucket takes type, endpoint, region, bucket, "
          "addressing, credentials_file, profile, ca_file, timeout_s, retries)");
    }
  }
  return std::nullopt;
}

}  // namespace

std::string S3Bucket::describe() const {
  const io::S3BucketOptions& r = remote;
  return "s3 " + r.endpoint + " region " + r.region + " bucket " + r.bucket +
         (r.virtual_addressing ? " virtual" : " path") + " credentials " +
         (credentials_file.empty() ? std::string("env") : credentials_file + "[" + profile + "]") +
         (r.ca_file.empty() ? std::string() : " ca " + r.ca_file) + " timeout_s " +
         std::to_string(r.timeout_s) + " retries " + std::to_string(r.retries);
}

bool S3Bucket::same_secrets(const S3Bucket& other) const {
  const io::S3Credentials& a = remote.credentials;
  const io::S3Credentials& b = other.remote.credentials;
  return a.access_key_id == b.access_key_id && a.secret_access_key == b.secret_access_key &&
         a.session_token == b.session_token;
}

std::vector<std::string> probe_s3_buckets(const std::map<std::string, S3Bucket>& buckets,
                                          bool& ok) {
  ok = true;
  std::vector<std::string> out;
  for (const auto& [name, bucket] : buckets) {
    auto probed = io::s3_probe_bucket(bucket.remote);
    out.push_back("buckets." + name + ": " + (probed ? std::string("ok") : probed.error()));
    ok = ok && probed.has_value();
  }
  return out;
}

Result read_s3_bucket(const std::string& name, const toml::table& table,
                      const std::string& config_dir, const EnvLookup& getenv) {
  if (auto problem = unknown_key(table)) return unexpected(std::move(*problem));
  S3Bucket b;
  io::S3BucketOptions& r = b.remote;
  std::optional<std::string> values[8];
  const char* names[8] = {"type",       "endpoint",         "region",  "bucket",
                          "addressing", "credentials_file", "profile", "ca_file"};
  for (int i = 0; i < 8; ++i) {
    auto v = string_key(table, names[i]);
    if (!v) return unexpected(v.error());
    values[i] = std::move(*v);
  }
  const auto& [type, endpoint, region, remote, addressing, creds, profile, ca] = values;
  if (type != "s3")
    return unexpected(std::string("type: must be \"s3\" (or give a directory path)"));
  if (!endpoint) return unexpected(std::string("endpoint: required"));
  auto url = check_endpoint(*endpoint);
  if (!url) {
    return unexpected(
        "endpoint: must be an http:// or https:// URL of a host and optional port, "
        "without a path (got \"" +
        *endpoint + "\")");
  }
  r.endpoint = *url;
  if (!region) return unexpected(std::string("region: required"));
  for (char c : *region) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') || region->size() > 64) {
      return unexpected("region: must be 1 to 64 of [a-z0-9-] (got \"" + *region + "\")");
    }
  }
  r.region = *region;
  r.bucket = remote.value_or(name);
  if (!config_values::valid_bucket_name(r.bucket)) {
    return unexpected("bucket: must be 1 to 255 of [a-zA-Z0-9._-] (got \"" + r.bucket + "\")");
  }
  std::string mode = addressing.value_or("path");
  if (mode != "path" && mode != "virtual") {
    return unexpected("addressing: must be \"path\" or \"virtual\" (got \"" + mode + "\")");
  }
  r.virtual_addressing = mode == "virtual";
  if (profile && !creds) return unexpected(std::string("profile: needs credentials_file"));
  b.profile = profile.value_or("default");
  if (creds) b.credentials_file = config_values::absolute_path(*creds, config_dir);
  if (ca) {
    r.ca_file = config_values::absolute_path(*ca, config_dir);
    std::string problem;
    if (!config_values::readable_file(r.ca_file, problem)) return unexpected("ca_file: " + problem);
  }
  auto timeout = integer_key(table, "timeout_s", 1, 3600, 30);
  if (!timeout) return unexpected(timeout.error());
  r.timeout_s = *timeout;
  auto retries = integer_key(table, "retries", 0, 10, 3);
  if (!retries) return unexpected(retries.error());
  r.retries = *retries;
  auto secrets = credentials(b, getenv);
  if (!secrets) return unexpected(secrets.error());
  r.credentials = std::move(*secrets);
  return b;
}

}  // namespace chunkd::engine

// The S3 kind of bucket (SPEC.md §3 [buckets]): how `[buckets.<name>]` with `type = "s3"` is read
// and checked, and what a running chunkd keeps of it.
//
//   [buckets.firmware]
//   type = "s3"
//   endpoint = "https://minio.example.net:9000"   # http or https, no path
//   region = "us-east-1"
//   bucket = "firmware-releases"                  # the remote name; default: the local name
//   addressing = "path"                           # or "virtual" (bucket.host)
//   credentials_file = "/etc/chunkd/s3-credentials"  # shared-credentials INI; never inline secrets
//   profile = "default"
//   ca_file = "/etc/chunkd/minio-ca.pem"          # optional
//   timeout_s = 30                                # connect, and any stall of a transfer
//   retries = 3                                   # per fetch, after the first attempt
//
// Without credentials_file the keys come from the environment chunkd starts in:
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN. The credentials are
// read at start-up (and by `--check`, and on reload), so a missing or malformed file fails there.
//
// Reading one: engine/config_s3.hpp. Thread: any.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "io/s3_client.hpp"

namespace chunkd::engine {

struct S3Bucket {
  io::S3BucketOptions remote;    // credentials filled in
  std::string credentials_file;  // absolute; "" : the environment
  std::string profile = "default";

  // Every setting but the secrets, for reload diffs and logs.
  std::string describe() const;
  // True when the secrets differ (compared, never shown).
  bool same_secrets(const S3Bucket& other) const;
};

// `chunkd --check --probe`: probes each S3 bucket (io::s3_probe_bucket, blocking) and returns one
// line per bucket, "buckets.<name>: ok" or "buckets.<name>: <problem>"; `ok` is false when any
// failed.
std::vector<std::string> probe_s3_buckets(const std::map<std::string, S3Bucket>& buckets, bool& ok);

}  // namespace chunkd::engine

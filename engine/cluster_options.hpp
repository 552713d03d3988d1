// The settings that let several chunkd instances share one broker cluster, one registry and one
// content bucket (docs/cluster.md): [amqp], [registry] and storage.content_bucket in the config
// file (SPEC.md §3). A config without them is the single-host daemon: MQTT, SQLite in data_dir.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace chunkd::engine {

// [amqp]: requests come from and replies go to RabbitMQ over AMQP 0-9-1; [mqtt] is not used.
struct AmqpOptions {
  bool enabled = false;           // the [amqp] table is present
  std::vector<std::string> uris;  // amqp://user@host:port/vhost, tried in order on failure
  std::string password_file;      // absolute; its first line is the password ("" when unset)
  std::string password;           // read from password_file at start-up
  std::string ca_file;            // absolute; amqps:// brokers' CAs (PEM); "" : the system's CAs
  std::string queue = "chunkd.requests";  // quorum queue the instances consume from
  // Jobs requests' quorum queue, consumed only by the instance that serves jobs (while it holds
  // the jobs lease); declared and bound only when `jobs` is set.
  std::string jobs_queue = "chunkd.jobs";
  bool jobs = false;  // jobs are served in this cluster: declare, bind (and consume on demand)
  std::string exchange = "amq.topic";        // where the broker's MQTT plugin routes device topics
  std::uint32_t prefetch = 256;              // unacknowledged requests per instance
  std::uint32_t delivery_limit = 5;          // deliveries of one request before the queue drops it
  std::string topic_prefix = "$aws/things";  // mqtt.topic_prefix
};

// [registry]: url "" keeps the registry in SQLite in data_dir; "postgresql://…" shares it.
struct RegistryOptions {
  std::string url;  // libpq connection URI; its password comes from passfile / PGPASSFILE
};

struct ClusterOptions {
  AmqpOptions amqp;
  RegistryOptions registry;
  // storage.content_bucket: the name of an s3 bucket entry holding content-addressed blobs and
  // manifests every instance fills its local store from ("" when unset).
  std::string content_bucket;
  // storage.content_bucket_uploads / _fills: digests uploading to / filling from it at once (the
  // rest queue; engine/content_bucket.hpp).
  std::size_t content_uploads = 4;
  std::size_t content_fills = 4;

  // Several instances may run against the same state: a shared registry or a queue they compete
  // for. Such a config needs a content bucket (a local data_dir cannot be shared across hosts).
  bool shared() const { return amqp.enabled || !registry.url.empty(); }
};

}  // namespace chunkd::engine

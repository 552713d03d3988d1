// The options of the data plane, one struct per module: engine/config.cpp fills them once from
// [delivery], [cache] and the mqtt/storage values they share, and Delivery hands `scheduler` to
// the Scheduler and `cache` to the BlockCache unchanged. They live here, apart from the modules,
// so that config.hpp and delivery.hpp need not include the scheduler's or the cache's headers.
//
// Each REQUIRES: below is asserted (CHUNKD_ASSERT) by the module that takes the struct; config's
// bounds (kIntegerKeys in engine/config.cpp) guarantee the ones a key sets, and the defaults
// satisfy the rest.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace chunkd::engine {

// engine/block_cache.hpp
struct BlockCacheOptions {
  std::string data_dir;                      // content store root (blob_path)
  std::size_t capacity_bytes = 256u << 20;   // unpinned LRU bound
  std::size_t overcommit_bytes = 16u << 20;  // extra, only while everything is pinned
  std::size_t max_open_files = 256;          // blob descriptors kept open. REQUIRES: >= 1
  std::size_t max_free_buffers = 16;         // free-list length per buffer size
  // A miss whose blob file is absent (ENOENT) asks this (empty: nobody) whether the blob is being
  // filled (engine/content_bucket.hpp starts or joins the fill and says true); the miss then fails
  // with resource_unavailable_try_again, which devices get as RequestThrottled and retry.
  std::function<bool(const std::string& digest, std::uint64_t size)> missing_blob;
};

// engine/scheduler.hpp
struct SchedulerOptions {
  std::size_t per_thing_queue_requests = 16;            // REQUIRES: >= 1
  std::size_t global_queue_requests = 4096;             // REQUIRES: >= 1
  double per_thing_blocks_per_s = 0;                    // 0: unlimited
  double global_blocks_per_s = 0;                       // 0: unlimited
  std::size_t max_publish_bytes_in_flight = 32u << 20;  // across connections, awaiting the socket
  // Extent reads started by the scheduler (demand + prefetch). REQUIRES: >= 1
  std::size_t max_extent_reads = 32;
  std::size_t max_prefetch_reads = 8;  // of which prefetches. REQUIRES: < max_extent_reads
  std::size_t blocks_per_turn = 64;    // items served per loop turn. REQUIRES: >= 1
  // Reply bytes served to one thing in a row before the next thing's turn (at least one item).
  std::size_t quantum_bytes = 32u << 10;
};

// engine/delivery.hpp
struct DeliveryOptions {
  // REQUIRES: protocol::TopicCodec::valid_prefix(topic_prefix)
  std::string topic_prefix = "$aws/things";
  int qos = 0;                       // reply QoS
  bool relax_version_check = false;  // accept any `s` (a device library always sends 1)
  SchedulerOptions scheduler;
  BlockCacheOptions cache;  // cache.data_dir: the content store's root
};

}  // namespace chunkd::engine

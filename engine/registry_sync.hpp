// Keeps this instance's catalog in step with a registry other chunkd instances write too (a
// shared registry, io/registry_pg.hpp): every change another instance commits is applied to the
// catalog exactly as a start-up load would apply it (the stream put, or erased when it is gone),
// and after the store reconnects (changes may have been missed) everything is reloaded: streams
// no longer there are erased, the others put.
//
// Policy:
// - a stream is put into the catalog whether or not its content is in this instance's local
//   store (the content store fetches missing blobs from storage.content_bucket on first use);
// - loads are coalesced: a change of an id whose load is in flight loads it once more afterwards;
//   over kMaxLoadsInFlight distinct ids, one full reload replaces them;
// - an id in a notification that is not a valid stream id is ignored with a warning (anyone
//   allowed to NOTIFY on the database could send one);
// - after a change that dropped references (an erase, or files replaced) the content store's
//   garbage collection runs (it keeps what catalog.referenced_digests() returns, so content of
//   every stream in the catalog stays);
// - a failed load is logged; the reload after the reconnect repairs what it missed.
//
// Metrics: chunkd_registry_connected, chunkd_registry_reconnects_total,
// chunkd_registry_notifications_total (changes heard of), chunkd_registry_changes_applied_total
// (catalog entries put or erased from them, by kind), chunkd_registry_writes_total and
// chunkd_registry_write_seconds_total (this instance's committed writes and their total time:
// the mean latency is the ratio of their rates).
//
// Thread: loop thread only. REQUIRES: the registry outlives this object, and its close() runs
// before this object is destroyed (it calls back until then).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/expected.hpp"
#include "engine/catalog.hpp"
#include "engine/metrics.hpp"
#include "io/registry_store.hpp"

namespace chunkd::engine {

class RegistrySync {
 public:
  static constexpr std::size_t kMaxLoadsInFlight = 64;

  // `collect_garbage` runs the content store's GC (may be empty).
  RegistrySync(Catalog& catalog, io::RegistryStore& registry, Metrics& metrics,
               std::function<void()> collect_garbage);
  RegistrySync(const RegistrySync&) = delete;
  RegistrySync& operator=(const RegistrySync&) = delete;

  // Starts following the registry's changes.
  void start();

 private:
  void changed(const std::optional<std::string>& id);
  void load_one(const std::string& id);
  void reload_all();
  void applied_one(const std::string& id, Expected<std::vector<io::StoredStream>> loaded);
  void applied_all(Expected<std::vector<io::StoredStream>> loaded);
  // Puts `stream` (counted as applied when `counted`); true when it replaced files of the
  // previous snapshot (GC may free some).
  bool put(io::StoredStream stream, bool counted);
  void count(const char* kind);

  Catalog& catalog_;
  io::RegistryStore& registry_;
  Metrics& metrics_;
  std::function<void()> collect_garbage_;
  std::set<std::string, std::less<>> loading_;  // ids with a load in flight
  std::set<std::string, std::less<>> again_;    // ... changed again since it was read
  bool reloading_ = false;
  bool reload_again_ = false;
};

}  // namespace chunkd::engine

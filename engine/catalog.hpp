// The in-memory view of every live stream, shared by the control plane (which writes it after the
// registry acknowledged a change) and the data plane (which reads it for every request).
//
// Streams are immutable snapshots: an update replaces the snapshot, and a request being served
// keeps the snapshot it started with alive through its shared_ptr. Content lives in the
// content-addressed store, so a file's bytes are found by digest (ContentStore::blob_path).
//
// Thread: loop thread only.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/registry_store.hpp"

namespace chunkd::engine {

using StreamSnapshot = std::shared_ptr<const io::StoredStream>;

class Catalog {
 public:
  StreamSnapshot find(std::string_view stream_id) const;
  void put(StreamSnapshot stream);
  bool erase(std::string_view stream_id);
  std::size_t size() const { return streams_.size(); }

  // Up to `limit` streams ordered by id, strictly after `after_id` (ascending) or strictly before
  // it (descending) when given.
  std::vector<StreamSnapshot> page(std::optional<std::string_view> after_id, bool ascending,
                                   std::size_t limit) const;
  // Every digest some live stream references (for the store's garbage collection).
  std::vector<std::string> referenced_digests() const;

 private:
  std::map<std::string, StreamSnapshot, std::less<>> streams_;
};

// A stream's file by id, or nullptr.
const io::StoredFile* find_file(const io::StoredStream& stream, std::uint32_t file_id);

}  // namespace chunkd::engine

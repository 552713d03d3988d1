// The content store's blocking file-system work (engine/content_store.hpp), as plain functions:
// each runs on the libuv thread pool (or at start-up, in ContentStore::open), touches only its
// arguments and returns an errno value (0: done), never throws. The loop-side state machine in
// engine/content_store.cpp queues them with uv_queue_work and reads their results back on the
// loop thread.
//
// Thread: any; they block.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace chunkd::engine::store_work {

// mkdir -p with mode 0755; an existing directory is fine, an existing non-directory is ENOTDIR.
int make_dirs(const std::string& path);

// Removes every entry of <data_dir>/tmp. REQUIRES: no ingest is running.
int clean_tmp(const std::string& data_dir);

struct ScanResult {
  int error = 0;
  std::uint64_t blobs = 0;
  std::uint64_t bytes = 0;
  std::uint64_t removed_blobs = 0;
  std::uint64_t removed_bytes = 0;
};

// Counts the blobs under <data_dir>/blobs; when `live` is given, removes those not in it
// (REQUIRES: sorted). Names that are not digests are left alone.
ScanResult scan_blobs(const std::string& data_dir, const std::vector<std::string>* live);

// The start of an ingest: what prepare_ingest made of the source.
struct PreparedIngest {
  int tmp_fd = -1;         // the temp file, set as soon as it exists (also on failure)
  int read_fd = -1;        // where to read the content from: the source, or the clone
  std::uint64_t size = 0;  // bytes to read
  bool reflinked = false;  // the temp file is a clone of the source
};

// Sizes the source `src_fd` (EINVAL unless a regular file), creates the temp file `tmp_path` and,
// when `try_reflink` and the source is on `data_device`, clones the source into it (FICLONE; the
// clone is then read back, so the blob is exactly what was hashed). Without a clone, advises the
// kernel the source is read sequentially.
int prepare_ingest(int src_fd, const std::string& tmp_path, bool try_reflink,
                   std::uint64_t data_device, PreparedIngest& out);

// How commit_ingest stored the blob.
struct CommittedBlob {
  bool created = false;       // linked under its digest name now
  bool deduplicated = false;  // the blob already existed: the temp file was dropped
};

// The end of an ingest. When `keep`: fsyncs the temp file, makes it read-only, links it as the
// blob `digest` under `data_dir` and fsyncs the directories it changed. Always: closes `tmp_fd`
// and `src_fd` (either may be -1) and removes `tmp_path` (unless empty).
int commit_ingest(bool keep, int src_fd, int tmp_fd, const std::string& tmp_path,
                  const std::string& data_dir, const std::string& digest, CommittedBlob& out);

}  // namespace chunkd::engine::store_work

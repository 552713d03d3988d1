// The content store's blocking file-system work (engine/content_store.hpp), as plain functions:
// each runs on the libuv thread pool (or at start-up, in ContentStore::open), touches only its
// arguments and returns an errno value (0: done), never throws. The loop-side state machine in
// engine/content_store.cpp queues them with uv_queue_work and reads their results back on the
// loop thread.
//
// Thread: any; they block.
#pragma once

#include <cstdint>
#include <functional>
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
  bool too_large = false;  // size > max_file_bytes: refused, nothing created
  // The data directory has less than `size` bytes free: no temp file; the source is only hashed,
  // and the ingest can succeed only when the store already holds that content.
  bool hash_only = false;
  std::uint64_t available_bytes = 0;  // free space seen (when it was checked)
};

// Free bytes for an unprivileged writer under `dir` (statvfs: f_bavail × f_frsize); an errno.
using FreeSpaceFn = std::function<int(const std::string& dir, std::uint64_t& available_bytes)>;
int free_space(const std::string& dir, std::uint64_t& available_bytes);

// What prepare_ingest needs besides the source.
struct IngestPlan {
  std::string tmp_path;
  bool try_reflink = false;
  std::uint64_t data_device = 0;
  std::uint64_t max_file_bytes = 0;
  std::string data_dir;    // where free space is measured
  FreeSpaceFn free_space;  // REQUIRES: callable
};

// Sizes the source `src_fd` (EINVAL unless a regular file) and refuses one over
// `plan.max_file_bytes` (too_large). When `try_reflink` and the source is on `data_device`, creates
// the temp file and clones the source into it (FICLONE; the clone is then read back, so the blob is
// exactly what was hashed). Without a clone: checks the free space first (hash_only when short),
// creates the temp file and advises the kernel the source is read sequentially.
int prepare_ingest(int src_fd, const IngestPlan& plan, PreparedIngest& out);

// True when blob `digest` is stored with exactly `size` bytes (a hash-only ingest's check).
bool blob_stored(const std::string& data_dir, const std::string& digest, std::uint64_t size);

// Creates and removes a probe file in <data_dir>/tmp: 0 when data_dir is writable, else an errno.
using WritableFn = std::function<int(const std::string& data_dir)>;
int check_writable(const std::string& data_dir);

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

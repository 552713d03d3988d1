// The content store's jobs, shared by engine/content_store.cpp (ingests, which owns and destroys
// them all), engine/content_store_writer.cpp (begin_write) and engine/content_store_upkeep.cpp
// (GC and probes). Loop thread only.
#pragma once

#include <uv.h>
#include <xxhash.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/content_store.hpp"
#include "engine/content_store_work.hpp"

namespace chunkd::engine {

struct ContentStore::Job {
  enum class SlotState { Free, Reading, Ready, Writing };
  struct Slot {
    Job* job = nullptr;
    SlotState state = SlotState::Free;
    std::uint64_t extent = 0;
    std::size_t length = 0;
    std::size_t written = 0;
    std::unique_ptr<std::byte[]> buffer;
    uv_fs_t write_req{};
    uv_buf_t write_buf{};
  };

  ContentStore* store = nullptr;
  IngestDone done;
  std::shared_ptr<IngestProgress> progress;  // may be null
  // begin_write: the caller writes the temp file and hashes through IngestWriter; nothing is read.
  bool writer = false;
  std::function<void(std::error_code, IngestWriter)> ready;  // writer: until the temp file exists
  IngestDone reserved;                                       // writer: a reserve() in flight
  std::uint64_t reserving = 0;                               // ... of this many bytes
  XXH3_state_t* extent_hash = nullptr;                       // writer: the current extent's
  std::uint64_t extent_filled = 0;
  std::string expected_digest;  // writer: "" or the digest the content must have
  std::uint64_t started_ms = 0;

  // Owned descriptors; closed by the finalize or cleanup work.
  int src_fd = -1;
  int tmp_fd = -1;
  int read_fd = -1;  // src_fd, or tmp_fd after a reflink
  std::string tmp_path;

  std::uint64_t size = 0;
  std::uint64_t available = 0;  // free space seen by prepare_ingest
  bool hash_only = false;       // no temp file: succeeds only if the content is already stored
  std::uint64_t extents = 0;
  std::uint64_t next_read = 0;
  std::uint64_t next_hash = 0;
  std::size_t outstanding = 0;  // reads and writes in flight
  std::vector<Slot> slots;      // sized once; never resized while I/O is in flight
  XXH3_state_t* hash = nullptr;

  std::error_code error;
  bool ended = false;  // finalize or cleanup queued
  bool pumping = false;
  bool pump_again = false;

  uv_work_t work{};
  int work_errno = 0;
  bool created = false;
  IngestResult result;

  ~Job() {
    if (hash != nullptr) XXH3_freeState(hash);
    if (extent_hash != nullptr) XXH3_freeState(extent_hash);
  }

  // Loop thread: queues the write of the slot's hashed extent to the temp file. Returns false
  // (error set, the slot free) when the write could not be queued.
  bool write_extent(Slot& slot);
  static void on_write(uv_fs_t* req);
};

struct ContentStore::GcRun {
  ContentStore* store = nullptr;
  uv_work_t work{};
  std::string data_dir;
  std::vector<std::string> live;
  store_work::ScanResult scan;
  std::vector<std::function<void(const GcResult&)>> waiters;
};

// One writability check of data_dir on the thread pool (probe_storage()).
struct ContentStore::Probe {
  ContentStore* store = nullptr;
  uv_work_t work{};
  int result = 0;  // 0: writable, else the errno
};

}  // namespace chunkd::engine

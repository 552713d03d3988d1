// The content-addressed store under <data_dir>/blobs: each file a stream version references is
// stored once, named by its XXH3-128 digest, and never changed after it is written.
// Layout: <data_dir>/blobs/<first two hex digits>/<32 hex digits>; <data_dir>/tmp holds ingests in
// progress. The digest is the canonical (big-endian) XXH3-128 of the whole content in lowercase
// hex: the high 64 bits then the low 64 bits, 32 digits. The manifest is the XXH3-64 (seed 0) of
// each `extent_bytes` piece of the content in order (the last one short).
//
// Ingest copies an open source file into the store while hashing it, so a stream stays
// byte-identical to what was hashed even if its source changes later: the bytes are read with the
// FileReader (io_uring or the thread pool) one extent at a time with a bounded number of reads in
// flight, hashed on the loop thread in order, written to a temp file with uv_fs_write, fsync'd,
// linked to the digest name (when it already exists the content is already stored once: the temp
// is dropped) and the directory fsync'd. When the source is on the data directory's file system a
// reflink (FICLONE) is tried first and the clone is read back for hashing. Every blocking step runs
// on the libuv thread pool (engine/content_store_work.hpp); the loop thread only hashes extents.
//
// Storage limits, checked before anything is copied: a source over `max_file_bytes` is refused
// (IngestError::TooLarge). Without a reflink, a copy needs the source's size free under data_dir;
// with less, the source is hashed only (no temp file) and the ingest succeeds when that content is
// already stored (deduplicated), else fails with IngestError::StorageFull. An ENOSPC or EDQUOT
// while copying fails the ingest with that errno; storage_full() says which errors mean a full
// store. On failure, IngestDone's result carries size_bytes (the source's, when known) and
// available_bytes (the free space seen), so the caller can name both.
//
// Writability: open() checks that data_dir can be written (a probe file in tmp) and logs a warning
// when it cannot; storage_problem() says why until a later check (probe_storage(), or a successful
// ingest) finds it writable again.
//
// Content the caller writes itself (an S3 fetch, engine/s3_source.hpp): begin_write() makes a
// temp file under <data_dir>/tmp and hands an IngestWriter for it. The caller writes the content at
// its offsets from 0 and passes every byte to update() in offset order as it goes, so the digest
// and the manifest are computed on the loop while the bytes arrive (no second copy, no read back);
// reserve() checks the size against max_file_bytes and the free space first. finish() then ends it
// as an ingest ends (fsync, link or deduplicate, pin), or drops the temp file; with
// expect_digest() it also drops it when the content hashes to another digest. The writer counts as
// an ingest in progress until finish() reports, so GC never runs meanwhile.
//
// Progress: ingest() and begin_write() take an optional IngestProgress that the store updates as
// it hashes (the control API shows it while a stream is being created or updated).
//
// Garbage collection removes every blob no live stream references. A blob just ingested is
// "pinned" until its caller unpin()s it (after committing the stream or giving up), and GC only
// runs while no ingest is in progress and nothing is pinned (a GC requested meanwhile runs as soon
// as that is true; an ingest requested during GC waits for it), so it can never remove a blob
// that is about to be referenced.
//
// Thread: loop thread only. Call open() before anything else and close() before destruction.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "engine/clock.hpp"
#include "engine/metrics.hpp"
#include "io/file_reader.hpp"

namespace chunkd::engine {

std::string blob_path(const std::string& data_dir, std::string_view digest);

// True for 32 lowercase hex digits.
bool valid_digest(std::string_view digest);

enum class IngestError {
  SourceChanged = 1,  // the source file shrank while it was being read
  Closed,             // the store is closing
  TooLarge,           // the source is over max_file_bytes (nothing was copied)
  StorageFull,        // too little free space for the copy, and the content is not stored yet
  DigestMismatch,     // a writer's content is not the digest it expected (nothing is kept)
};
const std::error_category& ingest_category();
std::error_code make_error_code(IngestError e);

// True for the errors that mean the store is full: StorageFull, ENOSPC, EDQUOT.
bool storage_full(const std::error_code& error);

struct ContentStoreOptions {
  std::string data_dir;  // absolute
  std::uint32_t extent_bytes = 256u << 10;
  std::size_t reads_in_flight = 4;  // per ingest (memory: this × extent_bytes)
  bool try_reflink = true;
  std::uint64_t max_file_bytes = std::uint64_t{4096} << 20;  // storage.max_file_mib
  // Seams (empty: the real calls, content_store_work.hpp). Called on the thread pool, or in open().
  std::function<int(const std::string& dir, std::uint64_t& available_bytes)> free_space;
  std::function<int(const std::string& data_dir)> check_writable;
};

struct IngestResult {
  std::string digest;
  std::uint64_t size_bytes = 0;
  std::uint32_t extent_bytes = 0;
  std::vector<std::uint64_t> manifest;
  bool reflinked = false;             // the blob shares extents with the source
  bool deduplicated = false;          // the blob already existed
  std::uint64_t available_bytes = 0;  // failures: the free space seen under data_dir
};

// How far an ingest is: bytes hashed of `total` (0 until the size is known). Loop thread.
struct IngestProgress {
  std::uint64_t done = 0;
  std::uint64_t total = 0;
};

class IngestWriter;

struct GcResult {
  std::error_code error;
  std::uint64_t removed_blobs = 0;
  std::uint64_t removed_bytes = 0;
};

class ContentStore {
 public:
  using IngestDone = std::function<void(std::error_code error, IngestResult result)>;
  using LiveDigests = std::function<std::vector<std::string>()>;

  // `metrics` may be null. `live` lists the digests GC must keep (Catalog::referenced_digests).
  ContentStore(uv_loop_t* loop, io::FileReader& reader, Metrics* metrics, const Clock& clock,
               ContentStoreOptions options, LiveDigests live);
  ~ContentStore();
  ContentStore(const ContentStore&) = delete;
  ContentStore& operator=(const ContentStore&) = delete;

  // Creates <data_dir>/blobs and <data_dir>/tmp, empties tmp (leftovers of a crash) and counts the
  // stored blobs. Synchronous: start-up only. The message says what failed, for the operator.
  std::error_code open(std::string& message);

  // Ingests the open regular file `fd` (taken over: closed when done). On success the digest is
  // pinned: call unpin(result.digest) once the stream referencing it is committed or abandoned.
  void ingest(int fd, IngestDone done, std::shared_ptr<IngestProgress> progress = nullptr);
  // Makes a temp file for content the caller writes (see above); `ready` gets its writer, or the
  // error (then nothing is left to finish). `ready` runs inside only when the store is closing.
  void begin_write(std::function<void(std::error_code, IngestWriter)> ready,
                   std::shared_ptr<IngestProgress> progress = nullptr);
  void unpin(const std::string& digest);

  // Runs GC when allowed (see above); `done` (may be empty) gets the outcome of that run.
  void collect_garbage(std::function<void(const GcResult&)> done = {});

  std::size_t ingests_in_progress() const;
  const ContentStoreOptions& options() const { return options_; }

  // Empty while data_dir is writable, else why it is not (for /healthz).
  const std::string& storage_problem() const { return storage_problem_; }
  // Re-checks writability on the thread pool: at most one check in flight and one per
  // `kProbeIntervalMs`; storage_problem() changes when it reports.
  void probe_storage();
  static constexpr std::uint64_t kProbeIntervalMs = 1000;
  std::uint64_t stored_blobs() const { return stored_blobs_; }
  std::uint64_t stored_bytes() const { return stored_bytes_; }

  // Fails waiting ingests, stops running ones at their next step (IngestError::Closed), waits for
  // them and for a GC in progress, then calls `done`.
  void close(std::function<void()> done);

 private:
  struct Job;
  struct GcRun;
  friend class IngestWriter;
  void start(Job& job);
  void start_writer(Job& job);
  void writer_ready(Job& job);
  void prepared(Job& job, int status);
  void pump(Job& job);
  void step(Job& job);
  void issue_reads(Job& job);
  void hash_ready(Job& job);
  void finalize(Job& job);
  void finish(Job& job);
  void maybe_run_gc();
  void gc_done(int status);
  void start_waiting();
  void maybe_closed();
  void set_storage_state(int writable_errno);

  uv_loop_t* loop_;
  io::FileReader& reader_;
  Metrics* metrics_;
  const Clock& clock_;
  ContentStoreOptions options_;
  LiveDigests live_;
  std::uint64_t data_device_ = 0;
  std::uint64_t next_tmp_ = 0;

  std::list<std::unique_ptr<Job>> jobs_;     // running, then finishing
  std::list<std::unique_ptr<Job>> waiting_;  // queued behind a GC run
  std::map<std::string, std::size_t> pins_;
  bool gc_running_ = false;
  bool gc_pending_ = false;
  std::vector<std::function<void(const GcResult&)>> gc_waiters_;
  std::unique_ptr<GcRun> gc_;
  bool closing_ = false;
  std::function<void()> close_done_;
  std::string storage_problem_;
  struct Probe;
  std::unique_ptr<Probe> probe_;  // in flight
  std::uint64_t last_probe_ms_ = 0;
  bool probed_ = false;

  std::uint64_t stored_blobs_ = 0;
  std::uint64_t stored_bytes_ = 0;
  Counter* ingest_bytes_ = nullptr;
  Gauge* ingest_seconds_ = nullptr;  // a float counter: Metrics has integer counters only
  Counter* gc_removed_ = nullptr;
};

// The caller's side of ContentStore::begin_write: one temp file of the store. Move-only; finish()
// must be called (exactly once) before it is destroyed. Loop thread only.
class IngestWriter {
 public:
  using IngestDone = std::function<void(std::error_code error, IngestResult result)>;
  IngestWriter() = default;
  IngestWriter(IngestWriter&& other) noexcept : job_(other.job_) { other.job_ = nullptr; }
  IngestWriter& operator=(IngestWriter&& other) noexcept;
  ~IngestWriter();
  explicit operator bool() const { return job_ != nullptr; }

  int fd() const;  // the temp file, read/write: write the content at its offsets from 0
  // Checks, on the thread pool, that `size` bytes may be stored: over max_file_bytes is
  // IngestError::TooLarge; less free space under data_dir is StorageFull (the result names
  // size_bytes and available_bytes). Call before writing anything; `done` runs later.
  void reserve(std::uint64_t size, IngestDone done);
  // The content must have this digest (a fill from the content bucket): finish() then fails with
  // IngestError::DigestMismatch, dropping the temp file, when it does not.
  void expect_digest(std::string digest);
  // The next `n` bytes of the content, in offset order: hashed now.
  void update(const void* data, std::size_t n);
  // Every byte updated is written (`failure` empty): ends as ingest() ends, the digest pinned.
  // With a failure (or a closing store) the temp file is dropped and `done` gets the error.
  void finish(std::error_code failure, IngestDone done);

 private:
  friend class ContentStore;
  explicit IngestWriter(ContentStore::Job* job) : job_(job) {}
  ContentStore::Job* job_ = nullptr;
};

}  // namespace chunkd::engine

namespace std {
template <>
struct is_error_code_enum<chunkd::engine::IngestError> : true_type {};
}  // namespace std

// The vocabulary between the scheduler (policy) and the block server (work): what a queued item
// is, the bounds the scheduler sets on extent reads, and what serving one item came to.
//
// Owns nothing by itself. A WorkItem lives in its thing's FIFO inside the Scheduler; the Worker
// (BlockServer in the daemon) reads and updates it while serving and never keeps a reference
// past the call. Thread: loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/catalog.hpp"
#include "protocol/topic.hpp"

namespace chunkd::engine {

// One GetStream request, ready to serve.
struct BlockJob {
  std::string thing;      // the publish key
  StreamSnapshot stream;  // keeps `file` alive
  const io::StoredFile* file = nullptr;
  std::uint32_t block_size = 0;
  std::vector<std::uint32_t> blocks;  // ascending block indices, inside the file
  std::string data_topic;             // data/<fmt>
  std::string rejected_topic;         // rejected/<fmt>, for a failure mid-job
  protocol::Format format = protocol::Format::Json;
  std::optional<std::string> client_token;
  std::uint64_t received_ms = 0;  // Clock::now_ms() when the request arrived
};

// The extents of the block being served, pinned as they arrive (one per extent it covers).
struct BlockPins {
  std::vector<BlockCache::Handle> handles;
  std::uint32_t first = 0;          // extent index of handles[0]
  std::size_t reads_waiting = 0;    // reads started or joined, not yet reported
  std::error_code failure;          // a read failed: the job ends with this error
  std::uint32_t failed_extent = 0;  // the extent whose read set `failure`

  void release() { handles.clear(); }
  // A read reported: keeps its handle (when it belongs to the current block) or its error.
  // Returns true when no read is left to wait for.
  bool landed(std::uint32_t extent, std::error_code error, BlockCache::Handle handle);
};

// One item of a thing's FIFO: a GetStream job being served block by block, or a ready message
// (a description or a rejection).
struct WorkItem {
  std::uint64_t id = 0;  // unique per scheduler; a read report for another id is stale
  bool is_job = false;
  // The requests this item answers (Transport::finished once it ended): one, several when
  // duplicates merged into it, none for kNoRequestTag.
  std::vector<std::uint64_t> tags;
  // job
  BlockJob job;
  std::size_t next = 0;  // index into job.blocks of the block to serve
  bool started = false;  // some block was handed to the transport
  BlockPins pins;
  std::int64_t prefetched_through = -1;  // highest extent prefetched for this job
  // message
  std::string topic;
  std::vector<std::byte> payload;

  bool failed() const { return is_job && static_cast<bool>(pins.failure); }
  bool last_block() const { return is_job && next + 1 == job.blocks.size(); }
  // The job ended early: from now on the item is its rejection, sent in the job's place.
  void become_message(std::string reply_topic, std::vector<std::byte> reply);
};

// Extent reads the scheduler allows (cache reads in flight, prefetches included).
struct ReadBounds {
  std::size_t max_extent_reads = 32;   // a block needing one more read waits for a slot
  std::size_t max_prefetch_reads = 8;  // a prefetch starts only below this
};

// What serving the head item of a thing came to.
enum class Served : std::uint8_t {
  Sent,          // handed to the transport: the message, or block `next` of the job
  Backpressure,  // the transport took nothing; serve the same item after on_writable
  Lost,          // NotConnected/Error: the message or the rest of the job is gone (counted)
  WaitRead,      // waits for reads it started or joined; Scheduler::read_done resumes it
  WaitSlot,      // needs a read slot (bound reached, or a transient refusal with reads in flight)
  Failed,        // the job failed; the item became its rejection, to be served in place
};
inline constexpr std::size_t kServedCount = 6;
static_assert(static_cast<std::size_t>(Served::Failed) + 1 == kServedCount);

struct ServeResult {
  Served served = Served::Sent;
  std::size_t reply_bytes = 0;    // bytes offered to the transport (the round-robin quantum)
  std::size_t reads_started = 0;  // demand reads started or joined, each reported to read_done
};

// The work side of the scheduler: the one interface it calls. Implemented by BlockServer.
class Worker {
 public:
  // A demand read reported: (thing, item id, extent, error, pinned extent or empty).
  using ReadDone =
      std::function<void(std::string_view thing, std::uint64_t item_id, std::uint32_t extent,
                         std::error_code error, BlockCache::Handle handle)>;
  virtual ~Worker() = default;

  // Where demand-read reports go (an empty function unregisters; reports are then dropped).
  virtual void on_read_done(ReadDone done) = 0;
  // Serves the head item of `thing`. REQUIRES: a job's rate tokens and the transport's in-flight
  // bound were checked by the caller; `item` is the head of the thing's FIFO.
  virtual ServeResult serve(std::string_view thing, WorkItem& item, const ReadBounds& bounds) = 0;
  // A job was queued: a chance to prefetch its first extent within `bounds`.
  virtual void queued(const WorkItem& item, const ReadBounds& bounds) = 0;
  // The scheduler dropped `item` unserved (shutdown): counted, never served.
  virtual void dropped(const WorkItem& item) = 0;
};

}  // namespace chunkd::engine

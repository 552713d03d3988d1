// Test seams for the engine's data plane (header-only; included by tests/engine/*_test.cpp):
//   FakeReader     io::FileReader that completes reads on a later loop turn (or when the test
//                  says), with injected errors, short reads, corruption and holds;
//   FakeTransport  engine::Transport recording (key, topic, payload), able to refuse with
//                  Backpressure (on every channel, or on one: keys map to channels as the test
//                  says, 0 otherwise) / NotConnected and to signal writable;
//   TempDir, make_blob   a temporary data_dir with blobs laid out as the content store does,
//                  and the io::StoredFile (digest, extent manifest) describing each;
//   run_until      drives a uv loop until a predicate holds (iteration-bounded, never timed).
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "engine/content_store.hpp"
#include "engine/delivery.hpp"
#include "io/file_reader.hpp"
#include "io/registry_store.hpp"

namespace chunkd::engine::testing {

// ---- FakeReader ----

class FakeReader final : public io::FileReader {
 public:
  struct Action {
    enum Kind { Ok, Fail, Short, Corrupt };
    Kind kind = Ok;
    std::error_code error;
    std::size_t bytes = 0;  // Short: bytes delivered
  };

  explicit FakeReader(uv_loop_t* loop) : timer_(new uv_timer_t) {
    uv_timer_init(loop, timer_);
    timer_->data = this;
  }
  ~FakeReader() override {
    if (timer_ != nullptr) {
      uv_close(reinterpret_cast<uv_handle_t*>(timer_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    }
  }
  FakeReader(const FakeReader&) = delete;
  FakeReader& operator=(const FakeReader&) = delete;

  void read(int fd, std::uint64_t offset, std::span<std::byte> buffer, Callback done) override {
    if (closing_) {
      done(std::make_error_code(std::errc::operation_canceled), 0);
      return;
    }
    reads_started++;
    pending_.push_back(Pending{fd, offset, buffer, std::move(done)});
    arm();
  }

  void close(std::function<void()> done) override {
    closing_ = true;
    hold = false;
    complete_all();
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) {
      auto* self = static_cast<FakeReader*>(h->data);
      delete reinterpret_cast<uv_timer_t*>(h);
      auto cb = std::move(self->close_done_);
      if (cb) cb();
    });
    timer_ = nullptr;
    close_done_ = std::move(done);
  }
  const char* backend_name() const override { return "fake"; }
  std::size_t in_flight() const override { return pending_.size(); }
  std::size_t queued() const override { return 0; }

  // Completes every pending read now (applying queued actions in order). Returns how many.
  std::size_t complete_all() {
    std::size_t n = 0;
    while (!pending_.empty()) {
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      complete(std::move(p));
      n++;
    }
    return n;
  }
  // Completes the oldest pending read only.
  bool complete_one() {
    if (pending_.empty()) return false;
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    complete(std::move(p));
    return true;
  }

  void fail_next(std::error_code error) { actions.push_back({Action::Fail, error, 0}); }
  void short_next(std::size_t bytes) { actions.push_back({Action::Short, {}, bytes}); }
  void corrupt_next() { actions.push_back({Action::Corrupt, {}, 0}); }
  void ok_next() { actions.push_back({Action::Ok, {}, 0}); }
  void release() {
    hold = false;
    arm();
  }

  bool hold = false;  // while true, reads wait for complete_*() or release()
  std::deque<Action> actions;
  std::size_t reads_started = 0;
  std::size_t reads_completed = 0;

 private:
  struct Pending {
    int fd;
    std::uint64_t offset;
    std::span<std::byte> buffer;
    Callback done;
  };

  void arm() {
    if (hold || pending_.empty() || timer_ == nullptr) return;
    uv_timer_start(
        timer_, [](uv_timer_t* t) { static_cast<FakeReader*>(t->data)->complete_all(); }, 0, 0);
  }

  void complete(Pending p) {
    Action action;
    if (!actions.empty()) {
      action = actions.front();
      actions.pop_front();
    }
    reads_completed++;
    if (action.kind == Action::Fail) {
      p.done(action.error, 0);
      return;
    }
    std::size_t got = 0;
    while (got < p.buffer.size()) {
      ssize_t r = ::pread(p.fd, p.buffer.data() + got, p.buffer.size() - got,
                          static_cast<off_t>(p.offset + got));
      if (r < 0) {
        p.done(std::error_code(errno, std::generic_category()), 0);
        return;
      }
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    if (action.kind == Action::Short && action.bytes < got) got = action.bytes;
    if (action.kind == Action::Corrupt && got > 0) p.buffer[0] ^= std::byte{0x5a};
    p.done({}, got);
  }

  uv_timer_t* timer_;
  std::deque<Pending> pending_;
  bool closing_ = false;
  std::function<void()> close_done_;
};

// ---- FakeTransport ----

class FakeTransport final : public Transport {
 public:
  struct Message {
    std::string key;
    std::string topic;
    std::vector<std::byte> payload;
    int qos = 0;
    std::size_t parts = 0;  // how many pieces the payload was handed over in
  };

  Expected<void> start(RequestHandler, ReadyHandler) override { return {}; }
  bool ready() const override { return true; }
  TransportStats stats() const override { return {}; }
  void stop(int, std::function<void()> done) override { done(); }

  using Transport::send;
  SendResult send(std::string_view key, std::string_view topic,
                  std::span<const std::span<const std::byte>> parts, int qos) override {
    attempts++;
    if (backpressure || full.contains(channel_of(key))) {
      refused++;
      return SendResult::Backpressure;
    }
    if (accept_before_backpressure == 0) {
      backpressure = true;
      refused++;
      return SendResult::Backpressure;
    }
    if (accept_before_backpressure != kUnlimited) accept_before_backpressure--;
    if (next_result != SendResult::Ok) {
      SendResult r = next_result;
      if (--fail_count == 0) next_result = SendResult::Ok;
      return r;
    }
    std::vector<std::byte> payload;
    for (auto p : parts) payload.insert(payload.end(), p.begin(), p.end());
    messages.push_back(
        Message{std::string(key), std::string(topic), std::move(payload), qos, parts.size()});
    return SendResult::Ok;
  }
  std::size_t channel_of(std::string_view key) const override {
    auto it = channels.find(key);
    return it == channels.end() ? 0 : it->second;
  }
  bool writable(std::size_t channel) const override {
    return !backpressure && !full.contains(channel);
  }
  std::size_t bytes_in_flight() const override { return in_flight; }
  void on_writable(std::function<void()> callback) override { writable_ = std::move(callback); }

  // Lifts the refusal and tells the subscriber it may publish again.
  void signal_writable() {
    backpressure = false;
    accept_before_backpressure = kUnlimited;
    if (writable_) writable_();
  }
  // Channel `channel` refuses every publish until drain(channel).
  void fill(std::size_t channel) { full.insert(channel); }
  // Channel `channel` has room again; tells the subscriber.
  void drain(std::size_t channel) {
    full.erase(channel);
    if (writable_) writable_();
  }
  // The next `count` publishes fail with `r` (NotConnected / Error).
  void fail_next(SendResult r, int count = 1) {
    next_result = r;
    fail_count = count;
  }
  bool has_writable_callback() const { return static_cast<bool>(writable_); }
  // Records each finished request with how many messages had been sent by then.
  void finished(RequestTag tag) override { finished_tags.push_back({tag, messages.size()}); }
  struct Finished {
    RequestTag tag = kNoRequestTag;
    std::size_t sent = 0;  // messages.size() when it was finished
    bool operator==(const Finished&) const = default;
  };
  std::vector<Finished> finished_tags;
  // Records each request handed back for redelivery.
  void requeue(RequestTag tag) override { requeued_tags.push_back(tag); }
  std::vector<RequestTag> requeued_tags;

  static constexpr std::size_t kUnlimited = static_cast<std::size_t>(-1);
  std::vector<Message> messages;
  bool backpressure = false;
  std::size_t accept_before_backpressure = kUnlimited;  // then refuse with Backpressure
  std::size_t in_flight = 0;
  std::map<std::string, std::size_t, std::less<>> channels;  // key -> channel; others: 0
  std::set<std::size_t> full;                                // channels refusing
  std::size_t attempts = 0;
  std::size_t refused = 0;
  SendResult next_result = SendResult::Ok;
  int fail_count = 0;

 private:
  std::function<void()> writable_;
};

// ---- data_dir with blobs ----

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/chunkd-engine-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) != nullptr) path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Deterministic, position-dependent content (so a misplaced slice never compares equal).
inline std::vector<std::byte> pattern_bytes(std::size_t n, std::uint32_t seed = 1) {
  std::vector<std::byte> out(n);
  std::uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (std::size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<std::byte>(x & 0xff);
  }
  return out;
}

inline std::string digest_hex(std::span<const std::byte> content) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(content.data(), content.size()));
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : c.digest) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

inline std::vector<std::uint64_t> manifest_of(std::span<const std::byte> content,
                                              std::uint32_t extent_bytes) {
  std::vector<std::uint64_t> out;
  for (std::size_t off = 0; off < content.size(); off += extent_bytes) {
    std::size_t n = std::min<std::size_t>(extent_bytes, content.size() - off);
    out.push_back(XXH3_64bits(content.data() + off, n));
  }
  return out;
}

// Writes `content` into the store under `data_dir` and returns the file record for it.
inline io::StoredFile make_blob(const std::string& data_dir, std::span<const std::byte> content,
                                std::uint32_t extent_bytes, std::uint32_t file_id = 0) {
  io::StoredFile f;
  f.file_id = file_id;
  f.bucket = "test";
  f.key = "file-" + std::to_string(file_id);
  f.size_bytes = content.size();
  f.digest = digest_hex(content);
  f.extent_bytes = extent_bytes;
  f.manifest = manifest_of(content, extent_bytes);
  std::string path = blob_path(data_dir, f.digest);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  if (FILE* fp = std::fopen(path.c_str(), "wb")) {
    if (!content.empty()) std::fwrite(content.data(), 1, content.size(), fp);
    std::fclose(fp);
  }
  return f;
}

// Runs the loop (non-blocking turns) until `done()` holds; false if it never did within the
// iteration guard (a failure guard, not a timing assertion).
template <class Pred>
bool run_until(uv_loop_t* loop, Pred done, int max_turns = 200000) {
  for (int i = 0; i < max_turns; ++i) {
    if (done()) return true;
    uv_run(loop, UV_RUN_NOWAIT);
    if ((i & 1023) == 1023) ::usleep(100);  // let the thread pool / kernel catch up
  }
  return done();
}

// Runs the loop until every handle closed (after the test closed them).
inline int drain_and_close(uv_loop_t* loop) {
  for (int i = 0; i < 1000 && uv_loop_alive(loop) != 0; ++i) uv_run(loop, UV_RUN_NOWAIT);
  return uv_loop_close(loop);
}

}  // namespace chunkd::engine::testing

// Design question: what does chunkd's own work cost per GetStream request, beside what sending the
// bytes costs at least? (issue 15, item 5; bench/README.md, "Per-request cost").
//
// BM_Delivery: the whole engine path with the sockets taken out: Delivery::on_message (topic
// parse, decode, catalog and allowedThings checks, block selection) → Scheduler (per-thing FIFO,
// turn order, bounds) → BlockServer (cache pins, CBOR header, Transport::send) for a window
// request of 8 blocks of 4 KiB (the 10,000-device scenario's), warm cache, against a transport
// that only counts. Requests come in batches of `batch` from `things` distinct things, each batch
// served to its last reply by running the loop, as the daemon takes a socket's requests per wake.
// BM_Floor: what the pre-encoded responder of bench/fleet does per request in user space: decode
// and select with the same protocol/ code, then hand pre-encoded replies to a sink.
// Reports ns per request (and per block); their difference is chunkd's engine cost per request.
#include <benchmark/benchmark.h>
#include <uv.h>
#include <xxhash.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/content_store.hpp"
#include "engine/delivery.hpp"
#include "engine/metrics.hpp"
#include "engine/transport.hpp"
#include "io/file_reader.hpp"
#include "protocol/device.hpp"
#include "protocol/reply.hpp"
#include "protocol/request.hpp"
#include "protocol/topic.hpp"

namespace {

using namespace chunkd;
using protocol::Format;

constexpr std::uint32_t kBlock = 4096;
constexpr std::uint32_t kBlocksPerRequest = 8;
constexpr std::uint32_t kExtent = 64 * 1024;
constexpr std::size_t kFileBytes = 256 * 1024;

// Counts what it is handed; never refuses.
class CountingTransport final : public engine::Transport {
 public:
  Expected<void> start(RequestHandler, ReadyHandler) override { return {}; }
  bool ready() const override { return true; }
  using Transport::send;
  SendResult send(std::string_view, std::string_view topic,
                  std::span<const std::span<const std::byte>> parts, int) override {
    for (auto p : parts) bytes += p.size();
    bytes += topic.size();
    ++messages;
    return SendResult::Ok;
  }
  std::size_t channel_of(std::string_view key) const override { return key.size() & 1; }
  bool writable(std::size_t) const override { return true; }
  std::size_t bytes_in_flight() const override { return 0; }
  void on_writable(std::function<void()>) override {}
  engine::TransportStats stats() const override { return {}; }
  void stop(int, std::function<void()> done) override { done(); }

  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
};

std::string hex128(std::span<const std::byte> content) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(content.data(), content.size()));
  std::string out;
  char buf[3];
  for (unsigned char b : c.digest) {
    std::snprintf(buf, sizeof buf, "%02x", b);
    out += buf;
  }
  return out;
}

// A stream "fw" of one 256 KiB file, written into a temporary content store.
engine::StreamSnapshot make_stream(const std::string& dir) {
  std::vector<std::byte> content(kFileBytes);
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<std::byte>(i * 131);
  io::StoredFile f;
  f.bucket = "bench";
  f.key = "file-0";
  f.size_bytes = content.size();
  f.digest = hex128(content);
  f.extent_bytes = kExtent;
  for (std::size_t off = 0; off < content.size(); off += kExtent) {
    f.manifest.push_back(XXH3_64bits(content.data() + off, kExtent));
  }
  const std::string path = engine::blob_path(dir, f.digest);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  if (FILE* fp = std::fopen(path.c_str(), "wb")) {
    std::fwrite(content.data(), 1, content.size(), fp);
    std::fclose(fp);
  }
  auto s = std::make_shared<io::StoredStream>();
  s->id = "fw";
  s->version = 1;
  s->files.push_back(f);
  return s;
}

// One request per thing, `things` of them, each for the thing's next window of the file.
struct Requests {
  std::vector<std::string> topics;
  std::vector<std::vector<std::byte>> payloads;

  Requests(std::size_t things, std::size_t windows) {
    protocol::TopicCodec codec;
    std::string topic;
    for (std::size_t w = 0; w < windows; ++w) {
      for (std::size_t i = 0; i < things; ++i) {
        codec.request_topic(topic, "ceiling-12345-" + std::to_string(i), "fw", protocol::Verb::Get,
                            Format::Cbor);
        topics.push_back(topic);
        protocol::GetStreamArgs a;
        a.client_token = std::to_string(i) + "." + std::to_string(w);
        a.block_size = kBlock;
        a.offset = static_cast<std::uint32_t>(w * kBlocksPerRequest);
        a.count = kBlocksPerRequest;
        payloads.push_back(protocol::encode_get_request(Format::Cbor, a));
      }
    }
  }
};

void BM_Delivery(benchmark::State& state) {
  const auto things = static_cast<std::size_t>(state.range(0));
  const auto batch = static_cast<std::size_t>(state.range(1));
  char dir_template[] = "/tmp/chunkd-bench-XXXXXX";
  const std::string dir = ::mkdtemp(dir_template);
  uv_loop_t loop;
  uv_loop_init(&loop);
  engine::Catalog catalog;
  catalog.put(make_stream(dir));
  io::FileReaderOptions ro;
  ro.backend = io::FileReaderOptions::Backend::ThreadPool;
  auto reader = std::move(io::make_file_reader(&loop, ro)->reader);
  CountingTransport transport;
  engine::Metrics metrics;
  engine::SystemClock clock;
  engine::DeliveryOptions o;
  o.cache.data_dir = dir;
  o.cache.capacity_bytes = 64u << 20;
  o.scheduler.global_queue_requests = 100000;
  auto delivery =
      std::make_unique<engine::Delivery>(&loop, catalog, *reader, transport, metrics, clock, o);
  const Requests requests(things, kFileBytes / kBlock / kBlocksPerRequest);
  auto serve = [&](std::size_t from, std::size_t n) {
    const std::uint64_t want = transport.messages + n * kBlocksPerRequest;
    for (std::size_t i = from; i < from + n; ++i) {
      const auto k = i % requests.topics.size();
      delivery->on_message(requests.topics[k], requests.payloads[k]);
    }
    while (transport.messages < want) uv_run(&loop, UV_RUN_NOWAIT);
  };
  serve(0, requests.topics.size());  // warm: every extent read once, every thing seen
  std::size_t next = 0;
  for (auto _ : state) {
    serve(next, batch);
    next += batch;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(next));
  state.counters["ns_per_request"] = benchmark::Counter(
      static_cast<double>(next), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  bool stopped = false;
  delivery->stop(1000, [&] { stopped = true; });
  while (!stopped) uv_run(&loop, UV_RUN_NOWAIT);
  delivery.reset();
  bool closed = false;
  reader->close([&] { closed = true; });
  while (!closed) uv_run(&loop, UV_RUN_NOWAIT);
  reader.reset();
  while (uv_loop_alive(&loop) != 0) uv_run(&loop, UV_RUN_NOWAIT);
  uv_loop_close(&loop);
  std::filesystem::remove_all(dir);
}

// The responder's share: decode, select, hand each pre-encoded reply to the sink.
void BM_Floor(benchmark::State& state) {
  const auto things = static_cast<std::size_t>(state.range(0));
  const Requests requests(things, kFileBytes / kBlock / kBlocksPerRequest);
  const protocol::TopicCodec codec;
  std::vector<std::byte> reply(protocol::data_reply_max_bytes(Format::Cbor, kBlock, 16));
  std::vector<std::byte> block(kBlock, std::byte{7});
  reply.resize(protocol::encode_data_reply(Format::Cbor, reply, "1.1", 0, 0, block));
  std::vector<std::uint32_t> blocks;
  CountingTransport sink;
  std::size_t next = 0;
  for (auto _ : state) {
    const auto k = next++ % requests.topics.size();
    const protocol::ParsedTopic t = codec.parse(requests.topics[k]);
    auto r = protocol::decode_get_request(t.format, requests.payloads[k]);
    if (!r || protocol::select_blocks(*r, kFileBytes, blocks)) state.SkipWithError("bad request");
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      sink.send(t.thing, requests.topics[k], std::span<const std::byte>(reply), 0);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(next));
  state.counters["ns_per_request"] = benchmark::Counter(
      static_cast<double>(next), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

}  // namespace

BENCHMARK(BM_Delivery)->Args({100, 100})->Args({10000, 100})->Args({10000, 1000});
BENCHMARK(BM_Floor)->Arg(100)->Arg(10000);
BENCHMARK_MAIN();

// chunkload's raw engine (tools/chunkload/raw_fleet.hpp: MQTT 3.1.1 over epoll) through a real
// Mosquitto: multiplexed downloads from the real chunkd, verified byte for byte (XXH3 against the
// control API's digests), QoS 1 replies acknowledged, and the faults a load test must see — a
// dropped block re-requested, a corrupted block and a short file failing their device — played
// by a responder that answers in chunkd's place on its own topic prefix (the digests still come
// from chunkd's control API). Also the open-file limit message and the engine choice.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "protocol/reply.hpp"
#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

constexpr const char* kRefPrefix = "ref/things";
constexpr std::uint32_t kFaultBlock = 37;

bool have_chunkload() { return ::access(chunkload_binary_path().c_str(), X_OK) == 0; }

enum class Fault { None, DropOnce, CorruptDevice0, ShortFile };

// Answers GetStream requests under kRefPrefix with blocks of `content`, as chunkd would (CBOR,
// same selection rules), with one fault applied.
class Responder {
 public:
  Responder(const std::string& uri, std::string content, Fault fault)
      : client_(uri, "chunkload-raw-responder-" + std::to_string(::getpid())),
        content_(std::move(content)),
        fault_(fault) {}
  ~Responder() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  ::testing::AssertionResult start() {
    if (!client_.connect() ||
        !client_.subscribe({std::string(kRefPrefix) + "/+/streams/+/get/cbor"})) {
      return ::testing::AssertionFailure() << "responder: " << client_.error();
    }
    thread_ = std::thread([this] {
      while (!stop_) {
        if (auto m = client_.next(50)) answer(*m);
      }
    });
    return ::testing::AssertionSuccess();
  }
  std::uint32_t dropped() const { return dropped_count_.load(); }

 private:
  void answer(const MqttMessage& m) {
    auto req = protocol::decode_get_request(protocol::Format::Cbor, m.payload);
    if (!req) return;
    // The stream's size, whatever the served bytes: a short file ends early.
    const std::string& served = content_;
    std::vector<std::uint32_t> blocks;
    if (protocol::select_blocks(*req, stream_size(), blocks)) return;
    const std::string thing =
        m.topic.substr(std::string(kRefPrefix).size() + 1,
                       m.topic.find("/streams/") - std::string(kRefPrefix).size() - 1);
    const std::string reply_topic =
        m.topic.substr(0, m.topic.size() - 8) + "data/cbor";  // get/cbor
    for (std::uint32_t b : blocks) {
      const std::size_t at = std::size_t{b} * req->block_size;
      if (at >= served.size()) continue;  // a short file has no such bytes
      std::string payload = served.substr(at, req->block_size);
      if (b == kFaultBlock && fault_ == Fault::DropOnce && dropped_.insert(thing).second) {
        ++dropped_count_;
        continue;
      }
      if (b == kFaultBlock && fault_ == Fault::CorruptDevice0 && thing.ends_with("-0")) {
        payload[0] = static_cast<char>(payload[0] ^ 0x5a);
      }
      std::vector<std::byte> out(
          protocol::data_reply_max_bytes(protocol::Format::Cbor, payload.size(),
                                         req->client_token ? req->client_token->size() : 0));
      const std::size_t n = protocol::encode_data_reply(
          protocol::Format::Cbor, out, req->client_token, req->file_id, b, as_bytes(payload));
      out.resize(n);
      client_.publish(reply_topic, out);
    }
  }
  std::uint64_t stream_size() const {
    return fault_ == Fault::ShortFile ? content_.size() + kShortBy : content_.size();
  }

 public:
  static constexpr std::size_t kShortBy = 100;

 private:
  MqttClient client_;
  std::string content_;
  Fault fault_;
  std::set<std::string> dropped_;  // responder thread only
  std::atomic<std::uint32_t> dropped_count_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class ChunkloadRaw : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_chunkload()) GTEST_SKIP() << "no " << chunkload_binary_path();
  }
  void start_stack(std::size_t size) {
    ASSERT_TRUE(stack.start());
    content = test_bytes(size, 15);
    ASSERT_TRUE(stack.create_file_stream("load", content));
  }
  ProcessResult chunkload(std::vector<std::string> args, std::string wrapper = "") {
    args.insert(args.begin(), chunkload_binary_path());
    if (!wrapper.empty()) args.insert(args.begin(), {"/bin/sh", "-c", wrapper, "sh"});
    return run_process(args, 300000, {{"CHUNKD_TOKEN", ""}, {"CHUNKD_URL", ""}});
  }
  std::string control_url() { return "http://127.0.0.1:" + std::to_string(stack.daemon().port()); }
  // chunkload against the responder: the digests from chunkd, the blocks from the responder.
  ProcessResult against_responder(std::uint32_t devices, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--uri",          stack.broker.uri(),
                                     "--engine",       "raw",
                                     "--stream",       "load",
                                     "--devices",      std::to_string(devices),
                                     "--connections",  "2",
                                     "--topic-prefix", kRefPrefix,
                                     "--no-describe",  "--control-url",
                                     control_url(),    "--json",
                                     "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    return chunkload(args);
  }

  Stack stack;
  std::string content;
};

#define EXPECT_REPORT(r, cond) EXPECT_TRUE(cond) << "stdout: " << r.out << "\nstderr: " << r.err

TEST_F(ChunkloadRaw, AMultiplexedFleetDownloadsEveryByteFromChunkd) {
  start_stack(1u << 20);
  auto r = chunkload({"--uri", stack.broker.uri(), "--stream", "load", "--devices", "40",
                      "--connections", "4", "--in-flight", "2", "--control-url", control_url(),
                      "--json", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << stack.daemon().log(4000);
  Json j(r.out);
  ASSERT_TRUE(j.ok()) << r.out;
  EXPECT_EQ(j.str("/engine"), "raw");  // tcp:// without --ota: the raw engine by default
  EXPECT_EQ(j.u64("/connections"), 4u);
  EXPECT_EQ(j.u64("/devices_done"), 40u) << r.out;
  EXPECT_EQ(j.u64("/files_done"), 40u) << r.out;
  EXPECT_EQ(j.u64("/bytes"), 40u * content.size()) << r.out;
  EXPECT_EQ(j.u64("/unroutable"), 0u) << r.out;
  EXPECT_EQ(j.u64("/decode_errors"), 0u) << r.out;
  EXPECT_EQ(j.u64("/latency_ms/requests"), j.u64("/requests")) << r.out;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// Mosquitto sends at most 20 unacknowledged QoS 1 messages per client: without PUBACKs the
// 256 blocks of each device would stall there and the run would end at --max-seconds.
TEST_F(ChunkloadRaw, QosOneRepliesAreAcknowledged) {
  stack.daemon().set("mqtt", "qos", "1");
  start_stack(1u << 20);
  auto r = chunkload({"--uri", stack.broker.uri(), "--stream", "load", "--devices", "6",
                      "--connections", "2", "--qos", "1", "--timeout-ms", "60000", "--max-seconds",
                      "60", "--control-url", control_url(), "--json", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << stack.daemon().log(4000);
  Json j(r.out);
  EXPECT_EQ(j.u64("/devices_done"), 6u) << r.out;
  EXPECT_EQ(j.u64("/bytes"), 6u * content.size()) << r.out;
  EXPECT_EQ(j.u64("/re_requests"), 0u) << r.out;
}

TEST_F(ChunkloadRaw, ADroppedBlockIsRequestedAgain) {
  start_stack(256u << 10);
  Responder responder(stack.broker.uri(), content, Fault::DropOnce);
  ASSERT_TRUE(responder.start());
  auto r = against_responder(4, {"--timeout-ms", "300", "--max-seconds", "60"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json j(r.out);
  EXPECT_EQ(responder.dropped(), 4u);
  EXPECT_EQ(j.u64("/devices_done"), 4u) << r.out;
  EXPECT_EQ(j.u64("/bytes"), 4u * content.size()) << r.out;
  EXPECT_REPORT(r, j.u64("/re_requests").value_or(0) >= 4u);
}

TEST_F(ChunkloadRaw, ACorruptedBlockFailsItsDeviceOnTheDigest) {
  start_stack(256u << 10);
  Responder responder(stack.broker.uri(), content, Fault::CorruptDevice0);
  ASSERT_TRUE(responder.start());
  auto r = against_responder(3, {"--thing-prefix", "corrupt-", "--max-seconds", "60"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  Json j(r.out);
  ASSERT_TRUE(j.ok()) << r.out << r.err;
  EXPECT_EQ(j.u64("/devices_done"), 2u) << r.out;
  EXPECT_EQ(j.u64("/devices_failed"), 1u) << r.out;
  EXPECT_EQ(j.str("/failures/0/thing"), "corrupt-0") << r.out;
  EXPECT_REPORT(
      r, j.str("/failures/0/reason").value_or("").find("does not match") != std::string::npos);
}

TEST_F(ChunkloadRaw, AShortFileFailsEveryDevice) {
  start_stack(256u << 10);
  // The responder holds 100 bytes less than the stream: the last block comes short.
  Responder responder(stack.broker.uri(), content.substr(0, content.size() - Responder::kShortBy),
                      Fault::ShortFile);
  // Its size is the stream's as chunkd lists it; stream_size() adds kShortBy back.
  ASSERT_TRUE(responder.start());
  auto r =
      against_responder(2, {"--timeout-ms", "200", "--max-retries", "2", "--max-seconds", "60"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  Json j(r.out);
  ASSERT_TRUE(j.ok()) << r.out << r.err;
  EXPECT_EQ(j.u64("/devices_failed"), 2u) << r.out;
  EXPECT_REPORT(r, j.u64("/bad_length").value_or(0) >= 2u);
  EXPECT_REPORT(
      r, j.str("/failures/0/reason").value_or("").find("still missing") != std::string::npos);
}

TEST_F(ChunkloadRaw, TooFewFileDescriptorsIsSaidUpFront) {
  start_stack(64u << 10);
  const std::string limited = "ulimit -n 200 && exec \"$@\"";
  auto r = chunkload({"--uri", stack.broker.uri(), "--stream", "load", "--devices", "500",
                      "--control-url", control_url(), "--json", "--quiet"},
                     limited);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("500 connection(s) need 564 file descriptors"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("limit is 200"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--connections"), std::string::npos) << r.err;
  // The same fleet over shared connections fits the same limit.
  auto ok = chunkload({"--uri", stack.broker.uri(), "--stream", "load", "--devices", "500",
                       "--connections", "20", "--control-url", control_url(), "--json", "--quiet"},
                      limited);
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
}

TEST_F(ChunkloadRaw, PahoStaysSelectableAndRawRefusesWhatItCannotSpeak) {
  start_stack(256u << 10);
  auto r = chunkload({"--uri", stack.broker.uri(), "--engine", "paho", "--stream", "load",
                      "--devices", "3", "--control-url", control_url(), "--json", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json j(r.out);
  EXPECT_EQ(j.str("/engine"), "paho");
  EXPECT_EQ(j.u64("/devices_done"), 3u) << r.out;
  auto ws = chunkload({"--uri", "ws://127.0.0.1:1", "--engine", "raw", "--stream", "load"});
  EXPECT_EQ(ws.exit_code, 2) << ws.err;
  EXPECT_NE(ws.err.find("--engine raw speaks tcp://"), std::string::npos) << ws.err;
  auto bad = chunkload({"--engine", "fast", "--stream", "load"});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
}

}  // namespace
}  // namespace chunkd::test

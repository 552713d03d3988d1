// tools/chunkload (the device-fleet simulator) against the real chunkd binary: every device
// downloads and verifies the stream's files against the control API's digests.
#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

bool have_chunkload() { return ::access(chunkload_binary_path().c_str(), X_OK) == 0; }

struct LoadCase {
  const char* format;
  const char* mode;
  std::uint32_t block_size;
};

void PrintTo(const LoadCase& c, std::ostream* os) {
  *os << c.format << " " << c.mode << " l=" << c.block_size;
}

std::string load_case_name(const ::testing::TestParamInfo<LoadCase>& info) {
  return std::string(info.param.format) + "_" + info.param.mode + "_l" +
         std::to_string(info.param.block_size);
}

class Chunkload : public ::testing::TestWithParam<LoadCase> {
 protected:
  void SetUp() override {
    if (!have_chunkload()) GTEST_SKIP() << "no " << chunkload_binary_path();
    ASSERT_TRUE(stack.start());
    content = test_bytes(1u << 20, 20);
    ASSERT_TRUE(stack.create_file_stream("load", content));
  }

  ProcessResult chunkload(std::vector<std::string> args) {
    args.insert(args.begin(), chunkload_binary_path());
    return run_process(args, 300000, {{"CHUNKD_TOKEN", ""}, {"CHUNKD_URL", ""}});
  }
  std::string control_url() { return "http://127.0.0.1:" + std::to_string(stack.daemon().port()); }

  Stack stack;
  std::string content;
};

TEST_P(Chunkload, TwentyDevicesDownloadAndVerify) {
  const LoadCase c = GetParam();
  auto r = chunkload({"--uri", stack.broker.uri(), "--stream", "load", "--devices", "20",
                      "--format", c.format, "--block-size", std::to_string(c.block_size), "--mode",
                      c.mode, "--control-url", control_url(), "--json"});
  EXPECT_EQ(r.exit_code, 0) << "stdout: " << r.out << "\nstderr: " << r.err << "\n"
                            << stack.daemon().log(8000);
  Json j(r.out);
  ASSERT_TRUE(j.ok()) << r.out;
  EXPECT_EQ(j.u64("/devices"), 20u) << r.out;
  EXPECT_EQ(j.u64("/devices_done"), 20u) << r.out;
  EXPECT_EQ(j.u64("/devices_failed"), 0u) << r.out;
  EXPECT_EQ(j.u64("/files_done"), 20u) << r.out;
  EXPECT_EQ(j.u64("/bytes"), 20u * content.size()) << r.out;
  EXPECT_EQ(j.str("/format"), c.format);
  EXPECT_EQ(j.str("/mode"), c.mode);
  EXPECT_EQ(j.array_size("/failures"), 0u) << r.out;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

INSTANTIATE_TEST_SUITE_P(Modes, Chunkload,
                         ::testing::Values(LoadCase{"cbor", "window", 4096},
                                           LoadCase{"json", "window", 4096},
                                           LoadCase{"cbor", "bitmap", 4096},
                                           LoadCase{"json", "bitmap", 32768}),
                         load_case_name);

class ChunkloadErrors : public Chunkload {};

TEST_F(ChunkloadErrors, AMissingStreamFailsWithExitOne) {
  auto r = chunkload({"--uri", stack.broker.uri(), "--stream", "no-such-stream", "--devices", "2",
                      "--control-url", control_url(), "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  auto usage = chunkload({"--devices", "2"});
  EXPECT_EQ(usage.exit_code, 2) << usage.out << usage.err;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

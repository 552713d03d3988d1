// The chunkd binary's command line and configuration as an operator meets them (SPEC.md §3,
// chunkd.example.toml): --version, --check, and start-up refusals that name the bad key.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/integration/api.hpp"

#ifndef CHUNKD_SOURCE_DIR
#define CHUNKD_SOURCE_DIR "."
#endif

namespace chunkd::test {
namespace {

ProcessResult chunkd_cli(std::vector<std::string> args) {
  args.insert(args.begin(), chunkd_binary_path());
  return run_process(args, 60000);
}

#define EXPECT_EXIT_CODE(result, code) \
  EXPECT_EQ((result).exit_code, code) << "stdout: " << (result).out << "\nstderr: " << (result).err

TEST(DaemonCli, VersionAndUsage) {
  auto v = chunkd_cli({"--version"});
  EXPECT_EXIT_CODE(v, 0);
#ifdef CHUNKD_VERSION
  EXPECT_EQ(v.out, std::string("chunkd ") + CHUNKD_VERSION + "\n");
#endif
  auto none = chunkd_cli({});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("--config"), std::string::npos) << none.err;
  auto unknown = chunkd_cli({"--frobnicate"});
  EXPECT_NE(unknown.exit_code, 0);
}

// Every key of the documented example parses, with its documented default.
TEST(DaemonCli, TheExampleConfigIsValid) {
  TestDaemon scratch("tcp://127.0.0.1:1");
  std::string example = read_whole_file(std::string(CHUNKD_SOURCE_DIR) + "/chunkd.example.toml");
  ASSERT_FALSE(example.empty());
  const std::string dir = scratch.add_bucket("firmware");
  auto pos = example.find("\"/srv/firmware\"");
  ASSERT_NE(pos, std::string::npos) << "the example maps bucket firmware to /srv/firmware";
  example.replace(pos, std::string("\"/srv/firmware\"").size(), TestDaemon::quote(dir));
  const std::string path = scratch.dir() + "/example.toml";
  ASSERT_TRUE(write_file(path, example));
  auto r = chunkd_cli({"--config", path, "--check"});
  EXPECT_EXIT_CODE(r, 0);
  EXPECT_NE(r.out.find("config ok"), std::string::npos) << r.out;
}

TEST(DaemonCli, CheckNamesTheBadKey) {
  TestDaemon scratch("tcp://127.0.0.1:1");
  const std::string bucket = scratch.add_bucket("fw");
  const std::string empty_token = scratch.dir() + "/empty-token";
  ASSERT_TRUE(write_file(empty_token, "\n"));
  struct Case {
    std::string toml;
    std::string key;
  };
  const std::vector<Case> cases = {
      {"[mqtt]\nconnections = 0\n", "mqtt.connections"},
      {"[mqtt]\nconection = 2\n", "mqtt.conection"},
      {"[mqtt]\nqos = 2\n", "mqtt.qos"},
      {"[control]\nlisten = \"0.0.0.0:8080\"\n", "control.listen"},
      {"[control]\ntoken_file = " + TestDaemon::quote(empty_token) + "\n", "control.token_file"},
      {"[control]\ntoken_file = \"/nonexistent/token\"\n", "control.token_file"},
      {"[buckets]\nfw = \"/nonexistent/bucket/dir\"\n", "buckets.fw"},
      {"[delivery]\nper_thing_queue_requests = \"many\"\n", "delivery.per_thing_queue_requests"},
      {"[storage]\nextent_kib = 100\ndata_dir = \"d\"\n", "storage.extent_kib"},
      {"[cache]\ncapacity_mib = -1\n", "cache.capacity_mib"},
      {"[cache]\ncapacity_mb = 8\ncapacity_mib = 8\n", "cache.capacity_mb and cache.capacity_mib"},
      {"[log]\nlevel = \"loud\"\n", "log.level"},
      {"[nonsense]\nx = 1\n", "nonsense"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.toml);
    const std::string path = scratch.dir() + "/bad.toml";
    const bool has_storage = c.toml.rfind("[storage]", 0) == 0;
    ASSERT_TRUE(
        write_file(path, (has_storage ? std::string() : "[storage]\ndata_dir = \"d\"\n") + c.toml));
    auto r = chunkd_cli({"--config", path, "--check"});
    EXPECT_NE(r.exit_code, 0) << r.out;
    EXPECT_NE(r.err.find(c.key), std::string::npos) << r.err;
    // Starting with it fails the same way, before serving anything.
    auto run = chunkd_cli({"--config", path});
    EXPECT_NE(run.exit_code, 0) << run.out;
    EXPECT_NE(run.err.find(c.key), std::string::npos) << run.err;
  }
  // A TOML syntax error names the file and line.
  const std::string path = scratch.dir() + "/syntax.toml";
  ASSERT_TRUE(write_file(path, "[mqtt]\nuri = \n"));
  auto r = chunkd_cli({"--config", path, "--check"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("syntax.toml"), std::string::npos) << r.err;
  auto missing = chunkd_cli({"--config", scratch.dir() + "/missing.toml", "--check"});
  EXPECT_NE(missing.exit_code, 0);
}

// A renamed key's old name still works for one release: --check succeeds and says what to rename.
TEST(DaemonCli, CheckReportsDeprecatedKeys) {
  TestDaemon scratch("tcp://127.0.0.1:1");
  const std::string path = scratch.dir() + "/old.toml";
  ASSERT_TRUE(
      write_file(path, "[storage]\ndata_dir = \"d\"\nextent_kb = 512\n[cache]\ncapacity_mb = 8\n"));
  auto r = chunkd_cli({"--config", path, "--check"});
  EXPECT_EXIT_CODE(r, 0);
  EXPECT_NE(r.out.find("config ok"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("storage.extent_kb is deprecated: rename it to storage.extent_kib"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("cache.capacity_mb is deprecated: rename it to cache.capacity_mib"),
            std::string::npos)
      << r.err;
}

// Relative paths in the config resolve against the config file's directory.
TEST(DaemonCli, RelativePathsResolveAgainstTheConfigDirectory) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  stack.daemon().set("storage", "data_dir", "\"rel-data\"");
  stack.daemon().map_bucket("rel", "relbucket");
  const std::string content = test_bytes(3000, 31);
  ASSERT_TRUE(write_file(stack.daemon().dir() + "/relbucket/f.bin", content));
  // The daemon runs from another working directory: run_process inherits ours, which is not the
  // config's directory.
  ASSERT_NE(std::filesystem::current_path().string(), stack.daemon().dir());
  ASSERT_TRUE(stack.start());
  ASSERT_EQ(stack.create("rel", {{0, "rel", "f.bin", std::nullopt}}).status, 201);
  EXPECT_TRUE(std::filesystem::is_directory(stack.daemon().dir() + "/rel-data"));
  auto dev = stack.device("rel-thing", "rel");
  ASSERT_TRUE(dev);
  DownloadOptions opts;
  opts.block_size = 1024;
  auto r = dev->download("rel", protocol::Format::Cbor, 0, opts);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(bytes_to_string(r.bytes) == content);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// A topic prefix for brokers that reserve "$" topics: devices using the same prefix are served,
// and nothing answers on the default prefix.
TEST(DaemonCli, ConfiguredTopicPrefix) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  stack.daemon().set("mqtt", "topic_prefix", "\"fleet/things\"");
  stack.daemon().set("mqtt", "connections", "1");
  stack.daemon().set("mqtt", "qos", "1");
  const std::string content = test_bytes(50000, 32);
  ASSERT_TRUE(stack.start());
  ASSERT_TRUE(stack.create_file_stream("pfx", content));
  Device dev(stack.broker.uri(), "prefixed", "fleet/things");
  ASSERT_TRUE(dev.connect());
  ASSERT_TRUE(dev.watch("pfx"));
  DownloadOptions opts;
  opts.block_size = 4096;
  auto r = dev.download("pfx", protocol::Format::Json, 0, opts);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(bytes_to_string(r.bytes) == content);
  Device plain(stack.broker.uri(), "plain");
  ASSERT_TRUE(plain.connect());
  ASSERT_TRUE(plain.watch("pfx"));
  EXPECT_FALSE(plain.describe("pfx", protocol::Format::Json, std::nullopt, 3000).has_value());
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

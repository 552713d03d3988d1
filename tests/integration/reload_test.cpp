// SIGHUP reloads the config of the real chunkd binary, as an operator does it (`kill -HUP <pid>`):
// the token rotates and the log level changes without a restart, a bucket added is usable, keys
// that need a restart are named and keep their values, a bad file changes nothing, and SIGUSR1 is
// not fatal.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <string>
#include <thread>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

using Clock = std::chrono::steady_clock;

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) n++;
  return n;
}

// Waits (bounded) until the daemon's log holds `needle` at least `count` times.
bool wait_log(const TestDaemon& daemon, const std::string& needle, std::size_t count = 1,
              int timeout_ms = 30000) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (count_of(daemon.log(1 << 20), needle) < count) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// GET /streams with `token`: the status.
int list_with(const TestDaemon& daemon, const std::string& token) {
  HttpClient http = daemon.http();
  return http.request("GET", "/streams", {}, {{"Authorization", "Bearer " + token}}).status;
}

void send_signal(TestDaemon& daemon, int signum) {
  ASSERT_TRUE(daemon.running());
  ASSERT_EQ(::kill(daemon.pid(), signum), 0);
}

TEST(Reload, SighupAppliesTheNewConfigWithoutARestart) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  TestDaemon& daemon = stack.daemon();
  daemon.set_token("old-token");
  daemon.set("log", "level", "\"info\"");
  ASSERT_TRUE(stack.start());
  ASSERT_TRUE(stack.create_file_stream("before", test_bytes(3000, 41)));
  EXPECT_EQ(list_with(daemon, "old-token"), 200);

  // SIGUSR1 twice at level info: one line (the second one is at debug), and still running.
  send_signal(daemon, SIGUSR1);
  send_signal(daemon, SIGUSR1);
  ASSERT_TRUE(wait_log(daemon, "received SIGUSR1: ignored")) << daemon.log();
  EXPECT_EQ(stack.request("GET", "/healthz").status, 200) << daemon.log();
  EXPECT_EQ(count_of(daemon.log(1 << 20), "received SIGUSR1: ignored"), 1u) << daemon.log();

  // Rotate the token, raise the log level, add a bucket, change a key that needs a restart.
  const std::string pid_before = std::to_string(daemon.pid());
  daemon.set_token("new-token");
  daemon.set("log", "level", "\"debug\"");
  daemon.set("control", "max_connections", "10");
  const std::string apps = daemon.add_bucket("apps");
  ASSERT_TRUE(write_file(apps + "/app.bin", test_bytes(5000, 42)));
  ASSERT_TRUE(daemon.write_config());
  send_signal(daemon, SIGHUP);
  ASSERT_TRUE(wait_log(daemon, "reload: ")) << daemon.log();
  const std::string log = daemon.log(1 << 20);
  EXPECT_NE(log.find("control.token_file (contents changed)"), std::string::npos) << log;
  EXPECT_NE(log.find("log.level info→debug"), std::string::npos) << log;
  EXPECT_NE(log.find("buckets.apps added"), std::string::npos) << log;
  EXPECT_NE(log.find("needs a restart: control.max_connections"), std::string::npos) << log;
  EXPECT_EQ(log.find("new-token"), std::string::npos) << "the token is never logged";

  ASSERT_TRUE(daemon.running()) << daemon.log();
  EXPECT_EQ(std::to_string(daemon.pid()), pid_before);
  EXPECT_EQ(list_with(daemon, "new-token"), 200);
  EXPECT_EQ(list_with(daemon, "old-token"), 401);
  auto created = stack.create("after", {{0, "apps", "app.bin", std::nullopt}});
  EXPECT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(stack.request("GET", "/streams/before").status, 200);

  // The level is debug now: the second SIGUSR1 line appears.
  send_signal(daemon, SIGUSR1);
  ASSERT_TRUE(wait_log(daemon, "received SIGUSR1: ignored", 2)) << daemon.log();

  // A bad file is refused, naming the problem; the running config stays.
  const std::string good = read_whole_file(daemon.config_path());
  ASSERT_TRUE(write_file(daemon.config_path(), good + "\n[log]\nlevel = \"loud\"\n"));
  send_signal(daemon, SIGHUP);
  ASSERT_TRUE(wait_log(daemon, "reload refused")) << daemon.log();
  EXPECT_NE(daemon.log(1 << 20).find("reload refused, the running config stays"),
            std::string::npos);
  ASSERT_TRUE(write_file(daemon.config_path(), "[log]\nlevel = \"loud\"\n"));
  send_signal(daemon, SIGHUP);
  ASSERT_TRUE(wait_log(daemon, "reload refused", 2)) << daemon.log();
  EXPECT_NE(daemon.log(1 << 20).find("log.level: must be one of"), std::string::npos)
      << daemon.log();
  ASSERT_TRUE(daemon.running()) << daemon.log();
  EXPECT_EQ(list_with(daemon, "new-token"), 200);
  EXPECT_EQ(list_with(daemon, "old-token"), 401);

  // The good file again: only the key waiting for a restart differs.
  ASSERT_TRUE(write_file(daemon.config_path(), good));
  send_signal(daemon, SIGHUP);
  ASSERT_TRUE(wait_log(daemon, "reload: needs a restart: control.max_connections")) << daemon.log();
  EXPECT_EQ(stack.request("GET", "/healthz").status, 200);
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

}  // namespace
}  // namespace chunkd::test

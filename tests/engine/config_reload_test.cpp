#include "engine/config_reload.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace chunkd::engine {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> keys(const std::vector<ConfigChange>& changes) {
  std::vector<std::string> out;
  for (const ConfigChange& c : changes) out.push_back(c.key);
  return out;
}

class ConfigReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "chunkd-reload-XXXXXX").string();
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
    fs::create_directories(dir_ + "/fw");
    fs::create_directories(dir_ + "/apps");
    write("token", "old-secret\n");
    write("token2", "new-secret\n");
    write("pw", "pw-one\n");
    write("pw2", "pw-two\n");
    write("ca.pem", "ca\n");
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  void write(const std::string& rel, const std::string& content) {
    std::ofstream(dir_ + "/" + rel, std::ios::binary) << content;
  }
  Config parse(const std::string& text) {
    auto r = parse_config(text, dir_, "test.toml");
    EXPECT_TRUE(r.has_value()) << (r ? std::string() : r.error()) << "\n" << text;
    return r ? *r : Config{};
  }
  ConfigDiff diff(const std::string& running, const std::string& next) {
    return diff_config(parse(running), parse(next));
  }

  std::string dir_;
};

TEST_F(ConfigReloadTest, TheSameFileIsNoChange) {
  const std::string text =
      "[control]\ntoken_file = \"token\"\n[buckets]\nfw = \"fw\"\n[delivery]\n"
      "global_blocks_per_s = 10\n[log]\nlevel = \"debug\"\n";
  ConfigDiff d = diff(text, text);
  EXPECT_TRUE(d.empty());
  EXPECT_FALSE(d.buckets_changed());
  EXPECT_EQ(describe(d), "no change");
  // Spelling a default out, or a deprecated name for the same value, is no change either.
  EXPECT_TRUE(diff("", "[delivery]\nquantum_kib = 32\n[log]\nlevel = \"info\"\n").empty());
  EXPECT_TRUE(diff("[storage]\nextent_kib = 512\n", "[storage]\nextent_kb = 512\n").empty());
}

// Every key the loader knows is classified: a key added to config.cpp without a reload rule fails.
TEST_F(ConfigReloadTest, EveryKeyIsCompared) {
  std::vector<std::string> compared = reload_setting_keys();
  std::set<std::string> unique(compared.begin(), compared.end());
  EXPECT_EQ(unique.size(), compared.size()) << "a key listed twice, apart";
  for (const std::string& key : known_config_keys()) {
    EXPECT_EQ(unique.count(key), 1u) << key << " has no reload rule in engine/config_reload.cpp";
  }
  EXPECT_EQ(unique.size(), known_config_keys().size());
}

struct Case {
  std::string running;
  std::string next;
  std::string key;
  std::string from;
  std::string to;
};

TEST_F(ConfigReloadTest, LiveSettings) {
  const std::vector<Case> cases = {
      {"", "[log]\nlevel = \"debug\"\n", "log.level", "info", "debug"},
      {"[log]\nlevel = \"error\"\n", "[log]\nlevel = \"warn\"\n", "log.level", "error", "warn"},
      {"", "[delivery]\nper_thing_queue_requests = 4\n", "delivery.per_thing_queue_requests", "16",
       "4"},
      {"", "[delivery]\nglobal_queue_requests = 100\n", "delivery.global_queue_requests", "4096",
       "100"},
      {"", "[delivery]\nper_thing_blocks_per_s = 2.5\n", "delivery.per_thing_blocks_per_s", "0",
       "2.5"},
      {"[delivery]\nglobal_blocks_per_s = 500\n", "", "delivery.global_blocks_per_s", "500", "0"},
      {"", "[delivery]\nquantum_kib = 64\n", "delivery.quantum_kib", "32", "64"},
      {"", "[delivery]\nmax_publish_in_flight_mib = 8\n", "delivery.max_publish_in_flight_mib",
       "32", "8"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key + ": " + c.next);
    ConfigDiff d = diff(c.running, c.next);
    ASSERT_EQ(keys(d.live), std::vector<std::string>{c.key});
    EXPECT_TRUE(d.restart.empty()) << describe(d);
    EXPECT_EQ(d.live[0].from, c.from);
    EXPECT_EQ(d.live[0].to, c.to);
    EXPECT_FALSE(d.live[0].secret);
    EXPECT_EQ(describe(d), c.key + " " + c.from + "→" + c.to);
  }
}

TEST_F(ConfigReloadTest, SettingsNeedingARestart) {
  const std::string pw = "[mqtt]\nusername = \"u\"\npassword_file = \"pw\"\n";
  const std::string tls = "[mqtt]\nuri = \"ssl://127.0.0.1:8883\"\n";
  const std::vector<Case> cases = {
      {"", "[mqtt]\nuri = \"tcp://10.0.0.1:1883\"\n", "mqtt.uri"},
      {"", "[mqtt]\nclient_id = \"other\"\n", "mqtt.client_id"},
      {"", "[mqtt]\nconnections = 4\n", "mqtt.connections"},
      {"", "[mqtt]\nusername = \"u\"\n", "mqtt.username"},
      {pw, "[mqtt]\nusername = \"u\"\npassword_file = \"pw2\"\n", "mqtt.password_file"},
      {tls, tls + "ca_file = \"ca.pem\"\n", "mqtt.ca_file"},
      {tls, tls + "cert_file = \"ca.pem\"\nkey_file = \"pw\"\n", "mqtt.cert_file"},
      {tls, tls + "cert_file = \"ca.pem\"\nkey_file = \"pw\"\n", "mqtt.key_file"},
      {"", "[mqtt]\nqos = 1\n", "mqtt.qos"},
      {"", "[mqtt]\ntopic_prefix = \"fleet\"\n", "mqtt.topic_prefix"},
      {"", "[mqtt]\nkeepalive_s = 60\n", "mqtt.keepalive_s"},
      {"", "[mqtt]\nmax_queued_mib = 16\n", "mqtt.max_queued_mib"},
      {"", "[control]\nlisten = \"127.0.0.1:9090\"\n", "control.listen"},
      {"", "[control]\nallow_insecure_listen = true\n", "control.allow_insecure_listen"},
      {"", "[control]\nmax_body_bytes = 2048\n", "control.max_body_bytes"},
      {"", "[control]\nmax_connections = 10\n", "control.max_connections"},
      {"", "[control]\nidle_timeout_ms = 1000\n", "control.idle_timeout_ms"},
      {"", "[control]\nrequest_timeout_ms = 1000\n", "control.request_timeout_ms"},
      {"", "[control]\nmax_concurrent_ingests = 4\n", "control.max_concurrent_ingests"},
      {"", "[storage]\ndata_dir = \"elsewhere\"\n", "storage.data_dir"},
      {"", "[storage]\nextent_kib = 128\n", "storage.extent_kib"},
      {"", "[storage]\nmax_streams = 5\n", "storage.max_streams"},
      {"", "[cache]\ncapacity_mib = 64\n", "cache.capacity_mib"},
      {"", "[delivery]\nrelax_version_check = true\n", "delivery.relax_version_check"},
      {"", "[delivery]\nmax_open_files = 8\n", "delivery.max_open_files"},
      {"", "[jobs]\nenabled = false\n", "jobs.enabled"},
      {"", "[jobs]\nmax_jobs = 5\n", "jobs.max_jobs"},
      {"", "[jobs]\nthing_requests_per_s = 2.5\n", "jobs.thing_requests_per_s"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key + ": " + c.next);
    ConfigDiff d = diff(c.running, c.next);
    EXPECT_TRUE(d.live.empty()) << describe(d);
    auto restart = keys(d.restart);
    EXPECT_NE(std::find(restart.begin(), restart.end(), c.key), restart.end()) << describe(d);
    EXPECT_NE(describe(d).find("needs a restart: "), std::string::npos);
    // The running value stays in effect.
    Config running = parse(c.running);
    Config merged = merge_live(running, parse(c.next));
    EXPECT_TRUE(diff_config(running, merged).empty()) << describe(diff_config(running, merged));
  }
}

TEST_F(ConfigReloadTest, TheExampleLineFromTheIssue) {
  ConfigDiff d = diff("",
                      "[control]\nlisten = \"127.0.0.1:9000\"\n[delivery]\n"
                      "global_blocks_per_s = 500\n[log]\nlevel = \"debug\"\n");
  EXPECT_EQ(describe(d),
            "delivery.global_blocks_per_s 0→500, log.level info→debug; "
            "needs a restart: control.listen");
  EXPECT_EQ(describe(diff("", "[storage]\ndata_dir = \"x\"\n")),
            "needs a restart: storage.data_dir");
}

TEST_F(ConfigReloadTest, TokenRotationIsLiveAndNeverPrinted) {
  const std::string old_file = "[control]\ntoken_file = \"token\"\n";
  // Same file, new contents.
  Config running = parse(old_file);
  write("token", "rotated-secret\n");
  Config next = parse(old_file);
  ConfigDiff d = diff_config(running, next);
  ASSERT_EQ(keys(d.live), std::vector<std::string>{"control.token_file"});
  EXPECT_TRUE(d.live[0].secret);
  EXPECT_TRUE(d.restart.empty());
  EXPECT_EQ(describe(d), "control.token_file (contents changed)");
  EXPECT_EQ(merge_live(running, next).control.service.token, "rotated-secret");
  // Another file: the path is shown, the token is not; one change, not two.
  d = diff(old_file, "[control]\ntoken_file = \"token2\"\n");
  ASSERT_EQ(keys(d.live), std::vector<std::string>{"control.token_file"});
  EXPECT_EQ(describe(d), "control.token_file " + dir_ + "/token→" + dir_ + "/token2");
  // Another file with the same token: only the path changed.
  write("rotated", "rotated-secret\n");
  d = diff("[control]\ntoken_file = \"token\"\n", "[control]\ntoken_file = \"rotated\"\n");
  EXPECT_EQ(keys(d.live), std::vector<std::string>{"control.token_file"});
  // Turning auth on and off.
  d = diff("", old_file);
  EXPECT_EQ(keys(d.live), std::vector<std::string>{"control.token_file"});
  EXPECT_EQ(describe(d).find("secret"), std::string::npos) << describe(d);
  EXPECT_EQ(merge_live(parse(old_file), parse("")).control.service.token, "");
}

TEST_F(ConfigReloadTest, MqttPasswordChangeNeedsARestartAndIsNotPrinted) {
  const std::string text = "[mqtt]\nusername = \"u\"\npassword_file = \"pw\"\n";
  Config running = parse(text);
  write("pw", "pw-changed\n");
  ConfigDiff d = diff_config(running, parse(text));
  EXPECT_TRUE(d.live.empty());
  ASSERT_EQ(keys(d.restart), std::vector<std::string>{"mqtt.password_file"});
  EXPECT_TRUE(d.restart[0].secret);
  EXPECT_EQ(describe(d).find("pw-"), std::string::npos) << describe(d);
  EXPECT_EQ(merge_live(running, parse(text)).mqtt.password, "pw-one");
}

TEST_F(ConfigReloadTest, BucketsAddedRemovedAndMoved) {
  ConfigDiff d = diff("[buckets]\nfw = \"fw\"\n", "[buckets]\nfw = \"fw\"\napps = \"apps\"\n");
  EXPECT_TRUE(d.buckets_changed());
  ASSERT_EQ(keys(d.live), std::vector<std::string>{"buckets.apps"});
  EXPECT_EQ(describe(d), "buckets.apps added");
  d = diff("[buckets]\nfw = \"fw\"\napps = \"apps\"\n", "[buckets]\napps = \"apps\"\n");
  EXPECT_EQ(describe(d), "buckets.fw removed");
  d = diff("[buckets]\nfw = \"fw\"\n", "[buckets]\nfw = \"apps\"\n");
  EXPECT_EQ(describe(d), "buckets.fw " + dir_ + "/fw→" + dir_ + "/apps");
  Config merged = merge_live(parse("[buckets]\nfw = \"fw\"\n"),
                             parse("[buckets]\napps = \"apps\"\n[log]\nlevel = \"warn\"\n"));
  ASSERT_EQ(merged.control.service.buckets.size(), 1u);
  EXPECT_EQ(merged.control.service.buckets.at("apps"), dir_ + "/apps");
  EXPECT_FALSE(diff("", "[log]\nlevel = \"warn\"\n").buckets_changed());
}

TEST_F(ConfigReloadTest, MergeTakesLiveValuesAndKeepsTheRest) {
  Config running = parse("[control]\nlisten = \"127.0.0.1:8080\"\n");
  Config next = parse(
      "[control]\nlisten = \"127.0.0.1:9000\"\ntoken_file = \"token\"\n[storage]\nextent_kb = 128\n"
      "[delivery]\nper_thing_queue_requests = 3\nglobal_queue_requests = 30\n"
      "per_thing_blocks_per_s = 5\nglobal_blocks_per_s = 50\nquantum_kib = 8\n"
      "max_publish_in_flight_mib = 4\nmax_open_files = 9\n[log]\nlevel = \"debug\"\n");
  Config m = merge_live(running, next);
  EXPECT_EQ(m.control.listen, "127.0.0.1:8080");
  EXPECT_EQ(m.control.listen_port, 8080);
  EXPECT_EQ(m.store.extent_bytes, running.store.extent_bytes);
  EXPECT_EQ(m.delivery.cache.max_open_files, running.delivery.cache.max_open_files);
  EXPECT_EQ(m.control.token_file, dir_ + "/token");
  EXPECT_EQ(m.control.service.token, "old-secret");
  const SchedulerOptions& s = m.delivery.scheduler;
  EXPECT_EQ(s.per_thing_queue_requests, 3u);
  EXPECT_EQ(s.global_queue_requests, 30u);
  EXPECT_EQ(s.per_thing_blocks_per_s, 5.0);
  EXPECT_EQ(s.global_blocks_per_s, 50.0);
  EXPECT_EQ(s.quantum_bytes, 8u << 10);
  EXPECT_EQ(s.max_publish_bytes_in_flight, 4u << 20);
  EXPECT_EQ(m.log_level, io::LogLevel::Debug);
  ASSERT_EQ(m.warnings.size(), 1u);  // next's: extent_kb is deprecated
  // What is left to differ is exactly what needs a restart.
  ConfigDiff rest = diff_config(m, next);
  EXPECT_TRUE(rest.live.empty()) << describe(rest);
  EXPECT_EQ(keys(rest.restart), keys(diff_config(running, next).restart));
}

// A reload cannot open the control API to everyone: the listen address stays until a restart.
TEST_F(ConfigReloadTest, RemovingTheTokenOfANonLoopbackListenerIsRefused) {
  const std::string open = "[control]\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"token\"\n";
  Config running = parse(open);
  Config merged = merge_live(running, parse("[control]\nlisten = \"127.0.0.1:8080\"\n"));
  EXPECT_EQ(merged.control.listen, "0.0.0.0:8080");
  auto problem = reload_problem(merged);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("control.token_file"), std::string::npos) << *problem;
  EXPECT_NE(problem->find("0.0.0.0:8080"), std::string::npos) << *problem;
  EXPECT_FALSE(reload_problem(merge_live(running, parse(open))).has_value());
  EXPECT_FALSE(reload_problem(merge_live(parse(""), parse(""))).has_value());
  Config insecure = parse("[control]\nlisten = \"0.0.0.0:8080\"\nallow_insecure_listen = true\n");
  EXPECT_FALSE(reload_problem(merge_live(insecure, insecure)).has_value());
}

}  // namespace
}  // namespace chunkd::engine

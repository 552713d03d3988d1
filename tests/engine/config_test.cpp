#include "engine/config.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "protocol/request.hpp"
#include "protocol/topic.hpp"

namespace chunkd::engine {
namespace {

namespace fs = std::filesystem;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "chunkd-config-XXXXXX").string();
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
    fs::create_directories(dir_ + "/firmware");
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  void write(const std::string& rel, const std::string& content) {
    std::ofstream(dir_ + "/" + rel, std::ios::binary) << content;
  }
  Expected<Config, std::string> parse(const std::string& text) {
    return parse_config(text, dir_, "test.toml");
  }
  // The error for `text`, which must fail.
  std::string error_of(const std::string& text) {
    auto r = parse(text);
    EXPECT_FALSE(r.has_value()) << text;
    return r.has_value() ? std::string() : r.error();
  }

  std::string dir_;
};

TEST_F(ConfigTest, EmptyFileGivesEveryDefault) {
  auto r = parse("");
  ASSERT_TRUE(r.has_value()) << r.error();
  const Config& c = *r;
  EXPECT_EQ(c.mqtt.uri, "tcp://127.0.0.1:1883");
  EXPECT_EQ(c.mqtt.client_id, "chunkd");
  EXPECT_EQ(c.mqtt.connections, 2u);
  EXPECT_EQ(c.mqtt.username, "");
  EXPECT_EQ(c.mqtt_password_file, "");
  EXPECT_EQ(c.mqtt.password, "");
  EXPECT_EQ(c.mqtt.ca_file, "");
  EXPECT_EQ(c.mqtt.subscribe_qos, 0);
  EXPECT_EQ(c.delivery.topic_prefix, "$aws/things");
  EXPECT_EQ(c.mqtt.keepalive_s, 30);
  EXPECT_EQ(c.mqtt.max_queued_bytes, 8u << 20);
  EXPECT_EQ(c.control.listen, "127.0.0.1:8080");
  EXPECT_EQ(c.control.listen_host, "127.0.0.1");
  EXPECT_EQ(c.control.listen_port, 8080);
  EXPECT_EQ(c.control.token_file, "");
  EXPECT_EQ(c.control.service.token, "");
  EXPECT_FALSE(c.control.allow_insecure_listen);
  EXPECT_EQ(c.control.http.max_body_bytes, 1u << 20);
  EXPECT_EQ(c.control.http.max_connections, 1024u);
  EXPECT_EQ(c.control.http.idle_timeout_ms, 60000);
  EXPECT_EQ(c.control.http.request_timeout_ms, 10000);
  EXPECT_EQ(c.control.service.max_concurrent_ingests, 2u);
  EXPECT_TRUE(c.jobs.enabled);
  EXPECT_EQ(c.jobs.max_jobs, 1000u);
  EXPECT_EQ(c.jobs.max_executions, 100000u);
  EXPECT_EQ(c.jobs.thing_requests_per_s, 10.0);
  EXPECT_EQ(c.jobs.topic_prefix, "$aws/things");
  EXPECT_EQ(c.control.http.max_buffered_bytes, 32u << 20);
  EXPECT_EQ(c.control.http.max_connections_per_client, 64u);
  EXPECT_EQ(c.store.data_dir, dir_ + "/var/chunkd");
  EXPECT_EQ(c.store.extent_bytes, 256u << 10);
  EXPECT_EQ(c.control.service.max_streams, 10000u);
  EXPECT_EQ(c.store.max_file_bytes, std::uint64_t{4096} << 20);
  EXPECT_TRUE(c.control.service.buckets.empty());
  EXPECT_EQ(c.delivery.cache.capacity_bytes, 256u << 20);
  EXPECT_FALSE(c.delivery.relax_version_check);
  EXPECT_EQ(c.delivery.scheduler.per_thing_queue_requests, 16u);
  EXPECT_EQ(c.delivery.scheduler.global_queue_requests, 4096u);
  EXPECT_EQ(c.delivery.scheduler.per_thing_blocks_per_s, 0.0);
  EXPECT_EQ(c.delivery.scheduler.global_blocks_per_s, 0.0);
  EXPECT_EQ(c.delivery.scheduler.max_publish_bytes_in_flight, 32u << 20);
  EXPECT_EQ(c.delivery.scheduler.quantum_bytes, 32u << 10);
  EXPECT_EQ(c.delivery.cache.max_open_files, 256u);
  EXPECT_EQ(c.log_level, io::LogLevel::Info);
}

TEST_F(ConfigTest, EveryKeyIsRead) {
  write("token", "  s3cret-token \nsecond line\n");
  write("password", "hunter2\n");
  write("ca.pem", "ca");
  write("cert.pem", "cert");
  write("key.pem", "key");
  auto r = parse(R"(
[mqtt]
uri = "ssl://broker.example:8883"
client_id = "gw-1"
connections = 4
username = "chunkd"
password_file = "password"
ca_file = "ca.pem"
cert_file = "./cert.pem"
key_file = "key.pem"
qos = 1
topic_prefix = "chunkd/things"
keepalive_s = 45
max_queued_mib = 16
[control]
listen = "[::]:9090"
token_file = "token"
allow_insecure_listen = true
max_body_bytes = 65536
max_connections = 64
idle_timeout_ms = 5000
request_timeout_ms = 2000
max_concurrent_ingests = 3
max_buffered_mib = 8
max_connections_per_client = 16
[storage]
data_dir = "state"
extent_kib = 512
max_streams = 20
[buckets]
firmware = "firmware"
models = "/"
[cache]
capacity_mib = 64
[delivery]
relax_version_check = true
per_thing_queue_requests = 8
global_queue_requests = 100
per_thing_blocks_per_s = 12.5
global_blocks_per_s = 1000
max_publish_in_flight_mib = 4
quantum_kib = 4
max_open_files = 32
[log]
level = "debug"
)");
  ASSERT_TRUE(r.has_value()) << r.error();
  const Config& c = *r;
  EXPECT_EQ(c.mqtt.uri, "ssl://broker.example:8883");
  EXPECT_EQ(c.mqtt.client_id, "gw-1");
  EXPECT_EQ(c.mqtt.connections, 4u);
  EXPECT_EQ(c.mqtt.username, "chunkd");
  EXPECT_EQ(c.mqtt_password_file, dir_ + "/password");
  EXPECT_EQ(c.mqtt.password, "hunter2");
  EXPECT_EQ(c.mqtt.ca_file, dir_ + "/ca.pem");
  EXPECT_EQ(c.mqtt.cert_file, dir_ + "/cert.pem");
  EXPECT_EQ(c.mqtt.key_file, dir_ + "/key.pem");
  EXPECT_EQ(c.mqtt.subscribe_qos, 1);
  EXPECT_EQ(c.delivery.topic_prefix, "chunkd/things");
  EXPECT_EQ(c.mqtt.keepalive_s, 45);
  EXPECT_EQ(c.mqtt.max_queued_bytes, 16u << 20);
  EXPECT_EQ(c.control.listen_host, "::");
  EXPECT_EQ(c.control.listen_port, 9090);
  EXPECT_EQ(c.control.token_file, dir_ + "/token");
  EXPECT_EQ(c.control.service.token, "s3cret-token");
  EXPECT_TRUE(c.control.allow_insecure_listen);
  EXPECT_EQ(c.control.http.max_body_bytes, 65536u);
  EXPECT_EQ(c.control.http.max_connections, 64u);
  EXPECT_EQ(c.control.http.idle_timeout_ms, 5000);
  EXPECT_EQ(c.control.http.request_timeout_ms, 2000);
  EXPECT_EQ(c.control.service.max_concurrent_ingests, 3u);
  EXPECT_EQ(c.control.http.max_buffered_bytes, 8u << 20);
  EXPECT_EQ(c.control.http.max_connections_per_client, 16u);
  EXPECT_EQ(c.store.data_dir, dir_ + "/state");
  EXPECT_EQ(c.store.extent_bytes, 512u << 10);
  EXPECT_EQ(c.control.service.max_streams, 20u);
  ASSERT_EQ(c.control.service.buckets.size(), 2u);
  EXPECT_EQ(c.control.service.buckets.at("firmware"), dir_ + "/firmware");
  EXPECT_EQ(c.control.service.buckets.at("models"), "/");
  EXPECT_EQ(c.delivery.cache.capacity_bytes, 64u << 20);
  EXPECT_TRUE(c.delivery.relax_version_check);
  EXPECT_EQ(c.delivery.scheduler.per_thing_queue_requests, 8u);
  EXPECT_EQ(c.delivery.scheduler.global_queue_requests, 100u);
  EXPECT_EQ(c.delivery.scheduler.per_thing_blocks_per_s, 12.5);
  EXPECT_EQ(c.delivery.scheduler.global_blocks_per_s, 1000.0);
  EXPECT_EQ(c.delivery.scheduler.max_publish_bytes_in_flight, 4u << 20);
  EXPECT_EQ(c.delivery.scheduler.quantum_bytes, 4u << 10);
  EXPECT_EQ(c.delivery.cache.max_open_files, 32u);
  EXPECT_EQ(c.log_level, io::LogLevel::Debug);
  // Values other modules need are shared by the loader.
  EXPECT_EQ(c.delivery.qos, 1);
  EXPECT_EQ(c.delivery.cache.data_dir, dir_ + "/state");
  EXPECT_EQ(c.mqtt.subscriptions,
            (std::vector<std::string>{
                "chunkd/things/+/streams/+/get/+", "chunkd/things/+/streams/+/describe/+",
                "chunkd/things/+/jobs/get", "chunkd/things/+/jobs/start-next",
                "chunkd/things/+/jobs/+/get", "chunkd/things/+/jobs/+/update"}));
  EXPECT_EQ(c.jobs.topic_prefix, "chunkd/things");
  EXPECT_EQ(c.jobs.qos, 1) << "jobs messages go out at mqtt.qos";
  auto without_jobs = parse_config("[jobs]\nenabled = false\n", dir_);
  ASSERT_TRUE(without_jobs) << without_jobs.error();
  EXPECT_FALSE(without_jobs->jobs.enabled);
  EXPECT_EQ(without_jobs->mqtt.subscriptions.size(), 2u) << "no jobs topics";
  EXPECT_TRUE(c.warnings.empty());
}

// Renamed keys: the old name still works for one release, with a warning naming the new one.
struct RenamedKey {
  const char* section;
  const char* old_key;
  const char* new_key;
};
const RenamedKey kRenamed[] = {
    {"mqtt", "max_queued_mb", "max_queued_mib"},
    {"storage", "extent_kb", "extent_kib"},
    {"cache", "capacity_mb", "capacity_mib"},
    {"delivery", "per_thing_queue", "per_thing_queue_requests"},
    {"delivery", "global_queue", "global_queue_requests"},
    {"delivery", "max_bytes_in_flight_mb", "max_publish_in_flight_mib"},
};

TEST_F(ConfigTest, MqttProtocolAndMaxPacketBytes) {
  auto r = parse("");
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ(r->mqtt.protocol, io::MqttProtocol::Auto);
  // A request's largest payload and topic, plus headroom, rounded up.
  EXPECT_EQ(r->mqtt.max_packet_bytes, 64u << 10);
  EXPECT_GT(r->mqtt.max_packet_bytes,
            protocol::kMaxRequestMessageBytes + protocol::kMaxTopicPrefixBytes + 256);
  for (auto [text, want] :
       {std::pair{"auto", io::MqttProtocol::Auto}, std::pair{"5", io::MqttProtocol::V5},
        std::pair{"3.1.1", io::MqttProtocol::V311}}) {
    auto p = parse(std::string("[mqtt]\nprotocol = \"") + text + "\"\n");
    ASSERT_TRUE(p) << p.error();
    EXPECT_EQ(p->mqtt.protocol, want) << text;
  }
  auto bad = parse("[mqtt]\nprotocol = \"3\"\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("mqtt.protocol"), std::string::npos) << bad.error();
}

TEST_F(ConfigTest, OldKeyNamesStillWorkWithAWarning) {
  auto r = parse(R"(
[mqtt]
max_queued_mb = 16
[storage]
extent_kb = 512
[cache]
capacity_mb = 64
[delivery]
per_thing_queue = 8
global_queue = 100
max_bytes_in_flight_mb = 4
)");
  ASSERT_TRUE(r.has_value()) << r.error();
  const Config& c = *r;
  EXPECT_EQ(c.mqtt.max_queued_bytes, 16u << 20);
  EXPECT_EQ(c.store.extent_bytes, 512u << 10);
  EXPECT_EQ(c.delivery.cache.capacity_bytes, 64u << 20);
  EXPECT_EQ(c.delivery.scheduler.per_thing_queue_requests, 8u);
  EXPECT_EQ(c.delivery.scheduler.global_queue_requests, 100u);
  EXPECT_EQ(c.delivery.scheduler.max_publish_bytes_in_flight, 4u << 20);
  ASSERT_EQ(c.warnings.size(), std::size(kRenamed));
  for (std::size_t i = 0; i < std::size(kRenamed); ++i) {
    std::string old_name = std::string(kRenamed[i].section) + "." + kRenamed[i].old_key;
    std::string new_name = std::string(kRenamed[i].section) + "." + kRenamed[i].new_key;
    EXPECT_EQ(c.warnings[i].rfind(old_name + " is deprecated: rename it to " + new_name, 0), 0u)
        << c.warnings[i];
  }
}

TEST_F(ConfigTest, AnOldKeyNameIsCheckedUnderItsOwnName) {
  EXPECT_EQ(error_of("[storage]\nextent_kb = 100"),
            "storage.extent_kb: must be a power of two (got 100)");
  EXPECT_EQ(error_of("[cache]\ncapacity_mb = 0").rfind("cache.capacity_mb: must be an integer", 0),
            0u);
}

TEST_F(ConfigTest, OldAndNewNameOfOneKeyIsAnError) {
  for (const RenamedKey& k : kRenamed) {
    std::string toml =
        std::string("[") + k.section + "]\n" + k.old_key + " = 8\n" + k.new_key + " = 8\n";
    std::string old_name = std::string(k.section) + "." + k.old_key;
    std::string new_name = std::string(k.section) + "." + k.new_key;
    EXPECT_EQ(error_of(toml), old_name + " and " + new_name + " are the same setting: keep only " +
                                  new_name + " (" + old_name + " is its deprecated name)");
  }
}

// Each numeric key accepts its bounds and rejects one past either of them.
TEST_F(ConfigTest, EveryBoundRejects) {
  struct Bound {
    const char* section;
    const char* key;
    long long min;
    long long max;
  };
  const Bound bounds[] = {
      {"mqtt", "connections", 1, 64},
      {"mqtt", "qos", 0, 1},
      {"mqtt", "keepalive_s", 5, 3600},
      {"mqtt", "max_queued_mib", 1, 4096},
      {"control", "max_body_bytes", 1024, 64 << 20},
      {"control", "max_connections", 1, 65536},
      {"control", "idle_timeout_ms", 100, 3600000},
      {"control", "request_timeout_ms", 100, 600000},
      {"control", "max_concurrent_ingests", 1, 64},
      {"control", "max_buffered_mib", 1, 4096},
      {"control", "max_connections_per_client", 1, 65536},
      {"storage", "extent_kib", 64, 4096},
      {"storage", "max_streams", 1, 1000000},
      {"storage", "max_file_mib", 1, 1 << 20},
      {"cache", "capacity_mib", 1, 1 << 20},
      {"delivery", "per_thing_queue_requests", 1, 4096},
      {"delivery", "global_queue_requests", 1, 1000000},
      {"delivery", "max_publish_in_flight_mib", 1, 4096},
      {"delivery", "quantum_kib", 1, 4096},
      {"delivery", "max_open_files", 1, 65536},
      {"delivery", "per_thing_blocks_per_s", 0, 1000000000},
      {"delivery", "global_blocks_per_s", 0, 1000000000},
      {"jobs", "max_jobs", 1, 100000},
      {"jobs", "max_executions", 1, 10000000},
  };
  for (const Bound& b : bounds) {
    const auto toml = [&](long long v) {
      return std::string("[") + b.section + "]\n" + b.key + " = " + std::to_string(v) + "\n";
    };
    const std::string name = std::string(b.section) + "." + b.key + ": must be";
    for (long long ok : {b.min, b.max}) {
      auto r = parse(toml(ok));
      EXPECT_TRUE(r.has_value()) << toml(ok) << (r.has_value() ? "" : r.error());
    }
    for (long long bad : {b.min - 1, b.max + 1}) {
      EXPECT_EQ(error_of(toml(bad)).rfind(name, 0), 0u) << toml(bad);
    }
  }
}

struct BadCase {
  const char* toml;
  const char* message_prefix;
};

TEST_F(ConfigTest, EveryErrorNamesTheKey) {
  write("empty-token", "\n  \n");
  write("tok", "t\n");
  write("pw", "pw\n");
  write("cert.pem", "c");
  write("afile", "x");
  const BadCase cases[] = {
      {"[mqtt]\nconnections = 0", "mqtt.connections: must be an integer between 1 and 64"},
      {"[mqtt]\nconnections = 65", "mqtt.connections: must be an integer between 1 and 64"},
      {"[mqtt]\nconnections = \"2\"", "mqtt.connections: must be an integer between 1 and 64"},
      {"[mqtt]\nconnections = 2.0", "mqtt.connections: must be an integer"},
      {"[mqtt]\nuri = \"http://x:1\"", "mqtt.uri: must be tcp://host:port or ssl://host:port"},
      {"[mqtt]\nuri = \"tcp://:1883\"", "mqtt.uri:"},
      {"[mqtt]\nuri = \"tcp://h:0\"", "mqtt.uri:"},
      {"[mqtt]\nuri = \"tcp://h:99999\"", "mqtt.uri:"},
      {"[mqtt]\nuri = 5", "mqtt.uri: must be a string"},
      {"[mqtt]\nclient_id = \"\"", "mqtt.client_id:"},
      {"[mqtt]\nusername = 1", "mqtt.username: must be a string"},
      {"[mqtt]\nusername = \"u\"\npassword_file = \"nope\"", "mqtt.password_file: cannot read"},
      {"[mqtt]\npassword_file = \"pw\"", "mqtt.password_file: needs mqtt.username"},
      {"[mqtt]\nca_file = \"cert.pem\"", "mqtt.ca_file: needs an ssl:// mqtt.uri"},
      {"[mqtt]\nuri = \"ssl://h:8883\"\nca_file = \"missing.pem\"", "mqtt.ca_file: cannot read"},
      {"[mqtt]\nuri = \"ssl://h:8883\"\ncert_file = \"cert.pem\"", "mqtt.key_file:"},
      {"[mqtt]\nuri = \"ssl://h:8883\"\nkey_file = \"missing\"", "mqtt.key_file: cannot read"},
      {"[mqtt]\nqos = 2", "mqtt.qos: must be an integer between 0 and 1"},
      {"[mqtt]\ntopic_prefix = \"a/+/b\"", "mqtt.topic_prefix:"},
      {"[mqtt]\ntopic_prefix = \"\"", "mqtt.topic_prefix:"},
      {"[mqtt]\nkeepalive_s = 1", "mqtt.keepalive_s: must be an integer between 5 and 3600"},
      {"[mqtt]\nmax_queued_mib = 0", "mqtt.max_queued_mib: must be an integer between 1 and 4096"},
      {"[mqtt]\nconection = 1", "unknown key: mqtt.conection"},
      {"[control]\nlisten = \"localhost:8080\"", "control.listen: must be an IP address and port"},
      {"[control]\nlisten = \"127.0.0.1\"", "control.listen:"},
      {"[control]\nlisten = \"127.0.0.1:70000\"", "control.listen:"},
      {"[control]\nlisten = \"0.0.0.0:8080\"", "control.listen: 0.0.0.0:8080 is not a loopback"},
      {"[control]\nlisten = \"[::]:8080\"", "control.listen: [::]:8080 is not a loopback"},
      {"[control]\ntoken_file = \"empty-token\"", "control.token_file:"},
      {"[control]\ntoken_file = \"missing\"", "control.token_file: cannot read"},
      {"[control]\nallow_insecure_listen = \"yes\"",
       "control.allow_insecure_listen: must be true or false"},
      {"[control]\nmax_body_bytes = 10", "control.max_body_bytes: must be an integer between"},
      {"[control]\nmax_connections = 0", "control.max_connections: must be an integer between"},
      {"[control]\nidle_timeout_ms = -1", "control.idle_timeout_ms: must be an integer between"},
      {"[control]\nrequest_timeout_ms = 0",
       "control.request_timeout_ms: must be an integer between"},
      {"[control]\nmax_concurrent_ingests = 0",
       "control.max_concurrent_ingests: must be an integer between 1 and 64"},
      {"[storage]\ndata_dir = \"\"", "storage.data_dir: must not be empty"},
      {"[storage]\ndata_dir = \"afile\"", "storage.data_dir:"},
      {"[storage]\ndata_dir = 3", "storage.data_dir: must be a string"},
      {"[storage]\nextent_kib = 100", "storage.extent_kib: must be a power of two"},
      {"[storage]\nextent_kib = 32", "storage.extent_kib: must be an integer between 64 and 4096"},
      {"[storage]\nmax_streams = 0", "storage.max_streams: must be an integer between"},
      {"[buckets]\nfw = \"missing-dir\"", "buckets.fw: "},
      {"[buckets]\nfw = \"afile\"", "buckets.fw: "},
      {"[buckets]\nfw = 1", "buckets.fw: must be a directory path"},
      {"[buckets]\n\"bad name\" = \"firmware\"", "buckets.bad name: a bucket name is"},
      {"[cache]\ncapacity_mib = 0", "cache.capacity_mib: must be an integer between"},
      {"[delivery]\nrelax_version_check = 1",
       "delivery.relax_version_check: must be true or false"},
      {"[delivery]\nper_thing_queue_requests = 0",
       "delivery.per_thing_queue_requests: must be an integer between"},
      {"[delivery]\nglobal_queue_requests = 0",
       "delivery.global_queue_requests: must be an integer between"},
      {"[delivery]\nper_thing_blocks_per_s = -1",
       "delivery.per_thing_blocks_per_s: must be a number between"},
      {"[delivery]\nglobal_blocks_per_s = \"fast\"",
       "delivery.global_blocks_per_s: must be a number between"},
      {"[delivery]\nmax_publish_in_flight_mib = 0",
       "delivery.max_publish_in_flight_mib: must be an integer between"},
      {"[delivery]\nquantum_kib = 0", "delivery.quantum_kib: must be an integer between"},
      {"[delivery]\nquantum_kib = 4097", "delivery.quantum_kib: must be an integer between"},
      {"[delivery]\nmax_open_files = 0", "delivery.max_open_files: must be an integer between"},
      {"[log]\nlevel = \"loud\"", "log.level: must be one of debug, info, warn, error"},
      {"[logging]\nlevel = \"info\"", "unknown key: logging"},
      {"log = 1", "log: must be a table"},
  };
  for (const auto& c : cases) {
    std::string error = error_of(c.toml);
    EXPECT_EQ(error.rfind(c.message_prefix, 0), 0u)
        << "config:\n"
        << c.toml << "\ngot: " << error << "\nwant prefix: " << c.message_prefix;
  }
}

TEST_F(ConfigTest, OutOfRangeMessageSaysWhatWasGiven) {
  EXPECT_EQ(error_of("[mqtt]\nconnections = 0"),
            "mqtt.connections: must be an integer between 1 and 64 (got 0)");
  EXPECT_EQ(error_of("[mqtt]\nconnections = \"two\""),
            "mqtt.connections: must be an integer between 1 and 64 (got a string)");
}

TEST_F(ConfigTest, SyntaxErrorsNameTheFileAndLine) {
  std::string error = error_of("[mqtt]\nconnections = = 2\n");
  EXPECT_EQ(error.rfind("test.toml:2:", 0), 0u) << error;
}

TEST_F(ConfigTest, ListenAddresses) {
  auto r = parse("[control]\nlisten = \"[::1]:0\"");
  ASSERT_TRUE(r.has_value()) << r.error();
  EXPECT_EQ(r->control.listen_host, "::1");
  EXPECT_EQ(r->control.listen_port, 0);
  r = parse("[control]\nlisten = \"127.0.0.2:81\"");
  ASSERT_TRUE(r.has_value()) << r.error();
  // A non-loopback address is fine with a token or with the explicit opt-out.
  write("tok", "abc\n");
  EXPECT_TRUE(parse("[control]\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"tok\"").has_value());
  EXPECT_TRUE(
      parse("[control]\nlisten = \"0.0.0.0:8080\"\nallow_insecure_listen = true").has_value());
  EXPECT_TRUE(is_loopback_host("127.1.2.3"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("10.0.0.1"));
  EXPECT_FALSE(is_loopback_host("localhost"));
}

TEST_F(ConfigTest, LoadConfigResolvesAgainstTheFilesDirectory) {
  fs::create_directories(dir_ + "/etc");
  fs::create_directories(dir_ + "/etc/fw");
  write("etc/chunkd.toml", "[storage]\ndata_dir = \"data\"\n[buckets]\nfw = \"fw\"\n");
  auto r = load_config(dir_ + "/etc/chunkd.toml");
  ASSERT_TRUE(r.has_value()) << r.error();
  EXPECT_EQ(r->store.data_dir, dir_ + "/etc/data");
  EXPECT_EQ(r->control.service.buckets.at("fw"), dir_ + "/etc/fw");

  // A relative config path resolves against the working directory.
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof cwd), nullptr);
  ASSERT_EQ(::chdir(dir_.c_str()), 0);
  auto rel = load_config("etc/chunkd.toml");
  auto bare = load_config("missing.toml");
  ASSERT_EQ(::chdir(cwd), 0);
  ASSERT_TRUE(rel.has_value()) << rel.error();
  EXPECT_EQ(rel->store.data_dir, dir_ + "/etc/data");
  ASSERT_FALSE(bare.has_value());
  EXPECT_NE(bare.error().find("missing.toml"), std::string::npos);
}

TEST_F(ConfigTest, LoadConfigErrorsNameTheFile) {
  write("bad.toml", "[mqtt\n");
  auto r = load_config(dir_ + "/bad.toml");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().rfind(dir_ + "/bad.toml:1:", 0), 0u) << r.error();
  r = load_config(dir_ + "/nope.toml");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("nope.toml"), std::string::npos);
}

// chunkd.example.toml documents every key with its default: parsing it (with its bucket pointed
// at a directory that exists) gives exactly the defaults.
TEST_F(ConfigTest, ExampleFileHoldsEveryDefault) {
  std::ifstream in(std::string(CHUNKD_SOURCE_DIR) + "/chunkd.example.toml");
  ASSERT_TRUE(in) << "chunkd.example.toml missing";
  std::stringstream text;
  text << in.rdbuf();
  std::string toml = text.str();
  const std::string bucket = "\"/srv/firmware\"";
  auto at = toml.find(bucket);
  ASSERT_NE(at, std::string::npos);
  toml.replace(at, bucket.size(), "\"" + dir_ + "/firmware\"");

  auto r = parse(toml);
  ASSERT_TRUE(r.has_value()) << r.error();
  auto d = parse("");
  ASSERT_TRUE(d.has_value());
  const Config& c = *r;
  const Config& def = *d;
  EXPECT_EQ(c.mqtt.uri, def.mqtt.uri);
  EXPECT_EQ(c.mqtt.client_id, def.mqtt.client_id);
  EXPECT_EQ(c.mqtt.connections, def.mqtt.connections);
  EXPECT_EQ(c.mqtt.username, def.mqtt.username);
  EXPECT_EQ(c.mqtt_password_file, def.mqtt_password_file);
  EXPECT_EQ(c.mqtt.ca_file, def.mqtt.ca_file);
  EXPECT_EQ(c.mqtt.cert_file, def.mqtt.cert_file);
  EXPECT_EQ(c.mqtt.key_file, def.mqtt.key_file);
  EXPECT_EQ(c.mqtt.subscribe_qos, def.mqtt.subscribe_qos);
  EXPECT_EQ(c.delivery.topic_prefix, def.delivery.topic_prefix);
  EXPECT_EQ(c.mqtt.keepalive_s, def.mqtt.keepalive_s);
  EXPECT_EQ(c.mqtt.max_queued_bytes, def.mqtt.max_queued_bytes);
  EXPECT_EQ(c.control.listen, def.control.listen);
  EXPECT_EQ(c.control.token_file, def.control.token_file);
  EXPECT_EQ(c.control.allow_insecure_listen, def.control.allow_insecure_listen);
  EXPECT_EQ(c.control.http.max_body_bytes, def.control.http.max_body_bytes);
  EXPECT_EQ(c.control.http.max_connections, def.control.http.max_connections);
  EXPECT_EQ(c.control.http.idle_timeout_ms, def.control.http.idle_timeout_ms);
  EXPECT_EQ(c.control.http.request_timeout_ms, def.control.http.request_timeout_ms);
  EXPECT_EQ(c.control.service.max_concurrent_ingests, def.control.service.max_concurrent_ingests);
  EXPECT_EQ(c.store.data_dir, def.store.data_dir);
  EXPECT_EQ(c.store.extent_bytes, def.store.extent_bytes);
  EXPECT_EQ(c.control.service.max_streams, def.control.service.max_streams);
  EXPECT_EQ(c.store.max_file_bytes, def.store.max_file_bytes);
  EXPECT_EQ(c.control.service.buckets.size(), 1u);
  EXPECT_EQ(c.delivery.cache.capacity_bytes, def.delivery.cache.capacity_bytes);
  EXPECT_EQ(c.delivery.relax_version_check, def.delivery.relax_version_check);
  EXPECT_EQ(c.delivery.scheduler.per_thing_queue_requests,
            def.delivery.scheduler.per_thing_queue_requests);
  EXPECT_EQ(c.delivery.scheduler.global_queue_requests,
            def.delivery.scheduler.global_queue_requests);
  EXPECT_EQ(c.delivery.scheduler.per_thing_blocks_per_s,
            def.delivery.scheduler.per_thing_blocks_per_s);
  EXPECT_EQ(c.delivery.scheduler.global_blocks_per_s, def.delivery.scheduler.global_blocks_per_s);
  EXPECT_EQ(c.delivery.scheduler.max_publish_bytes_in_flight,
            def.delivery.scheduler.max_publish_bytes_in_flight);
  EXPECT_EQ(c.delivery.cache.max_open_files, def.delivery.cache.max_open_files);
  EXPECT_EQ(c.log_level, def.log_level);
  EXPECT_TRUE(c.warnings.empty()) << "the example uses a deprecated key: " << c.warnings.front();
}

}  // namespace
}  // namespace chunkd::engine

// [amqp], [registry] and storage.content_bucket (engine/cluster_options.hpp): read, checked against
// the rest of the config, and refused with the key named.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "engine/config.hpp"
#include "tests/support/net.hpp"

namespace chunkd::engine {
namespace {

class ConfigClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    dir_ = test::make_temp_dir("config-cluster", error);
    ASSERT_FALSE(dir_.empty()) << error;
    std::ofstream(dir_ + "/creds") << "[default]\naws_access_key_id = A\naws_secret_access_key = "
                                      "s\n";
    std::ofstream(dir_ + "/amqp-password") << "rabbit\n";
    std::ofstream(dir_ + "/amqp-ca.crt") << "-----BEGIN CERTIFICATE-----\n";
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  Expected<Config, std::string> parse(const std::string& text) {
    return parse_config(text, dir_, "test.toml");
  }
  std::string error_of(const std::string& text) {
    auto r = parse(text);
    EXPECT_FALSE(r.has_value()) << text;
    return r ? std::string() : r.error();
  }
  // A content bucket, as every shared config needs one.
  static std::string shared_bucket() {
    return "[storage]\ncontent_bucket = \"shared\"\n[buckets.shared]\ntype = \"s3\"\n"
           "endpoint = \"http://127.0.0.1:9000\"\nregion = \"us-east-1\"\n"
           "credentials_file = \"creds\"\n";
  }
  std::string dir_;
};

TEST_F(ConfigClusterTest, AbsentMeansOneHost) {
  auto c = parse("");
  ASSERT_TRUE(c) << c.error();
  EXPECT_FALSE(c->cluster.amqp.enabled);
  EXPECT_TRUE(c->cluster.registry.url.empty());
  EXPECT_TRUE(c->cluster.content_bucket.empty());
  EXPECT_FALSE(c->cluster.shared());
  EXPECT_TRUE(c->jobs.enabled);
}

TEST_F(ConfigClusterTest, EveryKeyRead) {
  auto c = parse(shared_bucket() +
                 "[amqp]\nuris = [\"amqp://chunkd@127.0.0.1:5672/\", \"amqps://h2/vh\"]\n"
                 "password_file = \"amqp-password\"\nqueue = \"q\"\nexchange = \"x\"\n"
                 "jobs_queue = \"jq\"\nca_file = \"amqp-ca.crt\"\n"
                 "prefetch = 64\ndelivery_limit = 3\n"
                 "[registry]\nurl = \"postgresql://chunkd@127.0.0.1:5432/chunkd\"\n"
                 "[mqtt]\ntopic_prefix = \"fleet/things\"\n");
  ASSERT_TRUE(c) << c.error();
  const AmqpOptions& a = c->cluster.amqp;
  EXPECT_TRUE(a.enabled);
  ASSERT_EQ(a.uris.size(), 2u);
  EXPECT_EQ(a.uris[1], "amqps://h2/vh");
  EXPECT_EQ(a.password_file, dir_ + "/amqp-password");
  EXPECT_EQ(a.password, "rabbit");
  EXPECT_EQ(a.ca_file, dir_ + "/amqp-ca.crt");
  EXPECT_EQ(a.queue, "q");
  EXPECT_EQ(a.exchange, "x");
  EXPECT_EQ(a.jobs_queue, "jq");
  EXPECT_EQ(a.prefetch, 64u);
  EXPECT_EQ(a.delivery_limit, 3u);
  EXPECT_EQ(a.topic_prefix, "fleet/things");
  EXPECT_EQ(c->cluster.registry.url, "postgresql://chunkd@127.0.0.1:5432/chunkd");
  EXPECT_EQ(c->cluster.content_bucket, "shared");
  EXPECT_TRUE(c->cluster.shared());
}

// How many digests move to and from the content bucket at once: 4 each by default, 1..64, and
// only with a content bucket to move them.
TEST_F(ConfigClusterTest, ContentBucketConcurrency) {
  // shared_bucket() with `keys` in its [storage] table.
  const auto with = [](const std::string& keys) {
    const std::string table = "[storage]\n";
    return table + keys + shared_bucket().substr(table.size());
  };
  auto d = parse(shared_bucket());
  ASSERT_TRUE(d) << d.error();
  EXPECT_EQ(d->cluster.content_uploads, 4u);
  EXPECT_EQ(d->cluster.content_fills, 4u);
  auto c = parse(with("content_bucket_uploads = 2\ncontent_bucket_fills = 64\n"));
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->cluster.content_uploads, 2u);
  EXPECT_EQ(c->cluster.content_fills, 64u);
  EXPECT_EQ(error_of(with("content_bucket_fills = 65\n")).rfind("storage.content_bucket_fills", 0),
            0u);
  EXPECT_EQ(
      error_of(with("content_bucket_uploads = 0\n")).rfind("storage.content_bucket_uploads", 0),
      0u);
  EXPECT_EQ(error_of("[storage]\ncontent_bucket_fills = 8\n"),
            "storage.content_bucket_fills: set without storage.content_bucket");
}

TEST_F(ConfigClusterTest, AmqpDefaults) {
  auto c = parse(shared_bucket() + "[amqp]\nuris = [\"amqp://127.0.0.1\"]\n");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->cluster.amqp.queue, "chunkd.requests");
  EXPECT_EQ(c->cluster.amqp.exchange, "amq.topic");
  EXPECT_EQ(c->cluster.amqp.jobs_queue, "chunkd.jobs");
  EXPECT_EQ(c->cluster.amqp.prefetch, 256u);
  EXPECT_EQ(c->cluster.amqp.delivery_limit, 5u);
  EXPECT_EQ(c->cluster.amqp.password, "");
  EXPECT_EQ(c->cluster.amqp.ca_file, "") << "the system's CAs";
}

TEST_F(ConfigClusterTest, BadAmqpValuesNameTheKey) {
  const std::string head = shared_bucket() + "[amqp]\n";
  EXPECT_EQ(error_of(head).rfind("amqp.uris:", 0), 0u);
  EXPECT_EQ(error_of(head + "uris = []\n").rfind("amqp.uris:", 0), 0u);
  EXPECT_NE(error_of(head + "uris = [\"tcp://h\"]\n").find("amqp://"), std::string::npos);
  EXPECT_NE(error_of(head + "uris = [\"amqp://u:secret@h\"]\n").find("password_file"),
            std::string::npos);
  EXPECT_NE(error_of(head + "uris = [\"amqp://\"]\n").find("no host"), std::string::npos);
  const std::string uris = head + "uris = [\"amqp://h\"]\n";
  EXPECT_EQ(error_of(uris + "prefetch = 0\n").rfind("amqp.prefetch:", 0), 0u);
  EXPECT_EQ(error_of(uris + "queue = \"\"\n").rfind("amqp.queue:", 0), 0u);
  EXPECT_EQ(error_of(uris + "jobs_queue = \"\"\n").rfind("amqp.jobs_queue:", 0), 0u);
  EXPECT_EQ(error_of(uris + "jobs_queue = \"chunkd.requests\"\n").rfind("amqp.jobs_queue:", 0), 0u);
  EXPECT_EQ(
      error_of(uris + "exchange = \"" + std::string(256, 'x') + "\"\n").rfind("amqp.exchange:", 0),
      0u);
  EXPECT_EQ(error_of(uris + "password_file = \"missing\"\n").rfind("amqp.password_file:", 0), 0u);
  EXPECT_EQ(error_of(uris + "ca_file = \"missing.crt\"\n").rfind("amqp.ca_file:", 0), 0u);
  EXPECT_EQ(error_of(uris + "ca_file = \".\"\n").rfind("amqp.ca_file:", 0), 0u);
  EXPECT_NE(error_of(uris + "nope = 1\n").find("amqp.nope"), std::string::npos);
}

TEST_F(ConfigClusterTest, AmqpRefusesAPrefixRabbitMqWouldSplitOrMatch) {
  const std::string amqp = shared_bucket() + "[amqp]\nuris = [\"amqp://h\"]\n";
  EXPECT_EQ(error_of(amqp + "[mqtt]\ntopic_prefix = \"fleet.v2/things\"\n")
                .rfind("mqtt.topic_prefix:", 0),
            0u);
  EXPECT_EQ(error_of(amqp + "[mqtt]\ntopic_prefix = \"fleet/*\"\n").rfind("mqtt.topic_prefix:", 0),
            0u);
  EXPECT_TRUE(parse(shared_bucket() + "[mqtt]\ntopic_prefix = \"fleet.v2/things\"\n"))
      << "MQTT alone does not mind";
}

TEST_F(ConfigClusterTest, RegistryUrlMustBePostgres) {
  EXPECT_EQ(
      error_of(shared_bucket() + "[registry]\nurl = \"mysql://h/db\"\n").rfind("registry.url:", 0),
      0u);
  EXPECT_EQ(error_of(shared_bucket() + "[registry]\nurl = 5\n").rfind("registry.url:", 0), 0u);
}

TEST_F(ConfigClusterTest, SharedStateNeedsAContentBucket) {
  EXPECT_NE(error_of("[registry]\nurl = \"postgres://h/db\"\n").find("storage.content_bucket"),
            std::string::npos);
  EXPECT_NE(error_of("[amqp]\nuris = [\"amqp://h\"]\n").find("storage.content_bucket"),
            std::string::npos);
  EXPECT_NE(error_of("[storage]\ncontent_bucket = \"nope\"\n").find("not an s3 bucket"),
            std::string::npos);
  std::filesystem::create_directory(dir_ + "/local");
  EXPECT_NE(error_of("[storage]\ncontent_bucket = \"local\"\n[buckets]\nlocal = \"local\"\n")
                .find("not an s3 bucket"),
            std::string::npos);
  // One host may still keep its content in a bucket.
  auto c = parse(shared_bucket());
  ASSERT_TRUE(c) << c.error();
  EXPECT_FALSE(c->cluster.shared());
}

// A cluster's jobs need a jobs queue ([amqp]) and shared state (registry.url): off by default
// with only one of them, refused if asked for; on with both.
TEST_F(ConfigClusterTest, JobsNeedAmqpAndTheSharedRegistry) {
  const std::string registry = "[registry]\nurl = \"postgres://h/db\"\n";
  const std::string amqp = "[amqp]\nuris = [\"amqp://127.0.0.1\"]\n";
  for (const std::string& half : {shared_bucket() + registry, shared_bucket() + amqp}) {
    auto c = parse(half);
    ASSERT_TRUE(c) << c.error();
    EXPECT_FALSE(c->jobs.enabled);
    EXPECT_FALSE(c->cluster.amqp.jobs);
    ASSERT_EQ(c->warnings.size(), 1u);
    EXPECT_NE(c->warnings[0].find("jobs"), std::string::npos);
    EXPECT_EQ(error_of(half + "[jobs]\nenabled = true\n").rfind("jobs.enabled:", 0), 0u);
    auto off = parse(half + "[jobs]\nenabled = false\n");
    ASSERT_TRUE(off) << off.error();
    EXPECT_TRUE(off->warnings.empty());
  }
  auto both = parse(shared_bucket() + amqp + registry);
  ASSERT_TRUE(both) << both.error();
  EXPECT_TRUE(both->jobs.enabled);
  EXPECT_TRUE(both->cluster.amqp.jobs);
  EXPECT_TRUE(both->warnings.empty());
  auto off = parse(shared_bucket() + amqp + registry + "[jobs]\nenabled = false\n");
  ASSERT_TRUE(off) << off.error();
  EXPECT_FALSE(off->cluster.amqp.jobs);
}

}  // namespace
}  // namespace chunkd::engine

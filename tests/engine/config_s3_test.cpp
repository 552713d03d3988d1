// `[buckets.<name>]` tables of type "s3" (engine/s3_bucket.hpp): read, checked, and compared by a
// reload.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/config.hpp"
#include "engine/config_reload.hpp"

namespace chunkd::engine {
namespace {

namespace fs = std::filesystem;

class ConfigS3Test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "chunkd-config-s3-XXXXXX").string();
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
    write("creds",
          "[default]\naws_access_key_id = AKI1\naws_secret_access_key = one\n"
          "[other]\naws_access_key_id = AKI2\naws_secret_access_key = two\n");
    write("ca.pem", "ca\n");
    ::unsetenv("AWS_ACCESS_KEY_ID");
    ::unsetenv("AWS_SECRET_ACCESS_KEY");
    ::unsetenv("AWS_SESSION_TOKEN");
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
  std::string error_of(const std::string& body) {
    auto r = parse("[buckets.fw]\n" + body);
    EXPECT_FALSE(r.has_value()) << body;
    return r ? std::string() : r.error();
  }
  static std::string minimal() {
    return "type = \"s3\"\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"us-east-1\"\n"
           "credentials_file = \"creds\"\n";
  }
  std::string dir_;
};

TEST_F(ConfigS3Test, DefaultsAndEveryKey) {
  auto c = parse("[buckets.fw]\n" + minimal());
  ASSERT_TRUE(c) << c.error();
  const S3Bucket& b = c->control.service.s3_buckets.at("fw");
  EXPECT_EQ(b.remote.endpoint, "http://127.0.0.1:9000");
  EXPECT_EQ(b.remote.bucket, "fw");  // the local name by default
  EXPECT_FALSE(b.remote.virtual_addressing);
  EXPECT_EQ(b.profile, "default");
  EXPECT_EQ(b.credentials_file, dir_ + "/creds");
  EXPECT_EQ(b.remote.credentials.access_key_id, "AKI1");
  EXPECT_EQ(b.remote.credentials.secret_access_key, "one");
  EXPECT_EQ(b.remote.timeout_s, 30u);
  EXPECT_EQ(b.remote.retries, 3u);
  EXPECT_TRUE(c->control.service.buckets.empty());

  auto all = parse(
      "[buckets]\nlocal = \".\"\n[buckets.fw]\ntype = \"s3\"\nendpoint = "
      "\"https://s3.example.net/\"\n"
      "region = \"eu-west-1\"\nbucket = \"releases\"\naddressing = \"virtual\"\n"
      "credentials_file = \"creds\"\nprofile = \"other\"\nca_file = \"ca.pem\"\ntimeout_s = 5\n"
      "retries = 0\n");
  ASSERT_TRUE(all) << all.error();
  const S3Bucket& a = all->control.service.s3_buckets.at("fw");
  EXPECT_EQ(a.remote.endpoint, "https://s3.example.net");
  EXPECT_EQ(a.remote.region, "eu-west-1");
  EXPECT_EQ(a.remote.bucket, "releases");
  EXPECT_TRUE(a.remote.virtual_addressing);
  EXPECT_EQ(a.remote.credentials.access_key_id, "AKI2");
  EXPECT_EQ(a.remote.ca_file, dir_ + "/ca.pem");
  EXPECT_EQ(a.remote.timeout_s, 5u);
  EXPECT_EQ(a.remote.retries, 0u);
  EXPECT_EQ(all->control.service.buckets.count("local"), 1u);
}

TEST_F(ConfigS3Test, TheEnvironmentIsTheFallback) {
  const std::string body = "type = \"s3\"\nendpoint = \"http://h\"\nregion = \"r\"\n";
  EXPECT_NE(error_of(body).find("AWS_ACCESS_KEY_ID"), std::string::npos);
  ::setenv("AWS_ACCESS_KEY_ID", "AKIENV", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
  ::setenv("AWS_SESSION_TOKEN", "envtoken", 1);
  auto c = parse("[buckets.fw]\n" + body);
  ASSERT_TRUE(c) << c.error();
  const auto& creds = c->control.service.s3_buckets.at("fw").remote.credentials;
  EXPECT_EQ(creds.access_key_id, "AKIENV");
  EXPECT_EQ(creds.secret_access_key, "envsecret");
  EXPECT_EQ(creds.session_token, "envtoken");
}

TEST_F(ConfigS3Test, EveryErrorNamesTheKeyAndNoSecret) {
  const std::string m = minimal();
  struct Case {
    std::string body;
    std::string starts;
  };
  const Case cases[] = {
      {"type = \"gcs\"\n", "buckets.fw.type:"},
      {"type = \"s3\"\nregion = \"r\"\ncredentials_file = \"creds\"\n", "buckets.fw.endpoint:"},
      {m + "bucket = \"a/b\"\n", "buckets.fw.bucket:"},
      {m + "addressing = \"dns\"\n", "buckets.fw.addressing:"},
      {m + "timeout_s = 0\n", "buckets.fw.timeout_s:"},
      {m + "retries = 11\n", "buckets.fw.retries:"},
      {m + "ca_file = \"missing.pem\"\n", "buckets.fw.ca_file:"},
      {m + "profile = \"absent\"\n", "buckets.fw.credentials_file:"},
      {m + "aws_secret_access_key = \"shh\"\n", "buckets.fw.aws_secret_access_key:"},
      {m + "colour = \"blue\"\n", "buckets.fw.colour: unknown key"},
      {"type = \"s3\"\nendpoint = \"ftp://h\"\nregion = \"r\"\ncredentials_file = \"creds\"\n",
       "buckets.fw.endpoint:"},
      {"type = \"s3\"\nendpoint = \"http://h/path\"\nregion = \"r\"\ncredentials_file = "
       "\"creds\"\n",
       "buckets.fw.endpoint:"},
      {"type = \"s3\"\nendpoint = \"http://h\"\nregion = \"R!\"\ncredentials_file = \"creds\"\n",
       "buckets.fw.region:"},
      {"type = \"s3\"\nendpoint = \"http://h\"\nregion = \"r\"\ncredentials_file = \"nope\"\n",
       "buckets.fw.credentials_file:"},
  };
  for (const Case& c : cases) {
    std::string error = error_of(c.body);
    EXPECT_EQ(error.rfind(c.starts, 0), 0u) << error;
    EXPECT_EQ(error.find("shh"), std::string::npos) << error;
    EXPECT_EQ(error.find("one"), std::string::npos) << error;
  }
}

TEST_F(ConfigS3Test, AReloadComparesSettingsAndSecrets) {
  const std::string running = "[buckets.fw]\n" + minimal();
  auto a = parse(running);
  auto same = parse(running);
  ASSERT_TRUE(a && same);
  EXPECT_TRUE(diff_config(*a, *same).empty());

  auto moved = parse("[buckets.fw]\n" + minimal() + "retries = 1\n");
  ASSERT_TRUE(moved);
  ConfigDiff d = diff_config(*a, *moved);
  ASSERT_EQ(d.live.size(), 1u);
  EXPECT_EQ(d.live[0].key, "buckets.fw");
  EXPECT_TRUE(d.buckets_changed());
  EXPECT_TRUE(d.restart.empty());
  EXPECT_NE(describe(d).find("retries 1"), std::string::npos) << describe(d);
  EXPECT_EQ(merge_live(*a, *moved).control.service.s3_buckets.at("fw").remote.retries, 1u);

  write("creds", "[default]\naws_access_key_id = AKI1\naws_secret_access_key = rotated\n");
  auto rotated = parse(running);
  ASSERT_TRUE(rotated);
  ConfigDiff r = diff_config(*a, *rotated);
  ASSERT_EQ(r.live.size(), 1u);
  EXPECT_TRUE(r.live[0].secret);
  EXPECT_EQ(describe(r), "buckets.fw (contents changed)");
  EXPECT_EQ(describe(r).find("rotated"), std::string::npos);

  auto dir_kind = parse("[buckets]\nfw = \".\"\n");
  ASSERT_TRUE(dir_kind);
  ConfigDiff k = diff_config(*a, *dir_kind);
  ASSERT_EQ(k.live.size(), 1u);
  EXPECT_EQ(k.live[0].to.rfind(dir_, 0), 0u) << k.live[0].to;
}

}  // namespace
}  // namespace chunkd::engine

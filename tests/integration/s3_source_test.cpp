// Streams whose files come from an S3 bucket (engine/s3_source.hpp), fetched from a real S3
// implementation (moto's server, tests/support/s3_server.hpp) with signatures checked: objects of
// every size byte for byte, older versions, the versionId and ETag a stream records, chunkctl's
// progress bar, virtual-host addressing, an https endpoint behind a private CA, and --check
// --probe. Without moto_server the tests are skipped, saying how to get it.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "tests/integration/api.hpp"
#include "tests/integration/s3_source_fixture.hpp"
#include "tests/support/net.hpp"
#include "tests/support/pty_process.hpp"
#include "tests/support/s3_server.hpp"
#include "tests/support/tls_certs.hpp"

namespace chunkd::test {
namespace {

TEST_F(S3Source, ObjectsOfEverySizeDownloadByteForByte) {
  ASSERT_TRUE(need_big());
  Stack stack;
  ASSERT_TRUE(start(stack));
  auto r = stack.create("s3sizes", {{0, "s3fw", "empty.bin", std::nullopt},
                                    {1, "s3fw", "one.bin", std::nullopt},
                                    {2, "s3fw", "dir/odd.bin", std::nullopt},
                                    {3, "s3fw", "big.bin", std::nullopt}});
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log(8000);
  auto described = stack.request("GET", "/streams/s3sizes");
  Json j(described.body);
  EXPECT_EQ(j.u64("/data/files/0/sizeBytes"), 0u) << described.body;
  EXPECT_EQ(j.u64("/data/files/2/sizeBytes"), shared->odd.size()) << described.body;
  EXPECT_EQ(j.u64("/data/files/3/sizeBytes"), shared->big.size()) << described.body;
  EXPECT_EQ(j.str("/data/files/3/s3Location/bucket"), "s3fw") << described.body;

  auto dev = stack.device("s3-dev-1", "s3sizes");
  ASSERT_TRUE(dev);
  const std::string* expected[] = {nullptr, nullptr, &shared->odd, &shared->big};
  const std::string small[] = {"", "x"};
  for (std::uint32_t id = 0; id < 4; ++id) {
    SCOPED_TRACE("file " + std::to_string(id));
    auto result = download(*dev, "s3sizes", id);
    ASSERT_TRUE(result.ok) << result.error;
    const std::string& want = expected[id] != nullptr ? *expected[id] : small[id];
    ASSERT_EQ(result.bytes.size(), want.size());
    EXPECT_TRUE(bytes_to_string(result.bytes) == want) << "content differs";
  }
  // The fetch files are gone: nothing in tmp, no descriptor left open.
  EXPECT_EQ(entries(stack.daemon().data_dir() + "/tmp"), 0u);
  EXPECT_TRUE(fetch_fds(stack.daemon().pid()).empty());
  auto metrics = stack.request("GET", "/metrics");
  EXPECT_NE(metrics.body.find("chunkd_s3_fetches_total{result=\"ok\"} 4"), std::string::npos)
      << metrics.body;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST_F(S3Source, VersionSelectsAnOlderObject) {
  Stack stack;
  ASSERT_TRUE(start(stack));
  auto r = stack.create("s3old", {{0, "s3fw", "v.bin", shared->old_version}});
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log(8000);
  auto latest = stack.create("s3new", {{0, "s3fw", "v.bin", std::nullopt}});
  ASSERT_EQ(latest.status, 201) << latest.body;
  auto dev = stack.device("s3-dev-2", "s3old");
  ASSERT_TRUE(dev);
  ASSERT_TRUE(dev->watch("s3new"));
  auto old_bytes = download(*dev, "s3old", 0);
  ASSERT_TRUE(old_bytes.ok) << old_bytes.error;
  EXPECT_TRUE(bytes_to_string(old_bytes.bytes) == shared->v1) << "not the first version";
  auto new_bytes = download(*dev, "s3new", 0);
  ASSERT_TRUE(new_bytes.ok) << new_bytes.error;
  EXPECT_TRUE(bytes_to_string(new_bytes.bytes) == shared->v2) << "not the latest version";
}

// The stream records the versionId and ETag each fetch got: in the create reply, in describe, and
// after a restart (the registry keeps them). The latest version is named too when none was asked.
TEST_F(S3Source, TheStreamRecordsTheVersionAndEtagItGot) {
  Stack stack;
  ASSERT_TRUE(start(stack));
  auto r = stack.create(
      "s3rec", {{0, "s3fw", "v.bin", shared->old_version}, {1, "s3fw", "one.bin", std::nullopt}});
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log(8000);
  Json created(r.body);
  EXPECT_EQ(created.str("/data/files/0/s3Location/version"), shared->old_version) << r.body;
  EXPECT_EQ(created.str("/data/files/0/source/versionId"), shared->old_version) << r.body;
  const std::optional<std::string> etag = created.str("/data/files/0/source/etag");
  ASSERT_TRUE(etag && etag->size() > 2 && etag->front() == '"') << r.body;
  const std::optional<std::string> latest = created.str("/data/files/1/source/versionId");
  ASSERT_TRUE(latest && !latest->empty()) << r.body;
  EXPECT_NE(*latest, shared->old_version);

  auto check = [&](const std::string& when) {
    SCOPED_TRACE(when);
    auto described = stack.request("GET", "/streams/s3rec");
    Json j(described.body);
    EXPECT_EQ(j.str("/data/files/0/s3Location/version"), shared->old_version) << described.body;
    EXPECT_EQ(j.str("/data/files/0/source/etag"), etag) << described.body;
    EXPECT_EQ(j.str("/data/files/0/source/versionId"), shared->old_version) << described.body;
    EXPECT_EQ(j.str("/data/files/1/s3Location/version"), latest) << described.body;
  };
  check("after the create");
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  stack.reset_http();
  check("after a restart");
  // A local file has no source.
  ASSERT_TRUE(stack.create_file_stream("s3rec-local", "local bytes"));
  auto local = stack.request("GET", "/streams/s3rec-local");
  EXPECT_FALSE(Json(local.body).has("/data/files/0/source")) << local.body;
  EXPECT_FALSE(Json(local.body).has("/data/files/0/s3Location/version")) << local.body;
}

// chunkctl create draws a progress bar on a terminal while the object streams in (the server is
// stopped half-way so the bar has time to show), and nothing of the kind when stderr is a pipe.
TEST_F(S3Source, ChunkctlDrawsProgressOnATerminal) {
  ASSERT_TRUE(need_big());
  Stack stack;
  ASSERT_TRUE(start(stack));
  const std::string url = "http://127.0.0.1:" + std::to_string(stack.daemon().port());
  const std::string ctl = chunkctl_binary_path();
  PtyProcess tty;
  ASSERT_TRUE(tty.start({ctl, "create", "s3bar", "--file", "0=s3fw:big.bin", "--role-arn",
                         "arn:aws:iam::123456789012:role/chunkd"},
                        {"CHUNKD_URL=" + url, "CHUNKD_TOKEN="}));
  const bool arriving = wait_until_fetch_arrives(stack.daemon().pid());
  shared->s3.pause();
  // Until a bar with the total shows: the first one may come before the daemon knew the size.
  for (int i = 0; i < 100 && tty.seen().find(" / 64.0 MiB") == std::string::npos; ++i) {
    tty.read_some(200);
  }
  shared->s3.resume();
  const int status = tty.finish(60000);
  const std::string& seen = tty.seen();
  ASSERT_TRUE(arriving) << stack.daemon().log(8000);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << seen;
  EXPECT_NE(seen.find("file 1/1 ["), std::string::npos) << seen;
  EXPECT_NE(seen.find(" / 64.0 MiB"), std::string::npos) << seen;
  EXPECT_NE(seen.find("created stream s3bar, version 1"), std::string::npos) << seen;

  auto piped = run_process({ctl, "update", "s3bar", "--file", "0=s3fw:dir/odd.bin"}, 120000,
                           {{"CHUNKD_URL", url}, {"CHUNKD_TOKEN", ""}});
  EXPECT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_EQ(piped.err, "");
  EXPECT_NE(piped.out.find("updated stream s3bar, version 2"), std::string::npos) << piped.out;
}

TEST_F(S3Source, CheckWithProbeSaysWhichBucketsWork) {
  Stack stack;
  const std::string e = shared->s3.endpoint();
  stack.daemon().set("mqtt", "uri", "\"tcp://127.0.0.1:1883\"");  // never contacted by --check
  stack.daemon().set_extra_toml(s3_bucket_toml("s3fw", e, "firmware", credentials_));
  ASSERT_TRUE(stack.daemon().write_config());
  auto good = run_process(
      {chunkd_binary_path(), "--config", stack.daemon().config_path(), "--check", "--probe"});
  EXPECT_EQ(good.exit_code, 0) << good.out << good.err;
  EXPECT_NE(good.out.find("buckets.s3fw: ok"), std::string::npos) << good.out;

  stack.daemon().set_extra_toml(
      s3_bucket_toml("s3fw", e, "firmware", credentials_) +
      s3_bucket_toml("s3wrong", e, "firmware", credentials_, "profile = \"wrong\"") +
      s3_bucket_toml("s3nobucket", e, "no-such-bucket", credentials_) +
      s3_bucket_toml("s3down", down_endpoint(), "firmware", credentials_, "timeout_s = 2"));
  ASSERT_TRUE(stack.daemon().write_config());
  auto bad = run_process(
      {chunkd_binary_path(), "--config", stack.daemon().config_path(), "--check", "--probe"});
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("buckets.s3fw: ok"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("buckets.s3wrong: bucket \"firmware\" at " + e + " refused"),
            std::string::npos)
      << bad.out;
  EXPECT_NE(bad.out.find("buckets.s3nobucket: bucket \"no-such-bucket\""), std::string::npos)
      << bad.out;
  EXPECT_NE(bad.out.find("does not exist"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("buckets.s3down: "), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("unreachable"), std::string::npos) << bad.out;
  // Without --probe nothing is contacted: the config itself is fine.
  auto plain =
      run_process({chunkd_binary_path(), "--config", stack.daemon().config_path(), "--check"});
  EXPECT_EQ(plain.exit_code, 0) << plain.out << plain.err;
}

// An https endpoint whose certificate a private CA signed: trusted through the bucket's ca_file,
// byte-exact; without ca_file (the system's CAs) it is refused, 503 naming the certificate.
TEST(S3SourceTls, AnHttpsEndpointIsTrustedThroughCaFile) {
  if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
  TestCerts certs;
  ASSERT_TRUE(certs.make()) << certs.error();
  TestS3Server s3;
  s3.use_tls(certs.path("server.crt"), certs.path("server.key"), certs.path("ca.crt"));
  ASSERT_TRUE(s3.start()) << s3.error();
  ASSERT_EQ(s3.endpoint().substr(0, 8), "https://");
  ASSERT_TRUE(s3.make_bucket("firmware")) << s3.error();
  const std::string bytes = test_bytes(70000, 9);
  ASSERT_TRUE(s3.put("firmware", "tls.bin", bytes)) << s3.error();
  std::string error;
  const std::string dir = make_temp_dir("s3-tls", error);
  ASSERT_FALSE(dir.empty()) << error;
  const std::string credentials = write_credentials(s3, dir);
  Stack stack;
  stack.daemon().set_extra_toml(
      s3_bucket_toml("s3tls", s3.endpoint(), "firmware", credentials,
                     "ca_file = " + TestDaemon::quote(certs.path("ca.crt"))) +
      s3_bucket_toml("s3untrusted", s3.endpoint(), "firmware", credentials, "retries = 0"));
  ASSERT_TRUE(stack.start());
  auto r = stack.create("s3tls", {{0, "s3tls", "tls.bin", std::nullopt}});
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log(8000) << s3.log();
  auto dev = stack.device("s3-dev-tls", "s3tls");
  ASSERT_TRUE(dev);
  auto result = download(*dev, "s3tls", 0);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_TRUE(bytes_to_string(result.bytes) == bytes) << "content differs";

  auto refused = stack.create("s3untrusted", {{0, "s3untrusted", "tls.bin", std::nullopt}});
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.body.find("certificate"), std::string::npos) << refused.body;
  std::filesystem::remove_all(dir);
}

// Virtual-host addressing (bucket.host/key): the endpoint "localhost", which libcurl resolves to
// loopback for every subdomain too, so firmware.localhost reaches the server.
TEST_F(S3Source, VirtualHostAddressingFetchesTheSameObject) {
  Stack stack;
  ASSERT_TRUE(start(
      stack, s3_bucket_toml("s3virtual", "http://localhost:" + std::to_string(shared->s3.port()),
                            "firmware", credentials_, "addressing = \"virtual\"")));
  auto r = stack.create("s3virtual", {{0, "s3virtual", "v.bin", shared->old_version}});
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log(8000) << shared->s3.log();
  // The server saw the bucket in the host name, not in the path.
  EXPECT_NE(shared->s3.log().find("\"GET /v.bin?versionId="), std::string::npos)
      << shared->s3.log();
  auto dev = stack.device("s3-dev-virtual", "s3virtual");
  ASSERT_TRUE(dev);
  auto result = download(*dev, "s3virtual", 0);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_TRUE(bytes_to_string(result.bytes) == shared->v1) << "content differs";
}

}  // namespace
}  // namespace chunkd::test

// Streams from an S3 bucket (engine/s3_source.hpp) when the source fails, against a real S3
// implementation (moto's server, tests/support/s3_server.hpp): a missing bucket, key or version, a
// wrong secret, an unreachable endpoint, an object over the size limit, a server that stalls, is
// killed or has its connection cut mid-transfer, and chunkd stopped during a fetch; delivery goes
// on meanwhile and nothing is left behind. Without moto_server the tests are skipped.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "tests/integration/api.hpp"
#include "tests/integration/s3_source_fixture.hpp"
#include "tests/support/s3_server.hpp"

namespace chunkd::test {
namespace {

// A TCP relay in front of the S3 server that cuts its first connection after `cut_after` bytes
// from the server, then relays every later connection whole: a connection dropped mid-transfer
// by the network, with the server still up.
class CuttingRelay {
 public:
  CuttingRelay(std::uint16_t target, std::size_t cut_after) : target_(target), cut_(cut_after) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener_, 8) != 0) {
      return;
    }
    socklen_t len = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~CuttingRelay() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    ::close(listener_);
  }
  std::uint16_t port() const { return port_; }
  int connections() const { return connections_; }

 private:
  void run() {
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(target_);
      if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        relay(client, server, connections_++ == 0 ? cut_ : SIZE_MAX);
      }
      ::close(server);
      ::close(client);
    }
  }
  void relay(int client, int server, std::size_t limit) {
    std::size_t from_server = 0;
    char buf[65536];
    while (!stop_) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 100) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0) return;
        std::size_t count = static_cast<std::size_t>(n);
        if (i == 1) {
          if (from_server + count > limit) count = limit - from_server;
          from_server += count;
        }
        if (count > 0 && ::send(i == 0 ? server : client, buf, count, MSG_NOSIGNAL) < 0) return;
        if (i == 1 && from_server >= limit) return;  // cut: both sides see the connection end
      }
    }
  }

  std::uint16_t target_;
  std::size_t cut_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

TEST_F(S3Source, MissingBucketKeyOrVersionIsAValidationErrorNamingTheField) {
  Stack stack;
  ASSERT_TRUE(start(stack));
  struct Case {
    FileRef file;
    std::string field;
    std::string words;
  };
  const Case cases[] = {
      {{0, "s3fw", "no-such.bin", std::nullopt}, "files[0].s3Location.key", "no key"},
      {{0, "s3fw", "v.bin", "no-such-version"}, "files[0].s3Location.version", "no version"},
      {{0, "s3nobucket", "v.bin", std::nullopt}, "files[0].s3Location.bucket", "no-such-bucket"},
      {{0, "s3unknown", "v.bin", std::nullopt}, "files[0].s3Location.bucket", "not configured"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    auto r = stack.create("s3missing", {c.file});
    EXPECT_EQ(r.status, 400) << r.body;
    Json j(r.body);
    EXPECT_EQ(j.str("/error/code"), "VALIDATION_ERROR") << r.body;
    EXPECT_EQ(j.str("/error/details/0/field"), c.field) << r.body;
    EXPECT_NE(r.body.find(c.words), std::string::npos) << r.body;
  }
  EXPECT_EQ(stack.request("GET", "/streams/s3missing").status, 404);
  EXPECT_EQ(entries(stack.daemon().data_dir() + "/tmp"), 0u);
}

TEST_F(S3Source, AWrongSecretIsSourceAccessDeniedNamingTheBucket) {
  Stack stack;
  ASSERT_TRUE(start(stack));
  auto r = stack.create("s3denied", {{0, "s3wrong", "v.bin", std::nullopt}});
  EXPECT_EQ(r.status, 502) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "SOURCE_ACCESS_DENIED") << r.body;
  EXPECT_NE(r.body.find("s3wrong"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("SignatureDoesNotMatch"), std::string::npos) << r.body;
  EXPECT_EQ(stack.request("GET", "/streams/s3denied").status, 404);
}

TEST_F(S3Source, AnUnreachableEndpointIs503WithTheCause) {
  Stack stack;
  ASSERT_TRUE(start(stack));
  auto r = stack.create("s3down", {{0, "s3down", "v.bin", std::nullopt}});
  EXPECT_EQ(r.status, 503) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "SERVICE_UNAVAILABLE") << r.body;
  EXPECT_NE(r.body.find("unreachable"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("onnect"), std::string::npos) << r.body;  // "Couldn't connect", ...
}

TEST_F(S3Source, AnObjectOverMaxFileMibIsRefusedWithBothSizes) {
  Stack stack;
  stack.daemon().set("storage", "max_file_mib", "2");
  ASSERT_TRUE(start(stack));
  auto r = stack.create("s3big", {{0, "s3fw", "dir/odd.bin", std::nullopt}});
  EXPECT_EQ(r.status, 422) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "LIMIT_EXCEEDED") << r.body;
  EXPECT_NE(r.body.find(std::to_string(shared->odd.size())), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(std::to_string(2u << 20)), std::string::npos) << r.body;
  EXPECT_EQ(entries(stack.daemon().data_dir() + "/tmp"), 0u);
  EXPECT_TRUE(fetch_fds(stack.daemon().pid()).empty());
}

TEST_F(S3Source, AStalledServerTimesOut) {
  Stack stack;
  ASSERT_TRUE(start(stack, s3_bucket_toml("s3slow", shared->s3.endpoint(), "firmware", credentials_,
                                          "retries = 1\ntimeout_s = 1")));
  shared->s3.pause();
  auto r = stack.create("s3slow", {{0, "s3slow", "v.bin", std::nullopt}});
  shared->s3.resume();
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("timed out"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("2 attempts"), std::string::npos) << r.body;
  EXPECT_EQ(stack.request("GET", "/streams/s3slow").status, 404);
  // The server is fine again: the same bucket works.
  auto ok = stack.create("s3slow", {{0, "s3slow", "v.bin", std::nullopt}});
  EXPECT_EQ(ok.status, 201) << ok.body;
}

// A connection cut mid-transfer resumes where it stopped (Range + If-Match) and the stream is
// byte-exact.
TEST_F(S3Source, ADroppedConnectionResumesWithARange) {
  CuttingRelay relay(shared->s3.port(), (1u << 20) + 777);
  ASSERT_NE(relay.port(), 0);
  Stack stack;
  ASSERT_TRUE(
      start(stack, s3_bucket_toml("s3cut", "http://127.0.0.1:" + std::to_string(relay.port()),
                                  "firmware", credentials_, "retries = 2")));
  auto r = stack.create("s3cut", {{0, "s3cut", "dir/odd.bin", std::nullopt}});
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log(8000);
  EXPECT_EQ(relay.connections(), 2);
  const std::string log = stack.daemon().log();
  EXPECT_NE(log.find("retrying in 250 ms from byte "), std::string::npos) << log;
  EXPECT_EQ(log.find("from byte 0\n"), std::string::npos) << log;  // it resumed, not restarted
  auto dev = stack.device("s3-dev-cut", "s3cut");
  ASSERT_TRUE(dev);
  auto result = download(*dev, "s3cut", 0);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_TRUE(bytes_to_string(result.bytes) == shared->odd) << "content differs";
}

// A fetch in progress never holds up delivery: with the 64 MiB object stalled half-way (the server
// stopped), a device downloads another stream whole; once the server continues, the create ends.
TEST(S3SourceStalled, DeliveryGoesOnWhileAFetchIsStalled) {
  if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
  TestS3Server s3;
  ASSERT_TRUE(s3.start()) << s3.error();
  ASSERT_TRUE(s3.make_bucket("firmware")) << s3.error();
  const std::string big = test_bytes(64u << 20, 6);
  ASSERT_TRUE(s3.put("firmware", "big.bin", big)) << s3.error();
  std::string error;
  const std::string dir = make_temp_dir("s3-stalled", error);
  ASSERT_FALSE(dir.empty()) << error;
  Stack stack;
  stack.daemon().set_extra_toml(s3_bucket_toml("s3fw", s3.endpoint(), "firmware",
                                               write_credentials(s3, dir), "timeout_s = 600"));
  ASSERT_TRUE(stack.start());
  const std::string local = test_bytes((1u << 20) + 7, 7);
  ASSERT_TRUE(stack.create_file_stream("local", local));
  auto dev = stack.device("s3-dev-stalled", "local");
  ASSERT_TRUE(dev);

  HttpClient http = stack.daemon().http(600000);
  auto pending = std::async(std::launch::async, [&] {
    return http.request("POST", "/streams/s3big",
                        create_body({{0, "s3fw", "big.bin", std::nullopt}}),
                        {{"Content-Type", "application/json"}});
  });
  const bool arriving = wait_until_fetch_arrives(stack.daemon().pid());
  s3.pause();
  ASSERT_TRUE(arriving) << stack.daemon().log(8000);
  auto result = download(*dev, "local", 0);
  // Meanwhile the stream's progress is there to poll (the create is not committed yet).
  auto polled = stack.request("GET", "/streams/s3big");
  const bool still_fetching = !fetch_fds(stack.daemon().pid()).empty();
  s3.resume();
  if (still_fetching) {
    EXPECT_EQ(polled.status, 200) << polled.body;
    Json p(polled.body);
    EXPECT_EQ(p.str("/data/status"), "CREATING") << polled.body;
    EXPECT_EQ(p.u64("/data/progress/files"), 1u) << polled.body;
    EXPECT_EQ(p.u64("/data/progress/bytesTotal"), big.size()) << polled.body;
    EXPECT_GT(p.u64("/data/progress/bytesDone").value_or(0), 0u) << polled.body;
    EXPECT_LT(p.u64("/data/progress/bytesDone").value_or(0), big.size()) << polled.body;
  }
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_TRUE(bytes_to_string(result.bytes) == local) << "content differs";
  auto r = pending.get();
  ASSERT_EQ(r.status, 201) << r.body << r.error << stack.daemon().log(8000);
  if (!still_fetching) GTEST_SKIP() << "the whole object arrived before the server stopped";
  auto dev2 = stack.device("s3-dev-stalled-2", "s3big");
  ASSERT_TRUE(dev2);
  auto fetched = download(*dev2, "s3big", 0);
  ASSERT_TRUE(fetched.ok) << fetched.error;
  EXPECT_TRUE(bytes_to_string(fetched.bytes) == big) << "content differs";
  std::filesystem::remove_all(dir);
}

// Stopping chunkd while a fetch waits on a stalled server: the create is answered 503, the
// transfer is cancelled, every libuv handle closes, and chunkd exits 0.
TEST(S3SourceStalled, SigtermDuringAFetchCancelsItAndExitsZero) {
  if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
  TestS3Server s3;
  ASSERT_TRUE(s3.start()) << s3.error();
  ASSERT_TRUE(s3.make_bucket("firmware")) << s3.error();
  ASSERT_TRUE(s3.put("firmware", "big.bin", test_bytes(64u << 20, 8))) << s3.error();
  std::string error;
  const std::string dir = make_temp_dir("s3-sigterm", error);
  ASSERT_FALSE(dir.empty()) << error;
  Stack stack;
  stack.daemon().set_extra_toml(s3_bucket_toml("s3fw", s3.endpoint(), "firmware",
                                               write_credentials(s3, dir), "timeout_s = 600"));
  ASSERT_TRUE(stack.start());
  s3.pause();  // the request is accepted by the kernel and never answered
  HttpClient http = stack.daemon().http(120000);
  auto pending = std::async(std::launch::async, [&] {
    return http.request("POST", "/streams/s3big",
                        create_body({{0, "s3fw", "big.bin", std::nullopt}}),
                        {{"Content-Type", "application/json"}});
  });
  bool fetching = false;
  for (int i = 0; i < 600 && !fetching; ++i) {
    fetching = !fetch_fds(stack.daemon().pid()).empty();
    if (!fetching) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(fetching) << stack.daemon().log(8000);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log(8000);
  auto r = pending.get();
  s3.resume();
  EXPECT_EQ(r.status, 503) << r.body << r.error;
  EXPECT_NE(r.body.find("shutting down"), std::string::npos) << r.body;
  EXPECT_EQ(entries(stack.daemon().data_dir() + "/tmp"), 0u);
  std::filesystem::remove_all(dir);
}

// A server killed while the object streams in: the create fails cleanly (503, after the retry
// finds nothing listening) and leaves no stream, no temporary file and no open descriptor.
TEST(S3SourceKilled, AServerKilledMidTransferLeavesNothingBehind) {
  if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
  TestS3Server s3;
  ASSERT_TRUE(s3.start()) << s3.error();
  ASSERT_TRUE(s3.make_bucket("firmware")) << s3.error();
  const std::string big = test_bytes(64u << 20, 5);
  ASSERT_TRUE(s3.put("firmware", "big.bin", big)) << s3.error();
  std::string error;
  const std::string dir = make_temp_dir("s3-killed", error);
  ASSERT_FALSE(dir.empty()) << error;
  Stack stack;
  stack.daemon().set_extra_toml(
      s3_bucket_toml("s3fw", s3.endpoint(), "firmware", write_credentials(s3, dir), "retries = 1"));
  ASSERT_TRUE(stack.start());

  HttpClient http = stack.daemon().http(120000);
  auto pending = std::async(std::launch::async, [&] {
    return http.request("POST", "/streams/s3killed",
                        create_body({{0, "s3fw", "big.bin", std::nullopt}}),
                        {{"Content-Type", "application/json"}});
  });
  // Wait until the object has started to arrive, then stop the server where it is.
  const bool arriving = wait_until_fetch_arrives(stack.daemon().pid());
  s3.pause();
  ASSERT_TRUE(arriving) << stack.daemon().log(8000);
  std::uint64_t seen = 0;
  for (const std::string& fd : fetch_fds(stack.daemon().pid())) {
    struct stat st {};
    if (::stat(fd.c_str(), &st) == 0) seen = static_cast<std::uint64_t>(st.st_size);
  }
  s3.kill9();
  auto r = pending.get();
  if (seen == big.size()) GTEST_SKIP() << "the whole object arrived before the server stopped";
  EXPECT_EQ(r.status, 503) << r.body << r.error << stack.daemon().log(8000);
  EXPECT_NE(r.body.find("unreachable"), std::string::npos) << r.body;
  EXPECT_EQ(stack.request("GET", "/streams/s3killed").status, 404);
  EXPECT_EQ(entries(stack.daemon().data_dir() + "/tmp"), 0u);
  EXPECT_TRUE(fetch_fds(stack.daemon().pid()).empty());
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace chunkd::test

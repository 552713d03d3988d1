// Streams whose files come from an S3 bucket (engine/s3_source.hpp), against a real S3
// implementation (moto's server, tests/support/s3_server.hpp) with signatures checked; the objects
// are uploaded by a real client (boto3). Without moto_server the tests are skipped, saying how to
// get it.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "tests/integration/api.hpp"
#include "tests/support/net.hpp"
#include "tests/support/pty_process.hpp"
#include "tests/support/s3_server.hpp"
#include "tests/support/tls_certs.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;

// The shared-credentials file: the server's key as [default], a wrong secret as [wrong].
std::string write_credentials(const TestS3Server& s3, const std::string& dir) {
  std::string path = dir + "/s3-credentials";
  write_file(path, "# chunkd test credentials\n[default]\naws_access_key_id = " + s3.key_id() +
                       "\naws_secret_access_key = " + s3.secret() +
                       "\n\n[wrong]\naws_access_key_id = " + s3.key_id() +
                       "\naws_secret_access_key = not-the-secret\n");
  return path;
}

// `[buckets.<name>]` of type s3 for the test server's bucket `remote`; `extra`: more key lines.
std::string s3_bucket_toml(const std::string& name, const std::string& endpoint,
                           const std::string& remote, const std::string& credentials,
                           const std::string& extra = "") {
  return "[buckets." + name + "]\ntype = \"s3\"\nendpoint = " + TestDaemon::quote(endpoint) +
         "\nregion = \"us-east-1\"\nbucket = " + TestDaemon::quote(remote) +
         "\ncredentials_file = " + TestDaemon::quote(credentials) + "\n" + extra + "\n";
}

// Descriptors the daemon holds on the store's temp files a fetch writes (".../tmp/ingest-...").
std::vector<std::string> fetch_fds(pid_t pid) {
  std::vector<std::string> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    char target[PATH_MAX];
    std::string link = dir + "/" + e->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    std::string t(target, static_cast<std::size_t>(n));
    if (t.find("/tmp/ingest-") != std::string::npos) out.push_back(link);
  }
  ::closedir(d);
  return out;
}

// Waits (up to ~12 s) until one of the daemon's fetch files has its first bytes.
bool wait_until_fetch_arrives(pid_t pid) {
  for (int i = 0; i < 60000; ++i) {
    for (const std::string& fd : fetch_fds(pid)) {
      struct stat st {};
      if (::stat(fd.c_str(), &st) == 0 && st.st_size > 0) return true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

std::size_t entries(const std::string& dir) {
  std::size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") n++;
  }
  ::closedir(d);
  return n;
}

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

DownloadResult download(Device& dev, const std::string& stream, std::uint32_t file_id) {
  DownloadOptions opts;
  opts.block_size = 131072;
  opts.mode = DownloadMode::Bitmap;
  opts.bitmap_blocks_per_request = protocol::kMaxRequestPayloadBytes / opts.block_size;
  return dev.download(stream, Format::Cbor, file_id, opts);
}

// One moto server and its objects for the whole binary (its start-up takes seconds); the tests
// that kill or stall a server start their own.
class S3Source : public ::testing::Test {
 protected:
  struct Shared {
    TestS3Server s3;
    std::string old_version;  // of "v.bin": the first upload
    std::string v1, v2;       // the two contents of "v.bin"
    std::string big;          // "big.bin": 64 MiB (need_big())
    std::string odd;          // "odd.bin": 3 MiB + 123
  };
  static Shared* shared;

  static void SetUpTestSuite() {
    if (!TestS3Server::missing().empty()) return;
    shared = new Shared;
    Shared& s = *shared;
    if (!s.s3.start() || !s.s3.make_bucket("firmware")) return;
    s.v1 = test_bytes(5000, 1);
    s.v2 = test_bytes(7000, 2);
    s.odd = test_bytes((3u << 20) + 123, 4);
    auto versions = s.s3.put_all("firmware", {{"v.bin", s.v1},
                                              {"v.bin", s.v2},
                                              {"empty.bin", ""},
                                              {"one.bin", "x"},
                                              {"dir/odd.bin", s.odd}});
    if (versions) s.old_version = versions->front();
  }
  // "big.bin" (64 MiB), uploaded by the first test that needs it.
  static ::testing::AssertionResult need_big() {
    if (!shared->big.empty()) return ::testing::AssertionSuccess();
    std::string big = test_bytes(64u << 20, 3);
    if (!shared->s3.put("firmware", "big.bin", big)) {
      return ::testing::AssertionFailure() << shared->s3.error();
    }
    shared->big = std::move(big);
    return ::testing::AssertionSuccess();
  }
  static void TearDownTestSuite() {
    delete shared;
    shared = nullptr;
  }

  void SetUp() override {
    if (std::string why = TestS3Server::missing(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_NE(shared, nullptr);
    ASSERT_FALSE(shared->old_version.empty()) << shared->s3.error() << shared->s3.log();
    std::string error;
    dir_ = make_temp_dir("s3-creds", error);
    ASSERT_FALSE(dir_.empty()) << error;
    credentials_ = write_credentials(shared->s3, dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Configures bucket "s3fw" (the good key), "s3wrong" (a wrong secret), "s3down" (nothing
  // listening) and "s3nobucket" (a bucket the server does not have), then starts.
  ::testing::AssertionResult start(Stack& stack, const std::string& extra_toml = "") {
    const std::string e = shared->s3.endpoint();
    std::string toml =
        s3_bucket_toml("s3fw", e, "firmware", credentials_) +
        s3_bucket_toml("s3wrong", e, "firmware", credentials_, "profile = \"wrong\"") +
        s3_bucket_toml("s3nobucket", e, "no-such-bucket", credentials_) +
        s3_bucket_toml("s3down", "http://127.0.0.1:" + std::to_string(pick_free_port()), "firmware",
                       credentials_, "retries = 0\ntimeout_s = 2") +
        extra_toml;
    stack.daemon().set_extra_toml(toml);
    return stack.start();
  }

  std::string dir_;
  std::string credentials_;
};
S3Source::Shared* S3Source::shared = nullptr;

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
      s3_bucket_toml("s3down", "http://127.0.0.1:" + std::to_string(pick_free_port()), "firmware",
                     credentials_, "timeout_s = 2"));
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

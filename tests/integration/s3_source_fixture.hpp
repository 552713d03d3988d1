// The S3 source under test (tests/integration/s3_source*_test.cpp): streams whose files come from
// an S3 bucket (engine/s3_source.hpp), against a real S3 implementation (moto's server,
// tests/support/s3_server.hpp) with signatures checked. S3Source shares one server and its objects
// (uploaded by boto3) across a binary's tests and starts a daemon with buckets configured against
// it; the helpers write credentials and bucket config and watch the daemon's fetch files.
// Without moto_server the tests are skipped, saying how to get it.
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/api.hpp"
#include "tests/support/net.hpp"
#include "tests/support/s3_server.hpp"

namespace chunkd::test {

// The shared-credentials file: the server's key as [default], a wrong secret as [wrong].
inline std::string write_credentials(const TestS3Server& s3, const std::string& dir) {
  std::string path = dir + "/s3-credentials";
  write_file(path, "# chunkd test credentials\n[default]\naws_access_key_id = " + s3.key_id() +
                       "\naws_secret_access_key = " + s3.secret() +
                       "\n\n[wrong]\naws_access_key_id = " + s3.key_id() +
                       "\naws_secret_access_key = not-the-secret\n");
  return path;
}

// `[buckets.<name>]` of type s3 for the test server's bucket `remote`; `extra`: more key lines.
inline std::string s3_bucket_toml(const std::string& name, const std::string& endpoint,
                                  const std::string& remote, const std::string& credentials,
                                  const std::string& extra = "") {
  return "[buckets." + name + "]\ntype = \"s3\"\nendpoint = " + TestDaemon::quote(endpoint) +
         "\nregion = \"us-east-1\"\nbucket = " + TestDaemon::quote(remote) +
         "\ncredentials_file = " + TestDaemon::quote(credentials) + "\n" + extra + "\n";
}

// Descriptors the daemon holds on the store's temp files a fetch writes (".../tmp/ingest-...").
inline std::vector<std::string> fetch_fds(pid_t pid) {
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
inline bool wait_until_fetch_arrives(pid_t pid) {
  for (int i = 0; i < 60000; ++i) {
    for (const std::string& fd : fetch_fds(pid)) {
      struct stat st {};
      if (::stat(fd.c_str(), &st) == 0 && st.st_size > 0) return true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

inline std::size_t entries(const std::string& dir) {
  std::size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") n++;
  }
  ::closedir(d);
  return n;
}

inline DownloadResult download(Device& dev, const std::string& stream, std::uint32_t file_id) {
  DownloadOptions opts;
  opts.block_size = 131072;
  opts.mode = DownloadMode::Bitmap;
  opts.bitmap_blocks_per_request = protocol::kMaxRequestPayloadBytes / opts.block_size;
  return dev.download(stream, protocol::Format::Cbor, file_id, opts);
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
  static inline Shared* shared = nullptr;

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
        s3_bucket_toml("s3down", down_endpoint(), "firmware", credentials_,
                       "retries = 0\ntimeout_s = 2") +
        extra_toml;
    stack.daemon().set_extra_toml(toml);
    return stack.start();
  }

  // Where "s3down" points: a port held closed for the test, so no other test's server takes it.
  std::string down_endpoint() const { return "http://127.0.0.1:" + std::to_string(down_.port()); }

  std::string dir_;
  std::string credentials_;
  ClosedPort down_;
};

}  // namespace chunkd::test

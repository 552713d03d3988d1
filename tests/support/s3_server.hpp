// TestS3Server: a private S3 implementation (moto's standalone server, `moto_server`) for one test
// binary, on a free loopback port, with signature checking on.
//
// Owns: a temporary directory (the server's output) and the server child process.
// Thread: the test's thread; every call blocks until it is done (bounded). Not for the libuv loop.
// Needs: `moto_server` on PATH and `python3` with boto3 (`pip install 'moto[server]' boto3`);
// available() says which is missing, so a test can GTEST_SKIP with that text.
//
// Usage:
//   chunkd::test::TestS3Server s3;
//   ASSERT_TRUE(s3.start()) << s3.error();   // then every request must be signed
//   s3.make_bucket("fw");                    // versioned
//   auto version = s3.put("fw", "a.bin", bytes);  // uploaded with boto3; its version id
//   ... s3.endpoint(), s3.key_id(), s3.secret() ...
//   s3.kill9();  s3.pause(); s3.resume();    // a dying or stalled server
//
// Start-up: the server's first three actions go unsigned (INITIAL_NO_AUTH_ACTION_COUNT=3); they
// create an IAM user with an allow-everything policy and its access key (tests/support/s3_tool.py
// init). Every later request must be signed with that key. The destructor stops the server.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace chunkd::test {

class TestS3Server {
 public:
  TestS3Server() = default;
  ~TestS3Server();
  TestS3Server(const TestS3Server&) = delete;
  TestS3Server& operator=(const TestS3Server&) = delete;

  // Empty when moto_server and python3 with boto3 are there, else what is missing and how to
  // get it.
  static std::string missing();

  // Before start(): serve https with `cert` and `key` (moto_server -c/-k); the set-up client
  // trusts `ca`. endpoint() is then https://127.0.0.1:<port>.
  void use_tls(std::string cert, std::string key, std::string ca) {
    cert_ = std::move(cert);
    key_ = std::move(key);
    ca_ = std::move(ca);
  }
  bool start();
  void stop();   // SIGTERM, then SIGKILL after a bound
  void kill9();  // SIGKILL at once: connections drop mid-transfer
  void pause();  // SIGSTOP: the server keeps its sockets but answers nothing
  void resume();
  bool running() const { return pid_ > 0; }

  bool make_bucket(const std::string& bucket);
  // Uploads `bytes` as `key`; the new version id, or nullopt (see error()).
  std::optional<std::string> put(const std::string& bucket, const std::string& key,
                                 const std::string& bytes);
  // Uploads each (key, bytes) in order with one client; their version ids, or nullopt.
  std::optional<std::vector<std::string>> put_all(
      const std::string& bucket, const std::vector<std::pair<std::string, std::string>>& objects);

  // The latest version of `key` (read with boto3), or nullopt (see error()).
  std::optional<std::string> get(const std::string& bucket, const std::string& key);
  // How many versions of `key` the (versioned) bucket holds: one per PUT; -1 on error.
  int versions(const std::string& bucket, const std::string& key);

  std::string endpoint() const {
    return (cert_.empty() ? "http://127.0.0.1:" : "https://127.0.0.1:") + std::to_string(port_);
  }
  std::uint16_t port() const { return port_; }
  const std::string& key_id() const { return key_id_; }
  const std::string& secret() const { return secret_; }
  // A shared-credentials file's text whose [default] profile is this server's key.
  std::string credentials_ini() const {
    return "[default]\naws_access_key_id = " + key_id_ + "\naws_secret_access_key = " + secret_ +
           "\n";
  }
  const std::string& error() const { return error_; }
  std::string log() const;

 private:
  bool launch();
  bool tool(const std::vector<std::string>& args, std::string& out);

  std::string dir_;
  std::string log_path_;
  std::string key_id_;
  std::string secret_;
  std::string cert_, key_, ca_;  // use_tls
  std::string error_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool paused_ = false;
  int files_ = 0;
};

}  // namespace chunkd::test

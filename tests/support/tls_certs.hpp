// TestCerts: throwaway TLS material for one test, made with the openssl command-line tool (the
// Debian package `openssl`, which tools/deps installs): a CA and everything a test of broker TLS
// needs, right and wrong. EC P-256 keys, valid for two days from now.
//
// Owns: a temporary directory holding the files; the destructor removes it.
// Thread: the test's thread. Dependencies: POSIX, the C++ standard library, /bin/sh and openssl.
//
// Files (path(name)):
//   ca.crt, ca.key                the CA that signs the broker's and chunkd's certificates
//   other-ca.crt, other-ca.key    a CA that signed nothing the broker trusts
//   server.crt, server.key        the broker: CN and subjectAltName IP 127.0.0.1, signed by ca
//   wrong-host.crt                the broker's key, but for DNS name elsewhere.invalid only
//   client.crt, client.key        chunkd (CN "chunkd"), signed by ca
//   client-other-ca.crt           chunkd's key, signed by other-ca
//   client-expired.crt            chunkd's key, signed by ca, expired yesterday
//   stray.key                     a key that belongs to no certificate
#pragma once

#include <string>

namespace chunkd::test {

class TestCerts {
 public:
  TestCerts() = default;
  ~TestCerts();
  TestCerts(const TestCerts&) = delete;
  TestCerts& operator=(const TestCerts&) = delete;

  // Makes the directory and every file; false with error() set (openssl's output) on failure.
  bool make();
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  const std::string& dir() const { return dir_; }
  const std::string& error() const { return error_; }

 private:
  std::string dir_;
  std::string error_;
};

}  // namespace chunkd::test

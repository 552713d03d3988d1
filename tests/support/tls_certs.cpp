#include "tests/support/tls_certs.hpp"

#include <filesystem>

#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"

namespace chunkd::test {
namespace {

// `-days -1` makes a certificate whose validity ended a day ago (OpenSSL 3.0 accepts it).
constexpr const char* kScript = R"(set -e
key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $key -keyout ca.key -out ca.crt -days 2 -subj /CN=chunkd-test-ca
openssl req -x509 $key -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=unrelated-ca
openssl req $key -keyout server.key -out server.csr -subj /CN=127.0.0.1
printf 'subjectAltName=IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.crt
printf 'subjectAltName=DNS:elsewhere.invalid\n' > wrong-host.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile wrong-host.ext -out wrong-host.crt
openssl req $key -keyout client.key -out client.csr -subj /CN=chunkd
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out client.crt
openssl x509 -req -in client.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -days 2 \
  -out client-other-ca.crt
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days -1 \
  -out client-expired.crt
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out stray.key
)";

}  // namespace

TestCerts::~TestCerts() {
  if (dir_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

bool TestCerts::make() {
  if (dir_.empty()) dir_ = make_temp_dir("certs", error_);
  if (dir_.empty()) return false;
  const ProcessResult r =
      run_process({"/bin/sh", "-c", "cd '" + dir_ + "' && " + std::string(kScript)}, 60000);
  if (r.exit_code != 0) {
    error_ = "making test certificates with openssl failed (exit " + std::to_string(r.exit_code) +
             "; is the openssl package installed? tools/deps): " + r.err;
    return false;
  }
  return true;
}

}  // namespace chunkd::test

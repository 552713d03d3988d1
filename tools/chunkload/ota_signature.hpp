// The OTA agent's image check: an ECDSA P-256 signature over the image's SHA-256, the signature
// base64 DER in the job document (`sig-sha256-ecdsa`), the public key from the certificate the
// job's `certfile` names. chunkload maps every certfile to the one certificate of --ota-cert.
//
// SigningKey is loaded once on the main thread and then only read (OpenSSL allows concurrent
// read-only use of an EVP_PKEY). SignatureCheck belongs to one device: not thread-safe.
#pragma once

#include <openssl/evp.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/expected.hpp"

namespace chunkd::chunkload {

class SigningKey {
 public:
  // Reads a PEM certificate and keeps its public key, which must be an EC P-256 key.
  static Expected<SigningKey, std::string> from_certificate_file(const std::string& path);

  EVP_PKEY* key() const { return key_.get(); }

 private:
  struct Free {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  };
  std::shared_ptr<EVP_PKEY> key_;
};

// SHA-256 of the bytes fed in order, then the signature check over it.
class SignatureCheck {
 public:
  explicit SignatureCheck(const SigningKey& key);
  ~SignatureCheck();
  SignatureCheck(const SignatureCheck&) = delete;
  SignatureCheck& operator=(const SignatureCheck&) = delete;

  void update(std::span<const std::byte> bytes);
  // Nothing when the signature (base64 DER) verifies; otherwise why not.
  std::optional<std::string> finish(std::string_view signature_base64);

 private:
  EVP_MD_CTX* ctx_ = nullptr;
  bool ok_ = false;  // the context is initialised and every update succeeded
};

}  // namespace chunkd::chunkload

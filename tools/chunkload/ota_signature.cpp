#include "tools/chunkload/ota_signature.hpp"

#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <vector>

#include "protocol/base64.hpp"

namespace chunkd::chunkload {
namespace {

// A DER ECDSA P-256 signature is at most 72 bytes; leave room for sloppy encoders.
constexpr std::size_t kMaxSignatureChars = 256;

bool is_p256(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) return false;
  char group[64] = {};
  std::size_t len = 0;
  if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) != 1) return false;
  return std::string_view(group, len) == SN_X9_62_prime256v1;
}

}  // namespace

Expected<SigningKey, std::string> SigningKey::from_certificate_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return chunkd::unexpected<std::string>("cannot open " + path);
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (cert == nullptr) {
    return chunkd::unexpected<std::string>(path + " holds no PEM certificate");
  }
  EVP_PKEY* key = X509_get_pubkey(cert);  // a new reference
  X509_free(cert);
  if (key == nullptr) {
    return chunkd::unexpected<std::string>("cannot read the public key of " + path);
  }
  SigningKey out;
  out.key_ = std::shared_ptr<EVP_PKEY>(key, Free{});
  if (!is_p256(key)) {
    return chunkd::unexpected<std::string>("the key of " + path +
                                           " is not an EC P-256 (prime256v1) key");
  }
  return out;
}

SignatureCheck::SignatureCheck(const SigningKey& key) : ctx_(EVP_MD_CTX_new()) {
  ok_ =
      ctx_ != nullptr && EVP_DigestVerifyInit(ctx_, nullptr, EVP_sha256(), nullptr, key.key()) == 1;
}

SignatureCheck::~SignatureCheck() { EVP_MD_CTX_free(ctx_); }

void SignatureCheck::update(std::span<const std::byte> bytes) {
  if (ok_ && !bytes.empty()) ok_ = EVP_DigestVerifyUpdate(ctx_, bytes.data(), bytes.size()) == 1;
}

std::optional<std::string> SignatureCheck::finish(std::string_view signature_base64) {
  if (!ok_) return std::string("the signature check could not run (OpenSSL error)");
  if (signature_base64.size() > kMaxSignatureChars) {
    return std::string("sig-sha256-ecdsa is longer than ") + std::to_string(kMaxSignatureChars) +
           " characters";
  }
  std::vector<std::byte> der(protocol::base64::max_decoded_length(signature_base64.size()));
  auto n = protocol::base64::decode(signature_base64, der);
  if (!n || *n == 0) return std::string("sig-sha256-ecdsa is not base64");
  const int rc =
      EVP_DigestVerifyFinal(ctx_, reinterpret_cast<const unsigned char*>(der.data()), *n);
  ok_ = false;  // one use
  if (rc == 1) return std::nullopt;
  return std::string("signature verification failed");
}

}  // namespace chunkd::chunkload

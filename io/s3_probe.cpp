// s3_probe_bucket (io/s3_client.hpp): one signed HEAD of a bucket, blocking (for `chunkd --check
// --probe`, never on the loop).
#include <curl/curl.h>

#include <mutex>

#include "io/s3_client.hpp"

namespace chunkd::io {

Expected<void, std::string> s3_probe_bucket(const S3BucketOptions& bucket) {
  static std::once_flag global;
  std::call_once(global, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::string url = s3_object_url(bucket, "", "");
  CURL* e = curl_easy_init();
  if (e == nullptr) return unexpected(std::string("cannot create an HTTP request"));
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_slist* headers = curl_slist_append(
      nullptr,
      "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  std::string token = "x-amz-security-token: " + bucket.credentials.session_token;
  if (!bucket.credentials.session_token.empty())
    headers = curl_slist_append(headers, token.c_str());
  std::string sigv4 = "aws:amz:" + bucket.region + ":s3";
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_AWS_SIGV4, sigv4.c_str());
  curl_easy_setopt(e, CURLOPT_USERNAME, bucket.credentials.access_key_id.c_str());
  curl_easy_setopt(e, CURLOPT_PASSWORD, bucket.credentials.secret_access_key.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(e, CURLOPT_TIMEOUT, static_cast<long>(bucket.timeout_s));
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  if (!bucket.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, bucket.ca_file.c_str());
  CURLcode rc = curl_easy_perform(e);
  long status = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(e);
  curl_slist_free_all(headers);
  const std::string where = "bucket \"" + bucket.bucket + "\" at " + bucket.endpoint;
  if (rc != CURLE_OK) {
    return unexpected(where + " is unreachable: " +
                      (errbuf[0] != '\0' ? std::string(errbuf) : curl_easy_strerror(rc)));
  }
  if (status == 200) return {};
  if (status == 403 || status == 400) {
    return unexpected(where + " refused the credentials (HTTP " + std::to_string(status) + ")");
  }
  if (status == 404) return unexpected(where + " does not exist (HTTP 404)");
  if (status == 301) return unexpected(where + " is in another region (HTTP 301)");
  return unexpected(where + " answered HTTP " + std::to_string(status));
}

}  // namespace chunkd::io

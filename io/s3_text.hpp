// Pure text handling for S3 buckets (io/s3_client.hpp): the shared-credentials INI file, the XML
// error body's <Code> and <Message>, URI encoding of keys and query values, Content-Range. No I/O:
// every function takes text and returns values, so each is tested on its own.
//
// Every byte comes from outside (a file an operator wrote, a server's answer): lengths are
// bounded, unknown input is an error or an empty result, never undefined behaviour.
//
// Thread: any.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/expected.hpp"

namespace chunkd::io {

struct S3Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty: none
};

// The `[profile]` section of a shared-credentials file (INI: `[name]` headers, `key = value`
// lines, `#` and `;` comments; keys aws_access_key_id, aws_secret_access_key, aws_session_token;
// other keys are ignored). The error names the problem (never a secret).
Expected<S3Credentials, std::string> parse_shared_credentials(std::string_view text,
                                                              std::string_view profile);

// What an S3 error body says: the text of <Code> and <Message> (each at most 256 bytes, XML
// entities &amp; &lt; &gt; &quot; &apos; decoded), empty when absent.
struct S3ErrorBody {
  std::string code;
  std::string message;
};
S3ErrorBody parse_s3_error(std::string_view body);

// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters (A-Z a-z 0-9 - _ . ~) kept,
// '/' kept when `keep_slash`, every other byte %XX (uppercase hex).
std::string s3_uri_encode(std::string_view text, bool keep_slash);

// "bytes <first>-<last>/<total>" → first and total (total nullopt for "*"); nullopt when malformed.
struct ContentRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::optional<std::uint64_t> total;
};
std::optional<ContentRange> parse_content_range(std::string_view value);

}  // namespace chunkd::io

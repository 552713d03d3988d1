// What every chunkctl command shares: where chunkd is and how to reach it (the global options),
// the control API's envelope, and the conventions: --json prints the server's data object; exit
// status 0 success, 1 the server refused (its code, message and details are printed), 2 usage or
// connection error.
#pragma once

#include <simdjson.h>

#include <string>
#include <utility>
#include <vector>

#include "tools/common/http_client.hpp"

namespace chunkctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;
inline constexpr int kExitUsage = 2;

struct Global {
  std::string url;  // --url, env CHUNKD_URL, default http://127.0.0.1:8080
  std::string token;
  bool json = false;
  int timeout_ms = 600000;  // ingest of a large file takes time
};

// The defaults and the environment.
Global global_from_env();

// Prints "chunkctl: <message>" and `usage` on stderr, exits 2.
[[noreturn]] void usage_error(const std::string& message, const char* usage);

// When args[i] is a global option, applies it (and its value, advancing i) and returns true.
bool take_global(Global& g, const std::vector<std::string>& args, std::size_t& i,
                 const char* usage);

// The first line of a token file, trimmed.
std::string read_token_file(const std::string& path, const char* usage);

// A member as text: strings without quotes, anything else as JSON; "" when absent.
std::string str(simdjson::dom::element e, const char* key);

// One request's outcome: `exit` 0 with `data` (the envelope's data object), else `message`, what
// to print on stderr (the server's code, message and details, or the connection problem).
struct Answer {
  int exit = kExitOk;
  simdjson::dom::element data;
  std::string message;
};

// Prints a failed answer's message on stderr and returns its exit status.
int report(const Answer& a);

class Client {
 public:
  // usage_error when the URL is not usable.
  Client(const Global& g, const char* usage);
  // Sends one request; the answer's `data` lives in `parser` until its next use.
  Answer call(const std::string& method, const std::string& target, const std::string& body,
              simdjson::dom::parser& parser, int timeout_ms = 0) const;
  const chunkd::tools::Url& url() const { return url_; }
  const std::vector<std::pair<std::string, std::string>>& headers() const { return headers_; }

 private:
  chunkd::tools::Url url_;
  std::vector<std::pair<std::string, std::string>> headers_;
  int timeout_ms_;
};

// The server's error object of `root` as chunkctl prints it: "error: CODE: message" and one
// "  field: problem" line per detail.
std::string error_text(simdjson::dom::element root);

}  // namespace chunkctl

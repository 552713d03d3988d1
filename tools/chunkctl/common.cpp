#include "tools/chunkctl/common.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace chunkctl {

Global global_from_env() {
  Global g;
  const char* env_url = std::getenv("CHUNKD_URL");
  g.url = env_url != nullptr && *env_url != '\0' ? env_url : "http://127.0.0.1:8080";
  const char* env_token = std::getenv("CHUNKD_TOKEN");
  if (env_token != nullptr) g.token = env_token;
  return g;
}

void usage_error(const std::string& message, const char* usage) {
  std::fprintf(stderr, "chunkctl: %s\n%s", message.c_str(), usage);
  std::exit(kExitUsage);
}

std::string read_token_file(const std::string& path, const char* usage) {
  std::ifstream in(path);
  if (!in) usage_error("cannot read token file " + path, usage);
  std::string line;
  std::getline(in, line);
  auto first = line.find_first_not_of(" \t\r\n");
  auto last = line.find_last_not_of(" \t\r\n");
  return first == std::string::npos ? std::string() : line.substr(first, last - first + 1);
}

bool take_global(Global& g, const std::vector<std::string>& args, std::size_t& i,
                 const char* usage) {
  const std::string& arg = args[i];
  auto value = [&]() -> std::string {
    if (i + 1 >= args.size()) usage_error(arg + " needs a value", usage);
    return args[++i];
  };
  if (arg == "--url") {
    g.url = value();
  } else if (arg == "--token") {
    g.token = value();
  } else if (arg == "--token-file") {
    g.token = read_token_file(value(), usage);
  } else if (arg == "--json") {
    g.json = true;
  } else if (arg == "--timeout-ms") {
    g.timeout_ms = std::atoi(value().c_str());
    if (g.timeout_ms <= 0) usage_error("--timeout-ms must be positive", usage);
  } else {
    return false;
  }
  return true;
}

std::string str(simdjson::dom::element e, const char* key) {
  auto v = e[key];
  if (v.error()) return "";
  if (v.is_string()) return std::string(v.get_string().value_unsafe());
  return simdjson::to_string(v.value_unsafe());
}

std::string error_text(simdjson::dom::element root) {
  auto err = root["error"];
  if (err.error()) return "error: the server answered without an error object\n";
  std::string out = "error: " + str(err.value_unsafe(), "code") + ": " +
                    str(err.value_unsafe(), "message") + "\n";
  auto details = err["details"].get_array();
  if (!details.error()) {
    for (auto d : details.value_unsafe()) {
      out += "  " + str(d, "field") + ": " + str(d, "problem") + "\n";
    }
  }
  return out;
}

int report(const Answer& a) {
  std::fputs(a.message.c_str(), stderr);
  return a.exit;
}

Client::Client(const Global& g, const char* usage) : timeout_ms_(g.timeout_ms) {
  auto url = chunkd::tools::parse_url(g.url);
  if (!url) usage_error(url.error(), usage);
  url_ = *url;
  if (!g.token.empty()) headers_.emplace_back("Authorization", "Bearer " + g.token);
}

Answer Client::call(const std::string& method, const std::string& target, const std::string& body,
                    simdjson::dom::parser& parser, int timeout_ms) const {
  Answer a;
  auto response = chunkd::tools::http_request(url_, method, target, body, headers_,
                                              timeout_ms > 0 ? timeout_ms : timeout_ms_);
  if (!response) {
    a.exit = kExitUsage;
    a.message = "chunkctl: " + response.error() + "\n";
    return a;
  }
  simdjson::dom::element root;
  if (parser.parse(response->body).get(root) != simdjson::SUCCESS) {
    a.exit = kExitUsage;
    a.message =
        "chunkctl: HTTP " + std::to_string(response->status) + " with a body that is not JSON\n";
    return a;
  }
  bool success = false;
  if (root["success"].get(success) != simdjson::SUCCESS || !success ||
      root["data"].get(a.data) != simdjson::SUCCESS) {
    a.exit = kExitRefused;
    a.message = error_text(root);
  }
  return a;
}

}  // namespace chunkctl

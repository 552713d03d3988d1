// chunkctl: the operator's command line for chunkd's control API.
//
//   chunkctl create <streamId> --file 0=firmware:images/v2.bin[@digest] [--file ...]
//                   --role-arn ARN [--description TEXT] [--tag KEY=VALUE ...]
//                   [--allow-thing PATTERN ...]
//   chunkctl describe <streamId>
//   chunkctl list [--max-results N] [--next-token T] [--descending] [--all]
//   chunkctl update <streamId> [--file ...] [--description TEXT] [--role-arn ARN]
//                   [--allow-thing PATTERN ... | --allow-every-thing]
//   chunkctl delete <streamId>
//   chunkctl job create|describe|list|things|cancel|delete|watch ...   (tools/chunkctl/job.hpp)
//
// Global: --url URL (env CHUNKD_URL, default http://127.0.0.1:8080), --token TOKEN (env
// CHUNKD_TOKEN) or --token-file FILE, --json (print the server's data object), --timeout-ms N.
// Exit status: 0 success, 1 the server refused (its code and message are printed), 2 usage or
// connection error. create and update with files draw a progress bar on stderr when it is a
// terminal (tools/chunkctl/progress.hpp).
#include <simdjson.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/control.hpp"
#include "tools/chunkctl/common.hpp"
#include "tools/chunkctl/job.hpp"
#include "tools/chunkctl/progress.hpp"
#include "tools/common/http_client.hpp"

namespace {

constexpr const char* kUsage =
    "usage: chunkctl [--url URL] [--token T | --token-file F] [--json] <command> ...\n"
    "  create <id> --file ID=BUCKET:KEY[@DIGEST]... --role-arn ARN [--description D] [--tag "
    "K=V]...\n"
    "         [--allow-thing PATTERN]...\n"
    "  describe <id>\n"
    "  list [--max-results N] [--next-token T] [--descending] [--all]\n"
    "  update <id> [--file ID=BUCKET:KEY[@DIGEST]]... [--description D] [--role-arn ARN]\n"
    "         [--allow-thing PATTERN... | --allow-every-thing]\n"
    "PATTERN: a thing name where '*' matches any run of characters and '?' one character\n"
    "  delete <id>\n"
    "  job <command> ...   jobs: chunkctl job --help\n"
    "environment: CHUNKD_URL (default http://127.0.0.1:8080), CHUNKD_TOKEN\n";

struct FileArg {
  std::string id;  // kept as text: the server validates the range
  std::string bucket;
  std::string key;
  std::optional<std::string> version;
};

struct Args {
  chunkctl::Global g;
  std::string command;
  std::vector<std::string> job_args;  // after "job": tools/chunkctl/job.hpp parses them
  std::string stream_id;
  std::vector<FileArg> files;
  std::optional<std::string> description;
  std::optional<std::string> role_arn;
  std::vector<std::pair<std::string, std::string>> tags;
  std::vector<std::string> allow_things;  // --allow-thing: the stream's allowedThings
  bool allow_every_thing = false;         // --allow-every-thing: "allowedThings": null
  std::optional<std::string> max_results;
  std::optional<std::string> next_token;
  bool descending = false;
  bool all = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  chunkctl::usage_error(message, kUsage);
}

FileArg parse_file_arg(const std::string& spec) {
  // ID=BUCKET:KEY[@DIGEST]
  auto eq = spec.find('=');
  auto colon = spec.find(':', eq == std::string::npos ? 0 : eq);
  if (eq == std::string::npos || colon == std::string::npos) {
    usage_error("--file wants ID=BUCKET:KEY[@DIGEST], got '" + spec + "'");
  }
  FileArg f;
  f.id = spec.substr(0, eq);
  f.bucket = spec.substr(eq + 1, colon - eq - 1);
  f.key = spec.substr(colon + 1);
  auto at = f.key.rfind('@');
  if (at != std::string::npos) {
    f.version = f.key.substr(at + 1);
    f.key.resize(at);
  }
  if (f.id.empty() || f.id.find_first_not_of("0123456789") != std::string::npos) {
    usage_error("--file id must be a number, got '" + f.id + "'");
  }
  return f;
}

Args parse_args(int argc, char** argv) {
  Args a;
  a.g = chunkctl::global_from_env();
  const std::vector<std::string> args(argv + 1, argv + argc);
  std::vector<std::string> positional;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) usage_error(arg + " needs a value");
      return args[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (chunkctl::take_global(a.g, args, i, kUsage)) {
      continue;
    } else if (positional.empty() && arg == "job") {
      a.command = "job";
      a.job_args.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      return a;
    } else if (arg == "--file") {
      a.files.push_back(parse_file_arg(value()));
    } else if (arg == "--description") {
      a.description = value();
    } else if (arg == "--role-arn") {
      a.role_arn = value();
    } else if (arg == "--tag") {
      std::string kv = value();
      auto eq = kv.find('=');
      if (eq == std::string::npos) usage_error("--tag wants KEY=VALUE");
      a.tags.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    } else if (arg == "--allow-thing") {
      a.allow_things.push_back(value());
    } else if (arg == "--allow-every-thing") {
      a.allow_every_thing = true;
    } else if (arg == "--max-results") {
      a.max_results = value();
    } else if (arg == "--next-token") {
      a.next_token = value();
    } else if (arg == "--descending") {
      a.descending = true;
    } else if (arg == "--all") {
      a.all = true;
    } else if (arg.rfind("--", 0) == 0) {
      usage_error("unknown option " + arg);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.empty()) usage_error("no command");
  a.command = positional[0];
  bool wants_id = a.command != "list";
  if (wants_id) {
    if (positional.size() != 2) usage_error(a.command + " takes exactly one stream id");
    a.stream_id = positional[1];
  } else if (positional.size() != 1) {
    usage_error("list takes no arguments");
  }
  return a;
}

std::string files_json(const std::vector<FileArg>& files) {
  std::string out = "[";
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto& f = files[i];
    if (i) out += ',';
    out += "{\"fileId\":" + f.id + ",\"s3Location\":{\"bucket\":";
    chunkd::protocol::append_json_string(out, f.bucket);
    out += ",\"key\":";
    chunkd::protocol::append_json_string(out, f.key);
    if (f.version) {
      out += ",\"version\":";
      chunkd::protocol::append_json_string(out, *f.version);
    }
    out += "}}";
  }
  return out + "]";
}

std::string body_json(const Args& a) {
  std::string out = "{";
  bool first = true;
  auto key = [&](const char* k) {
    if (!first) out += ',';
    first = false;
    out += '"';
    out += k;
    out += "\":";
  };
  if (a.description) {
    key("description");
    chunkd::protocol::append_json_string(out, *a.description);
  }
  if (!a.files.empty()) {
    key("files");
    out += files_json(a.files);
  }
  if (a.role_arn) {
    key("roleArn");
    chunkd::protocol::append_json_string(out, *a.role_arn);
  }
  if (!a.allow_things.empty()) {
    key("allowedThings");
    out += '[';
    for (std::size_t i = 0; i < a.allow_things.size(); ++i) {
      if (i) out += ',';
      chunkd::protocol::append_json_string(out, a.allow_things[i]);
    }
    out += ']';
  } else if (a.allow_every_thing) {
    key("allowedThings");
    out += "null";
  }
  if (!a.tags.empty()) {
    key("tags");
    out += '[';
    for (std::size_t i = 0; i < a.tags.size(); ++i) {
      if (i) out += ',';
      out += "{\"Key\":";
      chunkd::protocol::append_json_string(out, a.tags[i].first);
      out += ",\"Value\":";
      chunkd::protocol::append_json_string(out, a.tags[i].second);
      out += '}';
    }
    out += ']';
  }
  return out + "}";
}

using chunkctl::str;

void print_error(simdjson::dom::element root) {
  std::fputs(chunkctl::error_text(root).c_str(), stderr);
}

void print_stream(simdjson::dom::element data, bool full) {
  std::printf("stream      %s\n", str(data, "streamId").c_str());
  std::printf("version     %s\n", str(data, "streamVersion").c_str());
  std::printf("arn         %s\n", str(data, "streamArn").c_str());
  std::printf("description %s\n", str(data, "description").c_str());
  std::printf("created     %s\n", str(data, "created_at").c_str());
  auto allowed = data["allowedThings"].get_array();
  if (allowed.error()) {
    std::printf("readers     every thing\n");
  } else {
    std::string list;
    for (auto p : allowed.value_unsafe()) {
      std::string_view pattern;
      if (p.get(pattern) != simdjson::SUCCESS) continue;
      list += list.empty() ? "" : " ";
      list += pattern;
    }
    std::printf("readers     %s\n", list.c_str());
  }
  if (!full) return;
  std::printf("updated     %s\n", str(data, "updated_at").c_str());
  std::printf("role        %s\n", str(data, "roleArn").c_str());
  auto tags = data["tags"].get_array();
  if (!tags.error()) {
    for (auto t : tags.value_unsafe()) {
      std::printf("tag         %s=%s\n", str(t, "Key").c_str(), str(t, "Value").c_str());
    }
  }
  auto files = data["files"].get_array();
  if (!files.error()) {
    std::printf("\n%-5s %-14s %-32s %-34s %s\n", "FILE", "SIZE", "DIGEST", "BUCKET", "KEY");
    for (auto f : files.value_unsafe()) {
      auto loc = f["s3Location"].value_unsafe();
      std::printf("%-5s %-14s %-32s %-34s %s\n", str(f, "fileId").c_str(),
                  str(f, "sizeBytes").c_str(), str(f, "digest").c_str(), str(loc, "bucket").c_str(),
                  str(loc, "key").c_str());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (a.command == "job") return chunkctl::job_main(a.g, a.job_args);
  auto url = chunkd::tools::parse_url(a.g.url);
  if (!url) usage_error(url.error());

  std::vector<std::pair<std::string, std::string>> headers;
  if (!a.g.token.empty()) headers.emplace_back("Authorization", "Bearer " + a.g.token);

  const std::string path = "/streams/" + chunkd::tools::url_encode(a.stream_id);
  std::string method;
  std::string target;
  std::string body;
  if (!a.allow_things.empty() && a.allow_every_thing) {
    usage_error("--allow-thing and --allow-every-thing exclude each other");
  }
  if (a.command == "create") {
    if (a.files.empty()) usage_error("create needs at least one --file");
    if (a.allow_every_thing) usage_error("--allow-every-thing is for update (the default)");
    method = "POST", target = path, body = body_json(a);
  } else if (a.command == "update") {
    if (a.files.empty() && !a.description && !a.role_arn && a.allow_things.empty() &&
        !a.allow_every_thing) {
      usage_error(
          "update needs --file, --description, --role-arn, --allow-thing or "
          "--allow-every-thing");
    }
    if (!a.tags.empty()) usage_error("tags are set at create time");
    method = "PUT", target = path, body = body_json(a);
  } else if (a.command == "describe") {
    method = "GET", target = path;
  } else if (a.command == "delete") {
    method = "DELETE", target = path;
  } else if (a.command == "list") {
    method = "GET";
  } else {
    usage_error("unknown command " + a.command);
  }

  simdjson::dom::parser parser;
  bool header_printed = false;
  std::string all_streams;  // list --json --all: the streams of every page so far
  std::optional<std::string> next_token = a.next_token;
  for (;;) {
    if (a.command == "list") {
      target = "/streams?isAscendingOrder=" + std::string(a.descending ? "false" : "true");
      if (a.max_results) target += "&maxResults=" + chunkd::tools::url_encode(*a.max_results);
      if (next_token) target += "&nextToken=" + chunkd::tools::url_encode(*next_token);
    }
    auto send = [&] {
      return chunkd::tools::http_request(*url, method, target, body, headers, a.g.timeout_ms);
    };
    auto response = a.files.empty() ? send() : chunkctl::with_progress(*url, path, headers, send);
    if (!response) {
      std::fprintf(stderr, "chunkctl: %s\n", response.error().c_str());
      return 2;
    }
    simdjson::dom::element root;
    if (parser.parse(response->body).get(root) != simdjson::SUCCESS) {
      std::fprintf(stderr, "chunkctl: HTTP %d with a body that is not JSON\n", response->status);
      return 2;
    }
    bool success = false;
    if (root["success"].get(success) != simdjson::SUCCESS || !success) {
      print_error(root);
      return 1;
    }
    simdjson::dom::element data = root["data"].value_unsafe();
    if (a.g.json && a.command == "list" && a.all) {
      // One object for every page: {"streams":[...all of them...]}.
      for (auto s : simdjson::dom::array(data["streams"].get_array().value_unsafe())) {
        all_streams += all_streams.empty() ? "" : ",";
        all_streams += simdjson::to_string(s);
      }
      std::string token = str(data, "nextToken");
      if (!token.empty()) {
        next_token = token;
        continue;
      }
      std::cout << "{\"streams\":[" << all_streams << "]}\n";
    } else if (a.g.json) {
      std::cout << simdjson::to_string(data) << "\n";
    } else if (a.command == "create" || a.command == "update") {
      std::printf("%s stream %s, version %s\n", a.command == "create" ? "created" : "updated",
                  str(data, "streamId").c_str(), str(data, "streamVersion").c_str());
      auto warnings = data["warnings"].get_array();
      if (!warnings.error()) {
        for (auto w : warnings.value_unsafe()) {
          std::fprintf(stderr, "warning: %s\n", std::string(w.get_string().value_unsafe()).c_str());
        }
      }
    } else if (a.command == "describe") {
      std::string status = str(data, "status");
      if (!status.empty()) {  // a create or update is storing its files
        std::printf("status      %s %s\n", status.c_str(),
                    chunkctl::progress_line(response->body).c_str());
        if (status == "CREATING") return 0;
      }
      print_stream(data, true);
    } else if (a.command == "delete") {
      std::printf("deleted stream %s\n", str(data, "id").c_str());
    } else {
      if (!header_printed) {
        std::printf("%-44s %-8s %-21s %s\n", "STREAM", "VERSION", "CREATED", "DESCRIPTION");
        header_printed = true;
      }
      for (auto s : simdjson::dom::array(data["streams"].get_array().value_unsafe())) {
        std::printf("%-44s %-8s %-21s %s\n", str(s, "streamId").c_str(),
                    str(s, "streamVersion").c_str(), str(s, "created_at").c_str(),
                    str(s, "description").c_str());
      }
      std::string token = str(data, "nextToken");
      if (!token.empty() && a.all) {
        next_token = token;
        continue;
      }
      if (!token.empty()) std::printf("more: chunkctl list --next-token %s\n", token.c_str());
    }
    return 0;
  }
}

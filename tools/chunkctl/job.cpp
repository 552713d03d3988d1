// chunkctl job: argument parsing and the one-request commands (create, describe, list, things,
// cancel, delete); watch is tools/chunkctl/job_watch.cpp.
#include "tools/chunkctl/job.hpp"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>

#include "protocol/control.hpp"

namespace chunkctl {

const char* const kJobUsage =
    "usage: chunkctl [--url URL] [--token T | --token-file F] [--json] job <command> ...\n"
    "  create <id> --target T... (--document FILE|- | --ota-stream S --ota-file-id N\n"
    "         --ota-file-path P --ota-signature-file SIGFILE --ota-cert-file C\n"
    "         [--ota-file-type N] [--ota-attributes N]) [--description D]\n"
    "         [--max-per-minute N] [--abort FAILURE_TYPE:PERCENT:MIN]... [--timeout-minutes N]\n"
    "  describe <id>\n"
    "  list [--max-results N] [--next-token T] [--descending] [--all]\n"
    "  things <id> [--status S] [--max-results N] [--next-token T] [--descending] [--all]\n"
    "  cancel <id> [--force] [--reason-code CODE] [--comment TEXT]\n"
    "  delete <id> [--force]\n"
    "  watch <id> [--interval-ms N] [--once]\n"
    "T: a thing name, a thing ARN or a pattern with '*' and '?'. SIGFILE: the DER signature of\n"
    "`openssl dgst -sha256 -sign KEY -out SIGFILE IMAGE`. FAILURE_TYPE: FAILED, REJECTED,\n"
    "TIMED_OUT or ALL. watch exits 0 when the job COMPLETED with every execution SUCCEEDED.\n";

namespace {

[[noreturn]] void fail(const std::string& message) { usage_error(message, kJobUsage); }

// The commands each option belongs to.
const std::map<std::string, std::string, std::less<>> kOptionCommands = {
    {"--target", "create"},
    {"--document", "create"},
    {"--ota-stream", "create"},
    {"--ota-file-id", "create"},
    {"--ota-file-path", "create"},
    {"--ota-signature-file", "create"},
    {"--ota-cert-file", "create"},
    {"--ota-file-type", "create"},
    {"--ota-attributes", "create"},
    {"--description", "create"},
    {"--max-per-minute", "create"},
    {"--abort", "create"},
    {"--timeout-minutes", "create"},
    {"--status", "things"},
    {"--max-results", "list things"},
    {"--next-token", "list things"},
    {"--descending", "list things"},
    {"--all", "list things"},
    {"--force", "cancel delete"},
    {"--reason-code", "cancel"},
    {"--comment", "cancel"},
    {"--interval-ms", "watch"},
    {"--once", "watch"},
};

void apply(JobArgs& a, const std::string& arg, const std::function<std::string()>& value) {
  std::map<std::string, std::optional<std::string>*> text = {
      {"--document", &a.document_file},
      {"--ota-stream", &a.ota_stream},
      {"--ota-file-id", &a.ota_file_id},
      {"--ota-file-path", &a.ota_file_path},
      {"--ota-signature-file", &a.ota_signature_file},
      {"--ota-cert-file", &a.ota_cert_file},
      {"--ota-file-type", &a.ota_file_type},
      {"--ota-attributes", &a.ota_attributes},
      {"--description", &a.description},
      {"--max-per-minute", &a.max_per_minute},
      {"--timeout-minutes", &a.timeout_minutes},
      {"--status", &a.status},
      {"--max-results", &a.max_results},
      {"--next-token", &a.next_token},
      {"--reason-code", &a.reason_code},
      {"--comment", &a.comment},
  };
  if (auto it = text.find(arg); it != text.end()) {
    if (it->second->has_value()) fail(arg + " is given more than once");
    *it->second = value();
  } else if (arg == "--target") {
    a.targets.push_back(value());
  } else if (arg == "--abort") {
    a.aborts.push_back(value());
  } else if (arg == "--interval-ms") {
    std::string v = value();
    a.interval_ms = std::atoi(v.c_str());
    if (a.interval_ms < 100 || a.interval_ms > 3600000) {
      fail("--interval-ms must be between 100 and 3600000, got '" + v + "'");
    }
  } else if (arg == "--descending") {
    a.descending = true;
  } else if (arg == "--all") {
    a.all = true;
  } else if (arg == "--force") {
    a.force = true;
  } else {
    a.once = true;
  }
}

JobArgs parse(const Global& g, const std::vector<std::string>& args) {
  JobArgs a;
  a.g = g;
  std::vector<std::string> positional, given;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kJobUsage, stdout);
      std::exit(0);
    }
    if (take_global(a.g, args, i, kJobUsage)) continue;
    if (arg.rfind("--", 0) != 0) {
      positional.push_back(arg);
      continue;
    }
    if (kOptionCommands.count(arg) == 0) fail("unknown option " + arg);
    given.push_back(arg);
    apply(a, arg, [&]() -> std::string {
      if (i + 1 >= args.size()) fail(arg + " needs a value");
      return args[++i];
    });
  }
  if (positional.empty()) fail("job needs a command");
  a.command = positional[0];
  static const std::string kCommands = " create describe list things cancel delete watch ";
  if (kCommands.find(" " + a.command + " ") == std::string::npos) {
    fail("unknown job command " + a.command);
  }
  if (a.command == "list") {
    if (positional.size() != 1) fail("job list takes no arguments");
  } else if (positional.size() != 2) {
    fail("job " + a.command + " takes exactly one job id");
  } else {
    a.id = positional[1];
  }
  for (const std::string& option : given) {
    const std::string& commands = kOptionCommands.at(option);
    if ((" " + commands + " ").find(" " + a.command + " ") == std::string::npos) {
      fail(option + " is for job " + commands + ", not job " + a.command);
    }
  }
  return a;
}

std::string path(const JobArgs& a) { return "/jobs/" + chunkd::tools::url_encode(a.id); }

void print_warnings(simdjson::dom::element data) {
  auto warnings = data["warnings"].get_array();
  if (warnings.error()) return;
  for (auto w : warnings.value_unsafe()) {
    std::string_view text;
    if (w.get(text) == simdjson::SUCCESS) {
      std::fprintf(stderr, "warning: %.*s\n", static_cast<int>(text.size()), text.data());
    }
  }
}

std::string joined(simdjson::dom::element data, const char* key) {
  std::string out;
  auto list = data[key].get_array();
  if (list.error()) return out;
  for (auto e : list.value_unsafe()) {
    std::string_view s;
    if (e.get(s) != simdjson::SUCCESS) continue;
    out += out.empty() ? "" : " ";
    out += s;
  }
  return out;
}

void print_job(simdjson::dom::element d) {
  std::printf("job         %s\n", str(d, "jobId").c_str());
  std::printf("status      %s\n", str(d, "status").c_str());
  std::printf("description %s\n", str(d, "description").c_str());
  std::printf("created     %s\n", str(d, "createdAt").c_str());
  std::printf("updated     %s\n", str(d, "lastUpdatedAt").c_str());
  if (!str(d, "completedAt").empty())
    std::printf("completed   %s\n", str(d, "completedAt").c_str());
  if (!str(d, "reasonCode").empty()) {
    std::printf("reason      %s %s\n", str(d, "reasonCode").c_str(), str(d, "comment").c_str());
  }
  std::printf("targets     %s\n", joined(d, "targets").c_str());
  simdjson::dom::element e;
  if (d["ota"].get(e) == simdjson::SUCCESS) {
    std::printf("ota         stream %s file %s to %s, signer %s\n", str(e, "streamId").c_str(),
                str(e, "fileId").c_str(), str(e, "filePath").c_str(), str(e, "certFile").c_str());
  } else if (d["document"].get(e) == simdjson::SUCCESS) {
    std::printf("document    %s\n", simdjson::minify(e).c_str());
  }
  if (d.at_pointer("/jobExecutionsRolloutConfig").get(e) == simdjson::SUCCESS) {
    std::printf("rollout     %s per minute\n", str(e, "maximumPerMinute").c_str());
  }
  simdjson::dom::array criteria;
  if (d.at_pointer("/abortConfig/criteriaList").get(criteria) == simdjson::SUCCESS) {
    for (auto c : criteria) {
      std::printf("abort       when over %s%% of at least %s finished are %s\n",
                  str(c, "thresholdPercentage").c_str(),
                  str(c, "minNumberOfExecutedThings").c_str(), str(c, "failureType").c_str());
    }
  }
  if (d.at_pointer("/timeoutConfig").get(e) == simdjson::SUCCESS) {
    std::printf("timeout     %s minutes in progress\n",
                str(e, "inProgressTimeoutInMinutes").c_str());
  }
  if (auto counts = job_counts(d)) std::printf("things      %s\n", counts_text(*counts).c_str());
}

std::string details_text(simdjson::dom::element e) {
  std::string out;
  simdjson::dom::object details;
  if (e["statusDetails"].get(details) != simdjson::SUCCESS) return out;
  for (auto [k, v] : details) {
    out += out.empty() ? "" : " ";
    out += std::string(k) + "=" +
           (v.is_string() ? std::string(v.get_string().value_unsafe()) : simdjson::minify(v));
  }
  return out;
}

// list and things: one page, or every page with --all (--json: one object holding all of them).
int paged(const Client& client, const JobArgs& a, const std::string& base, const char* key) {
  simdjson::dom::parser parser;
  std::optional<std::string> token = a.next_token;
  std::string all;
  bool header = false;
  const bool things = a.command == "things";
  for (;;) {
    std::string target = base + "?isAscendingOrder=" + (a.descending ? "false" : "true");
    if (a.max_results) target += "&maxResults=" + chunkd::tools::url_encode(*a.max_results);
    if (a.status) target += "&status=" + chunkd::tools::url_encode(*a.status);
    if (token) target += "&nextToken=" + chunkd::tools::url_encode(*token);
    Answer r = client.call("GET", target, "", parser);
    if (r.exit != kExitOk) return report(r);
    token.reset();
    if (!str(r.data, "nextToken").empty()) token = str(r.data, "nextToken");
    simdjson::dom::array rows;
    if (r.data[key].get(rows) != simdjson::SUCCESS) {
      std::fprintf(stderr, "chunkctl: the answer has no %s\n", key);
      return kExitUsage;
    }
    if (a.g.json && !a.all) {
      std::cout << simdjson::minify(r.data) << "\n";
      return kExitOk;
    }
    for (auto row : rows) {
      if (a.g.json) {
        all += (all.empty() ? "" : ",") + simdjson::minify(row);
      } else if (things) {
        if (!header)
          std::printf("%-32s %-12s %-7s %-21s %s\n", "THING", "STATUS", "VERSION", "UPDATED",
                      "DETAILS");
        std::printf("%-32s %-12s %-7s %-21s %s\n", str(row, "thingName").c_str(),
                    str(row, "status").c_str(), str(row, "versionNumber").c_str(),
                    str(row, "lastUpdatedAt").c_str(), details_text(row).c_str());
      } else {
        if (!header)
          std::printf("%-40s %-12s %-21s %s\n", "JOB", "STATUS", "CREATED", "DESCRIPTION");
        std::printf("%-40s %-12s %-21s %s\n", str(row, "jobId").c_str(), str(row, "status").c_str(),
                    str(row, "createdAt").c_str(), str(row, "description").c_str());
      }
      header = true;
    }
    if (token && a.all) continue;
    if (a.g.json) {
      std::cout << "{\"" << key << "\":[" << all << "]}\n";
    } else if (token) {
      std::printf("more: chunkctl job %s%s --next-token %s\n", a.command.c_str(),
                  things ? (" " + a.id).c_str() : "", token->c_str());
    }
    return kExitOk;
  }
}

std::string cancel_body(const JobArgs& a) {
  std::string out = "{\"force\":";
  out += a.force ? "true" : "false";
  if (a.reason_code) {
    out += ",\"reasonCode\":";
    chunkd::protocol::append_json_string(out, *a.reason_code);
  }
  if (a.comment) {
    out += ",\"comment\":";
    chunkd::protocol::append_json_string(out, *a.comment);
  }
  return out + "}";
}

}  // namespace

int job_main(const Global& g, const std::vector<std::string>& args) {
  const JobArgs a = parse(g, args);
  const Client client(a.g, kJobUsage);
  if (a.command == "list") return paged(client, a, "/jobs", "jobs");
  if (a.command == "things") return paged(client, a, path(a) + "/things", "executions");
  if (a.command == "watch") return job_watch(client, a);
  std::string method = "GET", target = path(a), body;
  if (a.command == "create") {
    method = "POST", body = job_create_body(a);
  } else if (a.command == "cancel") {
    method = "POST", target += "/cancel", body = cancel_body(a);
  } else if (a.command == "delete") {
    method = "DELETE";
    if (a.force) target += "?force=true";
  }
  simdjson::dom::parser parser;
  Answer r = client.call(method, target, body, parser);
  if (r.exit != kExitOk) return report(r);
  if (a.command == "create") print_warnings(r.data);
  if (a.g.json) {
    std::cout << simdjson::minify(r.data) << "\n";
  } else if (a.command == "create") {
    std::printf("created job %s, %s\n", str(r.data, "jobId").c_str(),
                str(r.data, "status").c_str());
  } else if (a.command == "cancel") {
    std::printf("canceled job %s\n", a.id.c_str());
    if (auto counts = job_counts(r.data)) std::printf("things %s\n", counts_text(*counts).c_str());
  } else if (a.command == "delete") {
    std::printf("deleted job %s\n", a.id.c_str());
  } else {
    print_job(r.data);
  }
  return kExitOk;
}

}  // namespace chunkctl

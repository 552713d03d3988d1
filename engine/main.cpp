// chunkd's entry point: arguments → config → Daemon. Only wiring; everything else is the library.
#include <cstdio>
#include <cstring>
#include <string>

#include "engine/config.hpp"
#include "engine/daemon.hpp"
#include "engine/s3_bucket.hpp"

#ifndef CHUNKD_VERSION
#define CHUNKD_VERSION "0.0.0"
#endif

namespace {

constexpr const char* kUsage =
    "usage: chunkd --config FILE [--check [--probe]]\n"
    "       chunkd --version | --help\n"
    "\n"
    "Serves files to devices in blocks over MQTT, with an HTTP control API.\n"
    "\n"
    "  --config FILE  the TOML configuration (see chunkd.example.toml)\n"
    "  --check        validate the configuration, print \"config ok\" and exit (non-zero and a\n"
    "                 message naming the bad key when it is not valid); deprecated keys are\n"
    "                 reported as warnings on stderr\n"
    "  --probe        with --check: also send each S3 bucket one signed HEAD request and print\n"
    "                 a line per bucket (non-zero when one is unreachable, missing or refuses\n"
    "                 the credentials)\n"
    "  --version      print the version and exit\n"
    "  --help         print this help and exit\n"
    "\n"
    "Runs in the foreground and logs to stderr; SIGINT or SIGTERM stops it gracefully, SIGHUP\n"
    "reloads FILE (log.level, the token file, buckets and delivery limits change at once; the\n"
    "log says which other changed keys need a restart).\n";

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check = false;
  bool probe = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("chunkd %s\n", CHUNKD_VERSION);
      return 0;
    }
    if (arg == "--check") {
      check = true;
    } else if (arg == "--probe") {
      probe = true;
    } else if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      config_path = arg.substr(std::strlen("--config="));
    } else {
      std::fprintf(stderr, "chunkd: unknown argument '%s'\n\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }
  if (probe && !check) {
    std::fprintf(stderr, "chunkd: --probe needs --check\n\n%s", kUsage);
    return 2;
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "chunkd: --config FILE is required\n\n%s", kUsage);
    return 2;
  }

  auto config = chunkd::engine::load_config(config_path);
  if (!config) {
    std::fprintf(stderr, "chunkd: %s\n", config.error().c_str());
    return 1;
  }
  if (check) {
    for (const std::string& warning : config->warnings) {
      std::fprintf(stderr, "chunkd: warning: %s\n", warning.c_str());
    }
    std::printf("config ok\n");
    if (!probe) return 0;
    bool ok = false;
    for (const std::string& line :
         chunkd::engine::probe_s3_buckets(config->control.service.s3_buckets, ok)) {
      std::printf("%s\n", line.c_str());
    }
    return ok ? 0 : 1;
  }
  chunkd::engine::Daemon daemon(std::move(*config), config_path);
  return daemon.run();
}

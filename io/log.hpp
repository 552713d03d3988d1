// Logging to stderr, one line per event: "2026-11-27T10:00:00.123Z level component: message".
// Thread-safe (one write(2) per line). Levels below the configured one are skipped cheaply.
#pragma once

#include <cstdarg>
#include <string_view>

namespace chunkd::io {

enum class LogLevel : int { Debug = 0, Info = 1, Warn = 2, Error = 3 };

void set_log_level(LogLevel level);
bool parse_log_level(std::string_view text, LogLevel& out);  // "debug", "info", "warn", "error"
const char* log_level_name(LogLevel level);                  // the inverse of parse_log_level
bool log_enabled(LogLevel level);

// printf-style; `component` is a short tag such as "mqtt" or "http".
void log(LogLevel level, const char* component, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace chunkd::io

#define CHUNKD_LOG(level, component, ...)                                                   \
  do {                                                                                      \
    if (::chunkd::io::log_enabled(level)) ::chunkd::io::log(level, component, __VA_ARGS__); \
  } while (0)
#define LOG_DEBUG(component, ...) CHUNKD_LOG(::chunkd::io::LogLevel::Debug, component, __VA_ARGS__)
#define LOG_INFO(component, ...) CHUNKD_LOG(::chunkd::io::LogLevel::Info, component, __VA_ARGS__)
#define LOG_WARN(component, ...) CHUNKD_LOG(::chunkd::io::LogLevel::Warn, component, __VA_ARGS__)
#define LOG_ERROR(component, ...) CHUNKD_LOG(::chunkd::io::LogLevel::Error, component, __VA_ARGS__)

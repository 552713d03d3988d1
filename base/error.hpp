// The one error type chunkd's layers hand each other: a std::error_code saying what kind of
// failure (errno values, a module's own enum through its error_category) and a detail naming the
// cause for a log line or an operator ("mqtt.uri: port must be 1..65535").
#pragma once

#include <string>
#include <system_error>

namespace chunkd::base {

struct Error {
  std::error_code code;
  std::string detail;  // may be empty: then code.message() says it all

  // "<detail>: <code message>", or whichever of the two is present.
  std::string message() const {
    if (detail.empty()) return code.message();
    if (!code) return detail;
    return detail + ": " + code.message();
  }
};

}  // namespace chunkd::base

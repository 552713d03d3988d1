// The OTA part of chunkload's report (--ota): outcome counts and the times from each device's
// first $next/get to its job, to its image downloaded and to its outcome reported.
// docs/chunkload.md ("OTA mode") lists the fields. Main thread only.
#pragma once

#include <string>

#include "tools/chunkload/report.hpp"

namespace chunkd::chunkload {

// `"ota":{...}` for the JSON report (no leading comma).
std::string ota_report_json(const RunResult& run);
// Lines for the text report, each "<label padded to 12><text>\n".
std::string ota_report_text(const RunResult& run);

}  // namespace chunkd::chunkload

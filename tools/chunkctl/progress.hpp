// chunkctl's progress bar: while a create or update is in flight (its POST or PUT blocks until the
// files are stored), another connection polls GET /streams/{id} for the "progress" object the
// daemon shows meanwhile (docs/control-api.md) and draws it on stderr, one line redrawn in place.
// Only when stderr is a terminal; otherwise nothing is drawn.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "base/expected.hpp"
#include "tools/common/http_client.hpp"

namespace chunkctl {

using Request = std::function<chunkd::Expected<chunkd::tools::Response, std::string>()>;

// Runs `request` on a thread of its own and returns its answer; meanwhile, when stderr is a
// terminal, polls `stream_path` on `url` every 200 ms and draws the progress.
chunkd::Expected<chunkd::tools::Response, std::string> with_progress(
    const chunkd::tools::Url& url, const std::string& stream_path,
    const std::vector<std::pair<std::string, std::string>>& headers, const Request& request);

// The bar for one poll's answer (a GET /streams/{id} body), or "" when it has no progress.
std::string progress_line(const std::string& describe_body);

}  // namespace chunkctl

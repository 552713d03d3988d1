// Private to protocol/: what the control-plane parsers (control_parse.cpp for bodies and the
// streamId, control_query.cpp for the list query) share. Not part of any contract; do not include
// outside protocol/.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/control.hpp"

namespace chunkd::protocol::detail {

// Collects every problem found in one request: counts them all, keeps the first
// kMaxErrorDetails as details.
class Problems {
 public:
  void add(std::string field, std::string problem) {
    ++total_;
    if (details_.size() < kMaxErrorDetails) {
      details_.push_back(FieldProblem{std::move(field), std::move(problem)});
    }
  }
  std::size_t total() const { return total_; }

  // "request body has 3 invalid fields" (+ " (first 100 listed)" when capped).
  ApiError to_error(std::string_view subject, std::string_view noun) && {
    std::string message(subject);
    message += " has ";
    message += std::to_string(total_);
    message += ' ';
    message += noun;
    if (total_ != 1) message += 's';
    if (total_ > details_.size()) {
      message += " (first ";
      message += std::to_string(details_.size());
      message += " listed)";
    }
    return ApiError{ApiErrorCode::ValidationError, std::move(message), std::move(details_)};
  }

 private:
  std::size_t total_ = 0;
  std::vector<FieldProblem> details_;
};

}  // namespace chunkd::protocol::detail

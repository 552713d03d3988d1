// A store write's outcome, captured by the callback a test hands the store (registry, jobs store,
// jobs lease): whether it ran, once, and with which error.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <system_error>

namespace chunkd::test {

struct Outcome {
  bool called = false;
  std::error_code error;
};

inline std::function<void(std::error_code)> capture(Outcome& outcome) {
  return [&outcome](std::error_code error) {
    EXPECT_FALSE(outcome.called) << "callback ran twice";
    outcome.called = true;
    outcome.error = error;
  };
}

}  // namespace chunkd::test

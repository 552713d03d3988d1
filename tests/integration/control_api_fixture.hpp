// Helpers for the control API tests (tests/integration/control_api*_test.cpp), which drive the
// real chunkd binary over HTTP as an operator would: the error envelope and its details, the ids
// of a list page, and a device download to compare with the bytes a stream was created from.
#pragma once

#include <gtest/gtest.h>
#include <simdjson.h>

#include <string>
#include <string_view>
#include <vector>

#include "tests/integration/api.hpp"

namespace chunkd::test {

// The error envelope: success false, the code, a message; the status matches the code.
inline ::testing::AssertionResult is_error(const HttpClientResponse& r, int status,
                                           std::string_view code) {
  if (r.status != status) {
    return ::testing::AssertionFailure()
           << "status " << r.status << " (want " << status << "): " << r.body << r.error;
  }
  Json j(r.body);
  if (!j.ok()) return ::testing::AssertionFailure() << "not JSON: " << r.body;
  if (j.boolean("/success") != false) return ::testing::AssertionFailure() << r.body;
  if (j.str("/error/code") != std::string(code)) {
    return ::testing::AssertionFailure() << "code (want " << code << "): " << r.body;
  }
  auto message = j.str("/error/message");
  if (!message || message->empty())
    return ::testing::AssertionFailure() << "no message: " << r.body;
  return ::testing::AssertionSuccess();
}

// True when the error details name `field`.
inline bool names_field(const HttpClientResponse& r, std::string_view field) {
  Json j(r.body);
  auto details = j.at("/error/details");
  simdjson::dom::array a;
  if (!details || details->get(a) != simdjson::SUCCESS) return false;
  for (auto d : a) {
    std::string_view f;
    if (d["field"].get(f) == simdjson::SUCCESS && f == field) return true;
  }
  return false;
}

inline std::vector<std::string> detail_fields(const HttpClientResponse& r) {
  std::vector<std::string> out;
  Json j(r.body);
  auto details = j.at("/error/details");
  simdjson::dom::array a;
  if (!details || details->get(a) != simdjson::SUCCESS) return out;
  for (auto d : a) {
    std::string_view f;
    if (d["field"].get(f) == simdjson::SUCCESS) out.emplace_back(f);
  }
  return out;
}

// Downloads file 0 of `stream` as device `thing` and compares it with `expected`.
inline ::testing::AssertionResult downloads_as(Stack& stack, const std::string& thing,
                                               const std::string& stream,
                                               const std::string& expected,
                                               protocol::Format format = protocol::Format::Cbor) {
  auto dev = stack.device(thing, stream);
  if (!dev) return ::testing::AssertionFailure() << "no device";
  DownloadOptions opts;
  opts.block_size = 4096;
  auto r = dev->download(stream, format, 0, opts);
  if (!r.ok) return ::testing::AssertionFailure() << stream << ": " << r.error;
  if (bytes_to_string(r.bytes) != expected) {
    return ::testing::AssertionFailure()
           << stream << ": downloaded bytes differ (" << r.bytes.size() << " vs " << expected.size()
           << " bytes)";
  }
  return ::testing::AssertionSuccess();
}

inline std::vector<std::string> list_ids(const HttpClientResponse& r) {
  std::vector<std::string> ids;
  Json j(r.body);
  auto streams = j.at("/data/streams");
  simdjson::dom::array a;
  if (!streams || streams->get(a) != simdjson::SUCCESS) return ids;
  for (auto s : a) {
    std::string_view id;
    if (s["id"].get(id) == simdjson::SUCCESS) ids.emplace_back(id);
  }
  return ids;
}

}  // namespace chunkd::test

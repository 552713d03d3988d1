// Helpers for integration tests that talk to the control API as an operator: request bodies,
// JSON answers parsed with simdjson, and a fixture-free "broker + daemon + bucket" bundle.
// Header-only; for the test thread.
#pragma once

#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/integration/device.hpp"
#include "tests/support/broker.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/http_client.hpp"

namespace chunkd::test {

// A parsed JSON document that keeps its parser alive.
class Json {
 public:
  explicit Json(std::string_view text) : parser_(std::make_unique<simdjson::dom::parser>()) {
    ok_ = parser_->parse(text.data(), text.size()).get(root_) == simdjson::SUCCESS;
  }
  bool ok() const { return ok_; }
  simdjson::dom::element root() const { return root_; }

  std::optional<simdjson::dom::element> at(std::string_view pointer) const {
    if (!ok_) return std::nullopt;
    simdjson::dom::element e;
    if (root_.at_pointer(pointer).get(e) != simdjson::SUCCESS) return std::nullopt;
    return e;
  }
  bool has(std::string_view pointer) const { return at(pointer).has_value(); }
  std::optional<std::string> str(std::string_view pointer) const {
    auto e = at(pointer);
    std::string_view v;
    if (!e || e->get(v) != simdjson::SUCCESS) return std::nullopt;
    return std::string(v);
  }
  std::optional<std::uint64_t> u64(std::string_view pointer) const {
    auto e = at(pointer);
    std::uint64_t v;
    if (!e || e->get(v) != simdjson::SUCCESS) return std::nullopt;
    return v;
  }
  std::optional<bool> boolean(std::string_view pointer) const {
    auto e = at(pointer);
    bool v;
    if (!e || e->get(v) != simdjson::SUCCESS) return std::nullopt;
    return v;
  }
  std::size_t array_size(std::string_view pointer) const {
    auto e = at(pointer);
    simdjson::dom::array a;
    if (!e || e->get(a) != simdjson::SUCCESS) return 0;
    return a.size();
  }

 private:
  std::unique_ptr<simdjson::dom::parser> parser_;
  simdjson::dom::element root_;
  bool ok_ = false;
};

struct FileRef {
  std::uint32_t file_id = 0;
  std::string bucket;
  std::string key;
  std::optional<std::string> version;
};

inline std::string json_quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

inline std::string files_json(const std::vector<FileRef>& files) {
  std::string out = "[";
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto& f = files[i];
    if (i > 0) out += ",";
    out += "{\"fileId\":" + std::to_string(f.file_id) +
           ",\"s3Location\":{\"bucket\":" + json_quote(f.bucket) + ",\"key\":" + json_quote(f.key);
    if (f.version) out += ",\"version\":" + json_quote(*f.version);
    out += "}}";
  }
  return out + "]";
}

inline const std::string kRoleArn = "arn:chunkd:role/integration-test";

inline std::string create_body(const std::vector<FileRef>& files,
                               std::string_view description = "integration test stream",
                               std::string_view tags_json = "") {
  std::string out = "{\"description\":" + json_quote(description) +
                    ",\"files\":" + files_json(files) + ",\"roleArn\":" + json_quote(kRoleArn);
  if (!tags_json.empty()) out += ",\"tags\":" + std::string(tags_json);
  return out + "}";
}

// A broker, a daemon with bucket "fw", and helpers to create streams and devices.
// Configure with daemon.set()/add_bucket() between construction and start().
class Stack {
 public:
  Stack() : daemon_(std::make_unique<TestDaemon>("")) {}

  // Starts the broker, then the daemon (with the broker's URI).
  ::testing::AssertionResult start_broker() {
    if (!broker.start()) return ::testing::AssertionFailure() << broker.error();
    daemon().set("mqtt", "uri", TestDaemon::quote(broker.uri()));
    if (bucket_.empty()) bucket_ = daemon().add_bucket("fw");
    return ::testing::AssertionSuccess();
  }
  ::testing::AssertionResult start() {
    if (!broker.running()) {
      auto r = start_broker();
      if (!r) return r;
    }
    if (!daemon().start()) return ::testing::AssertionFailure() << daemon().error();
    return ::testing::AssertionSuccess();
  }

  TestDaemon& daemon() { return *daemon_; }
  const std::string& bucket_dir() {
    if (bucket_.empty()) bucket_ = daemon().add_bucket("fw");
    return bucket_;
  }
  // Writes a file into bucket "fw" and returns its key.
  std::string put(const std::string& key, const std::string& bytes) {
    write_file(bucket_dir() + "/" + key, bytes);
    return key;
  }

  HttpClientResponse request(std::string_view method, std::string_view target,
                             std::string_view body = {}, HttpClient::Headers headers = {}) {
    if (!http_) http_ = std::make_unique<HttpClient>(daemon().http());
    if (!http_->connected()) http_->connect();
    for (auto& h : daemon().auth()) headers.push_back(h);
    if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
    return http_->request(method, target, body, headers);
  }
  void reset_http() { http_.reset(); }

  // Creates stream `id` with one file per entry; returns the response.
  HttpClientResponse create(const std::string& id, const std::vector<FileRef>& files,
                            std::string_view description = "integration test stream") {
    return request("POST", "/streams/" + id, create_body(files, description));
  }
  // Creates stream `id` of one file (fileId 0) with `bytes` under key `<id>.bin`.
  ::testing::AssertionResult create_file_stream(const std::string& id, const std::string& bytes) {
    std::string key = put(id + ".bin", bytes);
    auto r = create(id, {{0, "fw", key, std::nullopt}});
    if (r.status != 201 && r.status != 200) {
      return ::testing::AssertionFailure() << "create " << id << ": " << r.status << " " << r.body
                                           << " " << r.error << "\nchunkd's log:\n"
                                           << daemon().log();
    }
    return ::testing::AssertionSuccess();
  }

  std::unique_ptr<Device> device(const std::string& thing, const std::string& stream) {
    auto d = std::make_unique<Device>(broker.uri(), thing);
    if (!d->connect()) {
      ADD_FAILURE() << "device " << thing << " did not connect: " << d->mqtt().error();
      return nullptr;
    }
    if (!stream.empty() && !d->watch(stream)) {
      ADD_FAILURE() << "device " << thing << " did not subscribe: " << d->mqtt().error();
      return nullptr;
    }
    return d;
  }

  TestBroker broker;

 private:
  std::unique_ptr<TestDaemon> daemon_;
  std::unique_ptr<HttpClient> http_;
  std::string bucket_;
};

inline std::string bytes_to_string(const std::vector<std::byte>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// The value of `sample` (a metric name with its labels, as /metrics writes it) in the text of
// /metrics; -1 when it is absent.
inline double metric_value(const std::string& metrics, const std::string& sample) {
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(sample + " ", 0) == 0) return std::stod(line.substr(sample.size() + 1));
  }
  return -1;
}

}  // namespace chunkd::test

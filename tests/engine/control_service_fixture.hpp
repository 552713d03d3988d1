// The control service under test (tests/engine/control_service*_test.cpp): ControlServiceTest
// builds what the daemon builds (registry, catalog, content store on a thread-pool file reader,
// metrics, health, ControlService) over a temporary directory with a "firmware" bucket, and hands
// it requests as io::HttpServer would; Json reads the answers, create_body/file_json write them.
#pragma once

#include <gtest/gtest.h>
#include <simdjson.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/content_store.hpp"
#include "engine/control_service.hpp"
#include "engine/metrics.hpp"
#include "engine/stream_health.hpp"
#include "io/file_reader.hpp"
#include "io/http_server.hpp"
#include "io/registry_store.hpp"
#include "tests/support/loop.hpp"

namespace chunkd::engine::testing {

namespace fs = std::filesystem;

inline constexpr const char* kRole = "arn:aws:iam::123456789012:role/stream";

inline std::string digest_of(const std::string& data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

inline std::string file_json(int file_id, const std::string& key,
                             const std::string& bucket = "firmware",
                             const std::string& version = {}) {
  std::string out = "{\"fileId\":" + std::to_string(file_id) + ",\"s3Location\":{\"bucket\":\"" +
                    bucket + "\",\"key\":\"" + key + "\"";
  if (!version.empty()) out += ",\"version\":\"" + version + "\"";
  return out + "}}";
}

inline std::string create_body(const std::vector<std::string>& files,
                               const std::string& description = "d") {
  std::string out =
      "{\"description\":\"" + description + "\",\"roleArn\":\"" + kRole + "\",\"files\":[";
  for (std::size_t i = 0; i < files.size(); ++i) out += (i ? "," : "") + files[i];
  return out + "],\"tags\":[{\"Key\":\"team\",\"Value\":\"ota\"}]}";
}

// A parsed JSON answer; field access in the tests goes through these helpers.
struct Json {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  bool ok = false;
  explicit Json(const std::string& text) {
    auto r = parser.parse(text);
    ok = r.error() == simdjson::SUCCESS;
    if (ok) root = r.value_unsafe();
  }
  simdjson::dom::element at(std::string_view pointer) const {
    auto r = root.at_pointer(pointer);
    EXPECT_EQ(r.error(), simdjson::SUCCESS) << pointer;
    return r.error() == simdjson::SUCCESS ? r.value_unsafe() : simdjson::dom::element();
  }
  std::string str(std::string_view pointer) const {
    auto r = root.at_pointer(pointer).get_string();
    return r.error() == simdjson::SUCCESS ? std::string(r.value_unsafe()) : std::string("<none>");
  }
  std::uint64_t num(std::string_view pointer) const {
    auto r = root.at_pointer(pointer).get_uint64();
    EXPECT_EQ(r.error(), simdjson::SUCCESS) << pointer;
    return r.error() == simdjson::SUCCESS ? r.value_unsafe() : 0;
  }
  bool has(std::string_view pointer) const {
    return root.at_pointer(pointer).error() == simdjson::SUCCESS;
  }
  std::size_t size(std::string_view pointer) const {
    auto r = root.at_pointer(pointer).get_array();
    return r.error() == simdjson::SUCCESS ? r.value_unsafe().size() : 0;
  }
  // Every "field" of error.details.
  std::vector<std::string> detail_fields() const {
    std::vector<std::string> out;
    auto arr = root.at_pointer("/error/details").get_array();
    if (arr.error() != simdjson::SUCCESS) return out;
    for (auto d : arr.value_unsafe()) {
      auto f = d["field"].get_string();
      if (f.error() == simdjson::SUCCESS) out.emplace_back(f.value_unsafe());
    }
    return out;
  }
};

inline const std::string* find_header(const io::HttpResponse& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

struct Options {
  std::string token;
  std::size_t max_streams = 10000;
  std::size_t max_concurrent_ingests = 2;
  std::uint64_t max_file_bytes = std::uint64_t{4096} << 20;
  // The store's free space and writability (seams); a test changes them while it runs.
  std::shared_ptr<std::atomic<std::uint64_t>> free_bytes =
      std::make_shared<std::atomic<std::uint64_t>>(std::uint64_t{1} << 40);
  std::shared_ptr<std::atomic<int>> writable_errno = std::make_shared<std::atomic<int>>(0);
};

class ControlServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "chunkd-control-XXXXXX").string();
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
    fs::create_directories(dir_ + "/fw/sub");
    fs::create_directories(dir_ + "/data");
    put("fw.bin", fw_);
    put("app.bin", app_);
    std::ofstream(dir_ + "/outside.txt") << "secret";
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    io::FileReaderOptions ro;
    ro.backend = io::FileReaderOptions::Backend::ThreadPool;
    auto setup = io::make_file_reader(&loop_, ro);
    ASSERT_TRUE(setup) << setup.error().message();
    reader_ = std::move(setup->reader);
    start();
  }

  void TearDown() override {
    stop();
    bool closed = false;
    reader_->close([&] { closed = true; });
    run_until([&] { return closed; });
    reader_.reset();
    EXPECT_EQ(uv_run(&loop_, UV_RUN_DEFAULT), 0);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  // Opens the registry, loads the catalog and builds the store and the service, as the daemon.
  void start(Options options = {}) {
    std::error_code error;
    std::string message;
    auto opened = io::RegistryStore::open(&loop_, dir_ + "/data");
    ASSERT_TRUE(opened) << opened.error().message();
    registry_ = std::move(*opened);
    catalog_ = std::make_unique<Catalog>();
    auto streams = registry_->load_all();
    ASSERT_TRUE(streams) << streams.error().message();
    for (auto& s : *streams) {
      catalog_->put(std::make_shared<const io::StoredStream>(std::move(s)));
    }
    metrics_ = std::make_unique<Metrics>();
    ContentStoreOptions so;
    so.data_dir = dir_ + "/data";
    so.extent_bytes = 64 * 1024;
    so.try_reflink = false;  // every ingest copies, so the free-space check applies
    so.max_file_bytes = options.max_file_bytes;
    so.free_space = [free = options.free_bytes](const std::string&, std::uint64_t& available) {
      available = free->load();
      return 0;
    };
    so.check_writable = [e = options.writable_errno](const std::string&) { return e->load(); };
    store_ = std::make_unique<ContentStore>(&loop_, *reader_, metrics_.get(), clock_, so,
                                            [this] { return catalog_->referenced_digests(); });
    ASSERT_FALSE(store_->open(message)) << message;
    ControlOptions co;
    co.buckets = {{"firmware", dir_ + "/fw"}};
    co.token = options.token;
    co.max_streams = options.max_streams;
    co.max_concurrent_ingests = options.max_concurrent_ingests;
    health_ = std::make_unique<StreamHealth>(*catalog_, *metrics_, clock_);
    control_ = std::make_unique<ControlService>(&loop_, *catalog_, *registry_, *store_, *metrics_,
                                                clock_, co, health_.get());
    auto buckets = control_->open();
    ASSERT_TRUE(buckets) << buckets.error().message();
  }

  void stop() {
    if (!control_) return;
    bool control_closed = false;
    bool store_closed = false;
    bool registry_closed = false;
    control_->close([&] { control_closed = true; });
    run_until([&] { return control_closed; });
    store_->close([&] { store_closed = true; });
    run_until([&] { return store_closed; });
    registry_->close([&] { registry_closed = true; });
    run_until([&] { return registry_closed; });
    control_.reset();
    health_.reset();
    store_.reset();
    registry_.reset();
    catalog_.reset();
    metrics_.reset();
  }

  void restart(Options options = {}) {
    stop();
    start(options);
  }

  void put(const std::string& rel, const std::string& data) {
    std::ofstream(dir_ + "/fw/" + rel, std::ios::binary) << data;
  }

  void run_until(const std::function<bool()>& done) {
    ASSERT_TRUE(test::run_until(&loop_, done)) << "timed out";
  }

  io::HttpRequest request(std::string method, std::string path, std::string body = {},
                          std::string query = {}) {
    io::HttpRequest r;
    r.method = std::move(method);
    r.path = std::move(path);
    r.query = std::move(query);
    r.body = std::move(body);
    r.peer = "127.0.0.1:1";
    if (!token_.empty()) r.headers.emplace_back("authorization", "Bearer " + token_);
    return r;
  }

  // Hands the request to the service and returns a slot the response lands in.
  std::shared_ptr<std::optional<io::HttpResponse>> send(io::HttpRequest r) {
    auto slot = std::make_shared<std::optional<io::HttpResponse>>();
    control_->handle(std::move(r), [slot](io::HttpResponse response) {
      EXPECT_FALSE(slot->has_value()) << "answered twice";
      *slot = std::move(response);
    });
    return slot;
  }
  io::HttpResponse wait(const std::shared_ptr<std::optional<io::HttpResponse>>& slot) {
    run_until([&] { return slot->has_value(); });
    return slot->value_or(io::HttpResponse{});
  }
  io::HttpResponse call(io::HttpRequest r) { return wait(send(std::move(r))); }
  io::HttpResponse call(std::string method, std::string path, std::string body = {},
                        std::string query = {}) {
    return call(request(std::move(method), std::move(path), std::move(body), std::move(query)));
  }

  std::size_t blob_files() const {
    std::size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_ + "/data/blobs")) {
      if (e.is_regular_file()) n++;
    }
    return n;
  }

  std::string dir_;
  std::string fw_ = std::string(200000, 'f') + "end-of-firmware";
  std::string app_ = "application image";
  std::string token_;
  uv_loop_t loop_{};
  ManualClock clock_;
  std::unique_ptr<io::FileReader> reader_;
  std::unique_ptr<io::RegistryStore> registry_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ContentStore> store_;
  std::unique_ptr<StreamHealth> health_;
  std::unique_ptr<ControlService> control_;
};

}  // namespace chunkd::engine::testing

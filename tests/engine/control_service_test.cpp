#include "engine/control_service.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/block_cache.hpp"
#include "engine/catalog.hpp"
#include "engine/clock.hpp"
#include "engine/content_store.hpp"
#include "engine/metrics.hpp"
#include "engine/stream_health.hpp"
#include "io/file_reader.hpp"
#include "io/http_server.hpp"
#include "io/registry_store.hpp"

namespace chunkd::engine {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRole = "arn:aws:iam::123456789012:role/stream";

std::string digest_of(const std::string& data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

std::string file_json(int file_id, const std::string& key, const std::string& bucket = "firmware",
                      const std::string& version = {}) {
  std::string out = "{\"fileId\":" + std::to_string(file_id) + ",\"s3Location\":{\"bucket\":\"" +
                    bucket + "\",\"key\":\"" + key + "\"";
  if (!version.empty()) out += ",\"version\":\"" + version + "\"";
  return out + "}}";
}

std::string create_body(const std::vector<std::string>& files,
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

const std::string* find_header(const io::HttpResponse& r, std::string_view name) {
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
    uv_timer_t guard;
    uv_timer_init(&loop_, &guard);
    bool expired = false;
    guard.data = &expired;
    uv_timer_start(
        &guard, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 60000, 0);
    while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    ASSERT_FALSE(expired) << "timed out";
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

TEST_F(ControlServiceTest, CreateThenDescribe) {
  auto r = call("POST", "/streams/fw-1",
                create_body({file_json(0, "fw.bin"), file_json(7, "app.bin")}, "firmware 1.2"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  Json created(r.body);
  ASSERT_TRUE(created.ok) << r.body;
  EXPECT_TRUE(created.at("/success").get_bool().value_unsafe());
  EXPECT_EQ(created.str("/data/id"), "fw-1");
  EXPECT_EQ(created.str("/data/streamId"), "fw-1");
  EXPECT_EQ(created.str("/data/streamArn"), "arn:chunkd:stream/fw-1");
  EXPECT_EQ(created.num("/data/streamVersion"), 1u);
  EXPECT_EQ(created.str("/data/description"), "firmware 1.2");
  EXPECT_EQ(created.str("/data/created_at"), rfc3339_utc(clock_.unix_ms()));
  EXPECT_FALSE(created.has("/data/warnings"));

  r = call("GET", "/streams/fw-1");
  ASSERT_EQ(r.status, 200) << r.body;
  Json d(r.body);
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.num("/data/streamVersion"), 1u);
  EXPECT_EQ(d.str("/data/roleArn"), kRole);
  EXPECT_EQ(d.str("/data/tags/0/Key"), "team");
  EXPECT_EQ(d.str("/data/tags/0/Value"), "ota");
  ASSERT_EQ(d.size("/data/files"), 2u);
  EXPECT_EQ(d.num("/data/files/0/fileId"), 0u);
  EXPECT_EQ(d.num("/data/files/0/sizeBytes"), fw_.size());
  EXPECT_EQ(d.str("/data/files/0/digest"), digest_of(fw_));
  EXPECT_EQ(d.str("/data/files/0/s3Location/key"), "fw.bin");
  EXPECT_EQ(d.num("/data/files/1/fileId"), 7u);
  EXPECT_EQ(d.str("/data/files/1/digest"), digest_of(app_));

  // The catalog holds the manifest the data plane checks extents against.
  auto s = catalog_->find("fw-1");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->files[0].extent_bytes, 64u * 1024);
  EXPECT_EQ(s->files[0].manifest.size(), 4u);
  EXPECT_EQ(s->files[0].manifest[0], XXH3_64bits(fw_.data(), 64 * 1024));
  EXPECT_EQ(blob_files(), 2u);
}

TEST_F(ControlServiceTest, StreamIsImmutableWhenTheSourceChanges) {
  ASSERT_EQ(call("POST", "/streams/s", create_body({file_json(0, "app.bin")})).status, 201);
  put("app.bin", "something else entirely");
  auto d = Json(call("GET", "/streams/s").body);
  EXPECT_EQ(d.str("/data/files/0/digest"), digest_of(app_));
  std::ifstream in(blob_path(dir_ + "/data", digest_of(app_)), std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), app_);
}

TEST_F(ControlServiceTest, BodyAndIdValidation) {
  auto r = call("POST", "/streams/x", "not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).str("/error/code"), "VALIDATION_ERROR");
  r = call("POST", "/streams/x", R"({"files":[],"roleArn":"short"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_FALSE(Json(r.body).detail_fields().empty());
  r = call("POST", "/streams/bad.id", create_body({file_json(0, "fw.bin")}));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).str("/error/code"), "VALIDATION_ERROR");
  r = call("GET", "/streams/" + std::string(129, 'a'));
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(catalog_->size() == 0);
}

TEST_F(ControlServiceTest, UnknownBucketNamesTheField) {
  auto r = call("POST", "/streams/x",
                create_body({file_json(0, "fw.bin"), file_json(1, "fw.bin", "nope")}));
  ASSERT_EQ(r.status, 400);
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "VALIDATION_ERROR");
  EXPECT_EQ(j.detail_fields(), std::vector<std::string>{"files[1].s3Location.bucket"});
}

TEST_F(ControlServiceTest, BadKeysNameTheField) {
  fs::create_symlink(dir_ + "/outside.txt", dir_ + "/fw/link-out");
  fs::create_symlink("../outside.txt", dir_ + "/fw/rel-out");
  const std::vector<std::string> keys = {"missing.bin",
                                         "../outside.txt",
                                         "sub/../../outside.txt",
                                         "/etc/passwd",
                                         "link-out",
                                         "rel-out",
                                         "sub",
                                         "fw.bin/x",
                                         "a//b",
                                         std::string(1100, 'k')};
  for (const auto& key : keys) {
    auto r = call("POST", "/streams/x", create_body({file_json(0, "fw.bin"), file_json(1, key)}));
    ASSERT_EQ(r.status, 400) << key << ": " << r.body;
    Json j(r.body);
    EXPECT_EQ(j.str("/error/code"), "VALIDATION_ERROR") << key;
    EXPECT_EQ(j.detail_fields(), std::vector<std::string>{"files[1].s3Location.key"})
        << key << ": " << r.body;
  }
  EXPECT_EQ(catalog_->size(), 0u);
  EXPECT_EQ(blob_files(), 0u);  // nothing was ingested: the files are opened first
  EXPECT_EQ(control_->operations_in_progress(), 0u);
}

TEST_F(ControlServiceTest, UnreadableFileNamesTheKey) {
  ASSERT_EQ(::chmod((dir_ + "/fw/app.bin").c_str(), 0), 0);
  // Root reads every file: drop to an unprivileged effective uid (process-wide, so the thread
  // pool that opens the file has it too) while the request runs.
  const bool root = ::geteuid() == 0;
  if (root) ASSERT_EQ(::seteuid(65534), 0);
  auto r = call("POST", "/streams/x", create_body({file_json(0, "app.bin")}));
  if (root) ASSERT_EQ(::seteuid(0), 0);
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"files[0].s3Location.key"});
  EXPECT_NE(r.body.find("permission denied"), std::string::npos) << r.body;
}

TEST_F(ControlServiceTest, PinnedVersionMustMatchTheDigest) {
  auto r = call("POST", "/streams/x",
                create_body({file_json(0, "fw.bin", "firmware", digest_of(fw_)),
                             file_json(1, "app.bin", "firmware", std::string(32, '0'))}));
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"files[1].s3Location.version"});
  EXPECT_FALSE(catalog_->find("x"));
  // The ingested blobs are left for GC, which runs once nothing is pinned.
  run_until([&] { return blob_files() == 0; });

  r = call("POST", "/streams/x", create_body({file_json(0, "fw.bin", "firmware", digest_of(fw_))}));
  EXPECT_EQ(r.status, 201) << r.body;
}

TEST_F(ControlServiceTest, DuplicateCreateIs409) {
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "app.bin")})).status, 201);
  auto r = call("POST", "/streams/a", create_body({file_json(0, "app.bin")}));
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(Json(r.body).str("/error/code"), "ALREADY_EXISTS");
}

TEST_F(ControlServiceTest, ConcurrentChangesOfOneIdAre409) {
  // The first create is still opening its files when the second arrives.
  auto first = send(request("POST", "/streams/a", create_body({file_json(0, "fw.bin")})));
  auto second = send(request("POST", "/streams/a", create_body({file_json(0, "app.bin")})));
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ((*second)->status, 409);
  // Not committed yet (its progress) or already (the stream): found either way.
  auto describe = call("GET", "/streams/a");
  EXPECT_EQ(describe.status, 200) << describe.body;
  Json described(describe.body);
  if (described.has("/data/status")) {
    EXPECT_EQ(described.str("/data/status"), "CREATING") << describe.body;
    EXPECT_EQ(described.num("/data/progress/files"), 1u) << describe.body;
    EXPECT_EQ(described.num("/data/progress/file"), 0u) << describe.body;
    EXPECT_FALSE(described.has("/data/streamVersion")) << describe.body;
  }
  EXPECT_EQ(wait(first).status, 201);

  auto update =
      send(request("PUT", "/streams/a", R"({"files":[)" + file_json(0, "app.bin") + "]}"));
  auto update2 = send(request("PUT", "/streams/a", R"({"description":"x"})"));
  auto del = send(request("DELETE", "/streams/a"));
  ASSERT_TRUE(update2->has_value());
  ASSERT_TRUE(del->has_value());
  EXPECT_EQ((*update2)->status, 409);
  EXPECT_EQ((*del)->status, 409);
  EXPECT_EQ(wait(update).status, 200);
  EXPECT_EQ(call("DELETE", "/streams/a").status, 200);
}

TEST_F(ControlServiceTest, TooManyIngestsIs429) {
  restart(Options{.max_concurrent_ingests = 1});
  auto first = send(request("POST", "/streams/a", create_body({file_json(0, "fw.bin")})));
  auto second = call("POST", "/streams/b", create_body({file_json(0, "app.bin")}));
  EXPECT_EQ(second.status, 429);
  EXPECT_EQ(Json(second.body).str("/error/code"), "RATE_LIMITED");
  ASSERT_NE(find_header(second, "Retry-After"), nullptr);
  // An update without files does not ingest and is not limited.
  EXPECT_EQ(wait(first).status, 201);
  auto again = send(request("PUT", "/streams/a", R"({"files":[)" + file_json(0, "app.bin") + "]}"));
  auto meta = call("PUT", "/streams/b", R"({"description":"x"})");
  EXPECT_EQ(meta.status, 404);  // b was never created, but the limit did not stop it
  EXPECT_EQ(wait(again).status, 200);
  EXPECT_EQ(call("POST", "/streams/b", create_body({file_json(0, "app.bin")})).status, 201);
}

TEST_F(ControlServiceTest, MaxStreamsIs422) {
  restart(Options{.max_streams = 2});
  EXPECT_EQ(call("POST", "/streams/a", create_body({file_json(0, "app.bin")})).status, 201);
  auto pending = send(request("POST", "/streams/b", create_body({file_json(0, "app.bin")})));
  auto r = call("POST", "/streams/c", create_body({file_json(0, "app.bin")}));
  EXPECT_EQ(r.status, 422);  // b in progress counts
  EXPECT_EQ(Json(r.body).str("/error/code"), "LIMIT_EXCEEDED");
  EXPECT_EQ(wait(pending).status, 201);
  EXPECT_EQ(call("DELETE", "/streams/a").status, 200);
  EXPECT_EQ(call("POST", "/streams/c", create_body({file_json(0, "app.bin")})).status, 201);
}

TEST_F(ControlServiceTest, UpdateBumpsVersionAndReplacesOnlyGivenFields) {
  ASSERT_EQ(call("POST", "/streams/s", create_body({file_json(0, "fw.bin")}, "one")).status, 201);
  clock_.advance_ms(5000);
  auto r = call("PUT", "/streams/s", R"({"description":"two"})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json u(r.body);
  EXPECT_EQ(u.num("/data/streamVersion"), 2u);
  EXPECT_EQ(u.str("/data/description"), "two");
  Json d(call("GET", "/streams/s").body);
  EXPECT_EQ(d.num("/data/streamVersion"), 2u);
  EXPECT_EQ(d.str("/data/roleArn"), kRole);
  EXPECT_EQ(d.str("/data/files/0/digest"), digest_of(fw_));
  EXPECT_EQ(d.str("/data/tags/0/Key"), "team");
  EXPECT_NE(d.str("/data/created_at"), d.str("/data/updated_at"));

  // New files: re-ingested, version 3; the old blob is collected.
  put("fw.bin", "firmware 2");
  r = call("PUT", "/streams/s", R"({"files":[)" + file_json(3, "fw.bin") + "]}");
  ASSERT_EQ(r.status, 200) << r.body;
  Json d3(call("GET", "/streams/s").body);
  EXPECT_EQ(d3.num("/data/streamVersion"), 3u);
  EXPECT_EQ(d3.str("/data/description"), "two");
  ASSERT_EQ(d3.size("/data/files"), 1u);
  EXPECT_EQ(d3.num("/data/files/0/fileId"), 3u);
  EXPECT_EQ(d3.str("/data/files/0/digest"), digest_of("firmware 2"));
  run_until([&] { return blob_files() == 1; });
  EXPECT_TRUE(fs::exists(blob_path(dir_ + "/data", digest_of("firmware 2"))));

  EXPECT_EQ(call("PUT", "/streams/none", R"({"description":"x"})").status, 404);
  EXPECT_EQ(call("PUT", "/streams/s", "{}").status, 400);
  r = call("PUT", "/streams/s", R"({"files":[)" + file_json(0, "missing") + "]}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"files[0].s3Location.key"});
  EXPECT_EQ(Json(call("GET", "/streams/s").body).num("/data/streamVersion"), 3u);
}

// allowedThings: set at create, shown by create, describe and list, reaching the catalog the data
// plane reads; an update of it alone changes the rule but not the version (the content devices
// download is the same), null removes it, and it survives a restart.
TEST_F(ControlServiceTest, AllowedThingsAreStoredShownReplacedAndRemoved) {
  std::string body = create_body({file_json(0, "fw.bin")});
  body.insert(body.size() - 1, R"(,"allowedThings":["sensor-*","gw-0?"])");
  auto r = call("POST", "/streams/g", body);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Json(r.body).size("/data/allowedThings"), 2u);
  ASSERT_EQ(call("POST", "/streams/open", create_body({file_json(0, "app.bin")})).status, 201);
  auto catalog_list = [&](std::string_view id) { return catalog_->find(id)->allowed_things; };
  EXPECT_EQ(catalog_list("g"), (std::vector<std::string>{"sensor-*", "gw-0?"}));
  EXPECT_EQ(catalog_list("open"), std::nullopt);

  Json d(call("GET", "/streams/g").body);
  EXPECT_EQ(d.str("/data/allowedThings/0"), "sensor-*");
  EXPECT_EQ(d.str("/data/allowedThings/1"), "gw-0?");
  EXPECT_FALSE(Json(call("GET", "/streams/open").body).has("/data/allowedThings"));
  Json listed(call("GET", "/streams").body);
  EXPECT_EQ(listed.str("/data/streams/0/streamId"), "g");
  EXPECT_EQ(listed.size("/data/streams/0/allowedThings"), 2u);
  EXPECT_FALSE(listed.has("/data/streams/1/allowedThings"));

  clock_.advance_ms(1000);
  r = call("PUT", "/streams/g", R"({"allowedThings":["gw-*"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json u(r.body);
  EXPECT_EQ(u.num("/data/streamVersion"), 1u) << "who may read is not a new version";
  EXPECT_EQ(u.str("/data/allowedThings/0"), "gw-*");
  EXPECT_NE(u.str("/data/updated_at"), u.str("/data/created_at"));
  EXPECT_EQ(catalog_list("g"), std::vector<std::string>{"gw-*"});

  r = call("PUT", "/streams/g", R"({"description":"two","allowedThings":["a","b"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r.body).num("/data/streamVersion"), 2u) << "with another field: a new version";
  r = call("PUT", "/streams/g", R"({"description":"three"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(catalog_list("g"), (std::vector<std::string>{"a", "b"})) << "untouched when absent";

  r = call("PUT", "/streams/g", R"({"allowedThings":["bad thing"]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"allowedThings[0]"});
  EXPECT_EQ(catalog_list("g"), (std::vector<std::string>{"a", "b"}));

  restart();
  EXPECT_EQ(catalog_list("g"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(catalog_list("open"), std::nullopt);
  r = call("PUT", "/streams/g", R"({"allowedThings":null})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Json(r.body).has("/data/allowedThings"));
  EXPECT_EQ(catalog_list("g"), std::nullopt);
  restart();
  EXPECT_EQ(catalog_list("g"), std::nullopt);
  EXPECT_EQ(Json(call("GET", "/streams/g").body).num("/data/streamVersion"), 3u);
}

TEST_F(ControlServiceTest, DeleteThenDescribeIs404) {
  ASSERT_EQ(call("POST", "/streams/s", create_body({file_json(0, "fw.bin")})).status, 201);
  auto r = call("DELETE", "/streams/s");
  ASSERT_EQ(r.status, 200);
  Json j(r.body);
  EXPECT_EQ(j.str("/data/id"), "s");
  r = call("GET", "/streams/s");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Json(r.body).str("/error/code"), "NOT_FOUND");
  EXPECT_EQ(call("DELETE", "/streams/s").status, 404);
  run_until([&] { return blob_files() == 0; });
}

TEST_F(ControlServiceTest, ListPaginatesBothWays) {
  for (const char* id : {"c", "a", "e", "b", "d"}) {
    ASSERT_EQ(
        call("POST", std::string("/streams/") + id, create_body({file_json(0, "app.bin")})).status,
        201);
  }
  auto ids = [](const Json& j) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < j.size("/data/streams"); ++i) {
      out.push_back(j.str("/data/streams/" + std::to_string(i) + "/streamId"));
    }
    return out;
  };
  std::vector<std::string> seen;
  std::string token;
  for (int page = 0; page < 3; ++page) {
    std::string query = "maxResults=2";
    if (!token.empty()) query += "&nextToken=" + token;
    auto r = call("GET", "/streams", "", query);
    ASSERT_EQ(r.status, 200) << r.body;
    Json j(r.body);
    for (auto& id : ids(j)) seen.push_back(id);
    EXPECT_EQ(j.str("/data/streams/0/streamArn").rfind("arn:chunkd:stream/", 0), 0u);
    EXPECT_EQ(j.num("/data/streams/0/streamVersion"), 1u);
    token = j.has("/data/nextToken") ? j.str("/data/nextToken") : "";
    EXPECT_EQ(token.empty(), page == 2) << page;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d", "e"}));

  seen.clear();
  token.clear();
  for (int page = 0; page < 2; ++page) {
    std::string query = "maxResults=3&isAscendingOrder=false";
    if (!token.empty()) query += "&nextToken=" + token;
    Json j(call("GET", "/streams", "", query).body);
    for (auto& id : ids(j)) seen.push_back(id);
    token = j.has("/data/nextToken") ? j.str("/data/nextToken") : "";
  }
  EXPECT_TRUE(token.empty());
  EXPECT_EQ(seen, (std::vector<std::string>{"e", "d", "c", "b", "a"}));

  // Exactly a page full: no nextToken.
  Json all(call("GET", "/streams", "", "maxResults=5").body);
  EXPECT_EQ(ids(all).size(), 5u);
  EXPECT_FALSE(all.has("/data/nextToken"));
  Json dflt(call("GET", "/streams").body);
  EXPECT_EQ(ids(dflt).size(), 5u);

  EXPECT_EQ(call("GET", "/streams", "", "maxResults=0").status, 400);
  EXPECT_EQ(call("GET", "/streams", "", "maxResults=251").status, 400);
  EXPECT_EQ(call("GET", "/streams", "", "nextToken=garbage!").status, 400);
}

TEST_F(ControlServiceTest, UnknownPathsAndMethods) {
  auto r = call("GET", "/nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Json(r.body).str("/error/code"), "NOT_FOUND");
  EXPECT_EQ(call("GET", "/streams/a/b").status, 404);

  r = call("PATCH", "/streams/a");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(Json(r.body).str("/error/code"), "METHOD_NOT_ALLOWED");
  ASSERT_NE(find_header(r, "Allow"), nullptr);
  EXPECT_EQ(*find_header(r, "Allow"), "GET, HEAD, POST, PUT, DELETE");
  r = call("POST", "/streams");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(*find_header(r, "Allow"), "GET, HEAD");
  r = call("DELETE", "/healthz");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(*find_header(r, "Allow"), "GET, HEAD");
  EXPECT_EQ(call("PUT", "/metrics").status, 405);
}

TEST_F(ControlServiceTest, EmptyStreamIdIsAValidationErrorNotA404) {
  for (const char* method : {"GET", "POST", "PUT", "DELETE"}) {
    auto r = call(method, "/streams/", R"({"description":"x"})");
    EXPECT_EQ(r.status, 400) << method;
    Json j(r.body);
    EXPECT_EQ(j.str("/error/code"), "VALIDATION_ERROR") << method;
    EXPECT_EQ(j.detail_fields(), std::vector<std::string>{"streamId"}) << method << r.body;
    EXPECT_EQ(j.str("/error/details/0/problem"), "must not be empty") << method;
  }
  EXPECT_EQ(catalog_->size(), 0u);
}

// HEAD is served by the GET route: same status, headers and body (io::HttpServer drops the body
// on the wire), counted under the GET route's name.
TEST_F(ControlServiceTest, HeadIsAnsweredLikeGet) {
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "app.bin")})).status, 201);
  control_->set_ready(true);
  for (const char* path : {"/streams", "/streams/a", "/streams/missing", "/healthz"}) {
    const auto get = call("GET", path);
    const auto head = call("HEAD", path);
    EXPECT_EQ(head.status, get.status) << path;
    EXPECT_EQ(head.content_type, get.content_type) << path;
    EXPECT_EQ(head.body.size(), get.body.size()) << path;
    EXPECT_EQ(head.headers, get.headers) << path;
  }
  const auto head = call("HEAD", "/metrics");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.content_type, "text/plain; version=0.0.4");
  EXPECT_EQ(
      metrics_->counter_value("chunkd_http_requests_total", R"(route="describe",status="200")"),
      2u);
  EXPECT_EQ(
      metrics_->counter_value("chunkd_http_requests_total", R"(route="describe",status="404")"),
      2u);
}

TEST_F(ControlServiceTest, RefusedRequestsAreCounted) {
  control_->count_refused(431);
  control_->count_refused(400);
  control_->count_refused(431);
  const std::string m = call("GET", "/metrics").body;
  EXPECT_NE(m.find("chunkd_http_requests_total{route=\"refused\",status=\"431\"} 2\n"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("chunkd_http_requests_total{route=\"refused\",status=\"400\"} 1\n"),
            std::string::npos)
      << m;
}

TEST_F(ControlServiceTest, BearerTokenIsRequiredOnStreamRoutes) {
  restart(Options{.token = "t0ken-value"});
  io::HttpRequest none = request("GET", "/streams");
  auto r = call(std::move(none));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(Json(r.body).str("/error/code"), "UNAUTHORIZED");
  ASSERT_NE(find_header(r, "WWW-Authenticate"), nullptr);
  EXPECT_EQ(*find_header(r, "WWW-Authenticate"), "Bearer");

  for (std::string value : {"Bearer wrong", "Bearer t0ken-valu", "Bearer t0ken-value2",
                            "Basic t0ken-value", "t0ken-value", "Bearer", "Bearer "}) {
    auto req = request("POST", "/streams/a", create_body({file_json(0, "app.bin")}));
    req.headers.emplace_back("authorization", value);
    r = call(std::move(req));
    EXPECT_EQ(r.status, 401) << value;
  }
  EXPECT_EQ(catalog_->size(), 0u);
  // Wrong method on a stream route without a token: still 401 first.
  EXPECT_EQ(call("PATCH", "/streams/a").status, 401);

  token_ = "t0ken-value";
  EXPECT_EQ(call("POST", "/streams/a", create_body({file_json(0, "app.bin")})).status, 201);
  auto lower = request("GET", "/streams/a");
  lower.headers.clear();
  lower.headers.emplace_back("authorization", "bearer   t0ken-value ");
  EXPECT_EQ(call(std::move(lower)).status, 200);

  token_.clear();
  EXPECT_EQ(call("GET", "/metrics").status, 200);
  EXPECT_EQ(call("GET", "/healthz").status, 503);
  EXPECT_EQ(call("GET", "/nope").status, 404);
}

TEST_F(ControlServiceTest, AuthorizeDecidesOnTheHeadAlone) {
  restart(Options{.token = "t0ken-value"});
  // A create without the token: 401 from the head (no body yet), counted like handle()'s.
  io::HttpRequest head = request("POST", "/streams/a");
  head.headers.clear();
  std::optional<io::HttpResponse> early = control_->authorize(head);
  ASSERT_TRUE(early.has_value());
  EXPECT_EQ(early->status, 401);
  EXPECT_EQ(Json(early->body).str("/error/code"), "UNAUTHORIZED");
  ASSERT_NE(find_header(*early, "WWW-Authenticate"), nullptr);
  EXPECT_EQ(metrics_->counter_value("chunkd_http_requests_total", R"(route="create",status="401")"),
            1u);
  // The token, an open page, an unknown path: nothing to say before the body.
  head.headers.emplace_back("authorization", "Bearer t0ken-value");
  EXPECT_FALSE(control_->authorize(head).has_value());
  EXPECT_FALSE(control_->authorize(request("GET", "/healthz")).has_value());
  EXPECT_FALSE(control_->authorize(request("GET", "/nope")).has_value());
}

TEST_F(ControlServiceTest, HealthzFollowsReadiness) {
  auto r = call("GET", "/healthz");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(Json(r.body).str("/error/code"), "SERVICE_UNAVAILABLE");
  control_->set_ready(true);
  r = call("GET", "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"status":"ok"})");
  control_->set_ready(false);
  EXPECT_EQ(call("GET", "/healthz").status, 503);
}

TEST_F(ControlServiceTest, HealthzIsDegradedWhileDataDirIsNotWritable) {
  Options options;
  options.writable_errno->store(EROFS);
  restart(options);
  control_->set_ready(true);
  auto r = call("GET", "/healthz");
  EXPECT_EQ(r.status, 503);
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "SERVICE_UNAVAILABLE");
  EXPECT_NE(j.str("/error/message").find("degraded: storage.data_dir"), std::string::npos)
      << r.body;
  EXPECT_NE(j.str("/error/message").find("not writable"), std::string::npos) << r.body;
  // Writable again: a probe started after the change (off the loop thread) clears it. The probe
  // the first /healthz started may still be running with the old answer, and a probe is not
  // started while one runs, so each turn moves the clock past the interval and asks again.
  options.writable_errno->store(0);
  run_until([&] {
    clock_.advance_ms(ContentStore::kProbeIntervalMs);
    store_->probe_storage();
    return store_->storage_problem().empty();
  });
  EXPECT_EQ(call("GET", "/healthz").status, 200);
}

TEST_F(ControlServiceTest, FileOverMaxFileMibIs422WithBothSizes) {
  Options options;
  options.max_file_bytes = 100000;  // fw_ is 200015 bytes
  restart(options);
  auto r =
      call("POST", "/streams/big", create_body({file_json(0, "app.bin"), file_json(1, "fw.bin")}));
  EXPECT_EQ(r.status, 422) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "LIMIT_EXCEEDED");
  EXPECT_EQ(j.detail_fields(), std::vector<std::string>{"files[1].s3Location.key"});
  const std::string problem = j.str("/error/details/0/problem");
  EXPECT_NE(problem.find(std::to_string(fw_.size()) + " bytes"), std::string::npos) << problem;
  EXPECT_NE(problem.find("allows 100000 bytes"), std::string::npos) << problem;
  EXPECT_EQ(call("GET", "/streams/big").status, 404);
}

TEST_F(ControlServiceTest, NoSpaceIs507StorageFullUnlessTheContentIsStored) {
  Options options;
  restart(options);
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "fw.bin")})).status, 201);
  options.free_bytes->store(1000);
  put("new.bin", std::string(5000, 'n'));
  auto r = call("POST", "/streams/b", create_body({file_json(0, "new.bin")}));
  EXPECT_EQ(r.status, 507) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("/error/code"), "STORAGE_FULL");
  EXPECT_NE(j.str("/error/message").find("needs 5000 bytes"), std::string::npos) << r.body;
  EXPECT_NE(j.str("/error/message").find("1000 bytes available"), std::string::npos) << r.body;
  // fw.bin's content is stored already: a second stream of it needs no space.
  put("fw-copy.bin", fw_);
  r = call("POST", "/streams/c", create_body({file_json(0, "fw-copy.bin")}));
  EXPECT_EQ(r.status, 201) << r.body;
}

TEST_F(ControlServiceTest, DescribeAndMetricsShowAStreamThatFailedVerification) {
  ASSERT_EQ(call("POST", "/streams/fw", create_body({file_json(0, "fw.bin")})).status, 201);
  Json ok(call("GET", "/streams/fw").body);
  EXPECT_EQ(ok.str("/data/health"), "ok");
  EXPECT_FALSE(ok.has("/data/healthDetail"));
  StreamSnapshot s = catalog_->find("fw");
  health_->failed(*s, s->files[0], 2, CacheError::ManifestMismatch);
  Json bad(call("GET", "/streams/fw").body);
  EXPECT_EQ(bad.str("/data/health"), "corrupt");
  EXPECT_EQ(bad.num("/data/healthDetail/fileId"), 0u);
  EXPECT_EQ(bad.num("/data/healthDetail/extent"), 2u);
  EXPECT_EQ(bad.str("/data/healthDetail/cause"), "manifest_mismatch");
  std::string page = call("GET", "/metrics").body;
  EXPECT_NE(page.find("chunkd_streams_unhealthy 1\n"), std::string::npos) << page;
  EXPECT_NE(page.find("chunkd_block_failures_total{cause=\"manifest_mismatch\"} 1\n"),
            std::string::npos)
      << page;
  // Re-ingesting makes a new, healthy version.
  ASSERT_EQ(call("PUT", "/streams/fw", R"({"files":[)" + file_json(0, "app.bin") + "]}").status,
            200);
  EXPECT_EQ(Json(call("GET", "/streams/fw").body).str("/data/health"), "ok");
  EXPECT_NE(call("GET", "/metrics").body.find("chunkd_streams_unhealthy 0\n"), std::string::npos);
}

TEST_F(ControlServiceTest, MetricsPage) {
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "fw.bin")})).status, 201);
  call("GET", "/streams/zzz");
  auto r = call("GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
  const std::string& m = r.body;
  EXPECT_NE(m.find("chunkd_http_requests_total{route=\"create\",status=\"201\"} 1\n"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("chunkd_http_requests_total{route=\"describe\",status=\"404\"} 1\n"),
            std::string::npos);
  EXPECT_NE(m.find("chunkd_streams 1\n"), std::string::npos);
  EXPECT_NE(m.find("chunkd_store_blobs 1\n"), std::string::npos);
  EXPECT_NE(m.find("chunkd_store_bytes " + std::to_string(fw_.size()) + "\n"), std::string::npos);
  EXPECT_NE(m.find("chunkd_ingest_bytes_total " + std::to_string(fw_.size()) + "\n"),
            std::string::npos);
  EXPECT_NE(m.find("chunkd_ingest_seconds_total"), std::string::npos);
}

TEST_F(ControlServiceTest, LongIdsCarryAWarning) {
  std::string id(45, 'x');
  auto r = call("POST", "/streams/" + id, create_body({file_json(0, "app.bin")}));
  ASSERT_EQ(r.status, 201);
  Json j(r.body);
  ASSERT_EQ(j.size("/data/warnings"), 1u);
  EXPECT_NE(j.str("/data/warnings/0").find("45-byte"), std::string::npos);
  r = call("PUT", "/streams/" + id, R"({"description":"x"})");
  EXPECT_EQ(Json(r.body).size("/data/warnings"), 1u);
  r = call("POST", "/streams/" + std::string(44, 'y'), create_body({file_json(0, "app.bin")}));
  EXPECT_FALSE(Json(r.body).has("/data/warnings"));
}

TEST_F(ControlServiceTest, RestartReloadsTheRegistry) {
  ASSERT_EQ(call("POST", "/streams/a", create_body({file_json(0, "fw.bin")})).status, 201);
  ASSERT_EQ(call("POST", "/streams/b", create_body({file_json(0, "app.bin")})).status, 201);
  ASSERT_EQ(call("PUT", "/streams/b", R"({"description":"bee"})").status, 200);
  ASSERT_EQ(call("DELETE", "/streams/a").status, 200);
  std::string before = call("GET", "/streams/b").body;
  restart();
  EXPECT_EQ(catalog_->size(), 1u);
  EXPECT_EQ(call("GET", "/streams/a").status, 404);
  auto r = call("GET", "/streams/b");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, before);
  Json j(r.body);
  EXPECT_EQ(j.num("/data/streamVersion"), 2u);
  EXPECT_EQ(j.str("/data/description"), "bee");
  // The store agrees: the blob of b is there.
  EXPECT_TRUE(fs::exists(blob_path(dir_ + "/data", digest_of(app_))));
  EXPECT_EQ(catalog_->find("b")->files[0].manifest.size(), 1u);
}

TEST_F(ControlServiceTest, ClosingRefusesNewRequestsAndCancelsIngests) {
  auto pending = send(request("POST", "/streams/a", create_body({file_json(0, "fw.bin")})));
  bool control_closed = false;
  bool store_closed = false;
  control_->close([&] { control_closed = true; });
  store_->close([&] { store_closed = true; });
  auto r = call("GET", "/streams");
  EXPECT_EQ(r.status, 503);
  auto answer = wait(pending);
  EXPECT_EQ(answer.status, 503) << answer.body;
  run_until([&] { return control_closed && store_closed; });
  EXPECT_EQ(catalog_->size(), 0u);
}

// A reload rotates the token: the new one works at once, the old one is refused.
TEST_F(ControlServiceTest, SetTokenRotatesTheToken) {
  restart(Options{.token = "old-token"});
  token_ = "old-token";
  EXPECT_EQ(call("GET", "/streams").status, 200);
  control_->set_token("new-token");
  EXPECT_EQ(call("GET", "/streams").status, 401);
  token_ = "new-token";
  EXPECT_EQ(call("GET", "/streams").status, 200);
  control_->set_token("");
  token_.clear();
  EXPECT_EQ(call("GET", "/streams").status, 200);
}

// Buckets added are usable at once, removed ones are refused by name, streams made from a removed
// bucket stay; a directory that cannot be opened changes nothing.
TEST_F(ControlServiceTest, SetBucketsAddsAndRemovesBuckets) {
  fs::create_directories(dir_ + "/apps");
  std::ofstream(dir_ + "/apps/a.bin") << "app two";
  ASSERT_EQ(call("POST", "/streams/s1", create_body({file_json(0, "fw.bin")})).status, 201);
  EXPECT_EQ(call("POST", "/streams/s2", create_body({file_json(0, "a.bin", "apps")})).status, 400);

  auto set = control_->set_buckets({{"firmware", dir_ + "/fw"}, {"apps", dir_ + "/apps"}});
  ASSERT_TRUE(set) << set.error().message();
  EXPECT_EQ(call("POST", "/streams/s2", create_body({file_json(0, "a.bin", "apps")})).status, 201);

  set = control_->set_buckets({{"apps", dir_ + "/apps"}});
  ASSERT_TRUE(set) << set.error().message();
  auto r = call("POST", "/streams/s3", create_body({file_json(0, "fw.bin")}));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json(r.body).detail_fields(), std::vector<std::string>{"files[0].s3Location.bucket"});
  EXPECT_NE(r.body.find("firmware"), std::string::npos) << r.body;
  EXPECT_EQ(call("GET", "/streams/s1").status, 200) << "a stream already made stays";

  // All or nothing: "bad" cannot be opened, so firmware is not added back either.
  set = control_->set_buckets(
      {{"apps", dir_ + "/apps"}, {"firmware", dir_ + "/fw"}, {"bad", dir_ + "/missing"}});
  ASSERT_FALSE(set);
  EXPECT_NE(set.error().message().find("buckets.bad"), std::string::npos) << set.error().message();
  EXPECT_EQ(call("POST", "/streams/s4", create_body({file_json(0, "fw.bin")})).status, 400);
  EXPECT_EQ(call("POST", "/streams/s5", create_body({file_json(0, "a.bin", "apps")})).status, 201);

  // A bucket moved to another directory serves from the new one.
  std::ofstream(dir_ + "/apps/fw.bin") << "moved";
  set = control_->set_buckets({{"firmware", dir_ + "/apps"}});
  ASSERT_TRUE(set) << set.error().message();
  r = call("POST", "/streams/s6", create_body({file_json(0, "fw.bin")}));
  ASSERT_EQ(r.status, 201) << r.body;
  r = call("GET", "/streams/s6");
  EXPECT_EQ(Json(r.body).num("/data/files/0/sizeBytes"), 5u) << r.body;
}

// A bucket removed while an ingest opens files beneath it: the ingest finishes with the directory
// it started with.
TEST_F(ControlServiceTest, SetBucketsDuringAnIngest) {
  auto slot = send(request("POST", "/streams/s1", create_body({file_json(0, "fw.bin")})));
  ASSERT_TRUE(control_->set_buckets({}));
  auto r = wait(slot);
  EXPECT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(call("POST", "/streams/s2", create_body({file_json(0, "fw.bin")})).status, 400);
}

TEST_F(ControlServiceTest, ErrorBodyForServerMadeResponses) {
  Json j(ControlService::error_body(413, "body too large"));
  EXPECT_EQ(j.str("/error/code"), "PAYLOAD_TOO_LARGE");
  EXPECT_EQ(j.str("/error/message"), "body too large");
  EXPECT_EQ(Json(ControlService::error_body(400, "bad")).str("/error/code"), "VALIDATION_ERROR");
  EXPECT_EQ(Json(ControlService::error_body(408, "slow")).str("/error/code"), "REQUEST_TIMEOUT");
  EXPECT_EQ(Json(ControlService::error_body(411, "len")).str("/error/code"), "LENGTH_REQUIRED");
  EXPECT_EQ(Json(ControlService::error_body(431, "big")).str("/error/code"), "HEADERS_TOO_LARGE");
  EXPECT_EQ(Json(ControlService::error_body(503, "x")).str("/error/code"), "SERVICE_UNAVAILABLE");
  EXPECT_EQ(Json(ControlService::error_body(500, "x")).str("/error/code"), "INTERNAL_ERROR");
  EXPECT_EQ(Json(ControlService::error_body(505, "v")).str("/error/code"),
            "HTTP_VERSION_NOT_SUPPORTED");
}

// Every error status chunkd can send (the ones io::HttpServer makes itself and the ones of the
// API's codes) carries exactly one code, and that code's status is the status sent.
TEST_F(ControlServiceTest, EveryErrorStatusHasItsOneCode) {
  std::set<int> statuses(std::begin(io::kServerErrorStatuses), std::end(io::kServerErrorStatuses));
  for (const protocol::ApiErrorInfo& info : protocol::kApiErrors) statuses.insert(info.http_status);
  std::set<std::string> codes;
  for (int status : statuses) {
    const auto code = protocol::api_error_for_status(status);
    ASSERT_TRUE(code.has_value()) << status << " has no code";
    EXPECT_EQ(protocol::http_status(*code), status);
    Json j(ControlService::error_body(status, "m"));
    ASSERT_TRUE(j.ok) << status;
    EXPECT_EQ(j.str("/error/code"), protocol::to_string(*code)) << status;
    EXPECT_EQ(j.str("/error/message"), "m");
    EXPECT_TRUE(codes.insert(j.str("/error/code")).second) << status << " shares its code";
  }
}

}  // namespace
}  // namespace chunkd::engine

// The shared content bucket (engine/content_bucket.hpp) against a real S3 implementation (moto's
// server, tests/support/s3_server.hpp, signatures checked): a blob and its manifest are written
// once, an upload that fails says so and leaves no object, and a fill is verified by digest, a
// corrupted object refused, concurrent fills of one blob one fetch. Skipped without moto_server.
#include "engine/content_bucket.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/clock.hpp"
#include "engine/content_store.hpp"
#include "engine/metrics.hpp"
#include "io/file_reader.hpp"
#include "tests/support/loop.hpp"
#include "tests/support/net.hpp"
#include "tests/support/s3_server.hpp"

namespace chunkd::engine {
namespace {

namespace fs = std::filesystem;
using test::TestS3Server;

constexpr const char* kRemote = "shared";

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

std::string digest_of(const std::string& data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class ContentBucketTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!TestS3Server::missing().empty()) return;
    s3_ = new TestS3Server();
    if (!s3_->start() || !s3_->make_bucket(kRemote)) {
      setup_error_ = new std::string(s3_->error() + "\n" + s3_->log());
    }
  }
  static void TearDownTestSuite() {
    delete s3_;
    s3_ = nullptr;
    delete setup_error_;
    setup_error_ = nullptr;
  }

  void SetUp() override {
    if (std::string missing = TestS3Server::missing(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    ASSERT_EQ(setup_error_, nullptr) << *setup_error_;
    std::string templ = (fs::temp_directory_path() / "chunkd-content-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    loop_open_ = true;
    auto setup = io::make_file_reader(&loop_, io::FileReaderOptions{});
    ASSERT_TRUE(setup) << setup.error().message();
    reader_ = std::move(setup->reader);
    ContentStoreOptions options;
    options.data_dir = dir_ + "/data";
    options.extent_bytes = 64u << 10;
    store_ = std::make_unique<ContentStore>(&loop_, *reader_, &metrics_, clock_, options,
                                            [this] { return live_; });
    std::string message;
    ASSERT_FALSE(store_->open(message)) << message;
    bucket_ = make_bucket(remote());
  }

  void TearDown() override {
    if (!loop_open_) return;
    bool closed = false;
    for (auto* b : {&bucket_, &other_}) {
      if (!*b) continue;
      closed = false;
      (*b)->close([&] { closed = true; });
      run_until([&] { return closed; });
    }
    closed = false;
    store_->close([&] { closed = true; });
    run_until([&] { return closed; });
    closed = false;
    reader_->close([&] { closed = true; });
    run_until([&] { return closed; });
    bucket_.reset();
    other_.reset();
    store_.reset();
    reader_.reset();
    EXPECT_EQ(uv_run(&loop_, UV_RUN_DEFAULT), 0);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  static io::S3BucketOptions remote() {
    io::S3BucketOptions r;
    r.endpoint = s3_->endpoint();
    r.region = "us-east-1";
    r.bucket = kRemote;
    r.credentials = {s3_->key_id(), s3_->secret(), ""};
    r.timeout_s = 5;
    r.retries = 1;
    return r;
  }

  std::unique_ptr<ContentBucket> make_bucket(io::S3BucketOptions r) {
    ContentBucketOptions options;
    options.name = "shared-content";
    options.remote = std::move(r);
    return std::make_unique<ContentBucket>(&loop_, *store_, &metrics_, std::move(options));
  }

  void run_until(const std::function<bool()>& done) {
    ASSERT_TRUE(test::run_until(&loop_, done)) << "timed out";
  }

  // Ingests `data` into the store (pinned until the test ends; GC never runs here).
  IngestResult ingest(const std::string& data) {
    std::string path = dir_ + "/source";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    std::optional<IngestResult> out;
    store_->ingest(fd, [&](std::error_code e, IngestResult r) {
      EXPECT_FALSE(e) << e.message();
      out = std::move(r);
    });
    run_until([&] { return out.has_value(); });
    return out.value_or(IngestResult{});
  }

  struct Outcome {
    std::error_code error;
    std::string detail;
  };
  Outcome upload(ContentBucket& bucket, const IngestResult& content) {
    std::optional<Outcome> out;
    bucket.upload(content, [&](std::error_code e, const std::string& d) { out = Outcome{e, d}; });
    run_until([&] { return out.has_value(); });
    return out.value_or(Outcome{});
  }
  Outcome fill(const std::string& digest, std::uint64_t size) {
    std::optional<Outcome> out;
    EXPECT_TRUE(bucket_->fill(digest, size, [&](std::error_code e, const std::string& d) {
      out = Outcome{e, d};
    }));
    run_until([&] { return out.has_value(); });
    return out.value_or(Outcome{});
  }
  std::uint64_t count(const char* name, const char* result) {
    return metrics_.counter_value(name, std::string("result=\"") + result + "\"");
  }
  bool tmp_empty() { return fs::is_empty(dir_ + "/data/tmp"); }

  static TestS3Server* s3_;
  static std::string* setup_error_;
  std::string dir_;
  uv_loop_t loop_{};
  bool loop_open_ = false;
  Metrics metrics_;
  SystemClock clock_;
  std::vector<std::string> live_;
  std::unique_ptr<io::FileReader> reader_;
  std::unique_ptr<ContentStore> store_;
  std::unique_ptr<ContentBucket> bucket_;
  std::unique_ptr<ContentBucket> other_;
};

TestS3Server* ContentBucketTest::s3_ = nullptr;
std::string* ContentBucketTest::setup_error_ = nullptr;

TEST_F(ContentBucketTest, UploadsBlobAndManifestOnceThenFindsThemPresent) {
  const std::string data = random_bytes((3u << 20) + 123, 1);
  IngestResult content = ingest(data);
  ASSERT_EQ(content.digest, digest_of(data));

  Outcome first = upload(*bucket_, content);
  ASSERT_FALSE(first.error) << first.detail;
  EXPECT_EQ(count("chunkd_content_bucket_uploads_total", "uploaded"), 1u);
  auto blob = s3_->get(kRemote, "blobs/" + content.digest);
  ASSERT_TRUE(blob) << s3_->error();
  EXPECT_TRUE(*blob == data) << "the bucket's blob differs from the content (" << blob->size()
                             << " bytes)";
  auto manifest = s3_->get(kRemote, "manifests/" + content.digest);
  ASSERT_TRUE(manifest) << s3_->error();
  EXPECT_EQ(*manifest, ContentBucket::manifest_text(content));
  EXPECT_EQ(manifest->rfind("chunkd-manifest 1\nsize 3145851\nextent_bytes 65536\n", 0), 0u);

  // Again (another instance ingesting the same content): a HEAD finds it, nothing is written.
  other_ = make_bucket(remote());
  Outcome second = upload(*other_, content);
  ASSERT_FALSE(second.error) << second.detail;
  EXPECT_EQ(count("chunkd_content_bucket_uploads_total", "present"), 1u);
  EXPECT_EQ(s3_->versions(kRemote, "blobs/" + content.digest), 1) << s3_->error();
  EXPECT_EQ(s3_->versions(kRemote, "manifests/" + content.digest), 1) << s3_->error();
}

TEST_F(ContentBucketTest, AnEmptyFileUploadsOnce) {
  IngestResult content = ingest("");
  Outcome up = upload(*bucket_, content);
  ASSERT_FALSE(up.error) << up.detail;
  auto blob = s3_->get(kRemote, "blobs/" + content.digest);
  ASSERT_TRUE(blob) << s3_->error();
  EXPECT_TRUE(blob->empty());
  EXPECT_EQ(upload(*bucket_, content).error, std::error_code());
  EXPECT_EQ(count("chunkd_content_bucket_uploads_total", "present"), 1u);
}

TEST_F(ContentBucketTest, ConcurrentUploadsOfOneBlobShareOne) {
  IngestResult content = ingest(random_bytes(200000, 2));
  int done = 0;
  for (int i = 0; i < 3; ++i) {
    bucket_->upload(content, [&](std::error_code e, const std::string& d) {
      EXPECT_FALSE(e) << d;
      done++;
    });
  }
  EXPECT_EQ(bucket_->uploads_in_progress(), 1u);
  run_until([&] { return done == 3; });
  EXPECT_EQ(count("chunkd_content_bucket_uploads_total", "uploaded"), 1u);
  EXPECT_EQ(s3_->versions(kRemote, "blobs/" + content.digest), 1) << s3_->error();
}

TEST_F(ContentBucketTest, RefusedUploadFailsNamingTheBucketAndWritesNothing) {
  IngestResult content = ingest(random_bytes(100000, 3));
  io::S3BucketOptions wrong = remote();
  wrong.credentials.secret_access_key = "not-the-secret";
  other_ = make_bucket(wrong);
  Outcome out = upload(*other_, content);
  EXPECT_EQ(out.error, io::S3Error::AccessDenied) << out.detail;
  EXPECT_NE(out.detail.find("content bucket \"shared-content\""), std::string::npos) << out.detail;
  EXPECT_EQ(count("chunkd_content_bucket_uploads_total", "access_denied"), 1u);
  EXPECT_EQ(s3_->versions(kRemote, "blobs/" + content.digest), 0) << s3_->error();
  EXPECT_EQ(s3_->versions(kRemote, "manifests/" + content.digest), 0) << s3_->error();
}

TEST_F(ContentBucketTest, UnreachableBucketFailsTheUpload) {
  IngestResult content = ingest(random_bytes(1000, 4));
  io::S3BucketOptions gone = remote();
  const test::ClosedPort closed;
  gone.endpoint = "http://127.0.0.1:" + std::to_string(closed.port());
  gone.retries = 0;
  other_ = make_bucket(gone);
  Outcome out = upload(*other_, content);
  EXPECT_EQ(out.error, io::S3Error::Unreachable) << out.detail;
  EXPECT_EQ(count("chunkd_content_bucket_uploads_total", "unreachable"), 1u);
}

TEST_F(ContentBucketTest, FillStoresTheVerifiedBlob) {
  const std::string data = random_bytes((1u << 20) + 77, 5);
  const std::string digest = digest_of(data);
  ASSERT_TRUE(s3_->put(kRemote, "blobs/" + digest, data)) << s3_->error();
  Outcome out = fill(digest, data.size());
  ASSERT_FALSE(out.error) << out.detail;
  EXPECT_TRUE(read_file(blob_path(dir_ + "/data", digest)) == data);
  EXPECT_EQ(count("chunkd_content_bucket_fills_total", "ok"), 1u);
  EXPECT_EQ(metrics_.counter_value("chunkd_content_bucket_filled_bytes_total"), data.size());
  EXPECT_TRUE(tmp_empty());
}

TEST_F(ContentBucketTest, CorruptedObjectIsRefusedAndNothingKept) {
  const std::string data = random_bytes(300000, 6);
  const std::string digest = digest_of(data);
  std::string corrupted = data;
  corrupted[123456] ^= 0x01;  // same size, one bit off
  ASSERT_TRUE(s3_->put(kRemote, "blobs/" + digest, corrupted)) << s3_->error();
  Outcome out = fill(digest, data.size());
  EXPECT_EQ(out.error, IngestError::DigestMismatch) << out.detail;
  EXPECT_NE(out.detail.find(digest), std::string::npos) << out.detail;
  EXPECT_FALSE(fs::exists(blob_path(dir_ + "/data", digest)));
  EXPECT_FALSE(fs::exists(blob_path(dir_ + "/data", digest_of(corrupted))));
  EXPECT_TRUE(tmp_empty());
  EXPECT_EQ(count("chunkd_content_bucket_fills_total", "digest_mismatch"), 1u);
  // Remembered for a while: reads meanwhile get a plain error instead of a new fetch each.
  EXPECT_FALSE(bucket_->fill(digest, data.size()));
}

TEST_F(ContentBucketTest, ObjectOfAnotherSizeIsRefused) {
  const std::string data = random_bytes(5000, 7);
  const std::string digest = digest_of(data);
  ASSERT_TRUE(s3_->put(kRemote, "blobs/" + digest, data.substr(0, 4000))) << s3_->error();
  Outcome out = fill(digest, data.size());
  EXPECT_EQ(out.error, IngestError::DigestMismatch) << out.detail;
  EXPECT_NE(out.detail.find("4000 bytes"), std::string::npos) << out.detail;
  EXPECT_FALSE(fs::exists(blob_path(dir_ + "/data", digest)));
  EXPECT_TRUE(tmp_empty());
}

TEST_F(ContentBucketTest, MissingObjectFailsTheFill) {
  const std::string digest = digest_of("never uploaded");
  Outcome out = fill(digest, 14);
  EXPECT_EQ(out.error, io::S3Error::NoSuchKey) << out.detail;
  EXPECT_EQ(count("chunkd_content_bucket_fills_total", "no_such_key"), 1u);
  EXPECT_TRUE(tmp_empty());
}

TEST_F(ContentBucketTest, ConcurrentReadersWaitForOneFetch) {
  const std::string data = random_bytes((2u << 20) + 5, 8);
  const std::string digest = digest_of(data);
  ASSERT_TRUE(s3_->put(kRemote, "blobs/" + digest, data)) << s3_->error();
  int done = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(bucket_->fill(digest, data.size(), [&](std::error_code e, const std::string& d) {
      EXPECT_FALSE(e) << d;
      done++;
    }));
  }
  EXPECT_EQ(bucket_->fills_in_progress(), 1u);
  run_until([&] { return done == 5; });
  EXPECT_EQ(count("chunkd_content_bucket_fills_total", "ok"), 1u);
  EXPECT_EQ(metrics_.counter_value("chunkd_content_bucket_filled_bytes_total"), data.size());
  EXPECT_TRUE(read_file(blob_path(dir_ + "/data", digest)) == data);
}

}  // namespace
}  // namespace chunkd::engine

// Devices downloading from the real chunkd binary through a private Mosquitto (SPEC.md §1): whole
// files of awkward sizes in both formats, at several block sizes, in windows and with bitmaps,
// compared byte for byte; and every rejection a device can provoke, end to end.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;
using protocol::GetStreamArgs;
using protocol::ReplyKind;

constexpr std::size_t kBigFileBytes = 64u << 20;

// The 64 MiB file, written once per test process into its own temporary directory.
class BigFile {
 public:
  static BigFile& get() {
    static BigFile instance;
    return instance;
  }
  const std::string& dir() const { return dir_; }
  const std::string& bytes() const { return bytes_; }

  ~BigFile() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

 private:
  BigFile() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/chunkd-big-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) != nullptr) dir_ = buf.data();
    bytes_ = test_bytes(kBigFileBytes, 64);
    if (!dir_.empty()) write_file(dir_ + "/big.bin", bytes_);
  }
  std::string dir_;
  std::string bytes_;
};

enum class Size { One, B255, B256, Multiple, Big };

struct Case {
  Size size;
  std::uint32_t block_size;
};

std::string size_name(Size s) {
  switch (s) {
    case Size::One:
      return "1B";
    case Size::B255:
      return "255B";
    case Size::B256:
      return "256B";
    case Size::Multiple:
      return "37Blocks";
    case Size::Big:
      return "64MiB";
  }
  return "?";
}

void PrintTo(const Case& c, std::ostream* os) { *os << size_name(c.size) << " l=" << c.block_size; }

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return size_name(info.param.size) + "_l" + std::to_string(info.param.block_size);
}

class WholeFile : public ::testing::TestWithParam<Case> {};

TEST_P(WholeFile, DownloadsByteForByteInEveryFormatAndMode) {
  const Case c = GetParam();
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  std::string content;
  std::string bucket = "fw";
  std::string key = "file.bin";
  switch (c.size) {
    case Size::One:
      content = test_bytes(1, 1);
      break;
    case Size::B255:
      content = test_bytes(255, 2);
      break;
    case Size::B256:
      content = test_bytes(256, 3);
      break;
    case Size::Multiple:
      content = test_bytes(37u * c.block_size, 4);
      break;
    case Size::Big:
      break;
  }
  if (c.size == Size::Big) {
    ASSERT_FALSE(BigFile::get().dir().empty());
    stack.daemon().map_bucket("big", BigFile::get().dir());
    bucket = "big";
    key = "big.bin";
  } else {
    stack.put(key, content);
  }
  const std::string& expected = c.size == Size::Big ? BigFile::get().bytes() : content;
  ASSERT_TRUE(stack.start());
  auto r = stack.create("dl", {{5, bucket, key, std::nullopt}}, "download test");
  ASSERT_EQ(r.status, 201) << r.body << stack.daemon().log();

  auto dev = stack.device("downloader-1", "dl");
  ASSERT_TRUE(dev);
  for (Format format : {Format::Json, Format::Cbor}) {
    SCOPED_TRACE(std::string(protocol::to_string(format)));
    // DescribeStream in this format.
    auto d = dev->describe("dl", format, "describe-token");
    ASSERT_TRUE(d) << "no description";
    ASSERT_EQ(d->kind, ReplyKind::Description) << d->rejected.code << " " << d->decode_error;
    EXPECT_EQ(d->description.client_token, "describe-token");
    EXPECT_EQ(d->description.version, 1u);
    EXPECT_EQ(d->description.description, "download test");
    ASSERT_EQ(d->description.files.size(), 1u);
    EXPECT_EQ(d->description.files[0].file_id, 5u);
    EXPECT_EQ(d->description.files[0].size_bytes, expected.size());

    for (DownloadMode mode : {DownloadMode::Window, DownloadMode::Bitmap}) {
      SCOPED_TRACE(mode == DownloadMode::Window ? "window" : "bitmap");
      DownloadOptions opts;
      opts.block_size = c.block_size;
      opts.mode = mode;
      opts.client_token = "tok-" + std::to_string(c.block_size);
      const std::uint64_t blocks = protocol::block_count(expected.size(), c.block_size);
      // The OTA agent asks for one block per request; for long files, a window's worth.
      opts.bitmap_blocks_per_request =
          blocks <= 512 ? 1 : protocol::kMaxRequestPayloadBytes / c.block_size;
      auto result = dev->download("dl", format, 5, opts);
      ASSERT_TRUE(result.ok) << result.error << "\n" << stack.daemon().log(8000);
      ASSERT_EQ(result.bytes.size(), expected.size());
      EXPECT_TRUE(bytes_to_string(result.bytes) == expected) << "content differs";
      EXPECT_EQ(result.version, 1u);
    }
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (Size s : {Size::One, Size::B255, Size::B256, Size::Multiple, Size::Big}) {
    for (std::uint32_t l : {256u, 4096u, 131072u}) {
      if (s == Size::Big && l == 256u) continue;  // 262144 requests: too slow for a test
      out.push_back({s, l});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Sizes, WholeFile, ::testing::ValuesIn(all_cases()), case_name);

TEST(Streams, EveryFileOfAStreamDownloadsByItsId) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  const std::vector<std::pair<std::uint32_t, std::string>> files = {
      {0, test_bytes(1000, 21)}, {7, test_bytes(300001, 22)}, {255, test_bytes(4096, 23)}};
  std::vector<FileRef> refs;
  for (const auto& [id, bytes] : files) {
    refs.push_back({id, "fw", stack.put("f" + std::to_string(id) + ".bin", bytes), std::nullopt});
  }
  ASSERT_TRUE(stack.start());
  auto r = stack.create("multi", refs, "three files");
  ASSERT_EQ(r.status, 201) << r.body;
  auto dev = stack.device("multi-thing", "multi");
  ASSERT_TRUE(dev);
  auto d = dev->describe("multi", Format::Cbor);
  ASSERT_TRUE(d);
  ASSERT_EQ(d->description.files.size(), 3u);
  for (std::size_t i = 0; i < files.size(); ++i) {
    EXPECT_EQ(d->description.files[i].file_id, files[i].first);
    EXPECT_EQ(d->description.files[i].size_bytes, files[i].second.size());
  }
  for (Format format : {Format::Json, Format::Cbor}) {
    for (const auto& [id, bytes] : files) {
      SCOPED_TRACE("file " + std::to_string(id));
      DownloadOptions opts;
      opts.block_size = 2048;
      auto result = dev->download("multi", format, id, opts);
      ASSERT_TRUE(result.ok) << result.error;
      EXPECT_TRUE(bytes_to_string(result.bytes) == bytes);
    }
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// What a device downloads is what was hashed at create time, whatever happens to the source.
TEST(Streams, ContentIsFixedAtCreateTime) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string original = test_bytes(200000, 24);
  ASSERT_TRUE(stack.create_file_stream("fixed", original));
  ASSERT_TRUE(stack.create_file_stream("removed", original));
  // Rewritten in place (same inode, truncated and shorter), and removed.
  {
    std::ofstream out(stack.bucket_dir() + "/fixed.bin", std::ios::binary | std::ios::in);
    ASSERT_TRUE(out.good());
    out.seekp(0);
    out.write("overwritten!", 12);
  }
  ASSERT_EQ(::truncate((stack.bucket_dir() + "/fixed.bin").c_str(), 5000), 0);
  ASSERT_TRUE(std::filesystem::remove(stack.bucket_dir() + "/removed.bin"));
  auto dev = stack.device("fixed-thing", "fixed");
  ASSERT_TRUE(dev);
  ASSERT_TRUE(dev->watch("removed"));
  for (const char* stream : {"fixed", "removed"}) {
    SCOPED_TRACE(stream);
    DownloadOptions opts;
    opts.block_size = 8192;
    auto result = dev->download(stream, Format::Cbor, 0, opts);
    ASSERT_TRUE(result.ok) << result.error;
    EXPECT_TRUE(bytes_to_string(result.bytes) == original);
  }
  // The HTTP describe still reports the original size.
  EXPECT_EQ(Json(stack.request("GET", "/streams/fixed").body).u64("/data/files/0/sizeBytes"),
            original.size());
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// The content store is checked against the manifest when read: a corrupted extent is
// ETagMismatch (the rest of the file is still served), a missing blob InternalError, and the
// daemon keeps serving other streams.
TEST(Streams, DamagedStoreIsReportedNotServed) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string corrupt = test_bytes(600000, 25);  // extents of 256 KiB: 0, 1, 2
  const std::string missing = test_bytes(5000, 26);
  const std::string healthy = test_bytes(5000, 27);
  ASSERT_TRUE(stack.create_file_stream("corrupt", corrupt));
  ASSERT_TRUE(stack.create_file_stream("missing", missing));
  ASSERT_TRUE(stack.create_file_stream("healthy", healthy));
  auto digest_of = [&](const std::string& id) {
    return Json(stack.request("GET", "/streams/" + id).body)
        .str("/data/files/0/digest")
        .value_or("");
  };
  auto blob = [&](const std::string& digest) {
    return stack.daemon().data_dir() + "/blobs/" + digest.substr(0, 2) + "/" + digest;
  };
  const std::string corrupt_blob = blob(digest_of("corrupt"));
  const std::string missing_blob = blob(digest_of("missing"));
  ASSERT_TRUE(std::filesystem::exists(corrupt_blob)) << corrupt_blob;
  ASSERT_TRUE(std::filesystem::exists(missing_blob)) << missing_blob;
  {
    std::fstream f(corrupt_blob, std::ios::binary | std::ios::in | std::ios::out);
    ASSERT_TRUE(f.good());
    f.seekp(300000);
    const char flipped = static_cast<char>(~corrupt[300000]);
    f.write(&flipped, 1);
  }
  ASSERT_TRUE(std::filesystem::remove(missing_blob));

  auto dev = stack.device("damage", "corrupt");
  ASSERT_TRUE(dev);
  ASSERT_TRUE(dev->watch("missing"));
  ASSERT_TRUE(dev->watch("healthy"));
  GetStreamArgs a;
  a.block_size = 4096;
  a.count = 1;
  a.client_token = "dmg";
  a.offset = 300000 / 4096;  // inside extent 1
  auto bad = dev->get_once("corrupt", Format::Cbor, a);
  ASSERT_TRUE(bad) << stack.daemon().log(4000);
  EXPECT_EQ(bad->kind, ReplyKind::Rejected);
  EXPECT_EQ(bad->rejected.code, "ETagMismatch") << bad->rejected.message;
  EXPECT_EQ(bad->rejected.client_token, "dmg");
  a.offset = 0;  // extent 0 is intact
  auto good = dev->get_once("corrupt", Format::Cbor, a);
  ASSERT_TRUE(good);
  ASSERT_EQ(good->kind, ReplyKind::Data) << good->rejected.code;
  EXPECT_EQ(to_string(good->data.payload), corrupt.substr(0, 4096));
  a.offset = 0;
  auto gone = dev->get_once("missing", Format::Json, a);
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->kind, ReplyKind::Rejected);
  EXPECT_EQ(gone->rejected.code, "InternalError") << gone->rejected.message;
  DownloadOptions opts;
  opts.block_size = 1024;
  auto ok = dev->download("healthy", Format::Json, 0, opts);
  ASSERT_TRUE(ok.ok) << ok.error;
  EXPECT_TRUE(bytes_to_string(ok.bytes) == healthy);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// Selection rules of SPEC.md §1.1, observed by a device: replies to one thing come in request
// order, so a DescribeStream sent after a GetStream marks the end of its blocks.
TEST(Streams, SelectionRulesEndToEnd) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string content = test_bytes(300000, 28);
  ASSERT_TRUE(stack.create_file_stream("sel", content));
  auto dev = stack.device("selector", "sel");
  ASSERT_TRUE(dev);
  // Sends `args`, then a describe; returns the indices of the data blocks in arrival order,
  // checking each block's bytes.
  auto blocks_for = [&](Format f, const GetStreamArgs& args) {
    std::vector<std::uint32_t> got;
    dev->mqtt().clear();
    EXPECT_TRUE(dev->send_get("sel", f, args));
    EXPECT_TRUE(dev->send_describe("sel", f, "end-marker"));
    while (true) {
      auto r = dev->next_reply(20000);
      if (!r) {
        ADD_FAILURE() << "no end marker";
        break;
      }
      if (r->kind == ReplyKind::Description) break;
      if (r->kind == ReplyKind::Rejected) {
        ADD_FAILURE() << r->rejected.code;
        break;
      }
      EXPECT_EQ(r->decode_error, "");
      const std::uint64_t start = std::uint64_t{r->data.block_index} * args.block_size;
      EXPECT_LT(start, content.size());
      if (start >= content.size()) break;
      EXPECT_EQ(to_string(r->data.payload), content.substr(start, args.block_size));
      EXPECT_EQ(r->data.length, r->data.payload.size());
      got.push_back(r->data.block_index);
    }
    return got;
  };
  auto range = [](std::uint32_t from, std::uint32_t count) {
    std::vector<std::uint32_t> v(count);
    for (std::uint32_t i = 0; i < count; ++i) v[i] = from + i;
    return v;
  };
  for (Format f : {Format::Json, Format::Cbor}) {
    SCOPED_TRACE(std::string(protocol::to_string(f)));
    GetStreamArgs a;
    a.block_size = 256;
    a.count = 98304;  // capped at 131072 bytes: 512 blocks
    EXPECT_EQ(blocks_for(f, a), range(0, 512));
    a.block_size = 1000;  // any size in bounds: 131 blocks of 1000 fit in 131072 bytes
    a.count.reset();      // absent: 131072 / l
    a.offset = 10;
    EXPECT_EQ(blocks_for(f, a), range(10, 131));
    a.block_size = 131072;  // the last block is short and says so
    a.offset = 2;
    EXPECT_EQ(blocks_for(f, a), range(2, 1));
    // A fixed 30-bit bitmap as a widely used device library sends: blocks past the end dropped.
    a.block_size = 65536;  // 5 blocks, the last short
    a.offset.reset();
    a.bitmap = std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0x3f};
    a.count = 30;
    EXPECT_EQ(blocks_for(f, a), range(0, 2));    // 2 × 65536 = 131072 bytes: the cap
    a.bitmap = std::vector<std::uint8_t>{0x1c};  // blocks 2, 3, 4: 4 would pass the cap
    EXPECT_EQ(blocks_for(f, a), range(2, 2));
    a.offset = 1;  // relative to o: blocks 3, 4 (short: 37856 bytes, fits), 5 and 6 past the end
    a.bitmap = std::vector<std::uint8_t>{0x3c};
    EXPECT_EQ(blocks_for(f, a), range(3, 2));
    a.offset.reset();
    a.bitmap = std::vector<std::uint8_t>{0x15};  // blocks 0, 2, 4; n = 2 keeps the first two
    a.count = 2;
    EXPECT_EQ(blocks_for(f, a), (std::vector<std::uint32_t>{0, 2}));
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// ---------------------------------------------------------------------------------------------
// Rejections, end to end.

class Rejections : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(stack.start_broker());
    content = test_bytes(10000, 11);  // 40 blocks of 256, 3 of 4096
    stack.put("r.bin", content);
    configure();
    ASSERT_TRUE(stack.start());
    auto r = stack.create("rj", {{0, "fw", "r.bin", std::nullopt}});
    ASSERT_EQ(r.status, 201) << r.body;
    dev = stack.device("rejected-thing", "rj");
    ASSERT_TRUE(dev);
    ASSERT_TRUE(dev->watch("nope"));
  }
  virtual void configure() {}

  // Publishes `payload` to `topic` and returns the first rejected reply (any stream, format).
  std::optional<Reply> rejected_for(const std::string& topic, std::string_view payload) {
    dev->mqtt().clear();
    if (!dev->send_raw(topic, as_bytes(payload))) return std::nullopt;
    return dev->wait_for(ReplyKind::Rejected, 20000);
  }
  std::optional<Reply> rejected_for(Format format, const GetStreamArgs& args,
                                    const std::string& stream = "rj") {
    dev->mqtt().clear();
    if (!dev->send_get(stream, format, args)) return std::nullopt;
    return dev->wait_for(ReplyKind::Rejected, 20000);
  }
  static GetStreamArgs args(std::uint32_t l = 256) {
    GetStreamArgs a;
    a.file_id = 0;
    a.block_size = l;
    return a;
  }

  Stack stack;
  std::string content;
  std::unique_ptr<Device> dev;
};

#define EXPECT_REJECTED(reply, want_code, want_topic)                                       \
  do {                                                                                      \
    auto&& r_ = (reply);                                                                    \
    ASSERT_TRUE(r_.has_value()) << "no rejected reply; log:\n" << stack.daemon().log(4000); \
    EXPECT_EQ(r_->decode_error, "");                                                        \
    EXPECT_EQ(r_->rejected.code, want_code) << r_->rejected.message;                        \
    EXPECT_EQ(r_->topic, want_topic);                                                       \
  } while (0)

TEST_F(Rejections, InvalidTopicAnswersOnRejectedJson) {
  const std::string rejected_json = dev->reply_topic("rj", ReplyKind::Rejected, Format::Json);
  EXPECT_REJECTED(rejected_for(dev->raw_topic("rj", "get", "xml"), "{\"f\":0,\"l\":256}"),
                  "InvalidTopic", rejected_json);
  EXPECT_REJECTED(rejected_for(dev->raw_topic("rj", "describe", "yaml"), "{}"), "InvalidTopic",
                  rejected_json);
  // An unknown verb never reaches chunkd: it subscribes to get/+ and describe/+ only.
  // The daemon keeps serving.
  auto ok = dev->get_once("rj", Format::Json, args());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->kind, ReplyKind::Data);
}

TEST_F(Rejections, MalformedPayloads) {
  const std::string rj_json = dev->reply_topic("rj", ReplyKind::Rejected, Format::Json);
  const std::string rj_cbor = dev->reply_topic("rj", ReplyKind::Rejected, Format::Cbor);
  const std::string get_json = dev->request_topic("rj", protocol::Verb::Get, Format::Json);
  const std::string get_cbor = dev->request_topic("rj", protocol::Verb::Get, Format::Cbor);
  EXPECT_REJECTED(rejected_for(get_json, "not json"), "InvalidJson", rj_json);
  EXPECT_REJECTED(rejected_for(get_json, "[1,2]"), "InvalidJson", rj_json);
  EXPECT_REJECTED(rejected_for(get_cbor, std::string("\xff\x00", 2)), "InvalidCbor", rj_cbor);
  EXPECT_REJECTED(rejected_for(get_cbor, "\x83\x01\x02\x03"), "InvalidCbor", rj_cbor);  // array
  EXPECT_REJECTED(rejected_for(get_json, R"({"f":0})"), "InvalidRequest", rj_json);
  EXPECT_REJECTED(rejected_for(get_json, R"({"l":256})"), "InvalidRequest", rj_json);
  EXPECT_REJECTED(rejected_for(get_json, R"({"f":0,"l":256,"o":-1})"), "InvalidRequest", rj_json);
  EXPECT_REJECTED(rejected_for(get_json, R"({"f":0,"l":256.5})"), "InvalidRequest", rj_json);
  auto long_token = args();
  long_token.client_token = std::string(65, 't');
  EXPECT_REJECTED(rejected_for(Format::Cbor, long_token), "InvalidRequest", rj_cbor);
  // An empty describe payload counts as {}.
  dev->mqtt().clear();
  dev->send_raw(dev->request_topic("rj", protocol::Verb::Describe, Format::Json), {});
  auto d = dev->wait_for(ReplyKind::Description);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->description.version, 1u);
}

TEST_F(Rejections, BoundsOfEveryField) {
  const std::string rj_json = dev->reply_topic("rj", ReplyKind::Rejected, Format::Json);
  const std::string rj_cbor = dev->reply_topic("rj", ReplyKind::Rejected, Format::Cbor);
  for (Format f : {Format::Json, Format::Cbor}) {
    SCOPED_TRACE(std::string(protocol::to_string(f)));
    const std::string& topic = f == Format::Json ? rj_json : rj_cbor;
    EXPECT_REJECTED(rejected_for(f, args(255)), "BlockSizeOutOfBounds", topic);
    EXPECT_REJECTED(rejected_for(f, args(131073)), "BlockSizeOutOfBounds", topic);
    auto far = args();
    far.offset = 98305;
    EXPECT_REJECTED(rejected_for(f, far), "OffsetOutOfBounds", topic);
    auto past_end = args();
    past_end.offset = 40;  // the file has 40 blocks of 256
    EXPECT_REJECTED(rejected_for(f, past_end), "OffsetOutOfBounds", topic);
    auto many = args();
    many.count = 98305;
    EXPECT_REJECTED(rejected_for(f, many), "BlockCountLimitExceeded", topic);
    auto big_bitmap = args();
    big_bitmap.bitmap = std::vector<std::uint8_t>(12288, 0xff);
    EXPECT_REJECTED(rejected_for(f, big_bitmap), "BlockBitmapLimitExceeded", topic);
    auto bitmap_past_end = args();
    bitmap_past_end.bitmap = std::vector<std::uint8_t>{0, 0, 0, 0, 0, 0xff};  // blocks 40..47
    EXPECT_REJECTED(rejected_for(f, bitmap_past_end), "OffsetOutOfBounds", topic);
    auto file = args();
    file.file_id = 9;
    EXPECT_REJECTED(rejected_for(f, file), "ResourceNotFound", topic);
    EXPECT_REJECTED(rejected_for(f, args(), "nope"), "ResourceNotFound",
                    dev->reply_topic("nope", ReplyKind::Rejected, f));
    auto version = args();
    version.version = 2;
    EXPECT_REJECTED(rejected_for(f, version), "VersionMismatch", topic);
    // Describe of a stream that does not exist.
    dev->mqtt().clear();
    dev->send_describe("nope", f);
    auto d = dev->wait_for(ReplyKind::Rejected);
    EXPECT_REJECTED(d, "ResourceNotFound", dev->reply_topic("nope", ReplyKind::Rejected, f));
  }
  // The largest bitmap allowed is fine (blocks past the end are dropped silently).
  auto max_bitmap = args();
  max_bitmap.bitmap = std::vector<std::uint8_t>(12287, 0xff);
  max_bitmap.count = 3;
  auto ok = dev->get_once("rj", Format::Cbor, max_bitmap);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->kind, ReplyKind::Data) << ok->rejected.code;
}

TEST_F(Rejections, ClientTokensAreEchoedWithBothKeySets) {
  // Rejected, JSON: both short and long keys.
  auto bad = args(100);
  bad.client_token = "token-\xc3\xa9/\"x";
  auto r = rejected_for(Format::Json, bad);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rejected.code, "BlockSizeOutOfBounds");
  EXPECT_EQ(r->rejected.client_token, bad.client_token);
  Json j(to_string(r->raw));
  ASSERT_TRUE(j.ok()) << to_string(r->raw);
  EXPECT_EQ(j.str("/clientToken"), bad.client_token);
  EXPECT_EQ(j.str("/c"), bad.client_token);
  EXPECT_EQ(j.str("/code"), "BlockSizeOutOfBounds");
  EXPECT_EQ(j.str("/o"), "BlockSizeOutOfBounds");
  EXPECT_TRUE(j.str("/message").has_value());
  EXPECT_EQ(j.str("/message"), j.str("/m"));
  // Without a token: no token keys.
  auto r2 = rejected_for(Format::Json, args(100));
  ASSERT_TRUE(r2);
  Json j2(to_string(r2->raw));
  EXPECT_FALSE(j2.has("/clientToken"));
  EXPECT_FALSE(j2.has("/c"));
  // Data and description replies echo it too, in both formats.
  for (Format f : {Format::Json, Format::Cbor}) {
    auto a = args();
    a.client_token = "abc-123";
    a.count = 2;
    dev->mqtt().clear();
    ASSERT_TRUE(dev->send_get("rj", f, a));
    for (int k = 0; k < 2; ++k) {
      auto data = dev->wait_for(ReplyKind::Data);
      ASSERT_TRUE(data);
      EXPECT_EQ(data->decode_error, "");
      EXPECT_EQ(data->data.client_token, "abc-123");
      EXPECT_EQ(data->data.block_index, static_cast<std::uint32_t>(k));
      EXPECT_EQ(to_string(data->data.payload),
                content.substr(static_cast<std::size_t>(k) * 256, 256));
    }
    auto d = dev->describe("rj", f, "desc-9");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->description.client_token, "desc-9");
  }
}

TEST_F(Rejections, UpdatedStreamRejectsTheOldVersionAndDeletedStreamIsNotFound) {
  stack.put("r2.bin", test_bytes(3000, 12));
  auto u = stack.request("PUT", "/streams/rj",
                         "{\"files\":" + files_json({{0, "fw", "r2.bin", std::nullopt}}) + "}");
  ASSERT_EQ(u.status, 200) << u.body;
  const std::string rj_cbor = dev->reply_topic("rj", ReplyKind::Rejected, Format::Cbor);
  auto old = args();
  old.version = 1;
  EXPECT_REJECTED(rejected_for(Format::Cbor, old), "VersionMismatch", rj_cbor);
  auto current = args();
  current.version = 2;
  auto ok = dev->get_once("rj", Format::Cbor, current);
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->kind, ReplyKind::Data) << ok->rejected.code;
  EXPECT_EQ(to_string(ok->data.payload), test_bytes(3000, 12).substr(0, 256));
  // The new content downloads whole.
  DownloadOptions opts;
  opts.block_size = 1024;
  auto result = dev->download("rj", Format::Json, 0, opts);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.version, 2u);
  EXPECT_EQ(bytes_to_string(result.bytes), test_bytes(3000, 12));

  ASSERT_EQ(stack.request("DELETE", "/streams/rj").status, 200);
  EXPECT_REJECTED(rejected_for(Format::Cbor, args()), "ResourceNotFound", rj_cbor);
  dev->mqtt().clear();
  dev->send_describe("rj", Format::Json);
  EXPECT_REJECTED(dev->wait_for(ReplyKind::Rejected), "ResourceNotFound",
                  dev->reply_topic("rj", ReplyKind::Rejected, Format::Json));
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

class RelaxedVersion : public Rejections {
  void configure() override { stack.daemon().set("delivery", "relax_version_check", "true"); }
};

TEST_F(RelaxedVersion, AnyVersionIsServed) {
  ASSERT_EQ(stack.request("PUT", "/streams/rj", R"({"description":"v2"})").status, 200);
  for (std::uint64_t s : {1u, 2u, 99u}) {
    auto a = args();
    a.version = s;
    auto r = dev->get_once("rj", Format::Json, a);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, ReplyKind::Data) << "s=" << s << ": " << r->rejected.code;
  }
  // A device library that always sends s=1 downloads the whole file.
  DownloadOptions opts;
  opts.block_size = 256;
  opts.version = 1;
  auto result = dev->download("rj", Format::Json, 0, opts);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(bytes_to_string(result.bytes), content);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

class Throttled : public Rejections {
  void configure() override {
    stack.daemon().set("delivery", "per_thing_queue_requests", "1");
    // One block a second: the first request keeps the thing busy for the whole test.
    stack.daemon().set("delivery", "per_thing_blocks_per_s", "1");
  }
};

TEST_F(Throttled, AThingOverItsQueueIsThrottled) {
  const std::string rj_json = dev->reply_topic("rj", ReplyKind::Rejected, Format::Json);
  dev->mqtt().clear();
  auto a = args();
  a.count = 40;
  a.client_token = "burst";
  for (std::uint32_t i = 0; i < 10; ++i) {
    a.count = 40 - i;  // distinct requests: an identical one still queued would be merged
    ASSERT_TRUE(dev->send_get("rj", Format::Json, a));
  }
  int throttled = 0;
  while (throttled < 8) {
    auto r = dev->wait_for(ReplyKind::Rejected, 30000);
    ASSERT_TRUE(r) << "only " << throttled << " RequestThrottled replies";
    EXPECT_EQ(r->rejected.code, "RequestThrottled");
    EXPECT_EQ(r->rejected.client_token, "burst");
    EXPECT_EQ(r->topic, rj_json);
    ++throttled;
  }
  // Another thing is not affected by this one's queue.
  auto other = stack.device("other-thing", "rj");
  ASSERT_TRUE(other);
  auto first = other->get_once("rj", Format::Cbor, args());
  ASSERT_TRUE(first);
  EXPECT_EQ(first->kind, ReplyKind::Data) << first->rejected.code;
  auto metrics = stack.request("GET", "/metrics");
  EXPECT_NE(metrics.body.find("chunkd_throttled_total"), std::string::npos);
  // Stopping with work queued still exits 0.
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

// Devices downloading from the real chunkd binary through a private Mosquitto (SPEC.md §1): whole
// files of awkward sizes in both formats, at several block sizes, in windows and with bitmaps,
// compared byte for byte; every file of a stream by its id, content fixed at create time, a damaged
// store reported rather than served, and the selection rules of SPEC.md §1.1.
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

}  // namespace
}  // namespace chunkd::test

#include "io/safe_open.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace chunkd::io {
namespace {

namespace fs = std::filesystem;

class TempTree {
 public:
  TempTree() {
    std::string templ = (fs::temp_directory_path() / "chunkd-safe-open-XXXXXX").string();
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    char* made = ::mkdtemp(buf.data());
    EXPECT_NE(made, nullptr);
    root_ = made;
  }
  ~TempTree() {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }
  const fs::path& root() const { return root_; }
  void write(const fs::path& rel, const std::string& content) const {
    fs::create_directories((root_ / rel).parent_path());
    std::ofstream(root_ / rel, std::ios::binary) << content;
  }

 private:
  fs::path root_;
};

// The bucket is <tmp>/bucket; <tmp>/outside.txt is outside it.
class SafeOpenTest : public ::testing::TestWithParam<SafeOpenMode> {
 protected:
  void SetUp() override {
    if (GetParam() == SafeOpenMode::Openat2 && safe_open_mode() != SafeOpenMode::Openat2) {
      GTEST_SKIP() << "openat2 is not available on this kernel";
    }
    tree_.write("bucket/fw.bin", "firmware");
    tree_.write("bucket/dir/nested.bin", "nested!");
    tree_.write("outside.txt", "secret");
    auto dir = open_bucket_dir((tree_.root() / "bucket").string());
    ASSERT_TRUE(dir) << dir.error().message();
    dir_ = *dir;
  }
  void TearDown() override {
    if (dir_ >= 0) ::close(dir_);
  }
  fs::path bucket() const { return tree_.root() / "bucket"; }

  // Opens and returns the error; on success checks the content length and closes.
  std::error_code open(std::string_view key, std::uint64_t* size = nullptr) {
    auto f = safe_open(dir_, key, GetParam());
    if (!f) {
      EXPECT_TRUE(f.error().code);
      return f.error().code;
    }
    EXPECT_GE(f->fd, 0);
    if (size) *size = f->size_bytes;
    ::close(f->fd);
    return {};
  }
  bool openat2() const { return GetParam() == SafeOpenMode::Openat2; }

  TempTree tree_;
  int dir_ = -1;
};

TEST_P(SafeOpenTest, OpensRegularFilesInsideTheBucket) {
  std::uint64_t size = 0;
  EXPECT_FALSE(open("fw.bin", &size));
  EXPECT_EQ(size, 8u);
  EXPECT_FALSE(open("dir/nested.bin", &size));
  EXPECT_EQ(size, 7u);
}

TEST_P(SafeOpenTest, ReturnsABlockingCloseOnExecReadOnlyFd) {
  auto opened = safe_open(dir_, "fw.bin", GetParam());
  ASSERT_TRUE(opened);
  OpenedFile f = *opened;
  int fl = ::fcntl(f.fd, F_GETFL);
  EXPECT_EQ(fl & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(fl & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(f.fd, F_GETFD) & FD_CLOEXEC, 0);
  char buf[16] = {};
  EXPECT_EQ(::read(f.fd, buf, sizeof buf), 8);
  ::close(f.fd);
}

TEST_P(SafeOpenTest, RefusesDotDot) {
  EXPECT_EQ(open(".."), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("../outside.txt"), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("a/../../x"), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("dir/../fw.bin"), SafeOpenError::InvalidKey);  // even one that stays inside
  EXPECT_EQ(open("dir/.."), SafeOpenError::InvalidKey);
}

TEST_P(SafeOpenTest, RefusesAbsoluteEmptyAndDotComponents) {
  EXPECT_EQ(open((tree_.root() / "outside.txt").string()), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("/fw.bin"), SafeOpenError::InvalidKey);
  EXPECT_EQ(open(""), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("dir//nested.bin"), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("dir/"), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("./fw.bin"), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("."), SafeOpenError::InvalidKey);
}

TEST_P(SafeOpenTest, RefusesNulBytes) {
  using namespace std::string_view_literals;
  EXPECT_EQ(open("fw.bin\0../../outside.txt"sv), SafeOpenError::InvalidKey);
  EXPECT_EQ(open("\0"sv), SafeOpenError::InvalidKey);
}

TEST_P(SafeOpenTest, RefusesOverLongKeys) {
  EXPECT_EQ(open(std::string(1025, 'a')), SafeOpenError::KeyTooLong);
  // 1024 bytes passes the lexical check and then fails in the file system.
  std::string long_key;
  while (long_key.size() + 101 <= 1024) long_key += std::string(100, 'b') + "/";
  long_key += std::string(1024 - long_key.size(), 'c');
  ASSERT_EQ(long_key.size(), 1024u);
  EXPECT_TRUE(check_bucket_key(long_key));
  EXPECT_EQ(open(long_key), std::errc::no_such_file_or_directory);
}

TEST_P(SafeOpenTest, MissingFileIsENOENT) {
  EXPECT_EQ(open("missing.bin"), std::errc::no_such_file_or_directory);
  EXPECT_EQ(open("nodir/missing.bin"), std::errc::no_such_file_or_directory);
}

TEST_P(SafeOpenTest, FileUsedAsDirectoryIsENOTDIR) {
  EXPECT_EQ(open("fw.bin/x"), std::errc::not_a_directory);
}

TEST_P(SafeOpenTest, RefusesDirectoriesAndFifos) {
  EXPECT_EQ(open("dir"), SafeOpenError::NotRegular);
  ASSERT_EQ(::mkfifo((bucket() / "pipe").c_str(), 0600), 0);
  EXPECT_EQ(open("pipe"), SafeOpenError::NotRegular);  // and does not block
}

TEST_P(SafeOpenTest, RefusesUnreadableFiles) {
  ASSERT_EQ(::chmod((bucket() / "fw.bin").c_str(), 0), 0);
  const bool root = ::geteuid() == 0;  // root reads every file: act as nobody meanwhile
  if (root) ASSERT_EQ(::seteuid(65534), 0);
  std::error_code error = open("fw.bin");
  if (root) ASSERT_EQ(::seteuid(0), 0);
  EXPECT_EQ(error, std::errc::permission_denied);
}

TEST_P(SafeOpenTest, RefusesSymlinksPointingOut) {
  fs::create_symlink(tree_.root() / "outside.txt", bucket() / "abs-link");
  fs::create_symlink("../outside.txt", bucket() / "rel-link");
  fs::create_symlink(tree_.root(), bucket() / "dir-link");
  fs::create_symlink("/", bucket() / "root-link");
  std::error_code want = openat2() ? std::error_code(SafeOpenError::Escapes)
                                   : std::error_code(SafeOpenError::SymlinkRefused);
  EXPECT_EQ(open("abs-link"), want);
  EXPECT_EQ(open("rel-link"), want);
  EXPECT_EQ(open("dir-link/outside.txt"), want);
  EXPECT_EQ(open("root-link/etc/passwd"), want);
}

TEST_P(SafeOpenTest, RefusesProcMagicLinks) {
  fs::create_symlink("/proc/self/root/etc/passwd", bucket() / "magic");
  EXPECT_TRUE(open("magic"));
}

// Documented difference: openat2 follows a symlink that stays inside the bucket; the walk refuses
// every symlink.
TEST_P(SafeOpenTest, SymlinkInsideTheBucketFollowsOnlyWithOpenat2) {
  fs::create_symlink("fw.bin", bucket() / "latest.bin");
  fs::create_symlink("dir", bucket() / "dir-alias");
  fs::create_symlink("../fw.bin", bucket() / "dir" / "up.bin");
  std::uint64_t size = 0;
  if (openat2()) {
    EXPECT_FALSE(open("latest.bin", &size));
    EXPECT_EQ(size, 8u);
    EXPECT_FALSE(open("dir-alias/nested.bin", &size));
    EXPECT_EQ(size, 7u);
    EXPECT_FALSE(open("dir/up.bin", &size));
  } else {
    EXPECT_EQ(open("latest.bin"), SafeOpenError::SymlinkRefused);
    EXPECT_EQ(open("dir-alias/nested.bin"), SafeOpenError::SymlinkRefused);
    EXPECT_EQ(open("dir/up.bin"), SafeOpenError::SymlinkRefused);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, SafeOpenTest,
                         ::testing::Values(SafeOpenMode::Openat2, SafeOpenMode::Walk),
                         [](const auto& info) {
                           return info.param == SafeOpenMode::Openat2 ? "Openat2" : "Walk";
                         });

TEST(SafeOpenKey, LexicalRules) {
  EXPECT_TRUE(check_bucket_key("a"));
  EXPECT_TRUE(check_bucket_key("a/b/c.bin"));
  EXPECT_TRUE(check_bucket_key("..a/b.."));  // dots inside a name are fine
  EXPECT_EQ(check_bucket_key("a/./b").error().code, SafeOpenError::InvalidKey);
  EXPECT_EQ(check_bucket_key("a/..").error().code, SafeOpenError::InvalidKey);
}

TEST(SafeOpenKey, BucketDirMustBeADirectory) {
  TempTree tree;
  tree.write("file", "x");
  auto file = open_bucket_dir((tree.root() / "file").string());
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, std::errc::not_a_directory);
  auto missing = open_bucket_dir((tree.root() / "missing").string());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, std::errc::no_such_file_or_directory);
}

TEST(SafeOpenKey, ErrorsHaveMessages) {
  EXPECT_NE(std::error_code(SafeOpenError::Escapes).message().find("outside"), std::string::npos);
  EXPECT_STREQ(safe_open_category().name(), "safe_open");
}

}  // namespace
}  // namespace chunkd::io

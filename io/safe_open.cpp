#include "io/safe_open.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "base/assert.hpp"

namespace chunkd::io {
namespace {

class SafeOpenCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "safe_open"; }
  std::string message(int value) const override {
    switch (static_cast<SafeOpenError>(value)) {
      case SafeOpenError::InvalidKey:
        return "key must be a relative path with no empty, '.' or '..' component and no NUL byte";
      case SafeOpenError::KeyTooLong:
        return "key is longer than 1024 bytes";
      case SafeOpenError::Escapes:
        return "key resolves outside the bucket directory";
      case SafeOpenError::SymlinkRefused:
        return "key goes through a symbolic link, which this kernel cannot follow safely";
      case SafeOpenError::NotRegular:
        return "key does not name a regular file";
    }
    return "safe_open error";
  }
};

std::error_code errno_code(int e) { return {e, std::generic_category()}; }

long sys_openat2(int dir_fd, const char* path, open_how* how) {
  return ::syscall(SYS_openat2, dir_fd, path, how, sizeof *how);
}

// Closes `fd` and fails with `code` (read before the close can change errno).
Unexpected<base::Error> close_and_fail(int fd, std::error_code code) {
  ::close(fd);
  return fail(code);
}

// fstat, refuse non-regular files, clear O_NONBLOCK. Closes fd on failure.
Expected<OpenedFile> finish_open(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return close_and_fail(fd, errno_code(errno));
  if (!S_ISREG(st.st_mode)) return close_and_fail(fd, SafeOpenError::NotRegular);
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return close_and_fail(fd, errno_code(errno));
  }
  return OpenedFile{fd, static_cast<std::uint64_t>(st.st_size),
                    static_cast<std::uint64_t>(st.st_dev)};
}

constexpr int kFileFlags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;

Expected<OpenedFile> open_with_openat2(int dir_fd, const std::string& key) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(kFileFlags);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  long fd = sys_openat2(dir_fd, key.c_str(), &how);
  if (fd < 0) {
    int e = errno;
    return fail(e == EXDEV ? std::error_code(SafeOpenError::Escapes) : errno_code(e));
  }
  return finish_open(static_cast<int>(fd));
}

bool is_symlink_at(int dir_fd, const std::string& name) {
  struct stat st {};
  return ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
}

Expected<OpenedFile> open_by_walking(int dir_fd, const std::string& key) {
  int current = dir_fd;  // not owned while it equals dir_fd
  auto release = [&] {
    if (current != dir_fd) ::close(current);
  };
  std::size_t start = 0;
  while (true) {
    std::size_t slash = key.find('/', start);
    std::string component =
        key.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (slash == std::string::npos) {
      int fd = ::openat(current, component.c_str(), kFileFlags | O_NOFOLLOW);
      int e = errno;
      if (fd < 0 && e == ELOOP && is_symlink_at(current, component)) {
        release();
        return fail(SafeOpenError::SymlinkRefused);
      }
      release();
      if (fd < 0) return fail(errno_code(e));
      return finish_open(fd);
    }
    int next = ::openat(current, component.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    if (next < 0) {
      bool link = (e == ENOTDIR || e == ELOOP) && is_symlink_at(current, component);
      release();
      return fail(link ? std::error_code(SafeOpenError::SymlinkRefused) : errno_code(e));
    }
    release();
    current = next;
    start = slash + 1;
  }
}

SafeOpenMode probe_mode() {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(O_PATH | O_DIRECTORY | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  long fd = sys_openat2(AT_FDCWD, ".", &how);
  if (fd < 0) return SafeOpenMode::Walk;
  ::close(static_cast<int>(fd));
  return SafeOpenMode::Openat2;
}

}  // namespace

const std::error_category& safe_open_category() {
  static const SafeOpenCategory category;
  return category;
}

std::error_code make_error_code(SafeOpenError e) {
  return {static_cast<int>(e), safe_open_category()};
}

SafeOpenMode safe_open_mode() {
  static const SafeOpenMode mode = probe_mode();
  return mode;
}

Expected<void> check_bucket_key(std::string_view key) {
  if (key.size() > kMaxBucketKeyBytes) return fail(SafeOpenError::KeyTooLong);
  if (key.empty() || key.front() == '/') return fail(SafeOpenError::InvalidKey);
  if (key.find('\0') != std::string_view::npos) return fail(SafeOpenError::InvalidKey);
  std::size_t start = 0;
  while (true) {
    std::size_t slash = key.find('/', start);
    std::string_view component =
        key.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (component.empty() || component == "." || component == "..") {
      return fail(SafeOpenError::InvalidKey);
    }
    if (slash == std::string_view::npos) return {};
    start = slash + 1;
  }
}

Expected<int> open_bucket_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(errno_code(errno));
  return fd;
}

Expected<OpenedFile> safe_open(int dir_fd, std::string_view key) {
  return safe_open(dir_fd, key, safe_open_mode());
}

Expected<OpenedFile> safe_open(int dir_fd, std::string_view key, SafeOpenMode mode) {
  CHUNKD_ASSERT(dir_fd >= 0);
  if (auto valid = check_bucket_key(key); !valid) return fail(valid.error().code);
  std::string path(key);
  return mode == SafeOpenMode::Openat2 ? open_with_openat2(dir_fd, path)
                                       : open_by_walking(dir_fd, path);
}

}  // namespace chunkd::io

// Opening a key under a bucket directory so that it can never escape it (SPEC.md §2.1).
//
// A key is a relative path: 1..1024 bytes, no NUL, no leading '/', no empty, "." or ".."
// component (so "a//b", "a/", "./a", "a/../b" are all refused before any system call).
//
// Resolution, probed once per process:
// - Openat2: openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS. A symlink inside the bucket
//   that stays inside it is followed; one that points out (absolute, or climbing with "..") is
//   refused with SafeOpenError::Escapes.
// - Walk (kernels without openat2, or where a sandbox refuses it): every component is opened with
//   openat(O_NOFOLLOW) from the bucket directory; EVERY symlink is refused
//   (SafeOpenError::SymlinkRefused), even one that would stay inside.
// Either way only a regular file is returned, opened O_RDONLY | O_CLOEXEC (the FIFO-safe
// O_NONBLOCK used while opening is cleared again).
//
// Errors: a SafeOpenError (its own category, so that a caller can tell a refused key from a file
// system error and show the rule that refused it) or an errno (ENOENT, EACCES, ENOTDIR, ...).
//
// Thread: any. The calls block on the file system (a few syscalls): the engine calls them from the
// libuv thread pool, never from the loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "base/expected.hpp"

namespace chunkd::io {

inline constexpr std::size_t kMaxBucketKeyBytes = 1024;

enum class SafeOpenError {
  InvalidKey = 1,  // empty, NUL byte, absolute, empty/"."/".." component
  KeyTooLong,      // over kMaxBucketKeyBytes
  Escapes,         // resolution would leave the bucket directory
  SymlinkRefused,  // Walk mode: a component is a symlink
  NotRegular,      // a directory, FIFO, device, socket
};
const std::error_category& safe_open_category();
std::error_code make_error_code(SafeOpenError e);

enum class SafeOpenMode { Openat2, Walk };
// The mode the running kernel allows (probed once, cached).
SafeOpenMode safe_open_mode();

// The lexical rules above: success when the key is acceptable, else InvalidKey or KeyTooLong.
Expected<void> check_bucket_key(std::string_view key);

// Opens a bucket directory as an O_PATH handle for safe_open(), owned by the caller. Fails with
// the errno (ENOTDIR when it is not a directory).
Expected<int> open_bucket_dir(const std::string& path);

struct OpenedFile {
  int fd = -1;  // owned by the caller
  std::uint64_t size_bytes = 0;
  std::uint64_t device = 0;  // st_dev, to tell whether a reflink can work
};

// Opens `key` beneath `dir_fd`. REQUIRES: dir_fd is a directory handle (open_bucket_dir).
Expected<OpenedFile> safe_open(int dir_fd, std::string_view key);
// The same with the mode forced (tests exercise both); Openat2 on a kernel without it fails
// with ENOSYS.
Expected<OpenedFile> safe_open(int dir_fd, std::string_view key, SafeOpenMode mode);

}  // namespace chunkd::io

namespace std {
template <>
struct is_error_code_enum<chunkd::io::SafeOpenError> : true_type {};
}  // namespace std

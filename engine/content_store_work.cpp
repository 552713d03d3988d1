#include "engine/content_store_work.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string_view>

#include "engine/content_store.hpp"

namespace chunkd::engine::store_work {
namespace {

int make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return 0;
  if (errno != EEXIST) return errno;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno;
  return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

int fsync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int e = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return e;
}

// Counts (or removes, when not in `live`) the blobs of one <data_dir>/blobs/<prefix> directory.
void scan_prefix_dir(int top_fd, const char* prefix_name, const std::vector<std::string>* live,
                     ScanResult& r) {
  std::string_view prefix = prefix_name;
  int sub_fd = ::openat(top_fd, prefix_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (sub_fd < 0) return;
  DIR* d = ::fdopendir(sub_fd);
  if (d == nullptr) {
    ::close(sub_fd);
    return;
  }
  while (dirent* entry = ::readdir(d)) {
    std::string_view name = entry->d_name;
    if (!valid_digest(name) || name.substr(0, 2) != prefix) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    auto size = static_cast<std::uint64_t>(st.st_size);
    bool keep = live == nullptr || std::binary_search(live->begin(), live->end(), name);
    if (!keep && ::unlinkat(::dirfd(d), entry->d_name, 0) == 0) {
      r.removed_blobs++;
      r.removed_bytes += size;
      continue;
    }
    r.blobs++;
    r.bytes += size;
  }
  ::closedir(d);
}

// Links the synced temp file as blob `digest`, creating (and syncing) its prefix directory.
int link_blob(const std::string& tmp_path, const std::string& data_dir, const std::string& digest,
              CommittedBlob& out) {
  std::string dir = data_dir + "/blobs/" + digest.substr(0, 2);
  bool new_dir = ::mkdir(dir.c_str(), 0755) == 0;
  if (!new_dir && errno != EEXIST) return errno;
  if (new_dir) {
    if (int e = fsync_dir(data_dir + "/blobs")) return e;
  }
  std::string target = dir + "/" + digest;
  if (::link(tmp_path.c_str(), target.c_str()) == 0) {
    out.created = true;
    return fsync_dir(dir);
  }
  if (errno != EEXIST) return errno;
  out.deduplicated = true;
  return 0;
}

}  // namespace

int make_dirs(const std::string& path) {
  for (std::size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    if (int e = make_dir(path.substr(0, slash))) return e;
  }
  return make_dir(path);
}

int clean_tmp(const std::string& data_dir) {
  std::string dir = data_dir + "/tmp";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return errno;
  int e = 0;
  while (dirent* entry = ::readdir(d)) {
    std::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    if (::unlinkat(::dirfd(d), entry->d_name, 0) != 0 && errno != ENOENT) e = errno;
  }
  ::closedir(d);
  return e;
}

ScanResult scan_blobs(const std::string& data_dir, const std::vector<std::string>* live) {
  ScanResult r;
  std::string root = data_dir + "/blobs";
  DIR* top = ::opendir(root.c_str());
  if (top == nullptr) {
    r.error = errno;
    return r;
  }
  while (dirent* sub = ::readdir(top)) {
    std::string_view prefix = sub->d_name;
    if (prefix.size() != 2 || !valid_digest(std::string(prefix) + std::string(30, '0'))) continue;
    scan_prefix_dir(::dirfd(top), sub->d_name, live, r);
  }
  ::closedir(top);
  return r;
}

int free_space(const std::string& dir, std::uint64_t& available_bytes) {
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) return errno;
  available_bytes = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  return 0;
}

int prepare_ingest(int src_fd, const IngestPlan& plan, PreparedIngest& out) {
  struct stat st {};
  if (::fstat(src_fd, &st) != 0) return errno;
  if (!S_ISREG(st.st_mode)) return EINVAL;
  out.size = static_cast<std::uint64_t>(st.st_size);
  out.read_fd = src_fd;
  if (out.size > plan.max_file_bytes) {
    out.too_large = true;
    return 0;
  }
  if (plan.try_reflink && static_cast<std::uint64_t>(st.st_dev) == plan.data_device) {
    out.tmp_fd = ::open(plan.tmp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out.tmp_fd < 0) return errno;
    struct stat clone {};
    if (::ioctl(out.tmp_fd, FICLONE, src_fd) == 0 && ::fstat(out.tmp_fd, &clone) == 0) {
      // Hash what the clone holds: it is what the blob will be.
      out.size = static_cast<std::uint64_t>(clone.st_size);
      out.read_fd = out.tmp_fd;
      out.reflinked = true;
      return 0;
    }
    if (::ftruncate(out.tmp_fd, 0) != 0) return errno;
  }
  // A copy needs `size` bytes: check before writing any (an ENOSPC mid-copy is still handled).
  if (int e = plan.free_space(plan.data_dir, out.available_bytes)) return e;
  if (out.available_bytes < out.size) {
    out.hash_only = true;
    if (out.tmp_fd >= 0) ::close(out.tmp_fd);
    out.tmp_fd = -1;
    return 0;
  }
  if (out.tmp_fd < 0) {
    out.tmp_fd = ::open(plan.tmp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out.tmp_fd < 0) return errno;
  }
  (void)::posix_fadvise(src_fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return 0;
}

bool blob_stored(const std::string& data_dir, const std::string& digest, std::uint64_t size) {
  struct stat st {};
  return ::stat(blob_path(data_dir, digest).c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         static_cast<std::uint64_t>(st.st_size) == size;
}

int check_writable(const std::string& data_dir) {
  std::string probe = data_dir + "/tmp/probe-" + std::to_string(::getpid());
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  ::close(fd);
  if (::unlink(probe.c_str()) != 0 && errno != ENOENT) return errno;
  return 0;
}

int commit_ingest(bool keep, int src_fd, int tmp_fd, const std::string& tmp_path,
                  const std::string& data_dir, const std::string& digest, CommittedBlob& out) {
  int e = 0;
  if (keep && tmp_fd >= 0) {
    if (::fsync(tmp_fd) != 0 || ::fchmod(tmp_fd, 0444) != 0) e = errno;
  }
  if (tmp_fd >= 0) ::close(tmp_fd);
  if (src_fd >= 0) ::close(src_fd);
  if (keep && e == 0) e = link_blob(tmp_path, data_dir, digest, out);
  if (!tmp_path.empty()) ::unlink(tmp_path.c_str());
  return e;
}

}  // namespace chunkd::engine::store_work

// chunkd where a system-call filter refuses io_uring, as a stricter SystemCallFilter= than the
// packaged unit's would (or a container runtime's seccomp profile): io_uring_setup fails with
// EPERM, chunkd says so in one log line, reads files on the libuv thread pool, and devices still
// download every byte.
//
// The filter is installed on this test process (every thread) and is inherited by the broker and
// chunkd it starts; it can never be removed, so this file holds this one test only.
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

#if defined(__x86_64__)
constexpr unsigned kNativeArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned kNativeArch = AUDIT_ARCH_AARCH64;
#else
constexpr unsigned kNativeArch = 0;
#endif

// io_uring_setup (native ABI) fails with EPERM; every other call is allowed.
bool refuse_io_uring_setup() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kNativeArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &program) == 0;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

TEST(IoUringFiltered, ChunkdFallsBackToTheThreadPoolWithOneLogLine) {
  if (kNativeArch == 0) GTEST_SKIP() << "no seccomp architecture constant for this CPU";
  ASSERT_TRUE(refuse_io_uring_setup()) << "seccomp: " << std::strerror(errno);
  io_uring_params params{};
  errno = 0;
  ASSERT_EQ(::syscall(__NR_io_uring_setup, 4, &params), -1);
  ASSERT_EQ(errno, EPERM) << "the filter does not refuse io_uring_setup";

  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  const std::string bytes = test_bytes(1 << 20, 91);
  stack.put("image.bin", bytes);
  ASSERT_TRUE(stack.start());
  const std::string log = stack.daemon().log();
  EXPECT_EQ(count(log, "io_uring unavailable"), 1u) << log;
  EXPECT_EQ(count(log, "Operation not permitted); using the libuv thread pool"), 1u) << log;

  auto created = stack.create("filtered", {{0, "fw", "image.bin", std::nullopt}});
  ASSERT_EQ(created.status, 201) << created.body;
  auto device = stack.device("filtered-thing", "filtered");
  ASSERT_TRUE(device);
  auto result = device->download("filtered", protocol::Format::Cbor, 0, DownloadOptions{});
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_TRUE(bytes_to_string(result.bytes) == bytes);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

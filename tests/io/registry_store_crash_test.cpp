// RegistryStore (io/registry_store.hpp) under kill -9: a child process puts a burst of streams
// into SQLite and reports each acknowledged write; after the parent kills it mid-burst, every
// acknowledged stream is in the reopened store, whole.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "io/registry_store.hpp"
#include "tests/io/registry_samples.hpp"
#include "tests/io/registry_store_fixture.hpp"

namespace chunkd::io {
namespace {

using testing::RegistryStoreTest;

// ---- kill -9 in the middle of a burst of writes --------------------------------------------

// The writer runs in a fresh process: fork() then exec() of this same test binary, which sees
// kCrashChildEnv in a global test environment and never reaches the tests. (Forking without exec
// would copy a process whose libuv pool threads already exist, which ThreadSanitizer refuses.)
constexpr const char* kCrashChildEnv = "CHUNKD_REGISTRY_CRASH_CHILD";  // "<ack fd>:<dir>"

// Acknowledged puts, each id written to `ack_fd` after its callback reported success. Never
// returns; the parent kills it.
[[noreturn]] void crash_child(const std::string& dir, int ack_fd) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) ::_exit(2);
  auto opened = RegistryStore::open(&loop, dir, 16);
  if (!opened) ::_exit(3);
  auto store = std::move(*opened);
  constexpr int kTotal = 100'000;
  constexpr std::size_t kDepth = 8;  // writes queued at once
  int next = 0;
  std::function<void()> issue = [&] {
    while (store->pending_writes() < kDepth && next < kTotal) {
      const int n = next++;
      store->put(numbered_stream(n), [&, n](std::error_code e) {
        if (e) ::_exit(4);
        const std::int32_t id = n;
        if (::write(ack_fd, &id, sizeof id) != static_cast<ssize_t>(sizeof id)) ::_exit(5);
        issue();
      });
    }
  };
  issue();
  uv_run(&loop, UV_RUN_DEFAULT);
  ::_exit(0);
}

class CrashChildEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* spec = std::getenv(kCrashChildEnv);
    if (spec == nullptr) return;
    char* rest = nullptr;
    const long fd = std::strtol(spec, &rest, 10);
    if (rest == nullptr || *rest != ':' || fd < 0) ::_exit(6);
    crash_child(rest + 1, static_cast<int>(fd));
  }
};
[[maybe_unused]] ::testing::Environment* const crash_child_environment =
    ::testing::AddGlobalTestEnvironment(new CrashChildEnvironment);

TEST_F(RegistryStoreTest, AcknowledgedWritesSurviveKill9) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  // Everything the child needs is built before fork(): between fork and exec it only calls
  // async-signal-safe functions.
  std::string env_entry = std::string(kCrashChildEnv) + "=" + std::to_string(fds[1]) + ":" + dir_;
  // Environments are only set up when some test is selected: this one, which the child never
  // reaches (its environment ends the process first).
  std::string filter = "--gtest_filter=RegistryStoreTest.AcknowledgedWritesSurviveKill9";
  std::string self = "/proc/self/exe";
  std::vector<char*> argv = {self.data(), filter.data(), nullptr};
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(env_entry.data());
  envp.push_back(nullptr);
  const int dev_null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(dev_null, 0);

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::dup2(dev_null, STDOUT_FILENO);  // the child's gtest banner is noise
    ::execve(self.c_str(), argv.data(), envp.data());
    ::_exit(7);
  }
  ::close(dev_null);
  ::close(fds[1]);

  // Collect acknowledgements; kill the child once a burst is well under way.
  constexpr std::size_t kKillAfter = 40;
  std::set<int> acknowledged;
  bool killed = false;
  std::int32_t id = 0;
  std::size_t have = 0;
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, 120'000);  // failure guard only
    if (ready <= 0) {
      ADD_FAILURE() << "no acknowledgement from the child for two minutes";
      ::kill(pid, SIGKILL);
      break;
    }
    const ssize_t n = ::read(fds[0], reinterpret_cast<char*>(&id) + have, sizeof id - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child is gone and every ack it wrote has been read
    have += static_cast<std::size_t>(n);
    if (have < sizeof id) continue;
    have = 0;
    acknowledged.insert(id);
    if (!killed && acknowledged.size() >= kKillAfter) {
      ASSERT_EQ(::kill(pid, SIGKILL), 0);
      killed = true;
    }
  }
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(killed) << "child ended early, status " << status;
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  ASSERT_GE(acknowledged.size(), kKillAfter);

  // Independent check of the raw rows: every stream row has all of its file rows.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(
        sqlite3_open_v2((dir_ + "/registry.sqlite3").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr),
        SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db,
                                 "SELECT s.id, s.file_count, (SELECT count(*) FROM stream_files f "
                                 "WHERE f.stream_id = s.id) FROM streams s",
                                 -1, &stmt, nullptr),
              SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      ++rows;
      EXPECT_EQ(sqlite3_column_int(stmt, 1), sqlite3_column_int(stmt, 2))
          << reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    EXPECT_GE(rows, static_cast<int>(acknowledged.size()));
    sqlite3_close(db);
  }

  open_store();
  const auto streams = load();
  std::set<std::string> present;
  for (const StoredStream& s : streams) {
    present.insert(s.id);
    const int n = std::atoi(s.id.c_str() + std::string("stream-").size());
    EXPECT_TRUE(same_stream(s, numbered_stream(n))) << s.id << " is not exactly what was put";
  }
  std::size_t missing = 0;
  for (int n : acknowledged) {
    if (present.count("stream-" + std::to_string(n)) == 0) ++missing;
  }
  EXPECT_EQ(missing, 0u) << "acknowledged streams lost after kill -9";
  // Writes are sequential: at most the queue depth of unacknowledged ones may have landed.
  EXPECT_LE(streams.size(), acknowledged.size() + 8);
}

}  // namespace
}  // namespace chunkd::io

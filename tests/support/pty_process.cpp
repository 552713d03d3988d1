#include "tests/support/pty_process.hpp"

#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace chunkd::test {

PtyProcess::~PtyProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  if (master_ >= 0) ::close(master_);
}

bool PtyProcess::start(std::vector<std::string> args, std::vector<std::string> env,
                       unsigned short rows, unsigned short cols) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  winsize size{};
  size.ws_row = rows;
  size.ws_col = cols;
  pid_ = ::forkpty(&master_, nullptr, nullptr, &size);
  if (pid_ == 0) {
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  return pid_ > 0;
}

bool PtyProcess::read_some(int ms) {
  char buf[4096];
  pollfd p{master_, POLLIN, 0};
  if (::poll(&p, 1, ms) <= 0) return false;
  ssize_t n = ::read(master_, buf, sizeof buf);
  if (n <= 0) return false;
  seen_.append(buf, static_cast<std::size_t>(n));
  return true;
}

int PtyProcess::finish(int idle_ms) {
  while (read_some(idle_ms)) {
  }
  int status = 0;
  if (pid_ > 0) ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

}  // namespace chunkd::test

// A program run on a pseudo-terminal, for tests of what a user's terminal shows (progress bars,
// redraws) as opposed to a pipe. Thread: the test's.
//
//   PtyProcess p;
//   ASSERT_TRUE(p.start({path, "job", "watch", "j"}, {"CHUNKD_URL=..."}, 40, 100));
//   while (p.seen().find("...") == std::string::npos && p.read_some(200)) {}
//   int status = p.finish(30000);  // waitpid's status: WIFEXITED / WEXITSTATUS
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace chunkd::test {

class PtyProcess {
 public:
  PtyProcess() = default;
  ~PtyProcess();  // kills a child still running and closes the terminal
  PtyProcess(const PtyProcess&) = delete;
  PtyProcess& operator=(const PtyProcess&) = delete;

  // Runs `args` (args[0]: the program's path) with exactly the environment `env` ("NAME=value")
  // on a new terminal of `rows` × `cols`. False when the terminal or the process cannot be made.
  bool start(std::vector<std::string> args, std::vector<std::string> env, unsigned short rows = 24,
             unsigned short cols = 80);
  // Appends what the program wrote to seen(); false at the end of its output or after `ms`
  // without any.
  bool read_some(int ms);
  // Reads until the end of the output (each wait at most `idle_ms`), then reaps the program:
  // waitpid's status.
  int finish(int idle_ms);
  const std::string& seen() const { return seen_; }

 private:
  pid_t pid_ = -1;
  int master_ = -1;
  std::string seen_;
};

}  // namespace chunkd::test

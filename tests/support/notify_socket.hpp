// NotifySocket: the service manager's end of sd_notify(3) for tests: a datagram socket bound to a
// path in a private temporary directory, which chunkd (or io::ServiceNotifier) finds through
// $NOTIFY_SOCKET, and the messages received on it.
//
// Owns: the socket, its directory, and the messages received so far.
// Thread: the test's thread; every call blocks at most for the timeout it is given.
// Dependencies: POSIX and the C++ standard library only.
//
// Usage:
//   chunkd::test::NotifySocket manager;  ASSERT_TRUE(manager.open()) << manager.error();
//   manager.export_env();                 // NOTIFY_SOCKET=<path> for this process and children
//   ...start chunkd...
//   ASSERT_TRUE(manager.wait_for("READY=1", 30000)) << manager.joined();
// The destructor unsets NOTIFY_SOCKET (if it exported it), closes and removes the socket.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace chunkd::test {

class NotifySocket {
 public:
  NotifySocket() = default;
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  bool open();
  void export_env();
  const std::string& path() const { return path_; }
  const std::string& error() const { return error_; }

  // Receives what has arrived, without waiting. Returns the messages received so far.
  const std::vector<std::string>& poll();
  // Waits until a message received after the first `from` messages has `line` as one of its
  // lines ("READY=1", or a prefix ending in '*': "STATUS=serving*"). Returns its index, or -1
  // after `timeout_ms`.
  int wait_for(std::string_view line, int timeout_ms, std::size_t from = 0);
  // True when message `index` has `line` (same matching as wait_for).
  bool has(std::size_t index, std::string_view line) const;
  const std::vector<std::string>& messages() const { return messages_; }
  // Every message so far, one per line with "|" between its fields, for failure messages.
  std::string joined() const;

 private:
  bool receive(int timeout_ms);

  int fd_ = -1;
  std::string dir_;
  std::string path_;
  std::string error_;
  bool exported_ = false;
  std::vector<std::string> messages_;
};

}  // namespace chunkd::test

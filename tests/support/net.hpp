// Small POSIX helpers shared by the test harnesses (TestBroker, TestDaemon): loopback ports,
// files, errno text. Thread-compatible; no global state.
#pragma once

#include <cstdint>
#include <string>

namespace chunkd::test {

// "<what>: <strerror(errno)>" for the current errno.
std::string errno_text(const char* what);
// Binds port 0 on 127.0.0.1, reads the port the kernel chose, closes the socket (0 on failure).
std::uint16_t pick_free_port();
// True when something accepts TCP connections on 127.0.0.1:<port>.
bool port_accepts(std::uint16_t port);
// The whole file, or "" when it cannot be read.
std::string read_file(const std::string& path);
// A new private directory $TMPDIR/chunkd-<name>-XXXXXX (/tmp without TMPDIR); "" with `error`
// set when it cannot be made.
std::string make_temp_dir(const std::string& name, std::string& error);

}  // namespace chunkd::test

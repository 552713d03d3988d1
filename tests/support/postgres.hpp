// TestPostgres: a private PostgreSQL 15 server for one test binary, on a free loopback port.
//
// Owns: a temporary directory (the cluster's data directory, its Unix socket directory and the
// server's log) and the postmaster child process.
// Thread: the test's thread; every call blocks until it is done (bounded). Not for the libuv loop.
// Needs: the Debian package postgresql (initdb and postgres in /usr/lib/postgresql/15/bin, psql
// and pg_isready on PATH or there); missing() says what is missing, so a test can GTEST_SKIP.
//
// Usage:
//   chunkd::test::TestPostgres pg;
//   if (auto why = TestPostgres::missing(); !why.empty()) GTEST_SKIP() << why;
//   ASSERT_TRUE(pg.start()) << pg.error();
//   options.url = pg.url();             // "postgresql://chunkd@127.0.0.1:<port>/chunkd"
//   pg.psql("SELECT 1");                // as the superuser, for set-up and inspection
//   pg.restart();  pg.kill9();  pg.start();   // the same data and port: clients reconnect
//
// The recipe (what tools/cluster-up can reuse): initdb -D <dir>/data -U postgres --auth=trust
// -E UTF8 --locale=C.UTF-8 --no-sync; postgres -D <dir>/data -h 127.0.0.1 -p <port>
// -k <dir>/sock -c fsync=off; then, as the superuser, CREATE ROLE chunkd LOGIN and CREATE DATABASE
// chunkd OWNER chunkd. PostgreSQL refuses to run as root, so when the test runs as root (CI does)
// the directory is chowned to the `postgres` system user and initdb and postgres run as that user
// (setpriv --reuid=postgres --regid=postgres --init-groups, with --pdeathsig keep so the server
// still dies with the test process). Every server answers trust authentication on 127.0.0.1
// only: a test server, never a template for production.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace chunkd::test {

class TestPostgres {
 public:
  TestPostgres() = default;
  ~TestPostgres();
  TestPostgres(const TestPostgres&) = delete;
  TestPostgres& operator=(const TestPostgres&) = delete;

  // Empty when the server binaries are installed (and, as root, the postgres user exists); else
  // what is missing and how to get it.
  static std::string missing();

  // The first call creates the cluster (initdb), the chunkd role and database; a later call
  // starts the same cluster again on the same port. Returns once the server accepts connections
  // (at most ~30 s); false with error() set otherwise. No-op returning true when running.
  bool start();
  // Fast shutdown (SIGINT: sessions are cut, the server stops at once), SIGKILL after a bound.
  void stop();
  // SIGKILL of the postmaster: the server dies without a shutdown checkpoint.
  void kill9();
  // stop() then start() on the same port and data.
  bool restart();
  bool running() const { return pid_ > 0; }

  std::uint16_t port() const { return port_; }
  // The libpq URI chunkd connects with: the chunkd role, the chunkd database.
  std::string url() const;
  // Runs `sql` with psql as the superuser on the chunkd database; its stdout (tuples only,
  // unaligned), or "" with error() set when psql failed.
  std::string psql(const std::string& sql);
  const std::string& error() const { return error_; }
  std::string log() const;

 private:
  bool make_cluster();
  bool launch();
  bool wait_until_ready();
  // argv prefixed so that it runs as the postgres user when we are root, in dir_.
  std::vector<std::string> as_server_user(std::vector<std::string> argv) const;

  std::string dir_;
  std::string log_path_;
  std::string error_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool created_ = false;  // the chunkd role and database exist
};

}  // namespace chunkd::test

// The real chunkd binary under a stand-in service manager (a datagram socket in $NOTIFY_SOCKET,
// as systemd gives a Type=notify unit): READY=1 only once the control API listens and the broker
// session is up, RELOADING=1 then READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM.
#include <gtest/gtest.h>
#include <signal.h>

#include "tests/integration/api.hpp"
#include "tests/support/notify_socket.hpp"

namespace chunkd::test {
namespace {

constexpr int kWaitMs = 60000;

TEST(ServiceNotify, ReadyOnlyOnceTheBrokerSessionIsUpThenReloadAndStop) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  // Exported after the broker started: Mosquitto notifies the service manager too.
  NotifySocket manager;
  ASSERT_TRUE(manager.open()) << manager.error();
  manager.export_env();
  // A broker that accepts the TCP connection but never answers: chunkd cannot be ready.
  stack.broker.pause();
  ASSERT_TRUE(stack.daemon().start(/*wait_ready=*/false)) << stack.daemon().error();
  const int connecting = manager.wait_for("STATUS=connecting to the broker tcp://*", kWaitMs);
  ASSERT_GE(connecting, 0) << manager.joined() << stack.daemon().log();
  manager.poll();
  for (std::size_t i = 0; i < manager.messages().size(); ++i) {
    EXPECT_FALSE(manager.has(i, "READY=1")) << "READY=1 before the broker answered:\n"
                                            << manager.joined();
  }

  stack.broker.resume();
  const int ready = manager.wait_for("READY=1", kWaitMs);
  ASSERT_GE(ready, 0) << manager.joined() << stack.daemon().log();
  EXPECT_TRUE(manager.has(static_cast<std::size_t>(ready), "STATUS=serving: control API on *"))
      << manager.joined();
  ASSERT_TRUE(stack.daemon().wait_health(200)) << stack.daemon().log();

  ASSERT_EQ(::kill(stack.daemon().pid(), SIGHUP), 0);
  const int reloading = manager.wait_for("RELOADING=1", kWaitMs, static_cast<std::size_t>(ready));
  ASSERT_GE(reloading, 0) << manager.joined() << stack.daemon().log();
  EXPECT_TRUE(manager.has(static_cast<std::size_t>(reloading), "MONOTONIC_USEC=*"));
  const int reloaded = manager.wait_for("READY=1", kWaitMs, static_cast<std::size_t>(reloading));
  ASSERT_GE(reloaded, 0) << manager.joined() << stack.daemon().log();

  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
  const int stopping = manager.wait_for("STOPPING=1", kWaitMs, static_cast<std::size_t>(reloaded));
  EXPECT_GE(stopping, 0) << manager.joined();
}

}  // namespace
}  // namespace chunkd::test

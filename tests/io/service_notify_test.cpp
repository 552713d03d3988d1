// ServiceNotifier: what the service manager receives, message by message, on a real datagram
// socket found through $NOTIFY_SOCKET, as systemd would read it.
#include "io/service_notify.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "tests/support/notify_socket.hpp"

namespace chunkd::io {
namespace {

using test::NotifySocket;

class ServiceNotifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(manager_.open()) << manager_.error();
    manager_.export_env();
  }
  NotifySocket manager_;
  ServiceNotifier notifier_;
};

TEST_F(ServiceNotifierTest, ReadyCarriesStatus) {
  notifier_.status("connecting to the broker tcp://127.0.0.1:1883");
  notifier_.ready("serving");
  const auto& got = manager_.poll();
  ASSERT_EQ(got.size(), 2u) << manager_.joined();
  EXPECT_EQ(got[0], "STATUS=connecting to the broker tcp://127.0.0.1:1883");
  EXPECT_EQ(got[1], "READY=1\nSTATUS=serving");
}

TEST_F(ServiceNotifierTest, ReloadIsBracketedAndReadyAgainAfterIt) {
  notifier_.ready("serving");
  notifier_.reloading("reloading /etc/chunkd/chunkd.toml");
  notifier_.reloaded("serving");
  const auto& got = manager_.poll();
  ASSERT_EQ(got.size(), 3u) << manager_.joined();
  EXPECT_TRUE(manager_.has(1, "RELOADING=1")) << manager_.joined();
  EXPECT_TRUE(manager_.has(1, "MONOTONIC_USEC=*")) << manager_.joined();
  EXPECT_TRUE(manager_.has(1, "STATUS=reloading /etc/chunkd/chunkd.toml")) << manager_.joined();
  EXPECT_EQ(got[2], "READY=1\nSTATUS=serving");
}

TEST_F(ServiceNotifierTest, ReloadBeforeReadyDoesNotClaimReadiness) {
  notifier_.reloading("reloading");
  notifier_.reloaded("connecting");
  const auto& got = manager_.poll();
  ASSERT_EQ(got.size(), 2u) << manager_.joined();
  EXPECT_EQ(got[1], "STATUS=connecting");
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_FALSE(manager_.has(i, "READY=1")) << manager_.joined();
  }
}

TEST_F(ServiceNotifierTest, StoppingIsSent) {
  notifier_.stopping("stopping");
  const auto& got = manager_.poll();
  ASSERT_EQ(got.size(), 1u) << manager_.joined();
  EXPECT_EQ(got[0], "STOPPING=1\nSTATUS=stopping");
}

// Text from a config file (a broker URI) must not add a field such as READY=1 of its own.
TEST_F(ServiceNotifierTest, StatusIsOneBoundedLine) {
  notifier_.status("tcp://evil\nREADY=1\r\tx");
  notifier_.status(std::string(5000, 'a'));
  const auto& got = manager_.poll();
  ASSERT_EQ(got.size(), 2u) << manager_.joined();
  EXPECT_EQ(got[0], "STATUS=tcp://evil READY=1  x");
  EXPECT_FALSE(manager_.has(0, "READY=1"));
  EXPECT_EQ(got[1], "STATUS=" + std::string(ServiceNotifier::kMaxStatusBytes, 'a'));
}

TEST_F(ServiceNotifierTest, NothingIsSentWithoutNotifySocket) {
  ::unsetenv("NOTIFY_SOCKET");
  notifier_.ready("serving");
  notifier_.stopping("stopping");
  EXPECT_TRUE(manager_.poll().empty()) << manager_.joined();
  manager_.export_env();
  notifier_.status("back");
  EXPECT_EQ(manager_.poll().size(), 1u) << manager_.joined();
}

}  // namespace
}  // namespace chunkd::io

// Streams created through the real chunkd binary's control API outlive the process: a clean
// restart keeps them (their bytes, versions and deletions, whatever happens to the sources), and a
// kill -9 during a burst of creates loses no acknowledged one; checked over HTTP and by devices
// downloading through a private Mosquitto.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/api.hpp"
#include "tests/integration/control_api_fixture.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;

TEST(ControlApi, StreamsSurviveACleanRestart) {
  Stack stack;
  ASSERT_TRUE(stack.start());
  const std::string a = test_bytes(70000, 1);
  const std::string b = test_bytes(1234, 2);
  const std::string b2 = test_bytes(4321, 3);
  ASSERT_TRUE(stack.create_file_stream("keep", a));
  ASSERT_TRUE(stack.create_file_stream("upd", b));
  ASSERT_TRUE(stack.create_file_stream("gone", b));
  stack.put("upd2.bin", b2);
  ASSERT_EQ(stack
                .request("PUT", "/streams/upd",
                         "{\"files\":" + files_json({{0, "fw", "upd2.bin", std::nullopt}}) + "}")
                .status,
            200);
  ASSERT_EQ(stack.request("DELETE", "/streams/gone").status, 200);
  const std::string before_keep = stack.request("GET", "/streams/keep").body;
  const std::string before_upd = stack.request("GET", "/streams/upd").body;
  ASSERT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();

  // The sources change or vanish while the daemon is down: the streams keep their bytes.
  ASSERT_TRUE(std::filesystem::remove(stack.bucket_dir() + "/keep.bin"));
  stack.put("upd2.bin", test_bytes(4321, 99));
  stack.reset_http();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  EXPECT_EQ(stack.request("GET", "/streams/keep").body, before_keep);
  EXPECT_EQ(stack.request("GET", "/streams/upd").body, before_upd);
  EXPECT_TRUE(is_error(stack.request("GET", "/streams/gone"), 404, "NOT_FOUND"));
  EXPECT_EQ(list_ids(stack.request("GET", "/streams")), (std::vector<std::string>{"keep", "upd"}));
  EXPECT_TRUE(downloads_as(stack, "after-restart-1", "keep", a, Format::Json));
  EXPECT_TRUE(downloads_as(stack, "after-restart-2", "upd", b2, Format::Cbor));
  // Versions continue from where they were.
  auto u = stack.request("PUT", "/streams/upd", R"({"description":"again"})");
  ASSERT_EQ(u.status, 200) << u.body;
  EXPECT_EQ(Json(u.body).u64("/data/streamVersion"), 3u);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

// A burst of creates, kill -9 in the middle, restart: every acknowledged create is there and
// downloads byte for byte; a create that was not acknowledged is either whole or absent.
TEST(ControlApi, KillNineDuringABurstOfCreatesLosesNothingAcknowledged) {
  Stack stack;
  ASSERT_TRUE(stack.start_broker());
  constexpr int kStreams = 400;
  std::vector<std::string> contents;
  for (int i = 0; i < kStreams; ++i) {
    contents.push_back(test_bytes(20000 + static_cast<std::size_t>(i) * 997,
                                  1000 + static_cast<std::uint64_t>(i)));
    stack.put("burst-" + std::to_string(i) + ".bin", contents.back());
  }
  stack.daemon().set("control", "max_concurrent_ingests", "4");
  ASSERT_TRUE(stack.start());

  // Three clients create streams back to back, so several creates are in flight at the kill.
  constexpr int kClients = 3;
  std::atomic<int> acknowledged{0};
  std::vector<int> status(kStreams, -1);  // element i written by client i % kClients only
  std::atomic<bool> stop{false};
  std::vector<std::thread> burst;
  for (int client = 0; client < kClients; ++client) {
    burst.emplace_back([&, client] {
      HttpClient http = stack.daemon().http();
      for (int i = client; i < kStreams && !stop.load(); i += kClients) {
        std::string id = "burst-" + std::to_string(i);
        auto r = http.request("POST", "/streams/" + id,
                              create_body({{0, "fw", id + ".bin", std::nullopt}}),
                              {{"Content-Type", "application/json"}});
        status[static_cast<std::size_t>(i)] = r.status;
        if (r.status == 0) break;  // the daemon is gone
        if (r.status == 201) acknowledged.fetch_add(1);
      }
    });
  }
  // Let a good number of creates through, then kill -9 with creates in flight.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (acknowledged.load() < 25 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stack.daemon().kill9();
  stop = true;
  for (auto& t : burst) t.join();
  const int acked = acknowledged.load();
  ASSERT_GE(acked, 25) << stack.daemon().log();

  stack.reset_http();
  ASSERT_TRUE(stack.daemon().start()) << stack.daemon().error();
  std::set<std::string> listed;
  for (const auto& id : list_ids(stack.request("GET", "/streams?maxResults=250"))) {
    listed.insert(id);
  }
  int checked = 0;
  for (int i = 0; i < kStreams; ++i) {
    const int s = status[static_cast<std::size_t>(i)];
    const std::string id = "burst-" + std::to_string(i);
    SCOPED_TRACE(id + " got status " + std::to_string(s));
    auto d = stack.request("GET", "/streams/" + id);
    if (s == 201) {
      ASSERT_EQ(d.status, 200) << "acknowledged create lost: " << d.body;
    } else if (s == -1 || (s >= 400 && s < 500)) {
      EXPECT_EQ(d.status, 404) << "never sent or refused, yet present: " << d.body;
      continue;
    } else if (d.status == 404) {
      EXPECT_EQ(listed.count(id), 0u);
      continue;  // not acknowledged and absent: fine
    }
    ASSERT_EQ(d.status, 200) << d.body;
    EXPECT_EQ(listed.count(id), 1u);
    Json j(d.body);
    EXPECT_EQ(j.u64("/data/files/0/sizeBytes"), contents[static_cast<std::size_t>(i)].size());
    // Download a sample of the acknowledged ones, and every unacknowledged one that is there.
    if (s != 201 || i % 5 == 0) {
      EXPECT_TRUE(downloads_as(stack, "burst-dev-" + std::to_string(i), id,
                               contents[static_cast<std::size_t>(i)]));
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
  // Nothing else appeared.
  for (const auto& id : listed) {
    EXPECT_EQ(id.rfind("burst-", 0), 0u) << id;
  }
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

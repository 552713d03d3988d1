// The jobs service's edges toward the transport and the HTTP server (engine/job_service.hpp): a
// device's request is finished only after its reply was sent, which was after its change was
// durable; a closing service leaves requests unfinished (an acknowledging transport hands them to
// whoever serves jobs next) and answers cut-off HTTP requests with 503; its gauges live from
// open() to close(). The decisions themselves: job_book_test, job_writer_test, jobs_test.
#include "engine/job_service.hpp"

#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "tests/engine/fakes.hpp"

namespace chunkd::engine {
namespace {

using testing::FakeTransport;

std::span<const std::byte> bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

class JobServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    service_ = std::make_unique<JobService>(
        &loop_, catalog_, transport_,
        [this](const JobBatch&, JobWriter::Done done) { writes_.push_back(std::move(done)); },
        metrics_, clock_, JobOptions{});
    service_->open({}, {});
  }
  void TearDown() override {
    if (!closed_) close();
    service_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  // Completes the oldest store write with `error`.
  void write_done(std::error_code error = {}) {
    ASSERT_FALSE(writes_.empty());
    auto done = std::move(writes_.front());
    writes_.erase(writes_.begin());
    done(error);
  }
  void close() {
    closed_ = true;
    bool done = false;
    service_->close(0, [&] { done = true; });
    while (!done) {
      if (!writes_.empty()) write_done(std::make_error_code(std::errc::connection_aborted));
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
  }
  void run() {
    for (int i = 0; i < 4; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  }
  std::shared_ptr<std::optional<io::HttpResponse>> http(std::string method, std::string path,
                                                        std::string body = {}) {
    io::HttpRequest r;
    r.method = std::move(method);
    r.path = std::move(path);
    r.body = std::move(body);
    auto slot = std::make_shared<std::optional<io::HttpResponse>>();
    service_->serve(r, [slot](io::HttpResponse response) {
      EXPECT_FALSE(slot->has_value()) << "answered twice";
      *slot = std::move(response);
    });
    return slot;
  }

  uv_loop_t loop_{};
  Catalog catalog_;
  FakeTransport transport_;
  Metrics metrics_;
  ManualClock clock_;
  std::unique_ptr<JobService> service_;
  std::vector<JobWriter::Done> writes_;
  bool closed_ = false;
};

TEST_F(JobServiceTest, ARequestIsFinishedOnlyOnceItsReplyIsSentAfterTheChangeIsDurable) {
  auto created = http("POST", "/jobs/j1", R"({"targets":["dev-1"],"document":{"op":"x"}})");
  ASSERT_EQ(writes_.size(), 1u);
  write_done();
  run();
  ASSERT_TRUE(created->has_value());
  EXPECT_EQ((*created)->status, 201) << (*created)->body;
  const std::size_t before = transport_.messages.size();

  ASSERT_TRUE(service_->on_message("$aws/things/dev-1/jobs/j1/update",
                                   bytes(R"({"status":"IN_PROGRESS"})"), 7));
  run();
  EXPECT_TRUE(transport_.finished_tags.empty()) << "the update is not durable yet";
  EXPECT_EQ(transport_.messages.size(), before) << "nor answered";
  write_done();
  run();
  ASSERT_GT(transport_.messages.size(), before);
  ASSERT_EQ(transport_.finished_tags.size(), 1u);
  EXPECT_EQ(transport_.finished_tags[0].tag, 7u);
  EXPECT_EQ(transport_.finished_tags[0].sent, transport_.messages.size()) << "after its replies";
}

TEST_F(JobServiceTest, ANonJobsTopicIsNotTakenAndABadOneIsFinishedAtOnce) {
  EXPECT_FALSE(service_->on_message("$aws/things/dev-1/streams/s/get/cbor", bytes("{}"), 3));
  EXPECT_FALSE(service_->on_message("$aws/things/dev-1/jobsX/get", bytes("{}"), 4));
  EXPECT_TRUE(service_->on_message("$aws/things/dev-1/jobs/nothing/here/at/all", bytes("{}"), 5));
  run();
  ASSERT_EQ(transport_.finished_tags.size(), 1u);
  EXPECT_EQ(transport_.finished_tags[0].tag, 5u);
}

TEST_F(JobServiceTest, ClosingLeavesRequestsUnfinishedAndCutOffAnswersAre503) {
  auto created = http("POST", "/jobs/j2", R"({"targets":["dev-2"],"document":{}})");
  ASSERT_TRUE(service_->on_message("$aws/things/dev-2/jobs/$next/get", bytes("{}"), 9));
  ASSERT_FALSE(writes_.empty());
  close();  // the write fails and is given up: nothing it waited for was durable
  ASSERT_TRUE(created->has_value());
  EXPECT_EQ((*created)->status, 503) << (*created)->body;
  EXPECT_NE((*created)->body.find("may or may not"), std::string::npos) << (*created)->body;
  EXPECT_TRUE(service_->on_message("$aws/things/dev-2/jobs/$next/get", bytes("{}"), 10));
  run();
  EXPECT_TRUE(transport_.finished_tags.empty()) << "another instance may answer them";
}

TEST_F(JobServiceTest, TheGaugesLiveFromOpenToClose) {
  EXPECT_NE(metrics_.render().find("chunkd_jobs{status=\"IN_PROGRESS\"} 0"), std::string::npos);
  close();
  EXPECT_EQ(metrics_.render().find("chunkd_jobs{status="), std::string::npos)
      << "a closed book is not read";
}

}  // namespace
}  // namespace chunkd::engine

// JobRuntime in a cluster (engine/job_runtime.hpp) against a real PostgreSQL 15 started by the
// test: of two instances, the one holding the jobs lease serves jobs and consumes the jobs queue;
// the other answers /jobs with 503 naming the holder and hands a jobs request that still reaches
// it back to the queue (Transport::requeue), not dropping it; when the holder closes, the other
// takes over. One ctest test (one server) for the binary. Skipped, saying why, when the
// PostgreSQL binaries are not installed.
#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/job_runtime.hpp"
#include "tests/engine/fakes.hpp"
#include "tests/io/postgres_fixture.hpp"
#include "tests/support/loop.hpp"

namespace chunkd::engine {
namespace {

using testing::FakeTransport;

// One chunkd instance's jobs: its runtime, transport and what it was told to consume.
struct Instance {
  Catalog catalog;
  FakeTransport transport;
  Metrics metrics;
  ManualClock clock;
  std::vector<bool> consume;  // every consume() call, in order
  std::unique_ptr<JobRuntime> runtime;

  bool serving() const { return runtime && runtime->service() != nullptr; }
};

class JobRuntimePgTest : public test::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    empty_registry("jobs, job_executions, job_things");
  }
  void TearDown() override {
    if (!loop_open_) return;
    close(a_);
    close(b_);
    close_loop();
  }

  void open(Instance& in, const std::string& name) {
    JobRuntime::Parts parts{&loop_, in.catalog, in.transport, in.metrics, in.clock, JobOptions{}};
    JobRuntime::Shared shared{pg_->url(), name, [&in](bool on) { in.consume.push_back(on); }};
    auto opened = JobRuntime::open_shared(std::move(parts), std::move(shared));
    ASSERT_TRUE(opened) << opened.error();
    in.runtime = std::move(*opened);
  }
  void close(Instance& in) {
    if (!in.runtime) return;
    bool closed = false;
    in.runtime->close(0, [&closed] { closed = true; });
    ASSERT_TRUE(test::run_until(&loop_, [&] { return closed; }));
    in.runtime.reset();
  }
  io::HttpResponse get_jobs(Instance& in) {
    io::HttpRequest r;
    r.method = "GET";
    r.path = "/jobs";
    std::optional<io::HttpResponse> answer;
    in.runtime->serve(r, [&answer](io::HttpResponse response) { answer = std::move(response); });
    EXPECT_TRUE(test::run_until(&loop_, [&] { return answer.has_value(); }));
    return answer.value_or(io::HttpResponse{});
  }

  Instance a_;
  Instance b_;
};

TEST_F(JobRuntimePgTest, TheFollowerHandsJobsRequestsBackAndTakesOverWhenTheHolderCloses) {
  open(a_, "instance-a");
  ASSERT_TRUE(test::run_until(&loop_, [&] { return a_.serving(); }));
  EXPECT_EQ(a_.consume, std::vector<bool>{true});
  open(b_, "instance-b");
  // b tries the lease, finds it held and learns by whom.
  ASSERT_TRUE(test::run_until(
      &loop_, [&] { return get_jobs(b_).body.find("instance-a") != std::string::npos; }));
  const io::HttpResponse refused = get_jobs(b_);
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_FALSE(b_.serving());
  EXPECT_TRUE(b_.consume.empty());

  const std::string_view body = R"({"clientToken":"t"})";
  EXPECT_TRUE(b_.runtime->on_message("$aws/things/dev-1/jobs/get",
                                     std::as_bytes(std::span(body.data(), body.size())), 9));
  EXPECT_EQ(b_.transport.requeued_tags, std::vector<Transport::RequestTag>{9});
  EXPECT_TRUE(b_.transport.finished_tags.empty()) << "handed back, not acknowledged";
  EXPECT_TRUE(b_.transport.messages.empty()) << "not answered either";
  EXPECT_FALSE(b_.runtime->on_message("$aws/things/dev-1/streams/s/get/cbor", {}, 10))
      << "a stream request is not the jobs runtime's";

  close(a_);
  ASSERT_TRUE(test::run_until(&loop_, [&] { return b_.serving(); }));
  EXPECT_EQ(b_.consume, std::vector<bool>{true});
  EXPECT_EQ(get_jobs(b_).status, 200);
}

}  // namespace
}  // namespace chunkd::engine

// The whole cluster as an operator runs it (issue 14): one RabbitMQ node with its MQTT plugin (the
// devices' broker), one PostgreSQL (the shared registry), moto as the content bucket, and two
// chunkd instances, each with its own data_dir and [amqp] + [registry] url + content_bucket.
// Each test starts its own two instances; the servers are started once for the binary (one ctest
// test: see tests/CMakeLists.txt). The pieces' own tests are amqp_test, amqp_cluster_test (a
// RabbitMQ node killed), shared_registry_test and content_bucket_test; here they work together:
//   - a stream created through A only is downloaded byte-exact by 20 devices whose requests both
//     instances answer (B learned of it through the registry and filled its blob from the bucket);
//   - kill -9 of one instance mid-download: every device completes byte-exact;
//   - an instance restarted with an EMPTY data_dir knows the stream (PostgreSQL) and serves it
//     from the bucket;
//   - a delete through B stops A serving it (describe 404 on A, devices get ResourceNotFound);
//   - OTA jobs: one instance serves them (the other answers /jobs with 503 naming it); an agent's
//     job survives kill -9 of that instance, the other takes over with the state as committed.
// Skipped, saying why, without rabbitmq-server, PostgreSQL or moto_server.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/agent.hpp"
#include "tests/integration/api.hpp"
#include "tests/integration/device.hpp"
#include "tests/support/daemon.hpp"
#include "tests/support/net.hpp"
#include "tests/support/postgres.hpp"
#include "tests/support/rabbitmq.hpp"
#include "tests/support/s3_server.hpp"

namespace chunkd::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using protocol::Format;

// Generous bound for what must happen "within a second", so that a loaded machine tests the
// behaviour (notifications), not the timing; the time taken is printed.
constexpr auto kVisibleWithin = std::chrono::seconds(10);
constexpr int kDevices = 20;

// The value of the sample `name{labels}` in a /metrics page; 0 when absent.
double metric(const std::string& page, const std::string& sample) {
  std::istringstream lines(page);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(sample + " ", 0) == 0) return std::stod(line.substr(sample.size() + 1));
  }
  return 0;
}

// Requests an instance answered: gets and describes, every outcome (rejections included).
double answered(const std::string& page) {
  double total = 0;
  std::istringstream lines(page);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("chunkd_requests_total{", 0) != 0) continue;
    total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

bool eventually(const std::function<bool()>& done, long long& ms) {
  const auto start = Clock::now();
  while (!done()) {
    if (Clock::now() - start > kVisibleWithin) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  return true;
}

class Cluster : public ::testing::Test {
 protected:
  struct Servers {
    RabbitNode rabbit;
    TestPostgres pg;
    TestS3Server s3;
    std::string dir;  // the S3 credentials file
    std::string credentials;
    std::string error;
  };
  static Servers* servers;

  static std::string missing() {
    if (!RabbitNode::available()) return RabbitNode::missing();
    if (std::string why = TestPostgres::missing(); !why.empty()) return why;
    return TestS3Server::missing();
  }

  static void SetUpTestSuite() {
    if (!missing().empty()) return;
    servers = new Servers;
    Servers& s = *servers;
    if (!s.rabbit.start()) {
      s.error = s.rabbit.error() + "\n" + s.rabbit.log();
    } else if (!s.pg.start()) {
      s.error = s.pg.error();
    } else if (!s.s3.start() || !s.s3.make_bucket("chunkd-content")) {
      s.error = s.s3.error();
    } else if (s.dir = make_temp_dir("cluster", s.error); !s.dir.empty()) {
      s.credentials = s.dir + "/s3-credentials";
      write_file(s.credentials, s.s3.credentials_ini());
    }
  }
  static void TearDownTestSuite() {
    if (servers != nullptr && !servers->dir.empty()) fs::remove_all(servers->dir);
    delete servers;
    servers = nullptr;
  }

  void SetUp() override {
    if (std::string why = missing(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_NE(servers, nullptr);
    ASSERT_TRUE(servers->error.empty()) << servers->error;
    a_ = make_instance();
    b_ = make_instance();
  }

  // An instance as an operator configures one for the cluster; "fw" is a local bucket to ingest
  // from. [mqtt] is not used with [amqp].
  static std::unique_ptr<TestDaemon> make_instance() {
    auto d = std::make_unique<TestDaemon>(servers->rabbit.mqtt_uri());
    d->add_bucket("fw");
    d->set("registry", "url", TestDaemon::quote(servers->pg.url()));
    d->set("storage", "content_bucket", "\"shared\"");
    d->set_extra_toml("[amqp]\nuris = [" + TestDaemon::quote(servers->rabbit.amqp_uri()) +
                      "]\n[buckets.shared]\ntype = \"s3\"\nendpoint = " +
                      TestDaemon::quote(servers->s3.endpoint()) +
                      "\nregion = \"us-east-1\"\nbucket = \"chunkd-content\"\ncredentials_file = " +
                      TestDaemon::quote(servers->credentials) + "\n");
    return d;
  }

  static HttpClientResponse request(TestDaemon& d, std::string_view method, std::string_view target,
                                    std::string_view body = {}) {
    HttpClient::Headers headers;
    if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
    return d.http().request(method, target, body, headers);
  }
  static std::string metrics(TestDaemon& d) { return request(d, "GET", "/metrics").body; }

  // Creates stream `id` of one file through `d` (bucket "fw").
  static ::testing::AssertionResult create(TestDaemon& d, const std::string& id,
                                           const std::string& bytes) {
    write_file(d.dir() + "/buckets/fw/" + id + ".bin", bytes);
    auto r =
        request(d, "POST", "/streams/" + id, create_body({{0, "fw", id + ".bin", std::nullopt}}));
    if (r.status == 201) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "create " << id << ": " << r.status << " " << r.body << r.error << "\n"
           << d.log(8000);
  }

  // Waits until `d` describes `id` (learned through the registry).
  static ::testing::AssertionResult knows(TestDaemon& d, const std::string& id) {
    long long ms = 0;
    if (eventually([&] { return request(d, "GET", "/streams/" + id).status == 200; }, ms)) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "the instance does not know " << id << "\n"
                                         << d.log(8000);
  }

  // kDevices devices on RabbitMQ's MQTT port download `id` (file 0) at once; `progress` (one per
  // device) counts the blocks each received.
  static std::vector<DownloadResult> download_all(const std::string& id,
                                                  std::vector<std::atomic<std::uint64_t>>& progress,
                                                  const std::function<void()>& meanwhile = {}) {
    std::vector<DownloadResult> results(kDevices);
    std::vector<std::thread> threads;
    for (int i = 0; i < kDevices; ++i) {
      threads.emplace_back([&, i] {
        DownloadResult& r = results[static_cast<std::size_t>(i)];
        Device d(servers->rabbit.mqtt_uri(), id + "-dev" + std::to_string(i));
        if (!d.connect() || !d.watch(id)) {
          r.error = "device did not connect or subscribe: " + d.mqtt().error();
          return;
        }
        DownloadOptions o;
        o.progress = &progress[static_cast<std::size_t>(i)];
        o.idle_timeout_ms = 2000;  // a request lost with its instance is asked again
        r = d.download(id, Format::Cbor, 0, o);
      });
    }
    if (meanwhile) meanwhile();
    for (auto& t : threads) t.join();
    return results;
  }

  static void expect_byte_exact(const std::vector<DownloadResult>& results,
                                const std::string& bytes, const std::string& logs) {
    for (std::size_t i = 0; i < results.size(); ++i) {
      ASSERT_TRUE(results[i].ok) << "device " << i << ": " << results[i].error << "\n" << logs;
      EXPECT_TRUE(bytes_to_string(results[i].bytes) == bytes) << "device " << i << " differs";
    }
  }

  // The instance holding the jobs lease, once exactly one of `a` and `b` does (else null).
  static TestDaemon* jobs_holder(TestDaemon& a, TestDaemon& b) {
    const double ha = metric(metrics(a), "chunkd_jobs_lease_held");
    const double hb = metric(metrics(b), "chunkd_jobs_lease_held");
    if (ha + hb != 1) return nullptr;
    return ha == 1 ? &a : &b;
  }

  std::unique_ptr<TestDaemon> a_;
  std::unique_ptr<TestDaemon> b_;
};
Cluster::Servers* Cluster::servers = nullptr;

TEST_F(Cluster, AStreamCreatedThroughOneInstanceIsServedByBoth) {
  ASSERT_TRUE(a_->start()) << a_->error() << a_->log();
  ASSERT_TRUE(b_->start()) << b_->error() << b_->log();
  const std::string bytes = test_bytes((2u << 20) + 777, 141);
  ASSERT_TRUE(create(*a_, "fleet", bytes));
  ASSERT_TRUE(knows(*b_, "fleet"));
  EXPECT_FALSE(fs::exists(b_->data_dir() + "/buckets/fw/fleet.bin"));

  std::vector<std::atomic<std::uint64_t>> progress(kDevices);
  auto results = download_all("fleet", progress);
  expect_byte_exact(results, bytes, a_->log(8000) + b_->log(8000));

  const std::string ma = metrics(*a_), mb = metrics(*b_);
  std::printf("[ measured ] requests answered: A %.0f, B %.0f\n", answered(ma), answered(mb));
  EXPECT_GT(answered(ma), 0) << "A answered no request";
  EXPECT_GT(answered(mb), 0) << "B answered no request";
  EXPECT_GT(metric(mb, R"(chunkd_blocks_sent_total{format="cbor"})"), 0) << "B sent no block";
  EXPECT_EQ(metric(mb, R"(chunkd_content_bucket_fills_total{result="ok"})"), 1) << mb;
  EXPECT_EQ(metric(mb, "chunkd_content_bucket_filled_bytes_total"), bytes.size());
  EXPECT_EQ(metric(ma, R"(chunkd_content_bucket_uploads_total{result="uploaded"})"), 1);
  EXPECT_EQ(metric(ma, R"(chunkd_content_bucket_fills_total{result="ok"})"), 0) << "A had it";
  EXPECT_EQ(a_->stop(), 0) << a_->log();
  EXPECT_EQ(b_->stop(), 0) << b_->log();
}

TEST_F(Cluster, KillNineOfOneInstanceMidDownloadLetsEveryDeviceComplete) {
  for (auto* d : {a_.get(), b_.get()}) {
    d->set("delivery", "per_thing_blocks_per_s", "50");  // downloads last about 5 s
    ASSERT_TRUE(d->start()) << d->error() << d->log();
  }
  const std::string bytes = test_bytes(1u << 20, 142);  // 256 blocks of 4 KiB
  ASSERT_TRUE(create(*a_, "crash", bytes));
  ASSERT_TRUE(knows(*b_, "crash"));

  std::vector<std::atomic<std::uint64_t>> progress(kDevices);
  std::uint64_t at_kill = 0;
  double a_sent = 0;
  // A dies once every device is mid-download (each has blocks) and a quarter of all arrived.
  auto received = [&](bool& all_started) {
    std::uint64_t total = 0;
    all_started = true;
    for (const auto& p : progress) {
      total += p.load();
      all_started = all_started && p.load() > 0;
    }
    return total;
  };
  auto results = download_all("crash", progress, [&] {
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    bool all_started = false;
    while ((received(all_started) < kDevices * 256 / 4 || !all_started) &&
           Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    at_kill = received(all_started);
    a_sent = metric(metrics(*a_), R"(chunkd_blocks_sent_total{format="cbor"})");
    a_->kill9();
  });
  EXPECT_LT(at_kill, std::uint64_t{kDevices} * 256) << "the kill came after the downloads";
  EXPECT_GT(a_sent, 0) << "A served nothing before it was killed";
  expect_byte_exact(results, bytes, a_->log(8000) + b_->log(8000));
  const std::string mb = metrics(*b_);
  EXPECT_GT(metric(mb, R"(chunkd_blocks_sent_total{format="cbor"})"), 0) << "B sent no block";
  EXPECT_EQ(metric(mb, R"(chunkd_content_bucket_fills_total{result="ok"})"), 1) << mb;
  EXPECT_EQ(b_->stop(), 0) << b_->log();
}

TEST_F(Cluster, AnInstanceRestartedWithAnEmptyDataDirServesFromTheBucket) {
  ASSERT_TRUE(a_->start()) << a_->error() << a_->log();
  ASSERT_TRUE(b_->start()) << b_->error() << b_->log();
  const std::string bytes = test_bytes((1u << 20) + 5, 143);
  ASSERT_TRUE(create(*a_, "empty", bytes));
  ASSERT_TRUE(knows(*b_, "empty"));
  EXPECT_EQ(a_->stop(), 0) << a_->log();  // only B is left to answer

  b_->kill9();
  fs::remove_all(b_->data_dir());
  fs::create_directories(b_->data_dir());
  ASSERT_TRUE(b_->start()) << b_->error() << b_->log();
  EXPECT_EQ(request(*b_, "GET", "/streams/empty").status, 200) << "known from PostgreSQL";
  EXPECT_NE(b_->log().find("will be filled from content bucket \"shared\""), std::string::npos)
      << b_->log(4000);

  Device dev(servers->rabbit.mqtt_uri(), "empty-dev");
  ASSERT_TRUE(dev.connect() && dev.watch("empty")) << dev.mqtt().error();
  DownloadOptions o;
  o.idle_timeout_ms = 2000;
  auto r = dev.download("empty", Format::Cbor, 0, o);
  ASSERT_TRUE(r.ok) << r.error << b_->log(8000);
  EXPECT_TRUE(bytes_to_string(r.bytes) == bytes);
  const std::string mb = metrics(*b_);
  EXPECT_EQ(metric(mb, R"(chunkd_content_bucket_fills_total{result="ok"})"), 1) << mb;
  EXPECT_EQ(b_->stop(), 0) << b_->log();
}

TEST_F(Cluster, ADeleteThroughBStopsAServingIt) {
  ASSERT_TRUE(a_->start()) << a_->error() << a_->log();
  ASSERT_TRUE(b_->start()) << b_->error() << b_->log();
  ASSERT_TRUE(create(*a_, "gone", test_bytes(300000, 144)));
  ASSERT_TRUE(knows(*b_, "gone"));
  Device dev(servers->rabbit.mqtt_uri(), "gone-dev");
  ASSERT_TRUE(dev.connect() && dev.watch("gone")) << dev.mqtt().error();
  auto before = dev.describe("gone", Format::Json);
  ASSERT_TRUE(before.has_value());
  ASSERT_EQ(before->kind, protocol::ReplyKind::Description) << before->rejected.code;

  ASSERT_EQ(request(*b_, "DELETE", "/streams/gone").status, 200);
  long long ms = 0;
  ASSERT_TRUE(eventually([&] { return request(*a_, "GET", "/streams/gone").status == 404; }, ms))
      << a_->log(8000);
  std::printf("[ measured ] delete through B: A answers 404 after %lld ms\n", ms);

  // Whichever instance each request reaches, the device is told the stream is gone.
  for (int i = 0; i < 6; ++i) {
    auto after = dev.describe("gone", Format::Json);
    ASSERT_TRUE(after.has_value()) << "no reply";
    ASSERT_EQ(after->kind, protocol::ReplyKind::Rejected);
    EXPECT_EQ(after->rejected.code, "ResourceNotFound") << after->rejected.message;
    protocol::GetStreamArgs args;
    args.file_id = 0;
    args.block_size = 4096;
    args.offset = 0;
    args.count = 1;
    auto got = dev.get_once("gone", Format::Json, args);
    ASSERT_TRUE(got.has_value()) << "no reply to a get";
    ASSERT_EQ(got->kind, protocol::ReplyKind::Rejected);
    EXPECT_EQ(got->rejected.code, "ResourceNotFound") << got->rejected.message;
  }
  const std::string nf = R"(chunkd_requests_total{verb="describe",outcome="ResourceNotFound"})";
  const std::string nf_get = R"(chunkd_requests_total{verb="get",outcome="ResourceNotFound"})";
  std::printf("[ measured ] ResourceNotFound describes/gets: A %.0f/%.0f, B %.0f/%.0f\n",
              metric(metrics(*a_), nf), metric(metrics(*a_), nf_get), metric(metrics(*b_), nf),
              metric(metrics(*b_), nf_get));
  // With B gone, A alone answers: it no longer serves the stream either.
  EXPECT_EQ(b_->stop(), 0) << b_->log();
  while (dev.next_reply(500)) {
  }  // late answers to retried requests
  const double before_a = metric(metrics(*a_), nf);
  auto from_a = dev.describe("gone", Format::Json);
  ASSERT_TRUE(from_a.has_value()) << "no reply from A";
  ASSERT_EQ(from_a->kind, protocol::ReplyKind::Rejected);
  EXPECT_EQ(from_a->rejected.code, "ResourceNotFound") << from_a->rejected.message;
  EXPECT_TRUE(eventually([&] { return metric(metrics(*a_), nf) > before_a; }, ms))
      << "A answered it";
  EXPECT_EQ(a_->stop(), 0) << a_->log();
}

TEST_F(Cluster, OneInstanceServesJobsAndTheOtherTakesOverAfterKillNine) {
  ASSERT_TRUE(a_->start()) << a_->error() << a_->log();
  ASSERT_TRUE(b_->start()) << b_->error() << b_->log();
  TestDaemon* holder = nullptr;
  long long ms = 0;
  ASSERT_TRUE(eventually([&] { return (holder = jobs_holder(*a_, *b_)) != nullptr; }, ms))
      << a_->log(8000) << b_->log(8000);
  TestDaemon& first = *holder;
  TestDaemon& other = holder == a_.get() ? *b_ : *a_;
  auto refused = request(other, "POST", "/jobs/ota-1", ota_job_body("ota-fw", R"(["dev-1"])"));
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_NE(refused.body.find("chunkd on"), std::string::npos)
      << "names the holder: " << refused.body;

  ASSERT_TRUE(create(other, "ota-fw", test_bytes(12288, 145)));
  ASSERT_TRUE(knows(first, "ota-fw"));
  auto created = request(first, "POST", "/jobs/ota-1", ota_job_body("ota-fw", R"(["dev-1"])"));
  ASSERT_EQ(created.status, 201) << created.body;
  Agent agent(servers->rabbit.mqtt_uri(), "dev-1");
  ASSERT_TRUE(agent.start());
  auto next = agent.next_get();
  ASSERT_TRUE(next && next->ok()) << first.log(8000);
  EXPECT_EQ(next->str("/execution/jobId"), "ota-1");
  ASSERT_TRUE(
      agent.update("ota-1", R"({"status":"IN_PROGRESS","statusDetails":{"receive":"3/3"}})"));
  ASSERT_TRUE(agent.wait("/update/accepted"));
  // The shared registry itself refuses, whichever instance is asked.
  EXPECT_EQ(request(other, "DELETE", "/streams/ota-fw").status, 409);
  EXPECT_EQ(request(first, "DELETE", "/streams/ota-fw").status, 409);

  first.kill9();
  ASSERT_TRUE(eventually([&] { return metric(metrics(other), "chunkd_jobs_lease_held") == 1; }, ms))
      << other.log(8000);
  std::printf("[ measured ] jobs served by the other instance %lld ms after kill -9\n", ms);
  ASSERT_TRUE(
      agent.update("ota-1", R"({"status":"IN_PROGRESS","statusDetails":{"self_test":"ready"}})"));
  ASSERT_TRUE(agent.wait("/update/accepted")) << other.log(8000);
  next = agent.next_get();
  ASSERT_TRUE(next && next->ok());
  EXPECT_EQ(next->str("/execution/status"), "IN_PROGRESS");
  EXPECT_EQ(next->str("/execution/statusDetails/self_test"), "ready");
  EXPECT_EQ(next->u64("/execution/versionNumber"), 3u) << "both updates, nothing lost";
  ASSERT_TRUE(agent.update("ota-1", R"({"status":"SUCCEEDED"})"));
  ASSERT_TRUE(agent.wait("/update/accepted"));
  Json job(request(other, "GET", "/jobs/ota-1").body);
  EXPECT_EQ(job.str("/data/status"), "COMPLETED");
  EXPECT_EQ(request(other, "DELETE", "/streams/ota-fw").status, 200) << "the job is finished";

  // The killed instance comes back as the one that does not serve jobs.
  ASSERT_TRUE(first.start()) << first.error() << first.log();
  EXPECT_EQ(request(first, "GET", "/jobs/ota-1").status, 503);
  EXPECT_EQ(metric(metrics(first), "chunkd_jobs_lease_held"), 0);
  EXPECT_EQ(request(other, "DELETE", "/jobs/ota-1").status, 200);
  EXPECT_EQ(first.stop(), 0) << first.log();
  EXPECT_EQ(other.stop(), 0) << other.log();
}

}  // namespace
}  // namespace chunkd::test

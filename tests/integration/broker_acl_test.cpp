// The shipped broker configuration (packaging/mosquitto/chunkd.conf and chunkd.acl, read from the
// source tree) in front of the real chunkd: chunkd logs in and serves two devices their own
// downloads (the largest JSON block among them, so the packet limit is checked too), while one
// device can neither read the other's replies nor publish requests or replies in its name.
//
// Mosquitto 2.0.11 (Debian 12), observed here: a SUBSCRIBE the ACL denies is granted (SUBACK
// QoS 0) and then delivers nothing; a denied QoS 0 PUBLISH is dropped without a word.
// "Nothing arrived" is checked after a round trip that must come after it: the broker keeps each
// client's messages in order, so once a later reply is in, an earlier one would be too.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/integration/api.hpp"
#include "tests/support/net.hpp"

namespace chunkd::test {
namespace {

using protocol::Format;
using protocol::ReplyKind;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// Replaces the one occurrence of `from` in `text`; false when it is not there exactly once.
bool replace_once(std::string& text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  if (at == std::string::npos || text.find(from, at + 1) != std::string::npos) return false;
  text.replace(at, from.size(), to);
  return true;
}

// The sum of the values of every sample whose line starts with `prefix`.
double metric_sum(const std::string& metrics, const std::string& prefix) {
  double sum = 0;
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) == 0) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

// Everything `device` receives until the description answering `token` (that one included).
std::vector<Reply> drain_until_described(Device& device, const std::string& stream,
                                         const std::string& token) {
  std::vector<Reply> seen;
  if (!device.send_describe(stream, Format::Json, token)) return seen;
  while (auto r = device.next_reply(30000)) {
    seen.push_back(*r);
    if (r->kind == ReplyKind::Description && r->description.client_token == token) return seen;
  }
  ADD_FAILURE() << device.thing() << ": no description for token " << token;
  return seen;
}

class BrokerAcl : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("acl", error_);
    ASSERT_FALSE(dir_.empty()) << error_;
    ASSERT_TRUE(write_password_file(
        dir_ + "/passwd",
        {{"chunkd", "chunkd-secret"}, {"thing-a", "a-secret"}, {"thing-b", "b-secret"}}, error_))
        << error_;
    // The shipped snippet, with only its listener and file paths moved to this test.
    std::string conf =
        read_text(std::string(CHUNKD_SOURCE_DIR) + "/packaging/mosquitto/chunkd.conf");
    ASSERT_TRUE(replace_once(conf, "\nlistener 1883\n", "\nlistener @PORT@ 127.0.0.1\n")) << conf;
    ASSERT_TRUE(replace_once(conf, "\npassword_file /etc/mosquitto/chunkd.passwd\n",
                             "\npassword_file " + dir_ + "/passwd\n"));
    ASSERT_TRUE(replace_once(
        conf, "\nacl_file /etc/mosquitto/chunkd.acl\n",
        "\nacl_file " + std::string(CHUNKD_SOURCE_DIR) + "/packaging/mosquitto/chunkd.acl\n"));
    broker_ = std::make_unique<TestBroker>(TestBroker::FullConfig{conf});
    ASSERT_TRUE(broker_->start()) << broker_->error();

    daemon_ = std::make_unique<TestDaemon>(broker_->uri());
    ASSERT_TRUE(write_file(dir_ + "/chunkd.password", "chunkd-secret\n"));
    daemon_->set("mqtt", "username", "\"chunkd\"");
    daemon_->set("mqtt", "password_file", TestDaemon::quote(dir_ + "/chunkd.password"));
    const std::string bucket = daemon_->add_bucket("fw");
    ASSERT_TRUE(write_file(bucket + "/fw.bin", file_));
    ASSERT_TRUE(daemon_->start()) << daemon_->error() << broker_->log_contents();
    auto r = daemon_->http().request("POST", "/streams/fw",
                                     create_body({{0, "fw", "fw.bin", std::nullopt}}),
                                     {{"Content-Type", "application/json"}});
    ASSERT_EQ(r.status, 201) << r.body;
  }

  void TearDown() override {
    if (daemon_) EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  // A device logged in as `user`, watching stream "fw".
  std::unique_ptr<Device> device(const std::string& user, const std::string& password) {
    auto d = std::make_unique<Device>(broker_->uri(), user);
    d->mqtt().set_login({user, password, "", "", ""});
    if (!d->connect() || !d->watch("fw")) {
      ADD_FAILURE() << user << ": " << d->mqtt().error() << broker_->log_contents();
      return nullptr;
    }
    return d;
  }

  double requests(const std::string& verb) {
    return metric_sum(daemon_->http().request("GET", "/metrics").body,
                      "chunkd_requests_total{verb=\"" + verb + "\"");
  }

  std::string dir_;
  std::string error_;
  const std::string file_ = test_bytes(300000, 7);  // two full blocks of 131072 and a short one
  std::unique_ptr<TestBroker> broker_;
  std::unique_ptr<TestDaemon> daemon_;
};

TEST_F(BrokerAcl, EachDeviceGetsItsOwnDownloadsAndNothingOfAnothers) {
  auto a = device("thing-a", "a-secret");
  auto b = device("thing-b", "b-secret");
  ASSERT_TRUE(a && b);
  // Thing A's login, claiming B's thing name as its client id: %u patterns ignore the claim.
  MqttClient snoop(broker_->uri(), "thing-b");
  snoop.set_login({"thing-a", "a-secret", "", "", ""});
  ASSERT_TRUE(snoop.connect()) << snoop.error();
  ASSERT_TRUE(snoop.subscribe({"$aws/things/thing-b/streams/fw/data/json",
                               "$aws/things/thing-b/streams/fw/data/cbor",
                               "$aws/things/+/streams/+/data/+"}))
      << snoop.error();
  // Mosquitto 2.0.11 grants what the ACL denies; the ACL then filters what is delivered.
  EXPECT_EQ(snoop.granted(), (std::vector<int>{0, 0, 0}));

  DownloadOptions large;
  large.block_size = 131072;  // the largest JSON reply must fit the shipped packet limit
  DownloadResult got_a = a->download("fw", Format::Json, 0, large);
  ASSERT_TRUE(got_a.ok) << got_a.error << daemon_->log(4000) << broker_->log_contents();
  EXPECT_EQ(bytes_to_string(got_a.bytes), file_);
  DownloadResult got_b = b->download("fw", Format::Cbor, 0, DownloadOptions{});
  ASSERT_TRUE(got_b.ok) << got_b.error << daemon_->log(4000);
  EXPECT_EQ(bytes_to_string(got_b.bytes), file_);

  // The snoop (thing A's login) saw A's blocks through its wildcard, and none of B's.
  snoop.subscribe({"$aws/things/thing-a/streams/fw/description/json"});
  ASSERT_TRUE(a->send_describe("fw", Format::Json, "snoop-sync"));
  std::size_t a_blocks = 0;
  for (bool synced = false; !synced;) {
    auto m = snoop.next(30000);
    ASSERT_TRUE(m) << "the snoop never saw A's description";
    EXPECT_EQ(m->topic.find("/thing-b/"), std::string::npos) << m->topic;
    if (m->topic.find("/data/") != std::string::npos) ++a_blocks;
    synced = m->topic.find("/description/") != std::string::npos;
  }
  EXPECT_GE(a_blocks, 3u);  // its subscription works: B's blocks were held back, not missed
}

TEST_F(BrokerAcl, ADeviceCannotPublishInAnothersName) {
  auto a = device("thing-a", "a-secret");
  auto b = device("thing-b", "b-secret");
  ASSERT_TRUE(a && b);
  const double gets = requests("get");
  const double describes = requests("describe");

  // A asks for B's blocks on B's topic, and forges a block onto B's data topic.
  protocol::GetStreamArgs args;
  args.client_token = "forged";
  args.file_id = 0;
  args.block_size = 4096;
  const std::string forged_get = b->request_topic("fw", protocol::Verb::Get, Format::Json);
  ASSERT_TRUE(a->send_raw(forged_get, protocol::encode_get_request(Format::Json, args)));
  const std::string fake_block = R"({"c":"forged","f":0,"l":1,"i":0,"p":"AA=="})";
  ASSERT_TRUE(
      a->send_raw(b->reply_topic("fw", ReplyKind::Data, Format::Json), as_bytes(fake_block)));
  // A's own describe comes after both on A's connection: once answered, chunkd has read every
  // request the broker let through before it.
  auto described = a->describe("fw", Format::Json, "a-sync");
  ASSERT_TRUE(described);
  ASSERT_EQ(described->kind, ReplyKind::Description);
  EXPECT_EQ(requests("get"), gets) << "chunkd saw the request A published in B's name";
  EXPECT_EQ(requests("describe"), describes + 1);

  // And B, after a round trip of its own, got neither a block nor a reply to the forged token.
  for (const Reply& r : drain_until_described(*b, "fw", "b-sync")) {
    EXPECT_NE(r.kind, ReplyKind::Data)
        << "B received a block: " << r.topic << " " << bytes_to_string(r.raw).substr(0, 40);
    EXPECT_EQ(bytes_to_string(r.raw).find("forged"), std::string::npos) << r.topic;
  }
}

}  // namespace
}  // namespace chunkd::test

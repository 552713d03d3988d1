// tools/chunkctl against the real chunkd binary: the operator's CLI for the control API.
#include <gtest/gtest.h>
#include <unistd.h>

#include <sstream>

#include "tests/integration/api.hpp"

namespace chunkd::test {
namespace {

bool have_chunkctl() { return ::access(chunkctl_binary_path().c_str(), X_OK) == 0; }

class Chunkctl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_chunkctl()) GTEST_SKIP() << "no " << chunkctl_binary_path();
    ASSERT_TRUE(stack.start_broker());
    configure();
    stack.put("a.bin", test_bytes(5000, 1));
    stack.put("b.bin", test_bytes(70000, 2));
    ASSERT_TRUE(stack.start());
    url = "http://127.0.0.1:" + std::to_string(stack.daemon().port());
  }
  virtual void configure() {}

  ProcessResult ctl(std::vector<std::string> args,
                    std::vector<std::pair<std::string, std::string>> env = {}) {
    args.insert(args.begin(), chunkctl_binary_path());
    // Never pick up the caller's environment by accident.
    env.emplace_back("CHUNKD_URL", url);
    bool has_token = false;
    for (const auto& [k, v] : env) has_token = has_token || k == "CHUNKD_TOKEN";
    if (!has_token) env.emplace_back("CHUNKD_TOKEN", "");
    return run_process(args, 120000, env);
  }

  static std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) out.push_back(line);
    }
    return out;
  }

  Stack stack;
  std::string url;
};

#define EXPECT_EXIT_CODE(result, code) \
  EXPECT_EQ((result).exit_code, code) << "stdout: " << (result).out << "\nstderr: " << (result).err

TEST_F(Chunkctl, CreateDescribeListUpdateDelete) {
  auto c = ctl({"create", "fw-1", "--file", "0=fw:a.bin", "--file", "1=fw:b.bin", "--role-arn",
                kRoleArn, "--description", "first", "--tag", "team=ota"});
  EXPECT_EXIT_CODE(c, 0);
  EXPECT_NE(c.out.find("created stream fw-1, version 1"), std::string::npos) << c.out;

  auto d = ctl({"--json", "describe", "fw-1"});
  EXPECT_EXIT_CODE(d, 0);
  Json dj(d.out);
  ASSERT_TRUE(dj.ok()) << d.out;
  EXPECT_EQ(dj.str("/streamId"), "fw-1");
  EXPECT_EQ(dj.u64("/streamVersion"), 1u);
  EXPECT_EQ(dj.str("/description"), "first");
  EXPECT_EQ(dj.str("/tags/0/Key"), "team");
  EXPECT_EQ(dj.str("/tags/0/Value"), "ota");
  EXPECT_EQ(dj.u64("/files/0/sizeBytes"), 5000u);
  EXPECT_EQ(dj.u64("/files/1/sizeBytes"), 70000u);
  auto digest = dj.str("/files/1/digest");
  ASSERT_TRUE(digest);

  // The table form shows the same facts.
  auto table = ctl({"describe", "fw-1"});
  EXPECT_EXIT_CODE(table, 0);
  EXPECT_NE(table.out.find("fw-1"), std::string::npos);
  EXPECT_NE(table.out.find("70000"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(*digest), std::string::npos) << table.out;

  // Pinning the digest from describe.
  auto pinned =
      ctl({"create", "fw-pinned", "--file", "0=fw:b.bin@" + *digest, "--role-arn", kRoleArn});
  EXPECT_EXIT_CODE(pinned, 0);

  for (int i = 0; i < 4; ++i) {
    auto r = ctl(
        {"create", "more-" + std::to_string(i), "--file", "0=fw:a.bin", "--role-arn", kRoleArn});
    EXPECT_EXIT_CODE(r, 0);
  }
  // list --all walks every page (table form).
  auto all = ctl({"list", "--all", "--max-results", "2"});
  EXPECT_EXIT_CODE(all, 0);
  for (const char* id : {"fw-1", "fw-pinned", "more-0", "more-1", "more-2", "more-3"}) {
    EXPECT_NE(all.out.find(id), std::string::npos) << id << "\n" << all.out;
  }
  EXPECT_EQ(all.out.find("--next-token"), std::string::npos) << all.out;
  // --json prints the server's data object; pages are followed with --next-token.
  std::vector<std::string> ids;
  std::optional<std::string> token;
  int pages = 0;
  do {
    std::vector<std::string> args = {"--json", "list", "--max-results", "2"};
    if (token) {
      args.push_back("--next-token");
      args.push_back(*token);
    }
    auto page = ctl(args);
    EXPECT_EXIT_CODE(page, 0);
    Json pj(page.out);
    ASSERT_TRUE(pj.ok()) << page.out;
    for (std::size_t k = 0; k < pj.array_size("/streams"); ++k) {
      ids.push_back(pj.str("/streams/" + std::to_string(k) + "/streamId").value_or("?"));
    }
    token = pj.str("/nextToken");
  } while (token && ++pages < 10);
  EXPECT_EQ(
      ids, (std::vector<std::string>{"fw-1", "fw-pinned", "more-0", "more-1", "more-2", "more-3"}));
  auto desc = ctl({"list", "--descending", "--max-results", "1"});
  EXPECT_EXIT_CODE(desc, 0);
  EXPECT_NE(desc.out.find("more-3"), std::string::npos) << desc.out;
  EXPECT_EQ(desc.out.find("fw-1"), std::string::npos) << desc.out;
  EXPECT_NE(desc.out.find("--next-token"), std::string::npos) << desc.out;

  auto u = ctl({"--json", "update", "fw-1", "--description", "second"});
  EXPECT_EXIT_CODE(u, 0);
  Json uj(u.out);
  EXPECT_EQ(uj.u64("/streamVersion"), 2u) << u.out;
  EXPECT_EQ(uj.str("/description"), "second");
  auto u2 = ctl({"update", "fw-1", "--file", "0=fw:b.bin"});
  EXPECT_EXIT_CODE(u2, 0);
  EXPECT_NE(u2.out.find("version 3"), std::string::npos) << u2.out;

  auto del = ctl({"delete", "fw-1"});
  EXPECT_EXIT_CODE(del, 0);
  auto gone = ctl({"describe", "fw-1"});
  EXPECT_EXIT_CODE(gone, 1);
  EXPECT_NE(gone.err.find("NOT_FOUND"), std::string::npos) << gone.err;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST_F(Chunkctl, AllowThingSetsReplacesAndRemovesTheReaders) {
  auto c = ctl({"create", "gated", "--file", "0=fw:a.bin", "--role-arn", kRoleArn, "--allow-thing",
                "sensor-*", "--allow-thing", "gw-0?"});
  EXPECT_EXIT_CODE(c, 0);
  auto d = ctl({"--json", "describe", "gated"});
  EXPECT_EXIT_CODE(d, 0);
  Json dj(d.out);
  EXPECT_EQ(dj.array_size("/allowedThings"), 2u) << d.out;
  EXPECT_EQ(dj.str("/allowedThings/1"), "gw-0?");
  auto table = ctl({"describe", "gated"});
  EXPECT_NE(table.out.find("readers     sensor-* gw-0?"), std::string::npos) << table.out;

  auto u = ctl({"--json", "update", "gated", "--allow-thing", "gw-*"});
  EXPECT_EXIT_CODE(u, 0);
  EXPECT_EQ(Json(u.out).str("/allowedThings/0"), "gw-*") << u.out;
  auto open = ctl({"update", "gated", "--allow-every-thing"});
  EXPECT_EXIT_CODE(open, 0);
  auto after = ctl({"describe", "gated"});
  EXPECT_NE(after.out.find("readers     every thing"), std::string::npos) << after.out;

  auto bad = ctl({"update", "gated", "--allow-thing", "no spaces"});
  EXPECT_EXIT_CODE(bad, 1);
  EXPECT_NE(bad.err.find("allowedThings[0]"), std::string::npos) << bad.err;
  EXPECT_EXIT_CODE(ctl({"update", "gated", "--allow-thing", "a", "--allow-every-thing"}), 2);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

TEST_F(Chunkctl, ServerErrorsExitOneWithTheCode) {
  auto bad = ctl({"create", "x", "--file", "0=fw:../escape", "--role-arn", kRoleArn});
  EXPECT_EXIT_CODE(bad, 1);
  EXPECT_NE(bad.err.find("VALIDATION_ERROR"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("files[0].s3Location.key"), std::string::npos) << bad.err;

  auto no_role = ctl({"create", "x", "--file", "0=fw:a.bin"});
  EXPECT_EXIT_CODE(no_role, 1);
  EXPECT_NE(no_role.err.find("roleArn"), std::string::npos) << no_role.err;

  ASSERT_EQ(ctl({"create", "x", "--file", "0=fw:a.bin", "--role-arn", kRoleArn}).exit_code, 0);
  auto dup = ctl({"create", "x", "--file", "0=fw:a.bin", "--role-arn", kRoleArn});
  EXPECT_EXIT_CODE(dup, 1);
  EXPECT_NE(dup.err.find("ALREADY_EXISTS"), std::string::npos) << dup.err;

  auto bad_id = ctl({"describe", "no.such"});
  EXPECT_EXIT_CODE(bad_id, 1);
  EXPECT_NE(bad_id.err.find("VALIDATION_ERROR"), std::string::npos) << bad_id.err;

  auto bad_page = ctl({"list", "--max-results", "0"});
  EXPECT_EXIT_CODE(bad_page, 1);
  EXPECT_NE(bad_page.err.find("maxResults"), std::string::npos) << bad_page.err;

  // Usage errors and an unreachable server are not server errors.
  auto usage = ctl({"frobnicate"});
  EXPECT_EXIT_CODE(usage, 2);
  auto unreachable = run_process({chunkctl_binary_path(), "--url", "http://127.0.0.1:1", "list"},
                                 60000, {{"CHUNKD_TOKEN", ""}});
  EXPECT_EXIT_CODE(unreachable, 2);
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

class ChunkctlWithToken : public Chunkctl {
  void configure() override { stack.daemon().set_token("ctl-token-7"); }
};

TEST_F(ChunkctlWithToken, TokenFromFlagFileOrEnvironment) {
  auto none = ctl({"list"});
  EXPECT_EXIT_CODE(none, 1);
  EXPECT_NE(none.err.find("UNAUTHORIZED"), std::string::npos) << none.err;
  auto wrong = ctl({"--token", "nope", "list"});
  EXPECT_EXIT_CODE(wrong, 1);
  EXPECT_NE(wrong.err.find("UNAUTHORIZED"), std::string::npos) << wrong.err;

  EXPECT_EXIT_CODE(ctl({"--token", "ctl-token-7", "list"}), 0);
  const std::string token_file = stack.daemon().dir() + "/ctl-token";
  write_file(token_file, "  ctl-token-7 \nsecond line\n");
  EXPECT_EXIT_CODE(ctl({"--token-file", token_file, "create", "t", "--file", "0=fw:a.bin",
                        "--role-arn", kRoleArn}),
                   0);
  auto env = ctl({"--json", "describe", "t"}, {{"CHUNKD_TOKEN", "ctl-token-7"}});
  EXPECT_EXIT_CODE(env, 0);
  EXPECT_EQ(Json(env.out).str("/streamId"), "t") << env.out;
  EXPECT_EQ(stack.daemon().stop(), 0) << stack.daemon().log();
}

}  // namespace
}  // namespace chunkd::test

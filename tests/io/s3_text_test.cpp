// The pure text handling of S3 buckets (io/s3_text.hpp): credentials files, error bodies, URI
// encoding, Content-Range.
#include "io/s3_text.hpp"

#include <gtest/gtest.h>

#include "io/s3_client.hpp"

namespace chunkd::io {
namespace {

TEST(SharedCredentials, ReadsTheNamedProfile) {
  const char* text =
      "# comment\n[default]\naws_access_key_id = AKIDEFAULT\naws_secret_access_key=s3cr3t/+=\n"
      "\n; other\n[ci]\r\naws_access_key_id = AKICI\r\naws_secret_access_key = ci-secret\r\n"
      "aws_session_token = tok\r\nregion = eu-west-1\r\n";
  auto d = parse_shared_credentials(text, "default");
  ASSERT_TRUE(d) << d.error();
  EXPECT_EQ(d->access_key_id, "AKIDEFAULT");
  EXPECT_EQ(d->secret_access_key, "s3cr3t/+=");
  EXPECT_EQ(d->session_token, "");
  auto ci = parse_shared_credentials(text, "ci");
  ASSERT_TRUE(ci) << ci.error();
  EXPECT_EQ(ci->access_key_id, "AKICI");
  EXPECT_EQ(ci->secret_access_key, "ci-secret");
  EXPECT_EQ(ci->session_token, "tok");
}

TEST(SharedCredentials, ProblemsAreNamedWithoutTheSecret) {
  auto none = parse_shared_credentials("[default]\naws_access_key_id = A\n", "prod");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), "no [prod] profile");
  auto half = parse_shared_credentials("[default]\naws_access_key_id = A\n", "default");
  ASSERT_FALSE(half);
  EXPECT_NE(half.error().find("aws_secret_access_key"), std::string::npos);
  auto spaced = parse_shared_credentials(
      "[default]\naws_access_key_id = A\naws_secret_access_key = two words\n", "default");
  ASSERT_FALSE(spaced);
  EXPECT_EQ(spaced.error().find("two"), std::string::npos) << spaced.error();
  EXPECT_FALSE(parse_shared_credentials("[default\n", "default"));
  EXPECT_FALSE(parse_shared_credentials("[default]\njust words\n", "default"));
  EXPECT_FALSE(parse_shared_credentials("", "default"));
}

TEST(S3ErrorBodyTest, ReadsCodeAndMessage) {
  auto e = parse_s3_error(
      "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The key &quot;a&amp;b&quot; "
      "does not exist</Message></Error>");
  EXPECT_EQ(e.code, "NoSuchKey");
  EXPECT_EQ(e.message, "The key \"a&b\" does not exist");
  EXPECT_EQ(parse_s3_error("").code, "");
  EXPECT_EQ(parse_s3_error("<Code>unterminated").code, "");
  EXPECT_EQ(parse_s3_error("<Code>" + std::string(1000, 'x') + "</Code>").code.size(), 256u);
}

TEST(S3UriEncode, KeepsUnreservedAndOptionallySlash) {
  EXPECT_EQ(s3_uri_encode("a/b c+d~e_f.g-h", true), "a/b%20c%2Bd~e_f.g-h");
  EXPECT_EQ(s3_uri_encode("a/b", false), "a%2Fb");
  EXPECT_EQ(s3_uri_encode("\xc3\xa9", true), "%C3%A9");
}

TEST(S3ObjectUrl, PathAndVirtualAddressing) {
  S3BucketOptions b;
  b.endpoint = "https://minio.example.net:9000";
  b.bucket = "fw";
  EXPECT_EQ(s3_object_url(b, "dir/a b.bin", ""), "https://minio.example.net:9000/fw/dir/a%20b.bin");
  EXPECT_EQ(s3_object_url(b, "a", "v+1"), "https://minio.example.net:9000/fw/a?versionId=v%2B1");
  b.virtual_addressing = true;
  EXPECT_EQ(s3_object_url(b, "a", ""), "https://fw.minio.example.net:9000/a");
}

TEST(ContentRangeTest, ParsesAndRefusesMalformed) {
  auto r = parse_content_range("bytes 100-199/1000");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, 100u);
  EXPECT_EQ(r->last, 199u);
  EXPECT_EQ(r->total, 1000u);
  auto star = parse_content_range("bytes 0-9/*");
  ASSERT_TRUE(star);
  EXPECT_FALSE(star->total);
  for (const char* bad : {"", "bytes", "bytes 5-4/10", "bytes 0-9/9", "items 0-1/2", "bytes -1/2",
                          "bytes 0-1/x", "bytes 99999999999999999999-1/2"}) {
    EXPECT_FALSE(parse_content_range(bad)) << bad;
  }
}

}  // namespace
}  // namespace chunkd::io

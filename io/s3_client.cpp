#include "io/s3_client.hpp"

#include <algorithm>
#include <optional>
#include <string_view>
#include <utility>

#include "base/assert.hpp"
#include "io/log.hpp"
#include "io/s3_request.hpp"

namespace chunkd::io {
namespace {

class S3Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "s3"; }
  std::string message(int value) const override {
    switch (static_cast<S3Error>(value)) {
      case S3Error::NoSuchBucket:
        return "no such bucket";
      case S3Error::NoSuchKey:
        return "no such key";
      case S3Error::NoSuchVersion:
        return "no such version";
      case S3Error::AccessDenied:
        return "access denied";
      case S3Error::Unreachable:
        return "the endpoint is unreachable";
      case S3Error::TimedOut:
        return "the endpoint timed out";
      case S3Error::TooLarge:
        return "the object is too large";
      case S3Error::BadResponse:
        return "the endpoint's answer cannot be used";
      case S3Error::Cancelled:
        return "the fetch was cancelled";
    }
    return "unknown S3 error";
  }
};

bool iequals_prefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char a = line[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (a != name[i]) return false;
  }
  return true;
}

std::string_view header_value(std::string_view line, std::string_view name) {
  std::string_view v = line.substr(name.size());
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) {
    v.remove_suffix(1);
  }
  return v.substr(0, 1024);
}

}  // namespace

const std::error_category& s3_category() {
  static const S3Category category;
  return category;
}

std::error_code make_error_code(S3Error e) { return {static_cast<int>(e), s3_category()}; }

std::string s3_object_url(const S3BucketOptions& bucket, std::string_view key,
                          std::string_view version) {
  std::string url;
  if (bucket.virtual_addressing) {
    std::size_t scheme_end = bucket.endpoint.find("://");
    std::size_t host = scheme_end == std::string::npos ? 0 : scheme_end + 3;
    url =
        bucket.endpoint.substr(0, host) + bucket.bucket + "." + bucket.endpoint.substr(host) + "/";
  } else {
    url = bucket.endpoint + "/" + bucket.bucket + "/";
  }
  url += s3_uri_encode(key, true);
  if (!version.empty()) url += "?versionId=" + s3_uri_encode(version, false);
  return url;
}

struct S3Client::Fetch : S3Request {
  S3Client* client = nullptr;
  int fd = -1;
  S3Sink sink;
  std::uint64_t max_bytes = 0;
  Done done;

  // This attempt's answer.
  long status = 0;
  std::optional<std::uint64_t> length;
  std::optional<ContentRange> range;
  std::string answer_etag;
  std::string answer_version;
  std::uint64_t skip = 0;  // bytes of this body already in the file (a 200 to a Range request)

  // Across attempts.
  std::optional<std::uint64_t> total;
  std::string etag;
  std::string version_id;
  std::uint64_t received = 0;  // bytes accepted: written or pending
  std::string pending;         // the next write, at pending_offset
  std::uint64_t pending_offset = 0;
  std::string writing;  // in flight
  std::size_t writing_done = 0;
  std::uint64_t writing_offset = 0;
  uv_fs_t write_req{};
  uv_buf_t write_buf{};
  bool write_in_flight = false;
  bool paused = false;
  bool awaiting_go = false;  // S3Sink::sized has not answered yet: no byte is accepted
  bool size_ok = false;      // ... it has, with no error

  bool check_headers();
  void fail_answer(const S3ErrorAnswer& answer);
  void start_write();
  static void on_write(uv_fs_t* req);
  static std::size_t on_header(char* data, std::size_t size, std::size_t n, void* self);
  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* self);
};

S3Client::S3Client(uv_loop_t* loop, CurlLoop& curl) : loop_(loop), curl_(curl) {}

S3Client::~S3Client() { CHUNKD_ASSERT(fetches_.empty()); }

void S3Client::fetch(const S3BucketOptions& bucket, std::string key, std::string version,
                     S3Sink sink, std::uint64_t max_bytes, Done done) {
  auto owned = std::make_unique<Fetch>();
  Fetch& f = *owned;
  fetches_.push_back(std::move(owned));
  f.client = this;
  f.fd = sink.fd;
  f.sink = std::move(sink);
  f.max_bytes = max_bytes;
  f.done = std::move(done);
  if (!f.init(loop_, &f, bucket, std::move(key), std::move(version))) {
    f.fail(std::make_error_code(std::errc::not_enough_memory), "cannot create an HTTP request");
    maybe_finish(f);
    return;
  }
  curl_easy_setopt(f.easy, CURLOPT_HEADERFUNCTION, &Fetch::on_header);
  curl_easy_setopt(f.easy, CURLOPT_HEADERDATA, &f);
  curl_easy_setopt(f.easy, CURLOPT_WRITEFUNCTION, &Fetch::on_body);
  curl_easy_setopt(f.easy, CURLOPT_WRITEDATA, &f);
  start_attempt(f);
}

void S3Client::start_attempt(Fetch& f) {
  f.status = 0;
  f.length.reset();
  f.range.reset();
  f.answer_etag.clear();
  f.answer_version.clear();
  f.skip = 0;
  f.paused = false;
  // A resume continues where the file ends, and only of the object the first answer was.
  std::optional<std::string_view> match;
  std::string range;
  if (f.received > 0) {
    if (f.etag.empty()) {  // nothing to hold the rest to: the bytes held may be of another object
      f.fail(S3Error::BadResponse, f.where() +
                                       ": the transfer was cut and the server gave no ETag to "
                                       "resume it safely; retry");
      maybe_finish(f);
      return;
    }
    match = f.etag;
    range = std::to_string(f.received) + "-";
  }
  f.begin_attempt(loop_, kMaxFetchSeconds, kS3EmptyBodySha256, std::nullopt, match);
  curl_easy_setopt(f.easy, CURLOPT_RANGE, range.empty() ? nullptr : range.c_str());
  Fetch* fp = &f;
  if (!f.submit(curl_, [this, fp](CURLcode code) { attempt_done(*fp, code); })) maybe_finish(f);
}

std::size_t S3Client::Fetch::on_header(char* data, std::size_t size, std::size_t n, void* self) {
  auto& f = *static_cast<Fetch*>(self);
  const std::size_t len = size * n;
  std::string_view line(data, len);
  if (line.substr(0, 5) == "HTTP/") {
    // A new answer (after a 100 Continue too): forget the previous one's headers.
    f.status = 0;
    f.length.reset();
    f.range.reset();
    f.answer_etag.clear();
    f.answer_version.clear();
    std::size_t sp = line.find(' ');
    if (sp != std::string_view::npos && line.size() >= sp + 4) {
      std::string_view code = line.substr(sp + 1, 3);
      long status = 0;
      for (char c : code) status = c >= '0' && c <= '9' ? status * 10 + (c - '0') : -1000;
      f.status = status;
    }
  } else if (line == "\r\n" || line == "\n") {
    if (f.status >= 200 && f.status < 300 && !f.check_headers()) return 0;
  } else if (iequals_prefix(line, "content-length:")) {
    std::string_view v = header_value(line, "content-length:");
    std::uint64_t value = 0;
    bool ok = !v.empty() && v.size() <= 19;
    for (char c : v) ok = ok && c >= '0' && c <= '9';
    for (char c : v) value = value * 10 + static_cast<std::uint64_t>(c - '0');
    if (ok) f.length = value;
  } else if (iequals_prefix(line, "content-range:")) {
    f.range = parse_content_range(header_value(line, "content-range:"));
  } else if (iequals_prefix(line, "etag:")) {
    f.answer_etag = std::string(header_value(line, "etag:"));
  } else if (iequals_prefix(line, "x-amz-version-id:")) {
    f.answer_version = std::string(header_value(line, "x-amz-version-id:"));
  }
  return len;
}

// At the end of a 2xx answer's headers: the object's size, ETag and version; false (the fetch
// failed) when they cannot be used.
bool S3Client::Fetch::check_headers() {
  std::uint64_t size = 0;
  if (status == 206) {
    if (!range || !range->total || range->first != received) {
      fail(S3Error::BadResponse,
           where() + ": a resumed answer does not continue at byte " + std::to_string(received));
      return false;
    }
    size = *range->total;
  } else {
    if (!length) {
      fail(S3Error::BadResponse, where() + ": the answer has no Content-Length");
      return false;
    }
    size = *length;
    skip = received;  // the server ignored the Range: drop what the file already holds
  }
  if (total && *total != size) {
    fail(S3Error::BadResponse, where() + ": the object changed size during the fetch; retry");
    return false;
  }
  total = size;
  if (size > max_bytes) {
    fail(S3Error::TooLarge, where() + " has " + std::to_string(size) + " bytes");
    return false;
  }
  if (!etag.empty() && answer_etag != etag) {
    fail(S3Error::BadResponse, where() + ": the object changed during the fetch; retry");
    return false;
  }
  etag = answer_etag;
  if (!answer_version.empty()) version_id = answer_version;
  if (!size_ok && !awaiting_go) {
    // The first usable answer: ask the sink before accepting any byte (on_body pauses meanwhile).
    if (!sink.sized) {
      size_ok = true;
    } else {
      awaiting_go = true;
      Fetch* self = this;
      sink.sized(size, [self](std::error_code e) { self->client->sized(*self, e); });
    }
  }
  return true;
}

std::size_t S3Client::Fetch::on_body(char* data, std::size_t size, std::size_t n, void* self) {
  auto& f = *static_cast<Fetch*>(self);
  const std::size_t len = size * n;
  if (f.status < 200 || f.status >= 300) {
    f.keep_error_body(data, len);
    return len;
  }
  if (f.ended || !f.total) return 0;
  // Decide on pausing before touching any state: a paused chunk is delivered again.
  if (f.awaiting_go || (!f.pending.empty() && f.pending.size() + len > kMaxBufferedBytes)) {
    f.paused = true;
    return CURL_WRITEFUNC_PAUSE;
  }
  std::string_view body(data, len);
  std::uint64_t dropped = std::min<std::uint64_t>(f.skip, body.size());
  body.remove_prefix(static_cast<std::size_t>(dropped));
  f.skip -= dropped;
  if (f.received + body.size() > *f.total) {
    f.fail(S3Error::BadResponse,
           f.where() + ": more bytes than the announced " + std::to_string(*f.total));
    return 0;
  }
  if (body.empty()) return len;
  if (f.sink.bytes) f.sink.bytes(body.data(), body.size());
  if (f.pending.empty()) f.pending_offset = f.received;
  f.pending.append(body);
  f.received += body.size();
  f.start_write();
  return len;
}

// An error answer below 500 that is neither the bucket's nor the credentials' fault.
void S3Client::Fetch::fail_answer(const S3ErrorAnswer& answer) {
  const std::string& said = answer.said;
  const std::string& code = answer.body.code;
  if (code == "NoSuchVersion" || (!version.empty() && code == "InvalidArgument")) {
    fail(S3Error::NoSuchVersion, "no version \"" + version + "\" of key \"" + key + "\" in " +
                                     remote() + " (" + said + ")");
  } else if (status == 404) {
    fail(S3Error::NoSuchKey, "no key \"" + key + "\" in " + remote() + " (" + said + ")");
  } else if (status == 412) {
    fail(S3Error::BadResponse, where() + " changed during the fetch; retry (" + said + ")");
  } else {
    fail(S3Error::BadResponse, where() + ": unexpected answer " + said);
  }
}

void S3Client::Fetch::start_write() {
  if (write_in_flight || pending.empty()) return;
  writing.swap(pending);
  pending.clear();
  writing_offset = pending_offset;
  writing_done = 0;
  write_in_flight = true;
  write_req.data = this;
  write_buf = uv_buf_init(writing.data(), static_cast<unsigned>(writing.size()));
  int rc = uv_fs_write(client->loop_, &write_req, fd, &write_buf, 1,
                       static_cast<std::int64_t>(writing_offset), &Fetch::on_write);
  if (rc != 0) {
    write_in_flight = false;
    fail(std::error_code(-rc, std::generic_category()), where() + ": cannot write the file");
  }
}

void S3Client::Fetch::on_write(uv_fs_t* req) {
  auto& f = *static_cast<Fetch*>(req->data);
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  f.write_in_flight = false;
  S3Client& client = *f.client;
  if (result <= 0) {
    int e = result < 0 ? static_cast<int>(-result) : EIO;
    f.fail(std::error_code(e, std::generic_category()), f.where() + ": cannot write the file");
  } else {
    f.writing_done += static_cast<std::size_t>(result);
    client.bytes_fetched_ += static_cast<std::uint64_t>(result);
    if (f.writing_done < f.writing.size() && !f.error) {
      f.write_in_flight = true;
      f.write_buf = uv_buf_init(f.writing.data() + f.writing_done,
                                static_cast<unsigned>(f.writing.size() - f.writing_done));
      int rc = uv_fs_write(client.loop_, &f.write_req, f.fd, &f.write_buf, 1,
                           static_cast<std::int64_t>(f.writing_offset + f.writing_done),
                           &Fetch::on_write);
      if (rc == 0) return;
      f.write_in_flight = false;
      f.fail(std::error_code(-rc, std::generic_category()), f.where() + ": cannot write the file");
    }
  }
  if (f.error) {
    f.stop(client.curl_);
    client.maybe_finish(f);
    return;
  }
  f.start_write();
  if (f.paused && f.in_transfer && f.pending.size() < kMaxBufferedBytes / 2) {
    f.paused = false;
    curl_easy_pause(f.easy, CURLPAUSE_CONT);  // may deliver more body at once
  }
  client.maybe_finish(f);
}

void S3Client::attempt_done(Fetch& f, CURLcode code) {
  f.in_transfer = false;
  if (f.error) {
    maybe_finish(f);
    return;
  }
  const std::string cause = f.cause(code);
  if (f.total && f.received == *f.total) {
    // Every byte is here (also when the connection broke just after the last one, or a resume
    // asked for the empty rest and got 416): whatever this attempt said is moot.
    f.ended = true;
    maybe_finish(f);
    return;
  }
  if (code == CURLE_OK && f.status >= 200 && f.status < 300) {
    retry_or_fail(f, S3Error::Unreachable, "the connection ended early");
    return;
  }
  if (code == CURLE_OK) {
    const S3ErrorAnswer answer = f.error_answer(f.status);
    if (f.status >= 500) {
      retry_or_fail(f, S3Error::Unreachable, "the endpoint answered " + answer.said);
      return;
    }
    if (!f.fail_common(f.status, answer)) f.fail_answer(answer);
    maybe_finish(f);
    return;
  }
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      retry_or_fail(f, S3Error::TimedOut, cause);
      return;
    case CURLE_COULDNT_CONNECT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      retry_or_fail(f, S3Error::Unreachable, cause);
      return;
    default:
      f.fail(S3Error::Unreachable, f.bucket.endpoint + ": " + cause);
      maybe_finish(f);
      return;
  }
}

void S3Client::retry_or_fail(Fetch& f, S3Error error, std::string detail) {
  std::optional<std::uint64_t> backoff = f.backoff_ms(loop_, kMaxFetchSeconds);
  if (!backoff) {
    f.fail(error, f.gave_up(detail, ", " + std::to_string(f.received) + " bytes received"));
    maybe_finish(f);
    return;
  }
  const std::uint64_t backoff_ms = *backoff;
  LOG_WARN("s3", "%s: %s; retrying in %llu ms from byte %llu", f.where().c_str(), detail.c_str(),
           static_cast<unsigned long long>(backoff_ms),
           static_cast<unsigned long long>(f.received));
  uv_timer_start(
      &f.timer,
      [](uv_timer_t* t) {
        auto& fetch = *static_cast<Fetch*>(t->data);
        if (fetch.error) {
          fetch.client->maybe_finish(fetch);
          return;
        }
        fetch.client->start_attempt(fetch);
      },
      backoff_ms, 0);
}

// S3Sink::sized answered.
void S3Client::sized(Fetch& f, std::error_code error) {
  CHUNKD_ASSERT(f.awaiting_go);
  f.awaiting_go = false;
  if (error) {
    f.fail(error, f.where() + ": " + error.message());
    f.stop(curl_);
  } else {
    f.size_ok = true;
    if (f.paused && f.in_transfer) {
      f.paused = false;
      curl_easy_pause(f.easy, CURLPAUSE_CONT);  // may deliver body at once
    }
  }
  maybe_finish(f);
}

void S3Client::maybe_finish(Fetch& f) {
  if (!f.ended || f.closing || f.write_in_flight || f.in_transfer || f.awaiting_go) return;
  if (!f.error && !f.pending.empty()) {
    f.start_write();
    if (f.write_in_flight) return;
  }
  f.close_timer([](uv_handle_t* h) {
    auto& fetch = *static_cast<Fetch*>(h->data);
    S3Client& client = *fetch.client;
    S3FetchResult result;
    result.error = fetch.error;
    result.detail = std::move(fetch.detail);
    result.object.size = fetch.total.value_or(0);
    result.object.etag = std::move(fetch.etag);
    result.object.version_id = std::move(fetch.version_id);
    result.object.attempts = fetch.attempts;
    Done done = std::move(fetch.done);
    take_request(client.fetches_, &fetch).reset();  // `fetch` is gone from here on
    done(std::move(result));
  });
}

void S3Client::cancel_all() {
  cancel_requests(fetches_, curl_, [this](Fetch& f) { maybe_finish(f); });
}

}  // namespace chunkd::io

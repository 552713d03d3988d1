#include "io/s3_upload.hpp"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "base/assert.hpp"
#include "io/log.hpp"
#include "io/s3_request.hpp"

namespace chunkd::io {
namespace {

constexpr const char* kUnsignedPayload = "x-amz-content-sha256: UNSIGNED-PAYLOAD";

}  // namespace

struct S3Uploader::Request : S3Request {
  S3Uploader* owner = nullptr;
  bool is_put = false;
  S3Body body;
  std::function<void(S3HeadResult)> head_done;
  std::function<void(S3PutResult)> put_done;

  // A file body: `cur` is being sent, `next` is read ahead. Reset for each attempt.
  std::vector<char> cur, next;
  std::size_t cur_len = 0, cur_pos = 0, next_len = 0;
  bool next_ready = false;
  bool reading = false;           // a uv_fs_read in flight (into `next`)
  std::uint64_t file_offset = 0;  // of the next read
  std::uint64_t sent = 0;         // body bytes handed to curl this attempt
  bool paused = false;
  uv_fs_t read_req{};
  uv_buf_t read_buf{};

  S3HeadResult head;

  void start_read();
  static void on_read_done(uv_fs_t* req);
  static std::size_t on_body_read(char* buf, std::size_t size, std::size_t n, void* self);
  static std::size_t on_answer(char* data, std::size_t size, std::size_t n, void* self);
  static void on_retry(uv_timer_t* timer);
};

S3Uploader::S3Uploader(uv_loop_t* loop, CurlLoop& curl) : loop_(loop), curl_(curl) {}

S3Uploader::~S3Uploader() { CHUNKD_ASSERT(requests_.empty()); }

S3Uploader::Request& S3Uploader::make(const S3BucketOptions& bucket, std::string key) {
  auto owned = std::make_unique<Request>();
  Request& r = *owned;
  requests_.push_back(std::move(owned));
  r.owner = this;
  if (!r.init(loop_, &r, bucket, std::move(key), "")) return r;
  curl_easy_setopt(r.easy, CURLOPT_WRITEFUNCTION, &Request::on_answer);
  curl_easy_setopt(r.easy, CURLOPT_WRITEDATA, &r);
  return r;
}

void S3Uploader::head(const S3BucketOptions& bucket, std::string key,
                      std::function<void(S3HeadResult)> done) {
  Request& r = make(bucket, std::move(key));
  r.head_done = std::move(done);
  if (r.easy != nullptr) curl_easy_setopt(r.easy, CURLOPT_NOBODY, 1L);
  start_attempt(r);
}

void S3Uploader::put(const S3BucketOptions& bucket, std::string key, S3Body body,
                     std::function<void(S3PutResult)> done) {
  Request& r = make(bucket, std::move(key));
  r.is_put = true;
  r.body = std::move(body);
  if (r.body.fd < 0) r.body.size = r.body.data.size();
  r.put_done = std::move(done);
  if (r.easy != nullptr) {
    curl_easy_setopt(r.easy, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(r.easy, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(r.body.size));
    curl_easy_setopt(r.easy, CURLOPT_READFUNCTION, &Request::on_body_read);
    curl_easy_setopt(r.easy, CURLOPT_READDATA, &r);
  }
  start_attempt(r);
}

void S3Uploader::start_attempt(Request& r) {
  if (r.easy == nullptr) {
    r.fail(std::make_error_code(std::errc::not_enough_memory), "cannot create an HTTP request");
    maybe_finish(r);
    return;
  }
  r.cur_len = r.cur_pos = r.next_len = 0;
  r.next_ready = false;
  r.file_offset = r.sent = 0;
  r.paused = false;
  if (r.is_put) {
    r.begin_attempt(loop_, kMaxRequestSeconds, kUnsignedPayload, "application/octet-stream",
                    std::nullopt);
  } else {
    r.begin_attempt(loop_, kMaxRequestSeconds, kS3EmptyBodySha256, std::nullopt, std::nullopt);
  }
  if (r.is_put && r.body.fd >= 0) r.start_read();
  Request* rp = &r;
  if (!r.submit(curl_, [this, rp](CURLcode code) { attempt_done(*rp, code); })) maybe_finish(r);
}

void S3Uploader::Request::start_read() {
  if (reading || next_ready || file_offset >= body.size || error) return;
  if (next.empty()) next.resize(kChunkBytes);
  const auto want =
      static_cast<unsigned>(std::min<std::uint64_t>(kChunkBytes, body.size - file_offset));
  read_buf = uv_buf_init(next.data(), want);
  read_req.data = this;
  int rc = uv_fs_read(owner->loop_, &read_req, body.fd, &read_buf, 1,
                      static_cast<std::int64_t>(file_offset), &Request::on_read_done);
  if (rc != 0) {
    fail(std::error_code(-rc, std::generic_category()), where() + ": cannot read the file");
    return;
  }
  reading = true;
}

void S3Uploader::Request::on_read_done(uv_fs_t* req) {
  auto& r = *static_cast<Request*>(req->data);
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  r.reading = false;
  S3Uploader& owner = *r.owner;
  if (result < 0) {
    r.fail(std::error_code(static_cast<int>(-result), std::generic_category()),
           r.where() + ": cannot read the file");
  } else if (result == 0) {
    r.fail(S3Error::BadResponse,
           r.where() + ": the file shrank below " + std::to_string(r.body.size) + " bytes");
  } else if (!r.error) {
    r.next_len = static_cast<std::size_t>(result);
    r.file_offset += static_cast<std::uint64_t>(result);
    r.next_ready = true;
  }
  if (r.error) {
    r.stop(owner.curl_);
    owner.maybe_finish(r);
    return;
  }
  if (r.paused && r.in_transfer) {
    r.paused = false;
    curl_easy_pause(r.easy, CURLPAUSE_CONT);  // may call on_body_read at once
  }
}

std::size_t S3Uploader::Request::on_body_read(char* buf, std::size_t size, std::size_t n,
                                              void* self) {
  auto& r = *static_cast<Request*>(self);
  const std::size_t room = size * n;
  if (r.error) return CURL_READFUNC_ABORT;
  if (r.body.fd < 0) {
    const std::size_t k = std::min<std::size_t>(room, r.body.data.size() - r.sent);
    std::memcpy(buf, r.body.data.data() + r.sent, k);
    r.sent += k;
    r.owner->bytes_sent_ += k;
    return k;
  }
  if (r.cur_pos == r.cur_len && r.next_ready) {
    std::swap(r.cur, r.next);
    r.cur_len = r.next_len;
    r.cur_pos = 0;
    r.next_ready = false;
  }
  r.start_read();
  if (r.cur_pos == r.cur_len) {
    if (r.sent >= r.body.size) return 0;
    r.paused = true;
    return CURL_READFUNC_PAUSE;
  }
  const std::size_t k = std::min(room, r.cur_len - r.cur_pos);
  std::memcpy(buf, r.cur.data() + r.cur_pos, k);
  r.cur_pos += k;
  r.sent += k;
  r.owner->bytes_sent_ += k;
  return k;
}

std::size_t S3Uploader::Request::on_answer(char* data, std::size_t size, std::size_t n,
                                           void* self) {
  const std::size_t len = size * n;
  static_cast<Request*>(self)->keep_error_body(data, len);
  return len;
}

void S3Uploader::attempt_done(Request& r, CURLcode code) {
  r.in_transfer = false;
  if (r.error) {
    maybe_finish(r);
    return;
  }
  long status = 0;
  curl_easy_getinfo(r.easy, CURLINFO_RESPONSE_CODE, &status);
  const std::string cause = r.cause(code);
  if (code != CURLE_OK) {
    if (code == CURLE_OPERATION_TIMEDOUT) {
      retry_or_fail(r, S3Error::TimedOut, cause);
    } else {
      retry_or_fail(r, S3Error::Unreachable, cause);
    }
    return;
  }
  if (status >= 200 && status < 300) {
    r.ended = true;
    if (!r.is_put) {
      curl_off_t length = -1;
      curl_easy_getinfo(r.easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
      r.head.exists = true;
      r.head.size = length < 0 ? 0 : static_cast<std::uint64_t>(length);
    }
  } else if (!r.is_put && status == 404) {
    r.ended = true;  // HEAD of a missing key: a bare 404, no error
  } else {
    const S3ErrorAnswer answer = r.error_answer(status);
    if (status >= 500) {
      retry_or_fail(r, S3Error::Unreachable, "the endpoint answered " + answer.said);
      return;
    }
    if (!r.fail_common(status, answer)) {
      r.fail(S3Error::BadResponse, r.where() + ": unexpected answer " + answer.said);
    }
  }
  maybe_finish(r);
}

void S3Uploader::retry_or_fail(Request& r, S3Error error, const std::string& detail) {
  std::optional<std::uint64_t> backoff = r.backoff_ms(loop_, kMaxRequestSeconds);
  if (!backoff) {
    r.fail(error, r.gave_up(detail, ""));
    maybe_finish(r);
    return;
  }
  const std::uint64_t backoff_ms = *backoff;
  LOG_WARN("s3", "%s %s: %s; retrying in %llu ms", r.is_put ? "PUT" : "HEAD", r.where().c_str(),
           detail.c_str(), static_cast<unsigned long long>(backoff_ms));
  uv_timer_start(&r.timer, &Request::on_retry, backoff_ms, 0);
}

void S3Uploader::Request::on_retry(uv_timer_t* timer) {
  auto& r = *static_cast<Request*>(timer->data);
  if (r.error) {
    r.owner->maybe_finish(r);
  } else if (r.reading) {
    uv_timer_start(timer, &Request::on_retry, 10, 0);  // the last attempt's read is running
  } else {
    r.owner->start_attempt(r);
  }
}

void S3Uploader::maybe_finish(Request& r) {
  if (!r.ended || r.closing || r.in_transfer || r.reading) return;
  r.close_timer([](uv_handle_t* h) {
    auto& req = *static_cast<Request*>(h->data);
    std::unique_ptr<Request> owned = take_request(req.owner->requests_, &req);
    if (owned->is_put) {
      S3PutResult result{owned->error, std::move(owned->detail), owned->attempts};
      auto done = std::move(owned->put_done);
      owned.reset();
      done(std::move(result));
      return;
    }
    S3HeadResult result = std::move(owned->head);
    result.error = owned->error;
    result.detail = std::move(owned->detail);
    auto done = std::move(owned->head_done);
    owned.reset();
    done(std::move(result));
  });
}

void S3Uploader::cancel_all() {
  cancel_requests(requests_, curl_, [this](Request& r) { maybe_finish(r); });
}

}  // namespace chunkd::io

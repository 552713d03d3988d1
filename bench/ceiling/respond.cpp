// fleet_ceiling --mode respond: chunkd's part played with nothing but pre-encoded packets.
//
// P connections to the broker (chunkd's pool): the first subscribes to
// `<prefix>/+/streams/+/get/+` and `.../describe/+`, as chunkd does. Every data reply of the file
// (--file, served as file 0 of any stream id) is encoded once at start-up with
// protocol::encode_data_reply; a PUBLISH header per (thing, payload size) is built on first use.
// A GetStream request is decoded and its blocks selected with the same protocol/ code chunkd uses,
// and each block goes out as two iovecs (header, pre-encoded reply) on the thing's connection
// (a stable hash of the thing name, like chunkd's pool), written with writev from one thread.
// DescribeStream is answered with the file's size and --version. Nothing is read from disk,
// nothing is encoded per block, there are no rate limits and no cache: what is left is the cost of
// the broker and of the sockets, for the same fleet and the same requests chunkd sees.
//
// Bytes in flight: the fleet bounds them with its requests, as it bounds chunkd's; on top of that,
// above kMaxQueuedBytes of unwritten replies the request connection is not read until half of
// them are written (chunkd's delivery.max_publish_in_flight_mib does the same).
//
// Requests it cannot answer from what it pre-encoded (another format or block size, a file id
// other than 0, a bad request) are counted in `unanswered`; chunkload then fails the run.
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <unordered_map>

#include "bench/ceiling/ceiling.hpp"
#include "protocol/reply.hpp"
#include "protocol/request.hpp"

namespace chunkd::ceiling {
namespace {

using protocol::Format;

constexpr std::size_t kReadBytes = 256 * 1024;
constexpr std::size_t kMaxQueuedBytes = 32u << 20;
constexpr std::size_t kIovPerWrite = 1024;          // IOV_MAX
constexpr std::size_t kBytesPerWrite = 256 * 1024;  // a writev never gathers more than this

struct Chunk {
  const std::byte* data = nullptr;
  std::size_t size = 0;
  std::shared_ptr<const Bytes> owned;  // set for replies built on the spot (descriptions)
};

struct Conn {
  Fd fd;
  Bytes in;  // unparsed input (request connection)
  std::deque<Chunk> out;
  std::size_t written_of_front = 0;
  std::size_t queued_bytes = 0;
  bool want_write = false;
  bool reading = true;
  std::uint32_t registered = EPOLLIN;  // the epoll events asked for now
};

// PUBLISH headers of one thing's data topic, one per distinct payload size (a handful: the
// encoded block index varies in width). A deque: references stay valid as it grows.
struct ThingHeaders {
  std::deque<std::pair<std::size_t, Bytes>> by_size;
};

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

class Responder {
 public:
  Responder(const Options& o, Bytes file) : o_(o), file_(std::move(file)), codec_(o.topic_prefix) {
    std::optional<std::string_view> token;
    if (!o.token.empty()) token = o.token;
    const std::uint64_t blocks = protocol::block_count(file_.size(), o.block_size);
    payloads_.reserve(blocks);
    for (std::uint64_t i = 0; i < blocks; ++i) {
      const std::size_t at = static_cast<std::size_t>(i * o.block_size);
      auto slice = std::span<const std::byte>(file_).subspan(
          at, std::min<std::size_t>(o.block_size, file_.size() - at));
      Bytes out(protocol::data_reply_max_bytes(o.format, slice.size(), o.token.size()));
      out.resize(protocol::encode_data_reply(o.format, out, token, 0, static_cast<std::uint32_t>(i),
                                             slice));
      payloads_.push_back(std::move(out));
    }
  }

  Error setup(Clock::time_point deadline) {
    const std::uint32_t n = std::max<std::uint32_t>(1, o_.publishers);
    const std::string id_base = "fleet-ceiling-" + std::to_string(getpid());
    for (std::uint32_t c = 0; c < n; ++c) {
      auto conn = std::make_unique<Conn>();
      if (auto e = mqtt_connect(o_, id_base + "-r" + std::to_string(c), conn->fd, deadline)) {
        return "connection " + std::to_string(c) + ": " + *e;
      }
      conns_.push_back(std::move(conn));
    }
    const std::string filters[2] = {codec_.subscription(protocol::Verb::Get),
                                    codec_.subscription(protocol::Verb::Describe)};
    if (auto e = write_all(conns_[0]->fd.get(), subscribe_packet(1, filters), deadline)) return e;
    if (auto e = read_suback(conns_[0]->fd.get(), deadline)) return e;
    for (auto& c : conns_) {
      if (auto e = set_nonblocking(c->fd.get())) return e;
    }
    return std::nullopt;
  }

  // Until SIGTERM/SIGINT (via `signal_fd`) or the deadline.
  Error run(int signal_fd, Clock::time_point deadline) {
    ep_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
    if (ep_.get() < 0) return errno_text("epoll_create1");
    epoll_event sev{};
    sev.events = EPOLLIN;
    sev.data.u64 = kSignalTag;
    if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, signal_fd, &sev) != 0) return errno_text("epoll");
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = i;
      if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, conns_[i]->fd.get(), &ev) != 0) {
        return errno_text("epoll_ctl");
      }
    }
    std::vector<epoll_event> events(64);
    buffer_ = std::make_unique<std::byte[]>(kReadBytes);
    for (;;) {
      if (Clock::now() >= deadline) return std::string("timed out (--timeout-s)");
      if (resume_parse_) {
        resume_parse_ = false;
        if (auto e = parse(*conns_[0])) return e;
      }
      int n = ::epoll_wait(ep_.get(), events.data(), static_cast<int>(events.size()),
                           resume_parse_ ? 0 : 200);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_text("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        const epoll_event& ev = events[static_cast<std::size_t>(i)];
        if (ev.data.u64 == kSignalTag) return std::nullopt;  // asked to stop
        Conn& c = *conns_[ev.data.u64];
        if ((ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && c.reading) {
          if (auto e = read_from(c, ev.data.u64 == 0)) return e;
        }
        if ((ev.events & EPOLLOUT) != 0) {
          if (auto e = flush(ev.data.u64)) return e;
        }
      }
    }
  }

  void disconnect() {
    for (auto& c : conns_) ::send(c->fd.get(), kDisconnect, sizeof kDisconnect, MSG_NOSIGNAL);
  }

  void report(const Error& error, double cpu) const {
    auto per_s = [](double amount, double secs) { return secs > 0 ? amount / secs : 0.0; };
    double seconds = 0;
    if (first_request_ && last_write_) {
      seconds = std::chrono::duration<double>(*last_write_ - *first_request_).count();
    }
    JsonLine json;
    json.str("tool", "fleet_ceiling");
    json.str("mode", "respond");
    json.boolean("complete", !error.has_value());
    json.str("format", protocol::to_string(o_.format));
    json.num("block_size_bytes", o_.block_size);
    json.num("file_bytes", file_.size());
    json.num("publisher_connections", conns_.size());
    json.num("reply_bytes", payloads_.empty() ? 0 : payloads_.front().size());
    json.num("requests", requests_);
    json.num("describes", describes_);
    json.num("unanswered", unanswered_);
    json.num("things", headers_.size());
    json.num("messages", messages_);
    json.num("payload_bytes", payload_bytes_);
    json.num("wire_bytes_sent", wire_bytes_);
    json.num("max_queued_bytes", max_queued_);
    json.num("read_pauses", read_pauses_);
    json.real("seconds", seconds);  // first request → last reply written
    json.real("msgs_per_s", per_s(static_cast<double>(messages_), seconds));
    json.real("mib_per_s", per_s(static_cast<double>(payload_bytes_) / (1024.0 * 1024.0), seconds));
    json.real("cpu_seconds", cpu);
    json.str("error", error.value_or(""));
    std::fputs(json.finish().c_str(), stdout);
    std::fflush(stdout);
    if (o_.human) {
      std::fprintf(stderr, "fleet_ceiling respond: %llu requests, %llu messages in %.3f s%s%s\n",
                   static_cast<unsigned long long>(requests_),
                   static_cast<unsigned long long>(messages_), seconds, error ? "; error: " : "",
                   error.value_or("").c_str());
    }
  }

 private:
  static constexpr std::uint64_t kSignalTag = ~std::uint64_t{0};

  Error read_from(Conn& c, bool requests) {
    for (;;) {
      ssize_t r = ::recv(c.fd.get(), buffer_.get(), kReadBytes, 0);
      if (r == 0) return std::string("the broker closed a connection");
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
        return errno_text("recv");
      }
      if (!requests) continue;  // nothing is expected there; keep the socket drained
      if (c.in.size() > kMaxControlPacketBytes * 4) return std::string("request backlog overflow");
      c.in.insert(c.in.end(), buffer_.get(), buffer_.get() + r);
      if (auto e = parse(c)) return e;
      if (!c.reading) return std::nullopt;  // paused: leave the rest in the socket
    }
  }

  // Handles every complete packet in c.in, or stops early when backpressure pauses reading
  // (the rest waits in c.in; run() parses it again once reading resumes).
  Error parse(Conn& c) {
    std::size_t at = 0;
    while (c.in.size() - at >= 2 && c.reading) {
      const std::uint8_t type = std::to_integer<std::uint8_t>(c.in[at]);
      std::size_t length = 0;
      std::size_t pos = at + 1;
      bool complete_length = false;
      for (unsigned shift = 0; pos < c.in.size() && shift <= 21; shift += 7) {
        auto b = std::to_integer<std::uint8_t>(c.in[pos++]);
        length |= static_cast<std::size_t>(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
          complete_length = true;
          break;
        }
      }
      if (!complete_length) {
        if (pos - at > 5) return std::string("bad remaining length from the broker");
        break;
      }
      if (length > kMaxControlPacketBytes) return std::string("packet too large");
      if (c.in.size() - pos < length) break;
      if ((type >> 4) == 3 && length >= 2) {
        auto body = std::span<const std::byte>(c.in).subspan(pos, length);
        const std::size_t topic_len =
            std::to_integer<std::size_t>(body[0]) << 8 | std::to_integer<std::size_t>(body[1]);
        const std::size_t id_bytes = ((type >> 1) & 3) != 0 ? 2 : 0;
        if (2 + topic_len + id_bytes <= body.size()) {
          std::string_view topic(reinterpret_cast<const char*>(body.data() + 2), topic_len);
          on_publish(topic, body.subspan(2 + topic_len + id_bytes));
        }
      }
      at = pos + length;
    }
    c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(at));
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      if (!conns_[i]->out.empty()) {
        if (auto e = flush(i)) return e;
      }
    }
    return sync_events();
  }

  void on_publish(std::string_view topic, std::span<const std::byte> payload) {
    protocol::ParsedTopic t = codec_.parse(topic);
    if (t.status != protocol::ParsedTopic::Status::Ok) {
      ++unanswered_;
      return;
    }
    if (!first_request_) first_request_ = Clock::now();
    const std::size_t conn = fnv1a(t.thing) % conns_.size();
    if (t.verb == protocol::Verb::Describe) {
      ++describes_;
      auto req = protocol::decode_describe_request(t.format, payload);
      std::optional<std::string_view> token;
      if (req && req->client_token) token = *req->client_token;
      const protocol::FileEntry files[1] = {{0, file_.size()}};
      Bytes body = protocol::encode_description(t.format, token, o_.version, "", files);
      codec_.reply_topic(topic_, t.thing, t.stream, protocol::ReplyKind::Description, t.format);
      auto packet = std::make_shared<Bytes>(publish_header(topic_, body.size()));
      packet->insert(packet->end(), body.begin(), body.end());
      enqueue(conn, Chunk{packet->data(), packet->size(), packet});
      return;
    }
    ++requests_;
    auto req = protocol::decode_get_request(t.format, payload);
    if (!req || t.format != o_.format || req->block_size != o_.block_size || req->file_id != 0 ||
        protocol::select_blocks(*req, file_.size(), blocks_).has_value()) {
      ++unanswered_;
      return;
    }
    ThingHeaders& h = headers_for(t.thing, t.stream, t.format);
    for (std::uint32_t b : blocks_) {
      const Bytes& payload_b = payloads_[b];
      const Bytes* header = nullptr;
      for (const auto& [size, bytes] : h.by_size) {
        if (size == payload_b.size()) header = &bytes;
      }
      if (header == nullptr) {
        codec_.reply_topic(topic_, t.thing, t.stream, protocol::ReplyKind::Data, t.format);
        h.by_size.emplace_back(payload_b.size(), publish_header(topic_, payload_b.size()));
        header = &h.by_size.back().second;
      }
      enqueue(conn, Chunk{header->data(), header->size(), nullptr});
      enqueue(conn, Chunk{payload_b.data(), payload_b.size(), nullptr});
      ++messages_;
      payload_bytes_ += file_bytes_of(b);
    }
  }

  std::uint64_t file_bytes_of(std::uint32_t block) const {
    const std::uint64_t at = std::uint64_t{block} * o_.block_size;
    return std::min<std::uint64_t>(o_.block_size, file_.size() - at);
  }

  ThingHeaders& headers_for(std::string_view thing, std::string_view stream, Format format) {
    key_.assign(thing);
    key_ += '/';
    key_ += stream;
    key_ += '/';
    key_ += protocol::to_string(format);
    auto it = headers_.find(key_);
    if (it == headers_.end()) it = headers_.emplace(key_, std::make_unique<ThingHeaders>()).first;
    return *it->second;
  }

  void enqueue(std::size_t conn, Chunk chunk) {
    Conn& c = *conns_[conn];
    c.queued_bytes += chunk.size;
    total_queued_ += chunk.size;
    max_queued_ = std::max(max_queued_, total_queued_);
    c.out.push_back(std::move(chunk));
    if (total_queued_ > kMaxQueuedBytes && conns_[0]->reading) {
      conns_[0]->reading = false;  // backpressure: stop taking requests
      ++read_pauses_;
    }
  }

  Error flush(std::size_t index) {
    Conn& c = *conns_[index];
    iovec iov[kIovPerWrite];
    while (!c.out.empty()) {
      std::size_t count = 0;
      std::size_t bytes = 0;
      // --write-per-message: one writev per PUBLISH (header + reply), as libmosquitto writes.
      const std::size_t max_iov =
          o_.write_per_message ? 2 - (c.written_of_front > 0 ? 1 : 0) : kIovPerWrite;
      for (auto it = c.out.begin(); it != c.out.end() && count < max_iov && bytes < kBytesPerWrite;
           ++it, ++count) {
        const std::size_t skip = count == 0 ? c.written_of_front : 0;
        iov[count].iov_base = const_cast<std::byte*>(it->data + skip);
        iov[count].iov_len = it->size - skip;
        bytes += iov[count].iov_len;
      }
      ssize_t n = ::writev(c.fd.get(), iov, static_cast<int>(count));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return errno_text("writev");
      }
      auto left = static_cast<std::size_t>(n);
      wire_bytes_ += left;
      c.queued_bytes -= left;
      total_queued_ -= left;
      while (left > 0) {
        const std::size_t rest = c.out.front().size - c.written_of_front;
        if (left >= rest) {
          left -= rest;
          c.out.pop_front();
          c.written_of_front = 0;
        } else {
          c.written_of_front += left;
          left = 0;
        }
      }
      last_write_ = Clock::now();
    }
    c.want_write = !c.out.empty();
    if (!conns_[0]->reading && total_queued_ <= kMaxQueuedBytes / 2) {
      conns_[0]->reading = true;
      resume_parse_ = true;  // the requests already read are parsed on the next turn
    }
    return sync_events();
  }

  // Asks epoll for what each connection wants now: readable while reading, writable while it
  // has replies queued (level-triggered, so a paused connection must drop EPOLLIN).
  Error sync_events() {
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      Conn& c = *conns_[i];
      const std::uint32_t want = (c.reading ? EPOLLIN : 0u) | (c.want_write ? EPOLLOUT : 0u);
      if (want == c.registered) continue;
      epoll_event ev{};
      ev.events = want;
      ev.data.u64 = i;
      if (::epoll_ctl(ep_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0) return errno_text("epoll");
      c.registered = want;
    }
    return std::nullopt;
  }

  const Options& o_;
  Bytes file_;
  protocol::TopicCodec codec_;
  std::vector<Bytes> payloads_;  // the data reply of every block, encoded once
  std::unordered_map<std::string, std::unique_ptr<ThingHeaders>> headers_;
  std::vector<std::unique_ptr<Conn>> conns_;
  Fd ep_;
  std::unique_ptr<std::byte[]> buffer_;
  std::vector<std::uint32_t> blocks_;
  std::string topic_;
  std::string key_;
  bool resume_parse_ = false;
  std::size_t total_queued_ = 0;
  std::size_t max_queued_ = 0;
  std::uint64_t requests_ = 0;
  std::uint64_t describes_ = 0;
  std::uint64_t unanswered_ = 0;
  std::uint64_t messages_ = 0;
  std::uint64_t payload_bytes_ = 0;
  std::uint64_t wire_bytes_ = 0;
  std::uint64_t read_pauses_ = 0;
  std::optional<Clock::time_point> first_request_;
  std::optional<Clock::time_point> last_write_;
};

}  // namespace

int run_respond(const Options& o) {
  std::ifstream in(o.file_path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fleet_ceiling: cannot read %s\n", o.file_path.c_str());
    return 1;
  }
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Bytes file(raw.size());
  std::memcpy(file.data(), raw.data(), raw.size());
  raw = {};

  // SIGTERM/SIGINT end the run through a signalfd in the loop.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  Fd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (sfd.get() < 0) {
    std::fprintf(stderr, "fleet_ceiling: %s\n", errno_text("signalfd").c_str());
    return 1;
  }

  const auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
  Responder responder(o, std::move(file));
  Error error = responder.setup(deadline);
  double cpu0 = cpu_seconds();
  if (!error) {
    std::fputs("ready\n", stdout);
    std::fflush(stdout);
    error = responder.run(sfd.get(), deadline);
  }
  responder.disconnect();
  responder.report(error, cpu_seconds() - cpu0);
  return error ? 1 : 0;
}

}  // namespace chunkd::ceiling

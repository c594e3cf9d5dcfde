// libFuzzer target: the explicit proxy's HTTP/1.1 front end, the real session code
// (proxy/session.cpp via start_proxy_session) on a real loopback connection, with a
// recording loopback upstream and the policy loaded by the real config loader.
//
// Input: byte 0 picks where the agent's bytes are split into two writes (the proxy sees the
// first part alone first); bytes 1.. are what the agent sends, with every "@@" replaced by
// the upstream's "127.0.0.1:<port>" (its port is only known at run time, and the seeds in
// fuzz/corpus/proxy_front_fuzz/ need to name it). The agent then half-closes and reads
// until the proxy closes.
//
// Policy: the only allowed action is GET http://127.0.0.1:<upstream>/allowed/**; a denied
// action, an approval-required action (holds refused by proxy::RefuseHolds), an MCP action
// whose tool is denied, CONNECT to the upstream port (no CA: interception refused),
// and a selectable second runbook. Invariants, each a std::abort():
//  - nothing reaches the upstream that the policy did not allow: every request the
//    upstream parses is GET /allowed..., with the canonical Host and no proxy or
//    runwarden headers (checked once the head is parsed); the upstream never sees bytes it
//    cannot parse (smuggling, or bytes forwarded after a framing error). The one partial
//    request allowed is a relayed upload's (a body judged on its head) cut short after its
//    head: its record must say so (refused or client_gone), never forwarded;
//  - every upstream request follows its own "forwarded" decision record, one to one, in
//    order and for the same URL (nothing forwarded without audit);
//  - after a closing refusal (framing or limit error) nothing more happens at all;
//  - the agent's answer is HTTP/1.1 responses only, one final response per final audit
//    record with the same status, in order (an empty answer only when nothing was recorded);
//  - the session ends once the agent has half-closed, leaving at most one clean upstream
//    connection idle in the I/O thread's keep-alive pool (a session uses one at a time);
//    once the harness has closed the pool, no upstream connection is left open anywhere.
// Every input starts from an empty pool: its result never depends on earlier inputs.
// ASan/UBSan (the fuzz build) and libFuzzer's leak check cover crashes and leaks.

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "proxy/gate.hpp"
#include "proxy/log.hpp"
#include "proxy/server.hpp"
#include "proxy/session.hpp"
#include "proxy/upstream_pool.hpp"

#include <array>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "proxy_front_fuzz: invariant violated: %s %s\n", what, detail.c_str());
  std::abort();
}

/// One thing that happened during an input, in the order it happened (one thread).
struct Event {
  enum class Kind { decision, final, upstream, upstream_garbage } kind = Kind::decision;
  std::string id;        // audit: request id
  bool streamed = false; // decision: judged on its head, the body relayed after it
  std::string method;
  std::string url; // audit: canonical URL; upstream: target
  std::string outcome;
  int status = 0;
};

std::vector<Event> g_events;

/// Records what the proxy hands the audit log; completes at once.
class RecordingAudit final : public runwarden::audit::AuditLog {
public:
  void record(const runwarden::audit::Exchange& ex, bool final,
              runwarden::audit::Completion done) override {
    Event e;
    e.kind = final ? Event::Kind::final : Event::Kind::decision;
    e.id = ex.id;
    e.streamed = !ex.request.body_complete;
    e.method = ex.request.method;
    e.url = ex.request.url;
    e.outcome = ex.outcome;
    e.status = ex.response ? ex.response->status : 0;
    g_events.push_back(std::move(e));
    done({});
  }
  void event(std::string_view, const nlohmann::json&, runwarden::audit::Completion done) override {
    done({});
  }
  bool healthy() const override { return true; }
  std::string failure() const override { return {}; }
  std::error_code sync() override { return {}; }
};

bool has_prefix(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(0, p.size()) == p;
}

bool iprefix(std::string_view s, std::string_view p) {
  if (s.size() < p.size()) {
    return false;
  }
  for (std::size_t i = 0; i < p.size(); ++i) {
    char a = s[i];
    if (a >= 'A' && a <= 'Z') {
      a = static_cast<char>(a - 'A' + 'a');
    }
    if (a != p[i]) {
      return false;
    }
  }
  return true;
}

/// Fields the proxy never forwards (hop-by-hop per RFC 9110 §7.6.1, proxy-only, Expect).
bool is_consumed(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "connection", "proxy-connection",    "keep-alive",         "te",    "trailer",
      "upgrade",    "proxy-authorization", "proxy-authenticate", "expect"};
  for (auto n : kNames) {
    if (name.size() == n.size() && iprefix(name, n)) {
      return true;
    }
  }
  return false;
}

struct Harness;

/// One upstream connection: parses what the proxy forwards, records it, answers 200.
/// The target picks the response framing so the relay is exercised too: ".../chunk" chunked,
/// ".../close" delimited by close, ".../continue" a 100 first, otherwise Content-Length.
class UpstreamConn : public std::enable_shared_from_this<UpstreamConn> {
public:
  UpstreamConn(Harness& h, tcp::socket s) : h_(h), socket_(std::move(s)) {}
  void start();

private:
  void read();
  void on_read(boost::system::error_code ec, std::size_t n);
  bool parse();
  void check_head(const http::request<http::string_body>& req);
  void answer(const http::request<http::string_body>& req, bool close_after);
  void garbage(std::string why);
  void close();

  Harness& h_;
  tcp::socket socket_;
  std::array<char, 16384> buf_{};
  std::string pending_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool head_checked_ = false; // the current request's head passed the checks
  bool closed_ = false;
};

struct Harness {
  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> work = net::make_work_guard(ioc);
  tcp::acceptor front{ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
  tcp::acceptor upstream{ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
  std::string upstream_authority;
  std::unique_ptr<runwarden::proxy::Server> server; // builds the ProxyContext; never start()ed
  std::shared_ptr<runwarden::proxy::ProxyContext> ctx;
  int upstream_open = 0;
  std::uint64_t upstream_seq = 0;

  void accept_upstream() {
    upstream.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) {
        return;
      }
      std::make_shared<UpstreamConn>(*this, std::move(s))->start();
      accept_upstream();
    });
  }

  template <class Pred> bool run_until(Pred pred, std::chrono::milliseconds budget) {
    auto deadline = Clock::now() + budget;
    while (!pred()) {
      if (Clock::now() >= deadline) {
        return false;
      }
      ioc.run_one_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  void settle() {
    for (int i = 0; i < 8 && ioc.poll() > 0; ++i) {
    }
  }
};

void UpstreamConn::start() {
  ++h_.upstream_open;
  read();
}

void UpstreamConn::read() {
  socket_.async_read_some(net::buffer(buf_),
                          [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                            self->on_read(ec, n);
                          });
}

void UpstreamConn::on_read(boost::system::error_code ec, std::size_t n) {
  if (ec) {
    // The proxy closed (or reset) the connection. A half-sent head is a forwarding bug; a
    // body cut short after a checked head is a relayed upload the proxy gave up on (bad
    // chunking, the agent gone): check_events requires its decision to be a streamed one.
    if (!head_checked_ && (!pending_.empty() || (parser_ && parser_->got_some()))) {
      garbage("connection ended inside a request");
    }
    close();
    return;
  }
  pending_.append(buf_.data(), n);
  if (!parse()) {
    close();
    return;
  }
  if (!closed_) {
    read();
  }
}

bool UpstreamConn::parse() {
  while (!pending_.empty() && !closed_) {
    if (!parser_) {
      parser_.emplace();
      parser_->eager(true);
      parser_->header_limit(64 * 1024);
      parser_->body_limit(1024 * 1024);
    }
    boost::system::error_code ec;
    std::size_t used = parser_->put(net::buffer(pending_), ec);
    pending_.erase(0, used);
    if (ec && ec != http::error::need_more) {
      garbage(ec.message());
      return false;
    }
    if (parser_->is_header_done() && !head_checked_) {
      head_checked_ = true;
      check_head(parser_->get());
    }
    if (ec == http::error::need_more) {
      return true;
    }
    if (!parser_->is_done()) {
      if (used == 0) {
        return true;
      }
      continue;
    }
    auto req = parser_->release();
    parser_.reset();
    head_checked_ = false;
    bool close_after = !req.keep_alive() || req.target().find("close") != std::string_view::npos;
    answer(req, close_after);
    if (close_after) {
      closed_ = true; // read no more; the write's completion closes the connection
      return true;
    }
  }
  return true;
}

/// What the policy allowed, and only that, canonically: checked once the head is parsed (a
/// relayed upload's head goes upstream before its body).
void UpstreamConn::check_head(const http::request<http::string_body>& req) {
  {
    Event e;
    e.kind = Event::Kind::upstream;
    e.method = std::string(req.method_string());
    e.url = std::string(req.target());
    g_events.push_back(e);
    std::string_view target = req.target();
    bool allowed_path =
        target == "/allowed" || has_prefix(target, "/allowed/") || has_prefix(target, "/allowed?");
    if (req.method() != http::verb::get || !allowed_path) {
      fail("upstream received a request the policy does not allow:",
           e.method + " " + std::string(target));
    }
    if (req.count(http::field::host) != 1 || req[http::field::host] != h_.upstream_authority) {
      fail("upstream Host is not the canonical authority:", std::string(req[http::field::host]));
    }
    for (const auto& f : req) {
      std::string_view name = f.name_string();
      if (iprefix(name, "runwarden-") || is_consumed(name)) {
        fail("upstream received a header the proxy must consume:", std::string(name));
      }
    }
  }
}

void UpstreamConn::answer(const http::request<http::string_body>& req, bool close_after) {
  std::string target(req.target());
  std::string body = "upstream " + std::to_string(++h_.upstream_seq);
  auto out = std::make_shared<std::string>();
  if (target.find("continue") != std::string::npos) {
    out->append("HTTP/1.1 100 Continue\r\n\r\n");
  }
  if (target.find("chunk") != std::string::npos) {
    char size[16];
    std::snprintf(size, sizeof size, "%zx", body.size());
    out->append("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    out->append(size).append("\r\n").append(body).append("\r\n0\r\n\r\n");
  } else if (target.find("close") != std::string::npos) {
    out->append("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").append(body);
  } else {
    out->append("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                body);
  }
  net::async_write(
      socket_, net::buffer(*out),
      [self = shared_from_this(), out, close_after](boost::system::error_code, std::size_t) {
        if (close_after) {
          self->close();
        }
      });
}

void UpstreamConn::garbage(std::string why) {
  Event e;
  e.kind = Event::Kind::upstream_garbage;
  e.url = std::move(why);
  g_events.push_back(std::move(e));
  fail("upstream received bytes that are not a well-formed request:", g_events.back().url);
}

void UpstreamConn::close() {
  if (socket_.is_open()) {
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    --h_.upstream_open;
  }
}

std::string write_policy(const std::filesystem::path& dir, std::uint16_t up) {
  std::filesystem::create_directories(dir / "runbooks");
  const std::string port = std::to_string(up);
  const std::string base = "{scheme: http, host: 127.0.0.1, port: " + port;
  std::ofstream(dir / "actions.yaml")
      << "actions:\n"
      << "  read_allowed:\n    - " << base << ", method: GET, path: \"/allowed/**\"}\n"
      << "    - " << base << ", method: GET, path: /allowed}\n"
      << "  write_denied:\n    - " << base << ", method: [POST, PUT, DELETE], path: \"/**\"}\n"
      << "  needs_human:\n    - " << base << ", method: POST, path: /approve}\n"
      << "  mcp_delete:\n    - " << base
      << ", method: POST, path: /mcp, mcp: {tool: delete_everything}}\n"
      << "  tunnel:\n    - {method: CONNECT, host: 127.0.0.1, port: " << port << "}\n";
  std::ofstream(dir / "runbooks" / "main.yaml")
      << "runbook: main\nowner: fuzz\ntrigger: {manual: fuzz}\nallowed_actions:\n"
      << "  read_only: [read_allowed]\n  allowed: [tunnel]\n"
      << "  approval_required:\n    - action: needs_human\n      risk: high\n"
      << "      effect: \"changes things\"\n      rollback: \"none\"\n"
      << "      approvers: [alice]\n      timeout: 1m\n"
      << "  denied: [write_denied, mcp_delete]\nunmatched: deny\n";
  std::ofstream(dir / "runbooks" / "alt.yaml")
      << "runbook: alt\nowner: fuzz\ntrigger: {manual: fuzz}\nallowed_actions:\n"
      << "  read_only: [read_allowed]\n  denied: [write_denied]\nunmatched: deny\n";
  std::ofstream(dir / "runwarden.yaml")
      << "listen: {proxy: 127.0.0.1:0, admin: 127.0.0.1:0}\n"
      << "agent: {id: fuzz-agent}\ncatalogue: actions.yaml\nrunbooks: [runbooks/]\n"
      << "active_runbook: main\nselectable_runbooks: [alt]\n"
      << "tls: {upstream_trust: system, passthrough: []}\n"
      << "limits: {header_bytes: 2KiB, header_count: 24, inspect_body_bytes: 1KiB, "
      << "header_timeout: 60s, idle_timeout: 60s, upstream_connect_timeout: 60s, "
      << "upstream_response_timeout: 60s}\n";
  return "127.0.0.1:" + port;
}

Harness* g_harness = nullptr;

Harness& harness() {
  if (g_harness != nullptr) {
    return *g_harness;
  }
  runwarden::proxy::set_log_level(runwarden::proxy::LogLevel::error);
  auto* h = new Harness(); // lives for the process: sessions may still hold it at exit
  char tmpl[] = "/tmp/proxy_front_fuzz.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    fail("mkdtemp");
  }
  std::filesystem::path dir(tmpl);
  h->upstream_authority = write_policy(dir, h->upstream.local_endpoint().port());
  std::shared_ptr<const runwarden::config::Config> cfg;
  try {
    cfg = runwarden::config::load_config(dir / "runwarden.yaml");
  } catch (const runwarden::config::ConfigError& e) {
    for (const auto& line : e.errors()) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    fail("fuzz policy does not load");
  }
  // Holds are refused (403 approval_required) rather than parked: a parked hold would wait
  // for a human, and the approvals journal is not what this target is about.
  h->server = std::make_unique<runwarden::proxy::Server>(
      h->ioc, runwarden::proxy::ServerOptions{cfg, std::make_shared<RecordingAudit>(), nullptr,
                                              std::make_shared<runwarden::proxy::RefuseHolds>()});
  std::filesystem::remove_all(dir);
  h->ctx = h->server->context();
  h->accept_upstream();
  g_harness = h;
  return *h;
}

/// Reads the agent's answer as HTTP/1.1 responses and checks them against the final audit
/// records, in order.
void check_answer(const std::string& answer, const std::vector<const Event*>& finals) {
  if (!answer.empty() && (answer.size() < 13 || !has_prefix(answer, "HTTP/1.1 ") ||
                          answer[9] < '1' || answer[9] > '5' || answer[12] != ' ')) {
    fail("answer does not start with an HTTP/1.1 status line:", answer.substr(0, 40));
  }
  std::size_t pos = 0;
  std::size_t k = 0;
  while (pos < answer.size()) {
    http::response_parser<http::string_body> p;
    // An answer to HEAD has no content whatever its Content-Length says; a body there would
    // be parsed as the next response and fail the comparison below.
    p.skip(k < finals.size() && finals[k]->method == "HEAD");
    p.eager(true);
    p.body_limit(boost::none);
    boost::system::error_code ec;
    std::string_view rest(answer.data() + pos, answer.size() - pos);
    std::size_t used = 0;
    for (int i = 0; i < 64 && !p.is_done(); ++i) {
      std::size_t n = p.put(net::buffer(rest.data() + used, rest.size() - used), ec);
      used += n;
      if (ec == http::error::need_more) {
        ec = {};
      }
      if (ec || n == 0 || used == rest.size()) {
        break;
      }
    }
    if (!ec && !p.is_done() && used == rest.size() && p.is_header_done()) {
      p.put_eof(ec); // a body delimited by close (HTTP/1.0 agent)
    }
    if (ec || !p.is_done()) {
      fail("answer is not a sequence of HTTP/1.1 responses:", ec.message());
    }
    pos += used;
    unsigned status = p.get().result_int();
    if (status >= 100 && status < 200) {
      continue; // 100 Continue before the final response
    }
    if (k >= finals.size()) {
      fail("more final responses than final audit records");
    }
    if (static_cast<int>(status) != finals[k]->status) {
      fail("response status differs from its audit record:",
           std::to_string(status) + " vs " + std::to_string(finals[k]->status));
    }
    ++k;
  }
  if (k != finals.size()) {
    fail("a final audit record has no response:",
         std::to_string(k) + " of " + std::to_string(finals.size()));
  }
}

/// PROXY_FRONT_FUZZ_TRACE=1: print what happened (to read a crash, or to see that the
/// seeds reach the upstream at all).
void trace(const std::string& answer) {
  static const bool on = std::getenv("PROXY_FRONT_FUZZ_TRACE") != nullptr;
  if (!on) {
    return;
  }
  static constexpr const char* kKinds[] = {"decision", "final", "upstream", "upstream_garbage"};
  for (const auto& e : g_events) {
    std::fprintf(stderr, "  %s %s %s %s %d\n", kKinds[static_cast<int>(e.kind)], e.method.c_str(),
                 e.url.c_str(), e.outcome.c_str(), e.status);
  }
  std::fprintf(stderr, "  answer: %zu bytes, %.60s\n", answer.size(), answer.c_str());
}

void check_events(const Harness& h, const std::string& answer, bool ended) {
  trace(answer);
  std::vector<const Event*> decisions; // forwarded, not yet seen upstream
  std::vector<const Event*> finals;
  std::size_t next_forward = 0;
  std::size_t forwarded = 0;
  auto streamed = [&decisions](const std::string& id) {
    for (const Event* d : decisions) {
      if (d->id == id) {
        return d->streamed;
      }
    }
    return false;
  };
  bool closed = false;
  for (const auto& e : g_events) {
    if (closed) {
      fail("something happened after a closing refusal");
    }
    switch (e.kind) {
    case Event::Kind::decision:
      if (e.outcome != "forwarded") {
        fail("unexpected decision record outcome:", e.outcome);
      }
      decisions.push_back(&e);
      break;
    case Event::Kind::upstream: {
      if (next_forward >= decisions.size()) {
        fail("upstream request without a forwarded decision record before it:", e.url);
      }
      const Event& d = *decisions[next_forward++];
      if (d.url != "http://" + h.upstream_authority + e.url || d.method != e.method) {
        fail("upstream request differs from its decision record:", d.url + " vs " + e.url);
      }
      break;
    }
    case Event::Kind::final:
      finals.push_back(&e);
      // A relayed upload the proxy gave up on mid-body (bad chunking, the agent gone) ends
      // refused or client_gone after its head went upstream; any other forwarded decision
      // ends forwarded.
      if (e.outcome == "forwarded" ||
          ((e.outcome == "refused" || e.outcome == "client_gone") && streamed(e.id))) {
        ++forwarded;
      }
      // A refusal that is not a policy 403 is a framing or limit error: the connection closes.
      if (e.outcome == "refused" && e.status != 403) {
        closed = true;
      }
      break;
    case Event::Kind::upstream_garbage:
      fail("upstream garbage");
    }
  }
  if (!ended) {
    return; // bounded wait ran out (machine load): only the ordering invariants apply
  }
  if (next_forward != decisions.size() || forwarded != decisions.size()) {
    fail("forwarded decisions, upstream requests and final records disagree:",
         std::to_string(decisions.size()) + "/" + std::to_string(next_forward) + "/" +
             std::to_string(forwarded));
  }
  // An agent that went away in the middle of a relayed body gets no answer: its record
  // (client_gone, no response) is the last thing that happened.
  std::vector<const Event*> answered;
  for (const Event* f : finals) {
    if (f->outcome == "client_gone" && f->status == 0 && f == finals.back()) {
      continue;
    }
    answered.push_back(f);
  }
  check_answer(answer, answered);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  Harness& h = harness();
  g_events.clear();
  std::string input;
  input.reserve(size);
  for (std::size_t i = 1; i < size; ++i) {
    if (data[i] == '@' && i + 1 < size && data[i + 1] == '@') {
      input.append(h.upstream_authority);
      ++i;
    } else {
      input.push_back(static_cast<char>(data[i]));
    }
  }
  std::size_t split = (static_cast<std::size_t>(data[0]) * input.size()) / 255;

  tcp::socket client(h.ioc);
  client.connect(h.front.local_endpoint());
  tcp::socket accepted(h.ioc);
  h.front.accept(accepted);
  runwarden::proxy::start_proxy_session(h.ctx, std::move(accepted));

  std::string answer;
  bool eof = false;
  std::array<char, 4096> buf{};
  std::function<void()> read_more = [&] {
    client.async_read_some(net::buffer(buf), [&](boost::system::error_code ec, std::size_t n) {
      answer.append(buf.data(), n);
      if (ec) {
        eof = true;
        return;
      }
      read_more();
    });
  };
  read_more();

  bool written = false;
  auto write_part = [&](std::string_view part) {
    written = false;
    net::async_write(client, net::buffer(part.data(), part.size()),
                     [&](boost::system::error_code, std::size_t) { written = true; });
    h.run_until([&] { return written; }, std::chrono::seconds(5));
  };
  if (split > 0 && split < input.size()) {
    write_part(std::string_view(input).substr(0, split));
    h.settle(); // let the proxy see the first part on its own
    write_part(std::string_view(input).substr(split));
  } else {
    write_part(input);
  }
  boost::system::error_code ignored;
  client.shutdown(tcp::socket::shutdown_send, ignored);

  // The agent has said everything: the proxy answers and closes. A clean upstream connection
  // may stay in the I/O thread's keep-alive pool, one at most: the session took it back out
  // for each of its requests.
  bool ended = h.run_until([&] { return eof && h.ctx->open_connections.load() == 0; },
                           std::chrono::seconds(3));
  check_events(h, answer, ended);
  if (!ended) {
    fail("session did not end within 3 s after the agent half-closed");
  }
  auto& pools = net::use_service<runwarden::proxy::UpstreamPools>(h.ioc);
  if (pools.plain().size() > 1) {
    fail("one session left more than one idle upstream connection:",
         std::to_string(pools.plain().size()));
  }
  // The next input starts from an empty pool (as a drain closes it): a pooled connection
  // would let this input's upstream state decide the next one's result. Every upstream
  // connection is then closed: none is held by anything but the pool.
  pools.close_all();
  if (!h.run_until([&] { return h.upstream_open == 0; }, std::chrono::seconds(3))) {
    fail("upstream connections still open after the session ended and the pool closed:",
         std::to_string(h.upstream_open));
  }
  client.close(ignored);
  return 0;
}

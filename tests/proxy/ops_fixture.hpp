#pragma once
// A real Server on loopback port 0 with an approvals gate (audit.path in a temporary
// directory), an operator tokens file, a recording in-memory audit log and a plain upstream
// that answers 200 "hello": what the admin, reload and transparent tests drive with raw
// sockets.

#include "approval/crypto.hpp"
#include "audit/audit_log.hpp"
#include "audit/redactor.hpp"
#include "proxy/server.hpp"
#include "tests/proxy/test_upstream.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace runwarden::proxy::testing {

/// Answers every request 200 "hello" and counts them; with a leaf, over TLS, recording the
/// SNI each connection sent.
class HelloUpstream {
public:
  explicit HelloUpstream(std::shared_ptr<const certs::Leaf> leaf = nullptr)
      : server_(*this, std::move(leaf), 64) {}
  std::uint16_t port() const { return server_.port(); }
  int accepted() { return server_.accepted(); }
  int requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  std::vector<std::string> snis() {
    std::lock_guard lock(mutex_);
    return snis_;
  }
  template <class Stream> void serve_on(Stream& stream, const Accepted& conn) {
    {
      std::lock_guard lock(mutex_);
      snis_.push_back(conn.sni);
    }
    serve_requests(stream, 100,
                   [&](const boost::beast::http::request<boost::beast::http::string_body>& req) {
                     {
                       std::lock_guard lock(mutex_);
                       ++requests_;
                     }
                     return write_hello(stream, req.keep_alive()) && req.keep_alive();
                   });
  }

private:
  std::mutex mutex_;
  int requests_ = 0;
  std::vector<std::string> snis_;
  LoopbackUpstream<HelloUpstream> server_; // last: stops before the state above
};

/// Keeps every record and event unredacted; completes at once. Takes the redaction rules a
/// reload gives it (redaction_rules()) without applying them.
class MemoryAudit final : public audit::AuditLog {
public:
  void record(const audit::Exchange& exchange, bool, audit::Completion done) override {
    {
      std::lock_guard lock(mutex_);
      records_.push_back(exchange);
    }
    done({});
  }
  void event(std::string_view type, const nlohmann::json& fields, audit::Completion done) override {
    {
      std::lock_guard lock(mutex_);
      events_.push_back({std::string(type), fields});
    }
    done({});
  }
  bool healthy() const override { return true; }
  std::string failure() const override { return {}; }
  std::error_code sync() override { return {}; }
  bool set_redaction(const audit::RedactionRules& rules) override {
    std::lock_guard lock(mutex_);
    rules_ = rules;
    return true;
  }

  std::vector<audit::Exchange> records() {
    std::lock_guard lock(mutex_);
    return records_;
  }
  std::vector<std::pair<std::string, nlohmann::json>> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  /// The rules of the last set_redaction call (none: empty).
  audit::RedactionRules redaction_rules() {
    std::lock_guard lock(mutex_);
    return rules_;
  }

private:
  std::mutex mutex_;
  audit::RedactionRules rules_;
  std::vector<audit::Exchange> records_;
  std::vector<std::pair<std::string, nlohmann::json>> events_;
};

/// A temporary directory, removed with everything in it.
class TempDir {
public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rw-ops-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) {
      path_ = tmpl;
    }
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) {
      std::filesystem::remove_all(path_, ec);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path file(std::string_view name) const { return path_ / name; }

private:
  std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

/// A runwarden.yaml for a Server started from files (reload tests): the fixture's catalogue,
/// runbooks/ and tokens file, an audit log, then `extra` (more top-level keys).
inline std::string files_runwarden_yaml(const std::string& agent, const std::string& extra) {
  return "listen:\n"
         "  proxy: 127.0.0.1:0\n"
         "  admin: 127.0.0.1:0\n"
         "agent: {id: " +
         agent +
         "}\n"
         "catalogue: actions.yaml\n"
         "runbooks: [runbooks/]\n"
         "active_runbook: rb\n"
         "approvals:\n"
         "  operator_tokens_file: tokens\n"
         "audit:\n"
         "  path: audit/audit.jsonl\n" +
         extra;
}

/// One `NAME SHA256HEX` line of an operator tokens file.
inline std::string token_line(const std::string& name, const std::string& token) {
  return name + " " + approval::sha256_hex(token) + "\n";
}

/// GET /allowed/** on 127.0.0.1:upstream_port is read_only, anything else unmatched
/// (denied). audit.path lies in `dir` (the approvals journal goes beside it) and the
/// operator tokens file is dir/tokens.
inline std::shared_ptr<config::Config> ops_config(std::uint16_t upstream_port, const TempDir& dir) {
  auto cfg = std::make_shared<config::Config>();
  cfg->file = dir.file("runwarden.yaml");
  cfg->listen.proxy = {"127.0.0.1", 0};
  cfg->listen.admin = {"127.0.0.1", 0};
  cfg->agent_id = "test-agent";
  cfg->active_runbook = "rb";
  cfg->audit.path = dir.file("audit.jsonl");
  cfg->approvals.operator_tokens_file = dir.file("tokens");
  std::string err;
  policy::Matcher m;
  m.methods = {"GET"};
  m.hosts = {*policy::HostPattern::parse("127.0.0.1", &err)};
  m.path = policy::Glob::compile("/allowed/**", policy::Glob::Kind::path, &err);
  m.ports = {upstream_port};
  policy::Action a;
  a.name = "read_things";
  a.matchers.push_back(std::move(m));
  auto catalogue = std::make_shared<policy::Catalogue>();
  catalogue->actions.emplace(a.name, std::move(a));
  auto rb = std::make_shared<policy::Runbook>();
  rb->name = "rb";
  rb->sha256 = "abc";
  policy::RunbookAction ra;
  ra.name = "read_things";
  ra.cls = policy::ActionClass::read_only;
  rb->actions.emplace(ra.name, ra);
  cfg->catalogue = catalogue;
  cfg->runbooks = {rb};
  cfg->engine = std::make_shared<policy::Engine>(cfg->catalogue, cfg->runbooks);
  return cfg;
}

/// The Server under test, with its io_context on a thread of its own.
class OpsServer {
public:
  OpsServer(std::shared_ptr<const config::Config> cfg, std::shared_ptr<audit::AuditLog> audit,
            unsigned io_threads = 0) {
    ServerOptions options{std::move(cfg), std::move(audit), nullptr, nullptr};
    options.io_threads = io_threads;
    server_ = std::make_unique<Server>(ioc_, std::move(options));
    server_->start();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~OpsServer() {
    ioc_.stop();
    if (thread_.joinable()) {
      thread_.join();
    }
    server_.reset();
  }
  OpsServer(const OpsServer&) = delete;
  OpsServer& operator=(const OpsServer&) = delete;

  Server& server() { return *server_; }
  boost::asio::io_context& ioc() { return ioc_; }

private:
  boost::asio::io_context ioc_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

/// Sends one raw request on a fresh connection and reads the answer (5 s bound).
inline boost::beast::http::response<boost::beast::http::string_body>
raw_exchange(const boost::asio::ip::tcp::endpoint& where, const std::string& raw) {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::socket s(ioc);
  s.connect(where);
  set_timeouts(s);
  boost::asio::write(s, boost::asio::buffer(raw));
  boost::beast::flat_buffer buffer;
  boost::beast::http::response<boost::beast::http::string_body> res;
  boost::system::error_code ec;
  boost::beast::http::read(s, buffer, res, ec);
  EXPECT_FALSE(ec) << ec.message();
  return res;
}

inline nlohmann::json
body_json(const boost::beast::http::response<boost::beast::http::string_body>& res) {
  return nlohmann::json::parse(res.body(), nullptr, false);
}

/// An admin request with an optional bearer token.
inline std::string admin_request(const std::string& method, const std::string& target,
                                 const std::string& token, const std::string& body = "{}") {
  std::string raw = method + " " + target + " HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n";
  if (!token.empty()) {
    raw += "Authorization: Bearer " + token + "\r\n";
  }
  raw += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
  return raw;
}

/// An absolute-form GET through the explicit proxy to 127.0.0.1:port, in `run`.
inline std::string proxy_get(std::uint16_t port, const std::string& path, const std::string& run) {
  const std::string authority = "127.0.0.1:" + std::to_string(port);
  std::string raw = "GET http://" + authority + path + " HTTP/1.1\r\nHost: " + authority +
                    "\r\nConnection: close\r\n";
  if (!run.empty()) {
    raw += "Runwarden-Run: " + run + "\r\n";
  }
  return raw + "\r\n";
}

} // namespace runwarden::proxy::testing

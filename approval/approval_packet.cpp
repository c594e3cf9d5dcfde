#include "approval/approval_packet.hpp"

#include "approval/approvers.hpp"
#include "approval/crypto.hpp"
#include "approval/display.hpp"

namespace runwarden::approval {

namespace {

std::string header_value(const policy::Request& req, std::string_view name) {
  const policy::Header* h = req.header(name);
  return h ? h->value : std::string();
}

// A UTF-8-safe cut at most `limit` bytes long (never splits a multi-byte sequence).
std::size_t safe_cut(std::string_view text, std::size_t limit) {
  if (text.size() <= limit) {
    return text.size();
  }
  std::size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) {
    --cut;
  }
  return cut;
}

} // namespace

std::string request_digest(std::string_view method, std::string_view url,
                           std::string_view body_sha256_hex) {
  std::string line;
  line.reserve(method.size() + url.size() + body_sha256_hex.size() + 2);
  line.append(method).append(" ").append(url).append("\n").append(body_sha256_hex);
  return sha256_hex(line);
}

ApprovalPacket build_packet(const PacketInput& input, const PacketRedactor& redactor,
                            const PacketOptions& options, const Clock& clock) {
  ApprovalPacket p;
  p.run = escape_display(input.run);
  p.agent = escape_display(input.agent);
  p.request_id = escape_display(input.request_id);
  p.created = clock.wall();
  p.timeout = options.default_timeout;
  if (const policy::Decision* d = input.decision) {
    p.runbook = escape_display(d->runbook);
    p.runbook_sha256 = d->runbook_sha256;
    p.action = escape_display(d->action);
    p.cls = d->cls ? std::string(policy::to_string(*d->cls)) : std::string();
    p.code = escape_display(d->code);
    p.reason = escape_display(d->reason);
    if (const policy::RunbookAction* a = d->approval) {
      p.risk = escape_display(a->risk);
      p.effect = escape_display(a->effect);
      p.rollback = escape_display(a->rollback);
      for (const auto& who : a->approvers) {
        p.approvers.push_back(escape_display(who));
      }
      if (a->timeout) {
        p.timeout = *a->timeout;
      }
      p.wait = a->wait;
    }
  }
  if (const policy::Request* r = input.request) {
    const std::string url = r->url();
    p.request.method = escape_display(r->method);
    p.request.url = escape_display(url);
    p.request.host = escape_display(r->host);
    p.request.host_punycode = host_has_punycode(r->host);
    HeaderList raw;
    raw.reserve(r->headers.size());
    for (const auto& h : r->headers) {
      raw.emplace_back(h.name, h.value);
    }
    for (auto& [name, value] : redactor.redact_headers(raw)) {
      p.request.headers.emplace_back(escape_display(name), escape_display(value));
    }
    p.request.body_sha256 = input.body_sha256.empty() ? sha256_hex(r->body) : input.body_sha256;
    p.request.body_bytes = input.body_bytes != 0 ? input.body_bytes : r->body.size();
    const std::string redacted = redactor.redact_body(r->body, header_value(*r, "content-type"));
    const std::size_t cut = safe_cut(redacted, options.body_bytes);
    p.request.body = escape_display(std::string_view(redacted).substr(0, cut), true);
    p.request.body_truncated =
        cut < redacted.size() || !r->body_complete || p.request.body_bytes > r->body.size();
    p.digest = request_digest(r->method, url, p.request.body_sha256);
  }
  p.history = input.history;
  for (auto& call : p.history) {
    call.action = escape_display(call.action);
    call.outcome = escape_display(call.outcome);
    call.method = escape_display(call.method);
    call.url = escape_display(call.url);
    call.request_id = escape_display(call.request_id);
  }
  return p;
}

nlohmann::json ApprovalPacket::to_json() const {
  nlohmann::json headers = nlohmann::json::array();
  for (const auto& [name, value] : request.headers) {
    headers.push_back({name, value});
  }
  nlohmann::json calls = nlohmann::json::array();
  for (const auto& c : history) {
    calls.push_back({{"request_id", c.request_id},
                     {"action", c.action},
                     {"outcome", c.outcome},
                     {"method", c.method},
                     {"url", c.url},
                     {"time", format_time(c.time)}});
  }
  nlohmann::json j = {
      {"run", run},
      {"agent", agent},
      {"request_id", request_id},
      {"runbook", {{"name", runbook}, {"sha256", runbook_sha256}}},
      {"action", action},
      {"class", cls},
      {"code", code},
      {"reason", reason},
      {"risk", risk},
      {"effect", effect},
      {"rollback", rollback},
      {"approvers", approvers},
      {"who_may_approve", describe_approvers(approvers)},
      {"timeout_ms", timeout.count()},
      {"wait_ms", wait ? nlohmann::json(wait->count()) : nlohmann::json(nullptr)},
      {"request",
       {{"method", request.method},
        {"url", request.url},
        {"host", request.host},
        {"host_punycode", request.host_punycode},
        {"headers", headers},
        {"body", request.body},
        {"body_truncated", request.body_truncated},
        {"body_bytes", request.body_bytes},
        {"body_sha256", request.body_sha256}}},
      {"digest", digest},
      {"history", calls},
      {"created", format_time(created)},
  };
  return j;
}

} // namespace runwarden::approval

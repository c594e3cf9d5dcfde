#include "approval/approval_packet.hpp"

#include "approval/approvers.hpp"
#include "approval/crypto.hpp"
#include "approval/display.hpp"
#include "policy/ascii.hpp"

#include <algorithm>

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

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), policy::ascii_lower);
  return out;
}

/// The lower-cased tokens of a Connection or Proxy-Connection value (comma-separated).
void connection_tokens(std::string_view value, std::vector<std::string>& out) {
  while (!value.empty()) {
    const auto comma = value.find(',');
    const std::string_view token = policy::trim_ows(value.substr(0, comma));
    if (!token.empty()) {
      out.push_back(lower(token));
    }
    if (comma == std::string_view::npos) {
      break;
    }
    value.remove_prefix(comma + 1);
  }
}

/// "<decimal length>:<bytes>": no choice of bytes in one piece can be read as the next.
void append_counted(std::string& out, std::string_view piece) {
  out.append(std::to_string(piece.size())).push_back(':');
  out.append(piece);
}

/// 256 random bits drawn once per process; nullopt if the CSPRNG failed.
std::optional<std::string_view> digest_key() {
  static const std::optional<std::string> key = []() -> std::optional<std::string> {
    std::string k(32, '\0');
    if (!random_bytes(reinterpret_cast<unsigned char*>(k.data()), k.size())) {
      return std::nullopt;
    }
    return k;
  }();
  if (!key) {
    return std::nullopt;
  }
  return std::string_view(*key);
}

} // namespace

bool digest_covers_header(std::string_view name,
                          const std::vector<std::string>& connection_tokens) {
  static constexpr std::string_view kLeftOut[] = {
      // hop-by-hop (RFC 9110 §7.6.1 and the proxy-specific ones proxy/wire_head drops)
      "connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding",
      "upgrade", "proxy-authorization", "proxy-authenticate",
      // rebuilt or dropped by the proxy: the URL and the body digest cover what they carry
      "host", "content-length", "expect",
      // W3C trace context: new on every attempt
      "traceparent", "tracestate"};
  for (const auto n : kLeftOut) {
    if (policy::iequals(name, n)) {
      return false;
    }
  }
  if (name.size() >= 10 && policy::iequals(name.substr(0, 10), "runwarden-")) {
    return false;
  }
  for (const auto& t : connection_tokens) {
    if (policy::iequals(name, t)) {
      return false;
    }
  }
  return true;
}

std::string request_digest(const policy::Request& request, std::string_view body_sha256_hex) {
  std::vector<std::string> tokens;
  for (const auto& h : request.headers) {
    if (policy::iequals(h.name, "connection") || policy::iequals(h.name, "proxy-connection")) {
      connection_tokens(h.value, tokens);
    }
  }
  std::vector<std::pair<std::string, std::string_view>> fields; // lower-case name, value
  fields.reserve(request.headers.size());
  for (const auto& h : request.headers) {
    if (digest_covers_header(h.name, tokens)) {
      fields.emplace_back(lower(h.name), h.value);
    }
  }
  // By name only: repeated values of one name keep the order they were sent in.
  std::stable_sort(fields.begin(), fields.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string text = "runwarden-approval-digest-v2\n";
  append_counted(text, request.method);
  append_counted(text, request.url());
  append_counted(text, body_sha256_hex);
  for (const auto& [name, value] : fields) {
    append_counted(text, name);
    append_counted(text, value);
  }
  const std::optional<std::string_view> key = digest_key();
  if (!key) {
    return {};
  }
  const Sha256 mac = hmac_sha256(*key, text);
  return to_hex(mac.data(), mac.size());
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
    p.request.url = escape_display(redactor.redact_url(url)); // the digest covers the raw one
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
    p.digest = request_digest(*r, p.request.body_sha256);
  }
  p.history = input.history;
  for (auto& call : p.history) {
    call.action = escape_display(call.action);
    call.outcome = escape_display(call.outcome);
    call.method = escape_display(call.method);
    call.url = escape_display(redactor.redact_url(call.url));
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

#include "audit/record_builder.hpp"

#include "audit/digest.hpp"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

namespace runwarden::audit {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view content_type(const HeaderList& headers) {
  for (const auto& [name, value] : headers) {
    if (iequals(name, "content-type")) {
      return value;
    }
  }
  return {};
}

// The members of an object dump: "{...}" without its braces.
std::string members_of(const nlohmann::ordered_json& object) {
  std::string s = RecordBuilder::dump(object);
  return s.substr(1, s.size() - 2);
}

} // namespace

RecordBuilder::RecordBuilder(const RedactionRules& rules, std::size_t body_bytes)
    : redactor_(rules), body_bytes_(body_bytes) {}

std::string RecordBuilder::dump(const nlohmann::ordered_json& value) {
  return value.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

nlohmann::ordered_json RecordBuilder::headers(const HeaderList& list) const {
  std::vector<std::pair<std::string, std::string>> fields;
  fields.reserve(list.size());
  for (const auto& [name, value] : list) {
    std::string key(name);
    for (char& c : key) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    std::string redacted = redactor_.redact_header(name, value);
    auto same =
        std::find_if(fields.begin(), fields.end(), [&](const auto& f) { return f.first == key; });
    if (same == fields.end()) {
      fields.emplace_back(std::move(key), std::move(redacted));
    } else {
      // Repeated fields are combined as RFC 9110 section 5.3 allows.
      same->second += ", ";
      same->second += redacted;
    }
  }
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (auto& [key, value] : fields) {
    out[key] = std::move(value);
  }
  return out;
}

void RecordBuilder::body(nlohmann::ordered_json& out, std::string_view text, const HeaderList& hdrs,
                         bool complete) const {
  const RedactedBody b = redactor_.redact_body(text, content_type(hdrs), body_bytes_);
  out["body"] = b.text;
  out["body_sha256"] = b.sha256;
  out["truncated"] = b.truncated || !complete;
  if (b.binary) {
    out["binary"] = true;
  }
}

std::string RecordBuilder::exchange_members(const Exchange& ex, bool final) const {
  nlohmann::ordered_json rec;
  rec["type"] = final ? "exchange" : "decision";
  rec["id"] = ex.id;
  rec["run"] = ex.run;
  rec["agent"] = ex.agent;
  rec["runbook"] = ex.runbook;
  rec["runbook_sha256"] = ex.runbook_sha256;
  rec["action"] = ex.action;
  rec["class"] = ex.cls;
  rec["outcome"] = ex.outcome;
  rec["code"] = ex.code;
  rec["reason"] = redactor_.redact_text(ex.reason);
  if (ex.approval) {
    rec["approval"] = {{"id", ex.approval->id},
                       {"by", redactor_.redact_text(ex.approval->by)},
                       {"wait_ms", ex.approval->wait_ms}};
  }
  nlohmann::ordered_json req;
  req["method"] = ex.request.method;
  req["url"] = redactor_.redact_url(ex.request.url);
  req["headers"] = headers(ex.request.headers);
  body(req, ex.request.body, ex.request.headers, ex.request.body_complete);
  req["bytes"] = ex.request.body_bytes;
  rec["request"] = std::move(req);
  if (final && ex.response) {
    nlohmann::ordered_json resp;
    resp["status"] = ex.response->status;
    resp["headers"] = headers(ex.response->headers);
    body(resp, ex.response->body, ex.response->headers, ex.response->body_complete);
    resp["bytes"] = ex.response->bytes;
    rec["response"] = std::move(resp);
  }
  rec["timing"] = {{"total_ms", ex.timing.total_ms},
                   {"upstream_ms", ex.timing.upstream_ms},
                   {"hold_ms", ex.timing.hold_ms}};
  rec["traceparent"] = redactor_.redact_text(ex.traceparent);
  rec["client"] = ex.client;
  return members_of(rec);
}

nlohmann::json RecordBuilder::redact_json(const nlohmann::json& value) const {
  if (value.is_string()) {
    return redactor_.redact_text(value.get_ref<const std::string&>());
  }
  if (value.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : value) {
      out.push_back(redact_json(v));
    }
    return out;
  }
  if (value.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [k, v] : value.items()) {
      if (redactor_.is_sensitive_key(k) && !v.is_null()) {
        out[k] = redaction_marker(
            v.is_string() ? v.get<std::string>()
                          : v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
      } else {
        out[k] = redact_json(v);
      }
    }
    return out;
  }
  return value;
}

std::string RecordBuilder::event_members(std::string_view type,
                                         const nlohmann::json& fields) const {
  nlohmann::ordered_json rec;
  rec["type"] = "event";
  rec["event"] = std::string(type);
  rec["data"] = redact_json(fields.is_null() ? nlohmann::json::object() : fields);
  return members_of(rec);
}

} // namespace runwarden::audit

#include "audit/log_query.hpp"

#include "audit/record_codec.hpp"
#include "audit/verifier.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

namespace runwarden::audit {
namespace {

std::string str(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return s;
}

// Terminal-safe: a log field must not drive the auditor's terminal.
std::string printable(std::string_view s, std::size_t width) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 0xf];
    } else {
      out += c;
    }
  }
  if (width > 0 && out.size() > width) {
    out.resize(width - 1);
    out += '~';
  }
  return out;
}

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) {
    s.append(width - s.size(), ' ');
  }
  return s;
}

bool is_write(const std::string& method) {
  return method != "GET" && method != "HEAD" && method != "OPTIONS";
}

bool was_forwarded(const std::string& outcome) {
  return outcome == "forwarded" || outcome == "approved_forwarded" || outcome == "upstream_error";
}

bool is_refusal(const std::string& outcome) {
  return outcome == "denied" || outcome == "approval_denied" || outcome == "approval_timeout" ||
         outcome == "paused" || outcome == "refused";
}

} // namespace

bool LogQuery::load(const std::vector<std::string>& paths, std::vector<nlohmann::json>& records,
                    std::string& error) {
  const auto files = Verifier::log_files(paths, error);
  if (files.empty()) {
    return false;
  }
  for (const auto& f : files) {
    std::ifstream in{f, std::ios::binary};
    if (!in) {
      error = f + ": cannot read";
      return false;
    }
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object()) {
        records.push_back(std::move(j));
      }
    }
  }
  return true;
}

std::vector<nlohmann::json> LogQuery::latest_per_request(const std::vector<nlohmann::json>& records,
                                                         bool events) {
  std::vector<nlohmann::json> out;
  std::unordered_map<std::string, std::size_t> by_id;
  for (const auto& r : records) {
    const std::string type = str(r, "type");
    if (type != "decision" && type != "exchange") {
      if (events) {
        out.push_back(r);
      }
      continue;
    }
    const std::string id = str(r, "id");
    const auto it = by_id.find(id);
    if (it != by_id.end() && !id.empty()) {
      out[it->second] = r; // the exchange supersedes the decision, in the decision's place
    } else {
      by_id[id] = out.size();
      out.push_back(r);
    }
  }
  return out;
}

std::string LogQuery::host_of(std::string_view url) {
  const std::size_t scheme = url.find("://");
  std::string_view rest = scheme == std::string_view::npos ? url : url.substr(scheme + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    rest = rest.substr(at + 1);
  }
  if (!rest.empty() && rest.front() == '[') {
    return lower(std::string(rest.substr(0, rest.find(']') + 1)));
  }
  return lower(std::string(rest.substr(0, rest.find(':'))));
}

bool LogQuery::matches(const nlohmann::json& r, const QueryFilter& f) {
  if (!f.run.empty() && str(r, "run") != f.run) {
    return false;
  }
  if (!f.action.empty() && str(r, "action") != f.action) {
    return false;
  }
  if (!f.outcome.empty() && str(r, "outcome") != f.outcome) {
    return false;
  }
  if (!f.host.empty()) {
    const auto req = r.find("request");
    if (req == r.end() || !req->is_object() || host_of(str(*req, "url")) != lower(f.host)) {
      return false;
    }
  }
  if (!f.approval.empty()) {
    const auto a = r.find("approval");
    if (a == r.end() || !a->is_object() ||
        (str(*a, "id") != f.approval && str(*a, "by") != f.approval)) {
      return false;
    }
  }
  if (f.since_us || f.until_us) {
    const auto ts = RecordCodec::parse_rfc3339(str(r, "ts"));
    if (!ts || (f.since_us && *ts < *f.since_us) || (f.until_us && *ts >= *f.until_us)) {
      return false;
    }
  }
  return true;
}

std::vector<nlohmann::json> LogQuery::run(const std::vector<nlohmann::json>& records,
                                          const QueryFilter& filter) {
  std::vector<nlohmann::json> out;
  for (auto& r : latest_per_request(records, filter.events)) {
    if (matches(r, filter)) {
      out.push_back(std::move(r));
    }
  }
  return out;
}

std::string LogQuery::table(const std::vector<nlohmann::json>& records) {
  // The run id is what an operator copies into `blast-radius --run` and `ctl kill`: shown
  // whole, its column as wide as the longest one.
  std::size_t run_width = 3;
  for (const auto& r : records) {
    run_width = std::max(run_width, printable(str(r, "run"), 0).size());
  }
  std::ostringstream os;
  os << pad("SEQ", 7) << pad("TIME", 28) << pad("RUN", run_width + 1) << pad("OUTCOME", 19)
     << pad("ACTION", 28) << pad("STATUS", 7) << "REQUEST\n";
  for (const auto& r : records) {
    const std::string type = str(r, "type");
    std::string what;
    std::string status;
    std::string outcome = str(r, "outcome");
    if (type == "event") {
      outcome = "event";
      what = str(r, "event");
    } else if (type == "checkpoint") {
      outcome = "checkpoint";
    } else {
      const auto& req = r.value("request", nlohmann::json::object());
      what = str(req, "method") + " " + str(req, "url");
      if (r.contains("response") && r["response"].contains("status")) {
        status = r["response"]["status"].dump();
      }
    }
    os << pad(r.value("seq", nlohmann::json(0)).dump(), 7) << pad(printable(str(r, "ts"), 27), 28)
       << pad(printable(str(r, "run"), 0), run_width + 1) << pad(printable(outcome, 18), 19)
       << pad(printable(str(r, "action"), 27), 28) << pad(status, 7) << printable(what, 120)
       << "\n";
  }
  return os.str();
}

nlohmann::json LogQuery::blast_radius(const std::vector<nlohmann::json>& records,
                                      std::string_view run_id) {
  QueryFilter f;
  f.run = std::string(run_id);
  const auto mine = run(records, f);
  std::map<std::string, nlohmann::json> hosts;
  nlohmann::json writes = nlohmann::json::array();
  nlohmann::json approvals = nlohmann::json::array();
  nlohmann::json denied = nlohmann::json::array();
  for (const auto& r : mine) {
    const auto& req = r.value("request", nlohmann::json::object());
    const std::string method = str(req, "method");
    const std::string host = host_of(str(req, "url"));
    const std::string outcome = str(r, "outcome");
    auto& h = hosts[host];
    if (h.is_null()) {
      h = {{"host", host}, {"calls", 0}, {"forwarded", 0}, {"writes", 0}, {"denied", 0}};
    }
    h["calls"] = h["calls"].get<int>() + 1;
    const bool forwarded = was_forwarded(outcome);
    const bool write = forwarded && is_write(method);
    if (forwarded) {
      h["forwarded"] = h["forwarded"].get<int>() + 1;
    }
    if (write) {
      h["writes"] = h["writes"].get<int>() + 1;
      nlohmann::json w = {{"seq", r.value("seq", nlohmann::json(0))},
                          {"ts", str(r, "ts")},
                          {"id", str(r, "id")},
                          {"action", str(r, "action")},
                          {"method", method},
                          {"url", str(req, "url")},
                          {"outcome", outcome},
                          {"status", nullptr}};
      if (r.contains("response") && r["response"].is_object()) {
        w["status"] = r["response"].value("status", nlohmann::json(nullptr));
      }
      writes.push_back(std::move(w));
    }
    if (is_refusal(outcome)) {
      h["denied"] = h["denied"].get<int>() + 1;
      denied.push_back({{"seq", r.value("seq", nlohmann::json(0))},
                        {"ts", str(r, "ts")},
                        {"action", str(r, "action")},
                        {"method", method},
                        {"url", str(req, "url")},
                        {"outcome", outcome},
                        {"code", str(r, "code")},
                        {"reason", str(r, "reason")}});
    }
    if (r.contains("approval") && r["approval"].is_object()) {
      const auto& a = r["approval"];
      approvals.push_back({{"seq", r.value("seq", nlohmann::json(0))},
                           {"approval_id", str(a, "id")},
                           {"by", str(a, "by")},
                           {"wait_ms", a.value("wait_ms", nlohmann::json(0))},
                           {"action", str(r, "action")},
                           {"outcome", outcome}});
    }
  }
  nlohmann::json host_list = nlohmann::json::array();
  for (auto& [name, h] : hosts) {
    host_list.push_back(std::move(h));
  }
  nlohmann::json out = {{"run", std::string(run_id)}, {"calls", mine.size()},
                        {"hosts", host_list},         {"writes", writes},
                        {"approvals", approvals},     {"denied", denied}};
  if (mine.empty()) {
    out["candidates"] = run_candidates(records, run_id);
  }
  return out;
}

std::vector<std::string> LogQuery::run_candidates(const std::vector<nlohmann::json>& records,
                                                  std::string_view partial) {
  // A run id copied from an older, truncated table ends in '~' (or the '…' other views
  // print): what comes before it is the prefix the operator meant.
  std::string_view key = partial;
  if (key.ends_with("~")) {
    key.remove_suffix(1);
  } else if (key.ends_with("\u2026")) {
    key.remove_suffix(std::string_view("\u2026").size());
  }
  std::vector<std::string> prefixed;
  std::vector<std::string> containing;
  if (key.empty()) {
    return prefixed;
  }
  for (const auto& r : records) {
    const std::string run = str(r, "run");
    if (run.empty() || run == partial) {
      continue;
    }
    const bool starts = run.starts_with(key);
    if (!starts && run.find(key) == std::string::npos) {
      continue;
    }
    auto& list = starts ? prefixed : containing;
    if (std::find(list.begin(), list.end(), run) == list.end()) {
      list.push_back(run);
    }
  }
  // Runs that start with it first: that is how an id is usually cut.
  for (auto& run : containing) {
    prefixed.push_back(std::move(run));
  }
  if (prefixed.size() > kMaxRunCandidates) {
    prefixed.resize(kMaxRunCandidates);
  }
  return prefixed;
}

std::string LogQuery::blast_radius_text(const nlohmann::json& b) {
  std::ostringstream os;
  if (b.value("calls", 0) == 0) {
    // Nothing to list: say why, and which runs the operator may have meant.
    os << "run " << printable(b.value("run", ""), 0)
       << ": no records (--run needs the whole run id, as `audit query` prints it)\n";
    const auto c = b.find("candidates");
    if (c != b.end() && c->is_array() && !c->empty()) {
      os << "runs whose id starts with or contains it:\n";
      for (const auto& run : *c) {
        os << "  " << printable(run.is_string() ? run.get<std::string>() : run.dump(), 0) << "\n";
      }
    }
    return os.str();
  }
  os << "run " << printable(b.value("run", ""), 0) << ": " << b.value("calls", 0) << " calls\n\n";
  os << "SYSTEMS TOUCHED\n"
     << pad("  HOST", 42) << pad("CALLS", 7) << pad("FWD", 6) << pad("WRITES", 8) << "DENIED\n";
  for (const auto& h : b["hosts"]) {
    os << "  " << pad(printable(str(h, "host"), 39), 40) << pad(h["calls"].dump(), 7)
       << pad(h["forwarded"].dump(), 6) << pad(h["writes"].dump(), 8) << h["denied"].dump() << "\n";
  }
  os << "\nWRITES (in order)\n";
  for (const auto& w : b["writes"]) {
    os << "  #" << w["seq"].dump() << " " << printable(str(w, "ts"), 0) << " "
       << printable(str(w, "method"), 10) << " " << printable(str(w, "url"), 100) << " -> "
       << (w["status"].is_null() ? std::string("-") : w["status"].dump()) << " ("
       << printable(str(w, "action"), 40) << ", " << str(w, "outcome") << ")\n";
  }
  os << "\nAPPROVALS\n";
  for (const auto& a : b["approvals"]) {
    os << "  #" << a["seq"].dump() << " " << printable(str(a, "approval_id"), 40) << " by "
       << printable(str(a, "by"), 40) << " after " << a["wait_ms"].dump()
       << " ms: " << printable(str(a, "action"), 40) << " -> " << printable(str(a, "outcome"), 30)
       << "\n";
  }
  os << "\nDENIED ATTEMPTS\n";
  for (const auto& d : b["denied"]) {
    os << "  #" << d["seq"].dump() << " " << printable(str(d, "method"), 10) << " "
       << printable(str(d, "url"), 100) << " (" << printable(str(d, "action"), 40)
       << "): " << printable(str(d, "outcome"), 30) << " " << printable(str(d, "reason"), 120)
       << "\n";
  }
  return os.str();
}

} // namespace runwarden::audit

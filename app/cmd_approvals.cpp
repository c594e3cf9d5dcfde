// `runwarden approvals list|show|approve|deny` and `runwarden ctl mode|kill|status`:
// operators' terminal clients of the admin API (DESIGN §5, §8). The approver identity is
// whatever the server derives from the token; nothing here claims a name.

#include "app/commands.hpp"
#include "approval/admin_client.hpp"
#include "approval/display.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::app {

namespace {

using approval::escape_display;
using approval::terminal_safe;

/// Options shared by every admin-API command.
struct AdminOptions {
  std::string admin = "http://127.0.0.1:15000";
  std::string token_file;
  bool json = false;
};

void add_admin_options(CLI::App& cmd, AdminOptions& o) {
  cmd.add_option("--admin", o.admin, "Admin API base URL")->capture_default_str();
  cmd.add_option("--token-file", o.token_file,
                 "File holding the operator bearer token (default: $RUNWARDEN_TOKEN)");
  cmd.add_flag("--json", o.json, "Print the API's JSON instead of a table");
}

std::string load_token(const AdminOptions& o) {
  if (!o.token_file.empty()) {
    std::ifstream in(o.token_file, std::ios::binary);
    if (!in) {
      throw std::runtime_error("cannot read token file " + o.token_file);
    }
    std::ostringstream s;
    s << in.rdbuf();
    std::string t = s.str();
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) {
      t.pop_back();
    }
    if (t.empty() || t.find_first_of("\r\n") != std::string::npos) {
      throw std::runtime_error("token file " + o.token_file + " must hold exactly one token");
    }
    return t;
  }
  if (const char* env = std::getenv("RUNWARDEN_TOKEN")) {
    return env;
  }
  return {};
}

/// Runs one request; prints the error and returns a non-zero exit code on failure.
int call(const AdminOptions& o, std::string_view method, const std::string& path,
         const std::string& body, nlohmann::json& out) {
  std::string error;
  const auto url = approval::parse_admin_url(o.admin, &error);
  if (!url) {
    std::cerr << "runwarden: --admin " << o.admin << ": " << error << "\n";
    return 2;
  }
  const approval::AdminClient client(*url, load_token(o));
  approval::HttpResponse resp;
  if (!client.request(method, path, body, resp, error)) {
    std::cerr << "runwarden: " << o.admin << ": " << error << "\n";
    return 1;
  }
  out = nlohmann::json::parse(resp.body, nullptr, false);
  if (resp.status < 200 || resp.status > 299) {
    std::string detail = escape_display(resp.body);
    if (!out.is_discarded() && out.is_object()) {
      detail = escape_display(out.value("error", std::string()));
      const std::string reason = out.value("reason", std::string());
      if (!reason.empty()) {
        detail += ": " + escape_display(reason);
      }
    }
    std::cerr << "runwarden: " << method << " " << path << ": HTTP " << resp.status;
    if (resp.status == 401) {
      std::cerr << " (unauthenticated: check --token-file / RUNWARDEN_TOKEN)";
    } else if (resp.status == 404) {
      std::cerr << " (not found)";
    } else if (resp.status == 403) {
      std::cerr << " (forbidden: you are not among this action's approvers)";
    } else if (resp.status == 409) {
      std::cerr << " (conflict: already decided differently)";
    }
    std::cerr << (detail.empty() ? "" : ": ") << detail << "\n";
    return resp.status == 409 ? 3 : 1;
  }
  if (out.is_discarded()) {
    std::cerr << "runwarden: " << method << " " << path << ": the answer is not JSON\n";
    return 1;
  }
  return 0;
}

/// Up to five run ids of GET /v1/runs most like `target`: the longest common prefix, then
/// one containing the other; at least half the id (and four bytes) in common.
std::vector<std::string> similar_runs(const nlohmann::json& runs, const std::string& target) {
  std::vector<std::pair<std::size_t, std::string>> scored;
  if (!runs.is_object() || !runs.contains("runs") || !runs["runs"].is_array()) {
    return {};
  }
  for (const auto& r : runs["runs"]) {
    if (!r.is_object() || !r.contains("run") || !r["run"].is_string()) {
      continue;
    }
    const std::string id = r["run"].get<std::string>();
    if (id == target) {
      continue;
    }
    std::size_t common = 0;
    while (common < id.size() && common < target.size() && id[common] == target[common]) {
      ++common;
    }
    if (id.find(target) != std::string::npos || target.find(id) != std::string::npos) {
      common = std::max(common, std::min(id.size(), target.size()));
    }
    if (common >= std::max<std::size_t>(4, target.size() / 2)) {
      scored.emplace_back(common, id);
    }
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (std::size_t i = 0; i < scored.size() && i < 5; ++i) {
    out.push_back(scored[i].second);
  }
  return out;
}

std::string str(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) {
    return "";
  }
  const auto& v = j[key];
  return terminal_safe(v.is_string() ? v.get<std::string>() : v.dump());
}

/// "payments-on-call, sre", or "any operator" when the action names no approvers.
std::string who_may_approve(const nlohmann::json& packet) {
  if (!packet.contains("approvers") || !packet["approvers"].is_array() ||
      packet["approvers"].empty()) {
    return "any operator";
  }
  std::string out;
  for (const auto& a : packet["approvers"]) {
    out +=
        (out.empty() ? "" : ", ") + terminal_safe(a.is_string() ? a.get<std::string>() : a.dump());
  }
  return out;
}

const nlohmann::json& packet_of(const nlohmann::json& hold) {
  static const nlohmann::json empty = nlohmann::json::object();
  return hold.is_object() && hold.contains("packet") && hold["packet"].is_object() ? hold["packet"]
                                                                                   : empty;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) {
        line += std::string(width[i] - row[i].size() + 2, ' ');
      }
    }
    std::cout << line << "\n";
  }
}

void print_list(const nlohmann::json& answer) {
  const nlohmann::json& items =
      answer.is_array() ? answer : (answer.contains("approvals") ? answer["approvals"] : answer);
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATE", "WAIT", "RUN", "ACTION", "RISK", "APPROVERS", "REQUEST"}};
  if (items.is_array()) {
    for (const auto& h : items) {
      const auto& p = packet_of(h);
      const auto& req = p.contains("request") ? p["request"] : nlohmann::json::object();
      std::string state = str(h, "state");
      if (h.value("deferred", false) && state == "pending") {
        state += " (deferred)";
      }
      rows.push_back({str(h, "id"), state, std::to_string(h.value("wait_ms", 0LL) / 1000) + "s",
                      str(p, "run"), str(p, "action"), str(p, "risk"), who_may_approve(p),
                      str(req, "method") + " " + str(req, "url")});
    }
  }
  if (rows.size() == 1) {
    std::cout << "no approvals\n";
    return;
  }
  print_table(rows);
}

void print_hold(const nlohmann::json& h) {
  const auto& p = packet_of(h);
  const auto& req = p.contains("request") ? p["request"] : nlohmann::json::object();
  const auto& rb = p.contains("runbook") ? p["runbook"] : nlohmann::json::object();
  std::vector<std::vector<std::string>> rows = {
      {"id", str(h, "id")},
      {"state", str(h, "state") + (h.value("deferred", false) ? " (deferred)" : "")},
      {"decided by", str(h, "by")},
      {"reason", str(h, "reason")},
      {"created", str(h, "created")},
      {"wait", std::to_string(h.value("wait_ms", 0LL)) + " ms"},
      {"run", str(p, "run")},
      {"agent", str(p, "agent")},
      {"runbook", str(rb, "name") + " (sha256 " + str(rb, "sha256") + ")"},
      {"action", str(p, "action") + " [" + str(p, "class") + "]"},
      {"rule", str(p, "reason")},
      {"risk", str(p, "risk")},
      {"effect", str(p, "effect")},
      {"rollback", str(p, "rollback")},
      {"may approve", who_may_approve(p)},
      {"timeout", str(p, "timeout_ms") + " ms"},
      {"request", str(req, "method") + " " + str(req, "url")},
  };
  if (req.value("host_punycode", false)) {
    rows.push_back(
        {"warning", "host has a punycode (internationalized) label: " + str(req, "host")});
  }
  rows.push_back({"body sha256", str(req, "body_sha256")});
  print_table(rows);
  if (req.contains("headers") && req["headers"].is_array()) {
    std::cout << "headers:\n";
    for (const auto& kv : req["headers"]) {
      if (kv.is_array() && kv.size() == 2 && kv[0].is_string() && kv[1].is_string()) {
        std::cout << "  " << terminal_safe(kv[0].get<std::string>()) << ": "
                  << terminal_safe(kv[1].get<std::string>()) << "\n";
      }
    }
  }
  if (req.contains("body") && req["body"].is_string() && !req["body"].get<std::string>().empty()) {
    std::cout << "body (" << req.value("body_bytes", 0ULL) << " bytes"
              << (req.value("body_truncated", false) ? ", truncated for display" : "") << "):\n"
              << terminal_safe(req["body"].get<std::string>(), true) << "\n";
  }
  if (p.contains("history") && p["history"].is_array() && !p["history"].empty()) {
    std::cout << "earlier calls in this run:\n";
    std::vector<std::vector<std::string>> calls = {{"  TIME", "ACTION", "OUTCOME", "REQUEST"}};
    for (const auto& c : p["history"]) {
      calls.push_back({"  " + str(c, "time"), str(c, "action"), str(c, "outcome"),
                       str(c, "method") + " " + str(c, "url")});
    }
    print_table(calls);
  }
}

int print(const AdminOptions& o, const nlohmann::json& j, void (*readable)(const nlohmann::json&)) {
  if (o.json) {
    std::cout << j.dump(2) << "\n";
  } else {
    readable(j);
  }
  return 0;
}

/// What an operator checks first (is it stopped? is anything waiting on a human or still
/// relaying unjudged bytes?) on top, then every other field (alphabetical).
void print_status(const nlohmann::json& j) {
  static constexpr std::array<std::string_view, 8> kFirst = {
      "note", "mode",          "kill_switch",  "kill_switch_file",
      "runs", "pending_holds", "open_tunnels", "in_flight"};
  std::vector<std::vector<std::string>> rows;
  auto row = [&rows](const std::string& key, const nlohmann::json& value) {
    rows.push_back({escape_display(key),
                    escape_display(value.is_string() ? value.get<std::string>() : value.dump())});
  };
  if (j.is_object()) {
    for (std::string_view key : kFirst) {
      if (auto it = j.find(key); it != j.end()) {
        row(std::string(key), *it);
      }
    }
    for (const auto& [key, value] : j.items()) {
      if (std::find(kFirst.begin(), kFirst.end(), key) == kFirst.end()) {
        row(key, value);
      }
    }
  }
  print_table(rows);
}

} // namespace

void add_approval_commands(CLI::App& root, Runner& run) {
  auto* approvals = root.add_subcommand("approvals", "List, show, approve or deny held requests");
  approvals->require_subcommand(1);
  auto opts = std::make_shared<AdminOptions>();
  auto state = std::make_shared<std::string>("pending");
  auto id = std::make_shared<std::string>();
  auto reason = std::make_shared<std::string>();

  auto* list = approvals->add_subcommand("list", "List approvals (pending by default)");
  add_admin_options(*list, *opts);
  list->add_option("--state", *state, "pending|approved|denied|expired|killed|paused|abandoned|all")
      ->capture_default_str();
  list->callback([&run, opts, state] {
    run = [opts, state] {
      nlohmann::json j;
      const std::string query =
          *state == "all" ? "" : "?state=" + approval::encode_path_segment(*state);
      if (const int rc = call(*opts, "GET", "/v1/approvals" + query, "", j); rc != 0) {
        return rc;
      }
      return print(*opts, j, print_list);
    };
  });

  auto* show =
      approvals->add_subcommand("show", "Show one approval packet: exactly what would be released");
  add_admin_options(*show, *opts);
  show->add_option("id", *id, "Approval id (apr_...)")->required();
  show->callback([&run, opts, id] {
    run = [opts, id] {
      nlohmann::json j;
      if (const int rc =
              call(*opts, "GET", "/v1/approvals/" + approval::encode_path_segment(*id), "", j);
          rc != 0) {
        return rc;
      }
      return print(*opts, j, print_hold);
    };
  });

  for (const char* verb : {"approve", "deny"}) {
    auto* cmd = approvals->add_subcommand(
        verb, std::string(verb) == "approve"
                  ? "Release the held request (your identity comes from your token)"
                  : "Refuse the held request (the agent gets 403 approval_denied)");
    add_admin_options(*cmd, *opts);
    cmd->add_option("id", *id, "Approval id (apr_...)")->required();
    cmd->add_option("--reason,-r", *reason, "Why; recorded in the audit log");
    const std::string action = verb;
    cmd->callback([&run, opts, id, reason, action] {
      run = [opts, id, reason, action] {
        nlohmann::json j;
        const nlohmann::json body = {{"reason", *reason}};
        if (const int rc = call(
                *opts, "POST", "/v1/approvals/" + approval::encode_path_segment(*id) + "/" + action,
                body.dump(), j);
            rc != 0) {
          return rc;
        }
        return print(*opts, j, print_hold);
      };
    });
  }
}

void add_ctl_commands(CLI::App& root, Runner& run) {
  auto* ctl = root.add_subcommand("ctl", "Kill switch and safe mode: mode, kill, status");
  ctl->require_subcommand(1);
  auto opts = std::make_shared<AdminOptions>();
  auto mode = std::make_shared<std::string>();
  auto target = std::make_shared<std::string>();

  auto* mode_cmd = ctl->add_subcommand("mode", "Set the mode: normal, read_only or paused");
  add_admin_options(*mode_cmd, *opts);
  mode_cmd->add_option("mode", *mode, "normal|read_only|paused")
      ->required()
      ->check(CLI::IsMember({"normal", "read_only", "paused"}));
  mode_cmd->callback([&run, opts, mode] {
    run = [opts, mode] {
      nlohmann::json j;
      if (const int rc = call(*opts, "POST", "/v1/mode", nlohmann::json{{"mode", *mode}}.dump(), j);
          rc != 0) {
        return rc;
      }
      return print(*opts, j, print_status);
    };
  });

  auto* kill = ctl->add_subcommand(
      "kill", "Stop one run: deny its pending holds, refuse its calls.\n"
              "Exits 3 when runwarden had not seen the run (it is killed all the same, so a\n"
              "run yet to start is covered; check the id: the runs with the most similar ids\n"
              "are listed).");
  add_admin_options(*kill, *opts);
  kill->add_option("run", *target, "Run id")->required();
  auto kill_reason = std::make_shared<std::string>();
  kill->add_option("-r,--reason", *kill_reason, "Why (recorded in the run_killed event)");
  kill->callback([&run, opts, target, kill_reason] {
    run = [opts, target, kill_reason] {
      nlohmann::json j;
      const std::string body =
          kill_reason->empty() ? "{}" : nlohmann::json{{"reason", *kill_reason}}.dump();
      if (const int rc =
              call(*opts, "POST", "/v1/runs/" + approval::encode_path_segment(*target) + "/kill",
                   body, j);
          rc != 0) {
        return rc;
      }
      // An admin server that does not decode the id kills "a%3Ab" and says killed: the run
      // named here would go on. Only the exact run counts as done.
      const std::string killed = j.is_object() && j.contains("run") && j["run"].is_string()
                                     ? j["run"].get<std::string>()
                                     : std::string();
      if (killed != *target) {
        std::cerr << "runwarden: the admin server killed run \"" << escape_display(killed)
                  << "\", not \"" << escape_display(*target)
                  << "\" (a server that does not percent-decode run ids); the run is NOT killed\n";
        return 1;
      }
      const int rc = print(*opts, j, print_status);
      if (rc != 0 || !j.contains("known") || j["known"] != false) {
        return rc;
      }
      std::cerr << "runwarden: warning: runwarden had seen no call of run \""
                << escape_display(*target)
                << "\": it is killed now (its first call will be refused), but if you meant a "
                   "run that is running, check the id";
      nlohmann::json runs;
      if (call(*opts, "GET", "/v1/runs", "", runs) == 0) {
        const auto similar = similar_runs(runs, *target);
        if (!similar.empty()) {
          std::cerr << "; runs with similar ids:";
          for (const auto& s : similar) {
            std::cerr << "\n  " << escape_display(s);
          }
        }
      }
      std::cerr << "\n";
      return 3;
    };
  });

  auto* status = ctl->add_subcommand(
      "status", "Show mode, runs, pending hold and open tunnel counts, and the rest of /v1/status");
  add_admin_options(*status, *opts);
  status->callback([&run, opts] {
    run = [opts] {
      nlohmann::json j;
      if (const int rc = call(*opts, "GET", "/v1/status", "", j); rc != 0) {
        return rc;
      }
      return print(*opts, j, print_status);
    };
  });
}

} // namespace runwarden::app

// `runwarden audit verify|query|blast-radius|keygen`: the auditor's commands (DESIGN §6).
// verify exits 0 only when every record is intact; 1 names the first bad record; 2 is a
// usage or read error.

#include "app/commands.hpp"
#include "audit/checkpoint_key.hpp"
#include "audit/log_query.hpp"
#include "audit/record_codec.hpp"
#include "audit/verifier.hpp"

#include <algorithm>
#include <array>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace runwarden::app {
namespace {

struct VerifyArgs {
  std::vector<std::string> paths;
  std::string key;
  bool partial = false;
  std::uint64_t max_unsigned = UINT64_MAX;
  bool json = false;
};

struct QueryArgs {
  std::vector<std::string> paths;
  std::string run;
  std::string action;
  std::string outcome;
  std::string host;
  std::string approval;
  std::string since;
  std::string until;
  bool events = false;
  bool json = false;
};

/// False, after saying where it looked and where the log really is, when `paths` hold no
/// log file: the usual cause is a path taken from the config but read from another folder.
bool logs_found(std::string_view command, const std::vector<std::string>& paths) {
  std::string error;
  if (!audit::Verifier::log_files(paths, error).empty()) {
    return true;
  }
  std::string searched;
  for (const auto& p : paths) {
    std::error_code ec;
    const auto abs = std::filesystem::absolute(p, ec);
    searched += (searched.empty() ? "" : ", ") + p;
    if (!ec && abs.string() != p) {
      searched += " (" + abs.lexically_normal().string() + ")";
    }
  }
  std::cerr << "audit " << command << ": no audit log found: searched " << searched
            << " for *.jsonl files (" << error << ").\n"
            << "  The log is where the config's audit.path points, relative to the config\n"
            << "  file, not to this shell: audit.path: audit/audit.jsonl in\n"
            << "  examples/runwarden.yaml is examples/audit/.\n";
  return false;
}

int do_verify(const VerifyArgs& a) {
  if (!logs_found("verify", a.paths)) {
    return 2;
  }
  audit::VerifyOptions o;
  o.public_key = a.key;
  o.partial = a.partial;
  o.max_unsigned = a.max_unsigned;
  const audit::VerifyReport r = audit::Verifier::verify(a.paths, o);
  if (a.json) {
    nlohmann::json j = {{"ok", r.ok},
                        {"records", r.records},
                        {"first_seq", r.first_seq},
                        {"last_seq", r.last_seq},
                        {"head_hash", r.head_hash},
                        {"files", r.files},
                        {"checkpoints", r.checkpoints},
                        {"signatures_checked", r.signatures_checked},
                        {"signed_through", r.signed_through},
                        {"unsigned_tail", r.unsigned_tail}};
    if (!r.ok) {
      j["error"] = {{"kind", r.kind},
                    {"file", r.file},
                    {"line", r.line},
                    {"seq", r.seq},
                    {"detail", r.detail}};
    }
    std::cout << j.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace) << "\n";
  }
  if (!r.ok) {
    std::cerr << "audit verify: FAILED: " << r.kind;
    if (!r.file.empty()) {
      std::cerr << " at " << r.file;
      if (r.line > 0) {
        std::cerr << ":" << r.line;
      }
    }
    if (r.seq > 0) {
      std::cerr << " (seq " << r.seq << ")";
    }
    std::cerr << ": " << r.detail << "\n";
    return r.kind == "unreadable" ? 2 : 1;
  }
  if (!a.json) {
    std::cout << "audit verify: OK: " << r.records << " records, seq " << r.first_seq << ".."
              << r.last_seq << " in " << r.files.size() << " file(s), head " << r.head_hash << "\n";
    if (r.signatures_checked) {
      std::cout << "  " << r.checkpoints << " signed checkpoint(s) verified; signed through seq "
                << r.signed_through << "; " << r.unsigned_tail
                << " record(s) after the last checkpoint are unsigned yet\n";
    } else if (r.checkpoints > 0) {
      std::cout << "  " << r.checkpoints
                << " checkpoint(s) present but not checked: pass --key PUB to verify them\n";
    }
  }
  return 0;
}

bool parse_time(const std::string& text, const char* flag, std::optional<std::int64_t>& out) {
  if (text.empty()) {
    return true;
  }
  out = audit::RecordCodec::parse_rfc3339(text);
  if (!out) {
    std::cerr << "audit query: " << flag << " \"" << text
              << "\" is not RFC 3339 (e.g. 2026-11-21T10:00:00Z)\n";
    return false;
  }
  return true;
}

/// Every `outcome` a request record can carry (DESIGN §6, docs/audit.md): a value outside
/// this list can only match nothing, which an operator would read as "it never happened".
constexpr std::array<std::string_view, 13> kOutcomes = {"forwarded",        "approved_forwarded",
                                                        "upstream_error",   "held",
                                                        "approval_pending", "approval_denied",
                                                        "approval_timeout", "approval_shutdown",
                                                        "denied",           "paused",
                                                        "refused",          "aborted",
                                                        "client_gone"};

std::string outcome_list() {
  std::string out;
  for (const auto o : kOutcomes) {
    out += (out.empty() ? "" : ", ") + std::string(o);
  }
  return out;
}

int do_query(const QueryArgs& a) {
  if (!a.outcome.empty() &&
      std::find(kOutcomes.begin(), kOutcomes.end(), a.outcome) == kOutcomes.end()) {
    std::cerr << "audit query: --outcome \"" << a.outcome
              << "\" is not an outcome; one of: " << outcome_list() << "\n";
    return 2;
  }
  audit::QueryFilter f;
  f.run = a.run;
  f.action = a.action;
  f.outcome = a.outcome;
  f.host = a.host;
  f.approval = a.approval;
  f.events = a.events;
  if (!parse_time(a.since, "--since", f.since_us) || !parse_time(a.until, "--until", f.until_us)) {
    return 2;
  }
  if (!logs_found("query", a.paths)) {
    return 2;
  }
  std::vector<nlohmann::json> records;
  std::string error;
  if (!audit::LogQuery::load(a.paths, records, error)) {
    std::cerr << "audit query: " << error << "\n";
    return 2;
  }
  const auto rows = audit::LogQuery::run(records, f);
  if (a.json) {
    for (const auto& r : rows) {
      std::cout << r.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace) << "\n";
    }
  } else {
    std::cout << audit::LogQuery::table(rows);
  }
  return 0;
}

int do_blast_radius(const QueryArgs& a) {
  if (!logs_found("blast-radius", a.paths)) {
    return 2;
  }
  std::vector<nlohmann::json> records;
  std::string error;
  if (!audit::LogQuery::load(a.paths, records, error)) {
    std::cerr << "audit blast-radius: " << error << "\n";
    return 2;
  }
  const auto report = audit::LogQuery::blast_radius(records, a.run);
  if (a.json) {
    std::cout << report.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << audit::LogQuery::blast_radius_text(report);
  }
  return report["calls"].get<std::size_t>() > 0 ? 0 : 3;
}

} // namespace

void add_audit_commands(CLI::App& root, Runner& run) {
  CLI::App* audit_cmd =
      root.add_subcommand("audit", "Verify and read the redacted, hash-chained audit log");
  audit_cmd->require_subcommand(1);

  auto va = std::make_shared<VerifyArgs>();
  CLI::App* verify = audit_cmd->add_subcommand(
      "verify", "Check the hash chain across files: exit 0 only if every record is intact;\n"
                "otherwise print the first bad record and why (edited, inserted, removed,\n"
                "reordered, truncated, spliced, bad_signature) and exit 1");
  verify->add_option("PATHS", va->paths, "Log files or the log directory")->required();
  verify->add_option("--key", va->key, "Ed25519 public key (PEM) that signs the checkpoints");
  verify->add_flag("--partial", va->partial,
                   "Accept a log that does not start at seq 1 (older files removed by retention)");
  verify->add_option("--max-unsigned", va->max_unsigned,
                     "With --key: fail when more records than this follow the last checkpoint");
  verify->add_flag("--json", va->json, "Print the report as one JSON object");
  verify->callback([&run, va] { run = [va] { return do_verify(*va); }; });

  auto qa = std::make_shared<QueryArgs>();
  CLI::App* query = audit_cmd->add_subcommand(
      "query", "List requests (one line each, latest record per request) matching every filter");
  query->add_option("PATHS", qa->paths, "Log files or the log directory")->required();
  query->add_option("--run", qa->run, "Run id");
  query->add_option("--action", qa->action, "Action name");
  query->add_option("--outcome", qa->outcome,
                    "forwarded, approved_forwarded, upstream_error, held, approval_pending,\n"
                    "approval_denied, approval_timeout, approval_shutdown, denied, paused,\n"
                    "refused, aborted or client_gone (anything else is a usage error, exit 2)");
  query->add_option("--host", qa->host, "Upstream host");
  query->add_option("--approval", qa->approval, "Approval id or approver");
  query->add_option("--since", qa->since, "RFC 3339 time, inclusive");
  query->add_option("--until", qa->until, "RFC 3339 time, exclusive");
  query->add_flag("--events", qa->events, "Include event and checkpoint records");
  query->add_flag("--json", qa->json, "JSON Lines (the records themselves) for tools");
  query->callback([&run, qa] { run = [qa] { return do_query(*qa); }; });

  auto ba = std::make_shared<QueryArgs>();
  CLI::App* blast = audit_cmd->add_subcommand(
      "blast-radius", "Everything run R touched: systems with counts, every write in order with\n"
                      "its status, every approval and who gave it, every denied attempt.\n"
                      "Exit 3 when the run has no records");
  blast->add_option("PATHS", ba->paths, "Log files or the log directory")->required();
  blast->add_option("--run", ba->run, "Run id")->required();
  blast->add_flag("--json", ba->json, "One JSON object for tools");
  blast->callback([&run, ba] { run = [ba] { return do_blast_radius(*ba); }; });

  auto dir = std::make_shared<std::string>();
  CLI::App* keygen = audit_cmd->add_subcommand(
      "keygen", "Create DIR/audit-signing.key (0600) and DIR/audit-signing.pub: the Ed25519\n"
                "pair for signed checkpoints. Keep the private key out of the agent's reach;\n"
                "give auditors the .pub. Never overwrites.");
  keygen->add_option("DIR", *dir, "Directory for the key pair (created if missing)")->required();
  keygen->callback([&run, dir] {
    run = [dir] {
      std::filesystem::create_directories(*dir);
      const std::string priv = (std::filesystem::path(*dir) / "audit-signing.key").string();
      const std::string pub = (std::filesystem::path(*dir) / "audit-signing.pub").string();
      audit::CheckpointKey::generate(priv, pub);
      std::cout << "created " << priv << " (mode 0600) and " << pub << "\n";
      return 0;
    };
  });
}

} // namespace runwarden::app

// `runwarden check` and `runwarden explain`: validate a configuration, and show how
// the engine would judge one request, without sending anything anywhere.

#include "app/commands.hpp"
#include "approval/operator_tokens.hpp"
#include "config/approver_reach.hpp"
#include "config/config.hpp"
#include "config/runbook_loader.hpp"
#include "config/units.hpp"
#include "policy/engine.hpp"
#include "policy/request.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace runwarden::app {
namespace {

struct CheckOptions {
  std::string config;
  bool strict = false; // warnings fail the check (exit 3)
};

struct ExplainOptions {
  std::string config;
  std::string method;
  std::string url;
  std::vector<std::string> headers;
  std::string body;
  bool has_body = false;
  std::string run_id;
  std::string runbook;
  std::string mode = "normal";
  bool json = false;
};

/// Loads the config, printing every error to stderr. nullptr on failure.
std::shared_ptr<const config::Config> load(const std::string& file) {
  try {
    return config::load_config(file);
  } catch (const config::ConfigError& e) {
    for (const auto& line : e.errors()) {
      std::cerr << line << "\n";
    }
    std::cerr << "runwarden: " << e.errors().size() << " error"
              << (e.errors().size() == 1 ? "" : "s") << " in " << file << "\n";
  } catch (const std::exception& e) {
    std::cerr << file << ": " << e.what() << "\n";
  }
  return nullptr;
}

std::string short_sha(const std::string& sha) {
  return sha.substr(0, 8) + "\u2026";
}

std::string where_listed(const policy::SourceMark& m) {
  if (m.line <= 0) {
    return m.file;
  }
  return m.file + ":" + std::to_string(m.line) + ":" + std::to_string(m.col);
}

/// What `serve` warns about at start-up (approver_unknown, approvers_unreachable), from the
/// same tokens file and webhook identities, one warning line each, counted in `warnings`.
/// False when the tokens file is malformed (serve would refuse it): its errors are printed.
bool check_approvers(const config::Config& cfg, std::size_t& warnings) {
  approval::OperatorTokens tokens;
  const std::filesystem::path& file = cfg.approvals.operator_tokens_file;
  if (!file.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) {
      // Not required yet (it may be a secret mounted at run time): say what was not checked.
      std::cerr << cfg.file.string() << ": approvals.operator_tokens_file: note: " << file.string()
                << " does not exist yet, so runbook approvers were not checked against it "
                   "(serve opens it at start-up)\n";
      return true;
    }
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    std::vector<std::string> errors;
    if (!in || !(text << in.rdbuf())) {
      errors.push_back(file.string() + ": cannot read operator tokens file");
    } else {
      tokens = approval::OperatorTokens::parse(text.str(), file.string(), errors);
    }
    if (!errors.empty()) {
      for (const auto& line : errors) {
        std::cerr << line << "\n";
      }
      return false;
    }
  }
  std::vector<std::string> identities;
  for (const auto& w : cfg.approvals.webhooks) {
    if (auto id = config::webhook_identity(w.url)) {
      identities.push_back(std::move(*id));
    }
  }
  const auto known = [&](std::string_view who) {
    return tokens.knows(who) ||
           std::find(identities.begin(), identities.end(), who) != identities.end();
  };
  const std::string source = file.empty() ? std::string("no operator_tokens_file")
                                          : "operators and groups in " + file.string();
  for (const auto& gap : config::unmatched_approvers(cfg.runbooks, known)) {
    if (!gap.approver.empty()) {
      std::cerr << where_listed(gap.mark) << ": approvers: warning: approver_unknown: \""
                << gap.approver << "\" (runbook " << gap.runbook << ", action " << gap.action
                << ") is no operator, token-file group or webhook identity (" << source
                << "; webhooks: " << identities.size() << ")\n";
    } else {
      std::cerr << where_listed(gap.mark) << ": approvers: warning: approvers_unreachable: "
                << "nobody may decide the holds of action " << gap.action << " in runbook "
                << gap.runbook
                << ": they can only time out (deny). Name an operator or group from the "
                   "tokens file, or a webhook identity (webhook:HOST)\n";
    }
    ++warnings;
  }
  return true;
}

int run_check(const CheckOptions& o) {
  const auto cfg = load(o.config);
  if (!cfg) {
    return 1;
  }
  // What serve would refuse at start-up is an error here too, named by its key.
  const auto missing = config::serve_requirements(*cfg);
  if (!missing.empty()) {
    for (const auto& line : missing) {
      std::cerr << line << "\n";
    }
    std::cerr << "runwarden: " << missing.size() << " error" << (missing.size() == 1 ? "" : "s")
              << " in " << o.config << "\n";
    return 1;
  }
  // Warnings do not fail the check: the configuration loads and serve would run it.
  std::size_t warnings = 0;
  for (const auto& rb : cfg->runbooks) {
    for (const auto& line : config::runbook_warnings(*rb, *cfg->catalogue)) {
      std::cerr << line << "\n";
      ++warnings;
    }
  }
  if (!check_approvers(*cfg, warnings)) {
    std::cerr << "runwarden: approvals.operator_tokens_file is invalid in " << o.config << "\n";
    return 1;
  }
  const policy::Runbook* active = cfg->engine->runbook(cfg->active_runbook);
  std::cout << "ok: " << cfg->catalogue->actions.size() << " actions, " << cfg->runbooks.size()
            << " runbooks, active " << cfg->active_runbook;
  if (active != nullptr) {
    std::cout << " (sha256 " << short_sha(active->sha256) << ")";
  }
  if (warnings > 0) {
    std::cout << ", " << warnings << " warning" << (warnings == 1 ? "" : "s");
  }
  std::cout << "\n";
  if (o.strict && warnings > 0) {
    std::cerr << "runwarden: --strict: " << warnings << " warning" << (warnings == 1 ? "" : "s")
              << " in " << o.config << "\n";
    return 3;
  }
  return 0;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return std::string(s);
}

void read_all(std::istream& in, std::string& out) {
  std::array<char, 64 * 1024> buf{};
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
    out.append(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
}

/// --body: "@file" reads a file, "-" reads stdin, anything else is the body itself.
bool read_body(const std::string& spec, std::string& out, std::string& why) {
  if (spec == "-") {
    read_all(std::cin, out);
    return true;
  }
  if (!spec.starts_with('@')) {
    out = spec;
    return true;
  }
  std::ifstream in(spec.substr(1), std::ios::binary);
  if (!in) {
    why = "cannot read body file \"" + spec.substr(1) + "\"";
    return false;
  }
  read_all(in, out);
  return true;
}

std::string class_name(const std::optional<policy::ActionClass>& c) {
  return c ? std::string(policy::to_string(*c)) : std::string("not in runbook");
}

/// A rule's class as listed: a diagnostics-only action says where its read_only comes from.
std::string class_name(const policy::MatcherExplanation& r) {
  return r.diagnostics ? class_name(r.cls) + ", via diagnostics" : class_name(r.cls);
}

std::string where(const policy::SourceMark& m) {
  return m.file + ":" + std::to_string(m.line) + ":" + std::to_string(m.col);
}

nlohmann::json approval_json(const policy::RunbookAction& a) {
  nlohmann::json j{{"risk", a.risk},           {"effect", a.effect}, {"rollback", a.rollback},
                   {"approvers", a.approvers}, {"timeout", nullptr}, {"wait", nullptr}};
  if (a.timeout) {
    j["timeout"] = config::format_duration(*a.timeout);
  }
  if (a.wait) {
    j["wait"] = config::format_duration(*a.wait);
  }
  return j;
}

nlohmann::json to_json(const policy::Request& req, const std::string& runbook,
                       const policy::Runbook& rb, policy::Mode mode, const std::string& run_id,
                       const policy::Decision& d,
                       const std::vector<policy::MatcherExplanation>& rules) {
  nlohmann::json decision{{"verdict", policy::to_string(d.verdict)},
                          {"code", d.code},
                          {"reason", d.reason},
                          {"action", d.action},
                          {"class", d.cls ? nlohmann::json(policy::to_string(*d.cls)) : nullptr},
                          {"matched_actions", d.matched_actions},
                          {"runbook", d.runbook},
                          {"runbook_sha256", d.runbook_sha256}};
  decision["approval"] = d.approval != nullptr ? approval_json(*d.approval) : nullptr;
  if (!d.jsonrpc.empty()) {
    nlohmann::json calls = nlohmann::json::array();
    for (const auto& c : d.jsonrpc) {
      calls.push_back({{"id", c.id},
                       {"method", c.method},
                       {"tool", c.tool},
                       {"action", c.action},
                       {"class", c.cls ? nlohmann::json(policy::to_string(*c.cls)) : nullptr},
                       {"verdict", policy::to_string(c.verdict)},
                       {"reason", c.reason}});
    }
    decision["jsonrpc"] = std::move(calls);
    decision["jsonrpc_batch"] = d.jsonrpc_batch;
  }
  nlohmann::json rule_list = nlohmann::json::array();
  for (const auto& r : rules) {
    nlohmann::json conditions = nlohmann::json::array();
    for (const auto& c : r.conditions) {
      conditions.push_back({{"condition", c.condition}, {"held", c.held}, {"detail", c.detail}});
    }
    rule_list.push_back({{"action", r.action},
                         {"class", r.cls ? nlohmann::json(policy::to_string(*r.cls)) : nullptr},
                         {"diagnostics", r.diagnostics},
                         {"file", r.mark.file},
                         {"line", r.mark.line},
                         {"col", r.mark.col},
                         {"matched", r.matched},
                         {"conditions", std::move(conditions)}});
  }
  return {{"request",
           {{"method", req.method},
            {"url", req.url()},
            {"body_bytes", req.body.size()},
            {"body_complete", req.body_complete}}},
          {"runbook", runbook},
          {"runbook_sha256", rb.sha256},
          {"mode", policy::to_string(mode)},
          {"run", run_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(run_id)},
          {"decision", std::move(decision)},
          {"rules", std::move(rule_list)}};
}

void print_text(const policy::Request& req, const std::string& runbook, const policy::Runbook& rb,
                policy::Mode mode, const std::string& run_id, const policy::Decision& d,
                const std::vector<policy::MatcherExplanation>& rules) {
  std::ostream& out = std::cout;
  out << "request:   " << req.method << " " << req.url();
  if (!req.body.empty()) {
    out << " (body " << req.body.size() << " bytes" << (req.body_complete ? "" : ", truncated")
        << ")";
  }
  out << "\n";
  out << "runbook:   " << runbook << " (sha256 " << short_sha(rb.sha256) << "), mode "
      << policy::to_string(mode);
  if (!run_id.empty()) {
    out << ", run " << run_id;
  }
  out << "\n";
  out << "verdict:   " << policy::to_string(d.verdict) << " (" << d.code << ")\n";
  if (!d.action.empty()) {
    out << "action:    " << d.action << " [" << class_name(d.cls) << "]\n";
  }
  out << "reason:    " << d.reason << "\n";
  if (!d.matched_actions.empty()) {
    std::string all;
    for (const auto& a : d.matched_actions) {
      all += (all.empty() ? "" : ", ") + a;
    }
    out << "matched:   " << all << "\n";
  }
  if (d.approval != nullptr) {
    const auto& a = *d.approval;
    out << "approval:  risk " << (a.risk.empty() ? "-" : a.risk);
    if (a.timeout) {
      out << ", timeout " << config::format_duration(*a.timeout);
    }
    if (!a.approvers.empty()) {
      std::string all;
      for (const auto& p : a.approvers) {
        all += (all.empty() ? "" : ", ") + p;
      }
      out << ", approvers " << all;
    }
    out << "\n";
    if (!a.effect.empty()) {
      out << "  effect:   " << a.effect << "\n";
    }
    if (!a.rollback.empty()) {
      out << "  rollback: " << a.rollback << "\n";
    }
  }
  if (!d.jsonrpc.empty()) {
    out << "jsonrpc" << (d.jsonrpc_batch ? " batch" : "") << ":\n";
    for (std::size_t i = 0; i < d.jsonrpc.size(); ++i) {
      const auto& c = d.jsonrpc[i];
      out << "  [" << i << "] " << c.method;
      if (!c.tool.empty()) {
        out << " " << c.tool;
      }
      out << " -> " << policy::to_string(c.verdict);
      if (!c.action.empty()) {
        out << " (" << c.action << " [" << class_name(c.cls) << "])";
      }
      out << ": " << c.reason << "\n";
    }
  }
  if (rules.empty()) {
    out << "rules:     no action matched or nearly matched (same host and method)\n";
    return;
  }
  out << "rules (matched or nearly matched):\n";
  for (const auto& r : rules) {
    out << "  " << (r.matched ? "MATCH " : "miss  ") << r.action << " [" << class_name(r) << "] "
        << where(r.mark) << "\n";
    for (const auto& c : r.conditions) {
      out << "      " << (c.held ? "held      " : "NOT held  ") << c.condition;
      if (!c.held && !c.detail.empty()) {
        out << ": " << c.detail;
      }
      out << "\n";
    }
  }
}

int run_explain(const ExplainOptions& o) {
  const auto fail = [](const std::string& why) {
    std::cerr << "runwarden explain: " << why << "\n";
    return 1;
  };
  const auto cfg = load(o.config);
  if (!cfg) {
    return 1;
  }
  if (!is_token(o.method)) {
    return fail("--method \"" + o.method + "\" is not a valid HTTP method");
  }
  policy::Request req;
  const policy::NormalizeError ne = policy::normalize_absolute_url(o.url, req);
  if (ne != policy::NormalizeError::ok) {
    return fail("--url \"" + o.url + "\" is refused: " + std::string(policy::to_string(ne)));
  }
  req.method = o.method;
  for (const auto& h : o.headers) {
    const auto colon = h.find(':');
    if (colon == std::string::npos || !is_token(trim(h.substr(0, colon)))) {
      return fail("--header \"" + h + "\" must be \"Name: value\"");
    }
    req.headers.push_back(policy::Header{trim(h.substr(0, colon)), trim(h.substr(colon + 1))});
  }
  if (o.has_body) {
    std::string why;
    if (!read_body(o.body, req.body, why)) {
      return fail(why);
    }
    // As the proxy does: only the inspect limit is looked at; the rest makes the body incomplete.
    if (req.body.size() > cfg->limits.inspect_body_bytes) {
      req.body.resize(cfg->limits.inspect_body_bytes);
      req.body_complete = false;
    }
  }
  const std::string runbook = o.runbook.empty() ? cfg->active_runbook : o.runbook;
  const policy::Runbook* rb = cfg->engine->runbook(runbook);
  if (rb == nullptr) {
    std::string names;
    for (const auto& r : cfg->runbooks) {
      names += (names.empty() ? "" : ", ") + r->name;
    }
    return fail("no runbook named \"" + runbook + "\" (loaded: " + names + ")");
  }
  const auto mode = policy::parse_mode(o.mode);
  if (!mode) {
    return fail("--mode must be normal, read_only or paused");
  }
  const policy::Decision d = cfg->engine->decide(req, runbook, *mode);
  const auto rules = cfg->engine->explain(req, runbook);
  if (o.json) {
    std::cout << to_json(req, runbook, *rb, *mode, o.run_id, d, rules).dump() << "\n";
  } else {
    print_text(req, runbook, *rb, *mode, o.run_id, d, rules);
  }
  return 0;
}

} // namespace

void add_check_commands(CLI::App& root, Runner& run) {
  auto check_opts = std::make_shared<CheckOptions>();
  CLI::App* check = root.add_subcommand(
      "check", "Validate runwarden.yaml, the action catalogue and every runbook");
  check->description("Validate runwarden.yaml, the action catalogue and every runbook.\n"
                     "Exit codes:\n"
                     "  0  valid: prints one summary line (\"ok: ...\", with the warning count\n"
                     "     if any); warnings alone do not fail the check without --strict\n"
                     "  1  invalid: prints every error as file:line:col: path.to.key: message\n"
                     "     on stderr\n"
                     "  3  valid but with warnings and --strict given (summary line too)\n"
                     "Warnings (file:line:col: path: warning: message, on stderr): e.g. a\n"
                     "diagnostics action (read_only) that can match a method other than GET,\n"
                     "HEAD or OPTIONS, or an MCP tools/call; a runbook approvers entry that\n"
                     "no operator, tokens-file group or webhook identity matches\n"
                     "(approver_unknown), and an action none of whose approvers match, whose\n"
                     "holds can only time out (approvers_unreachable): serve warns the same.\n"
                     "tls.ca_cert and tls.ca_key must be set (`serve` needs them), but the\n"
                     "files the server opens at start-up (CA certificate and key, tokens file,\n"
                     "signing key) are not required to exist yet: `serve` checks them. A tokens\n"
                     "file that exists is read (a malformed one is an error) to check approvers.");
  check->add_option("-c,--config", check_opts->config, "runwarden.yaml to validate")->required();
  check->add_flag("--strict", check_opts->strict,
                  "Fail (exit 3) on warnings too: for CI pipelines that gate policy changes");
  check->callback([&run, check_opts] { run = [check_opts] { return run_check(*check_opts); }; });

  auto o = std::make_shared<ExplainOptions>();
  CLI::App* explain = root.add_subcommand(
      "explain", "Show how a request would be judged, and every rule that (nearly) matched");
  explain->description(
      "Show how one request would be judged under a runbook, without sending it.\n"
      "Prints the verdict, reason code, deciding action and class, the runbook and its\n"
      "SHA-256, and for every action that matched or nearly matched (same host and\n"
      "method) which conditions held and which did not.\n"
      "Exits 0 whenever a decision was computed (the verdict is in the output), 1 on bad\n"
      "input (invalid config, URL refused by normalization, unknown runbook).\n"
      "Example:\n"
      "  runwarden explain -c examples/runwarden.yaml --method POST \\\n"
      "    --url https://api.stripe.com/v1/refunds --runbook support-refunds \\\n"
      "    --header 'Content-Type: application/json' --body '{\"amount\":90000}'");
  explain->add_option("-c,--config", o->config, "runwarden.yaml to load")->required();
  explain->add_option("--method", o->method, "HTTP method, case-sensitive (GET, POST, ...)")
      ->required();
  explain->add_option("--url", o->url, "absolute URL, e.g. https://api.example.com/v1/x?y=1")
      ->required();
  explain->add_option("--header", o->headers, "request header \"Name: value\" (repeatable)");
  explain
      ->add_option_function<std::string>(
          "--body",
          [o](const std::string& v) {
            o->body = v;
            o->has_body = true;
          },
          "request body: @FILE reads a file, - reads stdin, anything else is the body")
      ->type_name("@FILE|-|TEXT");
  explain->add_option("--run", o->run_id, "run id to show in the output (Runwarden-Run)");
  explain->add_option("--runbook", o->runbook, "runbook to judge under (default: active_runbook)");
  explain->add_option("--mode", o->mode, "normal, read_only or paused (default normal)")
      ->check(CLI::IsMember({"normal", "read_only", "paused"}));
  explain->add_flag("--json", o->json, "print one JSON object instead of text");
  explain->callback([&run, o] { run = [o] { return run_explain(*o); }; });
}

} // namespace runwarden::app

#include "config/runbook_loader.hpp"

#include "config/yaml_reader.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <openssl/evp.h>
#include <optional>
#include <stdexcept>

namespace runwarden::config {
namespace {

struct Listed {
  std::string path;
  int line = 0;
};

bool is_runbook_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return std::isalnum(u) != 0 || c == '_' || c == '-' || c == '.';
  });
}

class RunbookParser {
public:
  RunbookParser(const YamlReader& r, const policy::Catalogue* catalogue)
      : r_(r), catalogue_(catalogue) {
    if (catalogue != nullptr) {
      for (const auto& [name, action] : catalogue->actions) {
        action_names_.push_back(name);
      }
    }
  }

  void parse(policy::Runbook& rb) {
    r_.for_each(r_.root(),
                {"runbook", "owner", "trigger", "diagnostics", "allowed_actions", "unmatched",
                 "budgets", "verification", "escalation", "rollback"},
                [&](const std::string& key, const YAML::Mark&, const Field& value) {
                  if (key == "runbook") {
                    auto s = r_.string(value);
                    if (s && !is_runbook_name(*s)) {
                      r_.error(value, "invalid runbook name \"" + *s +
                                          "\": use letters, digits, '_', '-' or '.'");
                    } else if (s) {
                      rb.name = *s;
                      rb.mark = r_.mark(value.mark);
                    }
                  } else if (key == "owner") {
                    rb.owner = r_.string(value).value_or("");
                  } else if (key == "trigger") {
                    rb.trigger = r_.json(value).value_or(nullptr);
                  } else if (key == "diagnostics") {
                    parse_diagnostics(rb, value);
                  } else if (key == "verification") {
                    rb.verification = r_.json(value).value_or(nullptr);
                  } else if (key == "escalation") {
                    rb.escalation = r_.json(value).value_or(nullptr);
                  } else if (key == "rollback") {
                    parse_rollback(rb, value);
                  } else if (key == "allowed_actions") {
                    parse_classes(rb, value);
                  } else if (key == "unmatched") {
                    auto s = r_.string(value);
                    if (s == "deny") {
                      rb.unmatched = policy::Unmatched::deny;
                    } else if (s == "approval") {
                      rb.unmatched = policy::Unmatched::approval;
                      unmatched_approval_.emplace(value);
                    } else if (s) {
                      r_.error(value,
                               "unmatched must be \"deny\" or \"approval\", got \"" + *s + "\"");
                    }
                  } else if (key == "budgets") {
                    parse_budgets(rb.budgets, value);
                  }
                });
    r_.require(r_.root(), "runbook");
    r_.require(r_.root(), "allowed_actions");
    check_budget_actions(rb);
    check_rollback_required(rb);
  }

private:
  /// `diagnostics: [action, ...]`: what the agent runs first. Each must be a catalogue
  /// action, like every other action name in a runbook, so a typo is a load error rather
  /// than a list that quietly names nothing. The engine treats each as read_only unless
  /// allowed_actions lists it too (that class then decides), so a diagnostics action may
  /// also appear under allowed_actions without counting as listed twice.
  void parse_diagnostics(policy::Runbook& rb, const Field& f) {
    auto list = r_.elements(f);
    if (!list) {
      return;
    }
    nlohmann::json names = nlohmann::json::array();
    for (const auto& element : *list) {
      auto name = r_.string(element);
      if (name && in_catalogue(*name, element.mark, element.path)) {
        names.push_back(*name);
        rb.diagnostic_actions.emplace(*name, r_.mark(element.mark));
      }
    }
    rb.diagnostics = std::move(names);
  }

  /// `rollback: {owner, required_before_execution}`. With required_before_execution: true,
  /// nothing may be released by an approver without a stated way back: every
  /// approval_required action must carry a non-empty `rollback` (shown in the approval
  /// packet, DESIGN §5), and `unmatched: approval` (a packet with no action, hence no
  /// rollback) is refused. Checked once the whole runbook is read.
  void parse_rollback(policy::Runbook& rb, const Field& f) {
    nlohmann::json out = nlohmann::json::object();
    r_.for_each(f, {"owner", "required_before_execution"},
                [&](const std::string& key, const YAML::Mark&, const Field& value) {
                  if (key == "owner") {
                    if (auto s = r_.string(value)) {
                      out["owner"] = *s;
                    }
                  } else if (auto b = r_.boolean(value)) {
                    out["required_before_execution"] = *b;
                    if (*b) {
                      rollback_required_.emplace(value);
                    }
                  }
                });
    rb.rollback = std::move(out);
  }

  void check_rollback_required(const policy::Runbook& rb) {
    if (!rollback_required_) {
      return;
    }
    const std::string why = " (rollback.required_before_execution: true, line " +
                            std::to_string(rollback_required_->mark.line + 1) + ")";
    for (const auto& [name, field] : approval_entries_) {
      const auto it = rb.actions.find(name);
      if (it == rb.actions.end()) {
        continue; // reported already (unknown or listed twice)
      }
      const std::string& text = it->second.rollback;
      if (text.find_first_not_of(" \t") == std::string::npos) {
        r_.error(field.mark, field.path,
                 "approval_required action \"" + name +
                     "\" states no rollback, but this runbook requires one before execution" + why +
                     "; add `rollback: \"...\"` to the entry");
      }
    }
    if (unmatched_approval_) {
      r_.error(*unmatched_approval_,
               "unmatched: approval would let an approver release a request no action describes, "
               "with no rollback, but this runbook requires one before execution" +
                   why + "; use unmatched: deny");
    }
  }

  /// True when `name` is a catalogue action; else reports it (with the closest name).
  bool in_catalogue(const std::string& name, const YAML::Mark& mark, const std::string& path) {
    if (catalogue_ == nullptr || catalogue_->actions.find(name) != catalogue_->actions.end()) {
      return true;
    }
    std::string msg = "unknown action \"" + name + "\"";
    const std::string hint = closest_key(name, action_names_);
    if (!hint.empty()) {
      msg += " (did you mean \"" + hint + "\"?)";
    } else {
      msg += " (not in the catalogue " + catalogue_->file + ")";
    }
    r_.error(mark, path, msg);
    return false;
  }

  void parse_budgets(policy::Budgets& b, const Field& f) {
    r_.for_each(f, {"calls", "denied", "per_minute", "actions", "sums", "on_exceed"},
                [&](const std::string& key, const YAML::Mark&, const Field& value) {
                  constexpr std::int64_t max = 1'000'000'000'000;
                  if (key == "actions") {
                    parse_action_budgets(b, value);
                    return;
                  }
                  if (key == "sums") {
                    if (auto list = r_.elements(value)) {
                      for (const auto& element : *list) {
                        parse_sum_budget(b, element);
                      }
                    }
                    return;
                  }
                  if (key == "on_exceed") {
                    auto s = r_.string(value);
                    if (s == "refuse") {
                      b.on_exceed = policy::OnExceed::refuse;
                    } else if (s == "kill_run") {
                      b.on_exceed = policy::OnExceed::kill_run;
                    } else if (s) {
                      r_.error(value,
                               "on_exceed must be \"refuse\" or \"kill_run\", got \"" + *s + "\"");
                    }
                    return;
                  }
                  auto n = r_.integer(value, key == "denied" ? 0 : 1, max);
                  if (!n) {
                    return;
                  }
                  const auto v = static_cast<std::uint64_t>(*n);
                  (key == "calls" ? b.calls : key == "denied" ? b.denied : b.per_minute) = v;
                });
  }

  void parse_action_budgets(policy::Budgets& b, const Field& f) {
    r_.for_each_any(f, [&](const std::string& key, const YAML::Mark& key_mark, const Field& value) {
      auto n = r_.integer(value, 0, 1'000'000'000'000);
      if (!n) {
        return;
      }
      budget_actions_.emplace_back(key, Field{value.node, key_mark, value.path});
      b.actions[key] = static_cast<std::uint64_t>(*n);
    });
  }

  void parse_sum_budget(policy::Budgets& b, const Field& f) {
    policy::SumBudget s;
    s.mark = r_.mark(f.mark);
    bool ok = true;
    bool has_action = false;
    bool has_pointer = false;
    bool has_max = false;
    bool has_window = false;
    const bool is_map = r_.for_each(
        f, {"action", "pointer", "max", "window"},
        [&](const std::string& key, const YAML::Mark&, const Field& value) {
          if (key == "action") {
            auto a = r_.string(value);
            ok = ok && a.has_value();
            if (a) {
              has_action = true;
              s.action = *a;
              budget_actions_.emplace_back(*a, Field{value.node, value.mark, value.path});
            }
          } else if (key == "pointer") {
            auto text = r_.string(value);
            if (!text) {
              ok = false;
              return;
            }
            std::string why;
            auto ptr = policy::JsonPointer::parse(*text, &why);
            if (!ptr) {
              r_.error(value, "invalid JSON pointer \"" + *text + "\": " + why);
              ok = false;
              return;
            }
            has_pointer = true;
            s.pointer = std::move(*ptr);
          } else if (key == "max") {
            auto j = r_.json(value);
            if (!j || !j->is_number() || j->get<double>() < 0) {
              r_.error(value, "expected a non-negative number");
              ok = false;
              return;
            }
            has_max = true;
            s.max = j->get<double>();
          } else if (key == "window") {
            auto d = r_.duration(value);
            if (!d) {
              ok = false;
              return;
            }
            if (d->count() <= 0) {
              r_.error(value, "window must be longer than 0");
              ok = false;
              return;
            }
            has_window = true;
            s.window = *d;
          }
        });
    if (!is_map) {
      return;
    }
    for (const auto& [key, present] : {std::pair<std::string_view, bool>{"action", has_action},
                                       {"pointer", has_pointer},
                                       {"max", has_max},
                                       {"window", has_window}}) {
      if (!present) {
        ok = r_.require(f, key) && ok;
      }
    }
    if (ok) {
      b.sums.push_back(std::move(s));
    }
  }

  /// Budget entries must name actions the runbook lists, under allowed_actions or
  /// diagnostics (checked once every class is read).
  void check_budget_actions(const policy::Runbook& rb) {
    for (const auto& [name, field] : budget_actions_) {
      if (rb.actions.find(name) == rb.actions.end() &&
          rb.diagnostic_actions.find(name) == rb.diagnostic_actions.end()) {
        r_.error(field.mark, field.path,
                 "budget names action \"" + name + "\", which this runbook does not list");
      }
    }
  }

  void parse_classes(policy::Runbook& rb, const Field& f) {
    r_.for_each(f, {"read_only", "allowed", "approval_required", "denied"},
                [&](const std::string& key, const YAML::Mark&, const Field& value) {
                  const auto cls = policy::parse_action_class(key);
                  if (!cls) {
                    r_.error(value, "unknown action class \"" + key + "\"");
                    return;
                  }
                  if (value.node.IsNull()) {
                    return; // `denied:` with nothing listed
                  }
                  auto list = r_.elements(value);
                  if (!list) {
                    return;
                  }
                  for (const auto& element : *list) {
                    parse_entry(rb, *cls, element);
                  }
                });
  }

  void parse_entry(policy::Runbook& rb, policy::ActionClass cls, const Field& f) {
    policy::RunbookAction a;
    a.cls = cls;
    a.mark = r_.mark(f.mark);
    YAML::Mark name_mark = f.mark; // where the action name is written
    if (f.node.IsMap()) {
      bool has_action = false;
      r_.for_each(f, {"action", "risk", "effect", "rollback", "approvers", "timeout", "wait"},
                  [&](const std::string& key, const YAML::Mark&, const Field& value) {
                    if (key == "action") {
                      has_action = true;
                      name_mark = value.mark;
                      a.name = r_.string(value).value_or("");
                    } else if (key == "risk") {
                      auto s = r_.string(value);
                      if (s && *s != "low" && *s != "medium" && *s != "high" && *s != "critical") {
                        r_.error(value,
                                 "risk must be low, medium, high or critical, got \"" + *s + "\"");
                      } else if (s) {
                        a.risk = *s;
                      }
                    } else if (key == "effect") {
                      a.effect = r_.string(value).value_or("");
                    } else if (key == "rollback") {
                      a.rollback = r_.string(value).value_or("");
                    } else if (key == "approvers") {
                      if (auto list = r_.elements(value)) {
                        for (const auto& element : *list) {
                          if (auto s = r_.string(element)) {
                            a.approvers.push_back(*s);
                          }
                        }
                      }
                    } else if (key == "timeout") {
                      a.timeout = r_.duration(value);
                    } else if (key == "wait") {
                      a.wait = r_.duration(value);
                    }
                  });
      if (!has_action) {
        r_.require(f, "action");
        return;
      }
      if (a.name.empty()) {
        return; // reported by string()
      }
    } else {
      auto s = r_.string(f);
      if (!s) {
        return;
      }
      a.name = *s;
    }
    if (!in_catalogue(a.name, name_mark, f.path)) {
      return;
    }
    if (cls == policy::ActionClass::approval_required) {
      approval_entries_.emplace_back(a.name, Field{f.node, name_mark, f.path});
    }
    const auto [it, inserted] = listed_.emplace(a.name, Listed{f.path, f.mark.line + 1});
    if (!inserted) {
      r_.error(name_mark, f.path,
               "action \"" + a.name + "\" is already listed at " + it->second.path + " (line " +
                   std::to_string(it->second.line) + "); an action belongs to exactly one class");
      return;
    }
    rb.actions.emplace(a.name, std::move(a));
  }

  const YamlReader& r_;
  const policy::Catalogue* catalogue_;
  std::vector<std::string> action_names_;
  std::map<std::string, Listed, std::less<>> listed_;
  std::vector<std::pair<std::string, Field>> budget_actions_;
  std::vector<std::pair<std::string, Field>> approval_entries_;
  std::optional<Field> rollback_required_;  // the `true` that asks for rollbacks
  std::optional<Field> unmatched_approval_; // `unmatched: approval`
};

/// Why a matcher may have side effects, or "" when it can match only GET, HEAD or OPTIONS
/// and no MCP tools/call.
std::string side_effect_risk(const policy::Matcher& m) {
  if (m.mcp) {
    return "an MCP tools/call of \"" + m.mcp->tool + "\", which may have side effects";
  }
  if (m.jsonrpc && std::find(m.jsonrpc->methods.begin(), m.jsonrpc->methods.end(), "tools/call") !=
                       m.jsonrpc->methods.end()) {
    return "MCP tools/call (any tool), which may have side effects";
  }
  if (m.methods.empty()) {
    return "any method";
  }
  for (const std::string& method : m.methods) {
    if (method != "GET" && method != "HEAD" && method != "OPTIONS") {
      return method;
    }
  }
  return {};
}

} // namespace

std::vector<std::string> runbook_warnings(const policy::Runbook& rb,
                                          const policy::Catalogue& catalogue) {
  std::vector<std::string> out;
  for (const auto& [name, mark] : rb.diagnostic_actions) {
    if (rb.actions.find(name) != rb.actions.end()) {
      continue; // allowed_actions decides its class, not diagnostics
    }
    const auto it = catalogue.actions.find(name);
    if (it == catalogue.actions.end()) {
      continue;
    }
    for (const policy::Matcher& m : it->second.matchers) {
      const std::string risk = side_effect_risk(m);
      if (risk.empty()) {
        continue;
      }
      out.push_back(mark.file + ":" + std::to_string(mark.line) + ":" + std::to_string(mark.col) +
                    ": diagnostics: warning: action \"" + name + "\" can match " + risk + " (" +
                    m.mark.file + ":" + std::to_string(m.mark.line) +
                    "); listing it under diagnostics makes it read_only, so it passes even in "
                    "read_only mode. If it can change anything, list it under allowed_actions "
                    "(allowed or approval_required) instead");
      break; // one warning per action
    }
  }
  return out;
}

std::string sha256_hex(std::string_view bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md.data(), &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 failed (OpenSSL EVP_Digest)");
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 0xf]);
  }
  return out;
}

std::shared_ptr<policy::Runbook> load_runbook(const std::filesystem::path& file,
                                              std::string display,
                                              const policy::Catalogue* catalogue, Diagnostics& diag,
                                              const policy::SourceMark* from,
                                              std::string_view from_path) {
  auto reader = YamlReader::open(file, std::move(display), diag, from, from_path);
  if (!reader) {
    return nullptr;
  }
  auto rb = std::make_shared<policy::Runbook>();
  rb->file = reader->file();
  rb->sha256 = sha256_hex(reader->bytes());
  rb->mark = reader->mark(reader->root().mark);
  RunbookParser(*reader, catalogue).parse(*rb);
  if (rb->name.empty()) {
    return nullptr;
  }
  return rb;
}

} // namespace runwarden::config

#include "config/catalogue_loader.hpp"

#include <algorithm>
#include <cctype>
#include <re2/re2.h>
#include <utility>

namespace runwarden::config {
namespace {

bool is_token_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (std::isalnum(u) != 0) {
    return true;
  }
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_token_char);
}

bool is_action_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return std::isalnum(u) != 0 || c == '_' || c == '-' || c == '.' || c == ':';
  });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  return s;
}

/// The value a query/header predicate compares with: always text.
std::optional<nlohmann::json> text_operand(const YamlReader& r, const Field& f) {
  if (!f.node.IsScalar()) {
    r.error(f, "expected a text value, got " + std::string(f.node.IsNull()  ? "nothing"
                                                           : f.node.IsMap() ? "a map"
                                                                            : "a list"));
    return std::nullopt;
  }
  return nlohmann::json(f.node.Scalar());
}

std::optional<std::vector<policy::PointerPredicates>> parse_pointer_map(const YamlReader& r,
                                                                        const Field& f) {
  std::vector<policy::PointerPredicates> out;
  bool ok = true;
  const bool is_map = r.for_each_any(
      f, [&](const std::string& key, const YAML::Mark& key_mark, const Field& value) {
        std::string why;
        auto pointer = policy::JsonPointer::parse(key, &why);
        if (!pointer) {
          r.error(key_mark, value.path, "invalid JSON Pointer \"" + key + "\": " + why);
          ok = false;
          return;
        }
        auto predicates = parse_predicates(r, value, false);
        if (!predicates) {
          ok = false;
          return;
        }
        out.push_back(policy::PointerPredicates{std::move(*pointer), std::move(*predicates),
                                                r.mark(key_mark)});
      });
  if (!is_map || !ok) {
    return std::nullopt;
  }
  if (out.empty()) {
    r.error(f, "expected at least one JSON Pointer (e.g. /amount)");
    return std::nullopt;
  }
  return out;
}

std::optional<std::vector<policy::NamedPredicates>>
parse_named_map(const YamlReader& r, const Field& f, bool header_names) {
  std::vector<policy::NamedPredicates> out;
  bool ok = true;
  const bool is_map = r.for_each_any(
      f, [&](const std::string& key, const YAML::Mark& key_mark, const Field& value) {
        if (header_names && !is_token(key)) {
          r.error(key_mark, value.path, "invalid header name \"" + key + "\"");
          ok = false;
          return;
        }
        if (key.empty()) {
          r.error(key_mark, value.path, "empty query parameter name");
          ok = false;
          return;
        }
        auto predicates = parse_predicates(r, value, true);
        if (!predicates) {
          ok = false;
          return;
        }
        out.push_back(policy::NamedPredicates{header_names ? lower(key) : key,
                                              std::move(*predicates), r.mark(key_mark)});
      });
  if (!is_map || !ok) {
    return std::nullopt;
  }
  if (out.empty()) {
    r.error(f, header_names ? "expected at least one header name"
                            : "expected at least one query parameter name");
    return std::nullopt;
  }
  return out;
}

/// Calls add(element) for every element of a value-or-list field, even after one fails, so
/// every bad element gets its own error. False when the field is neither or any add failed.
template <class Add> bool each_element(const YamlReader& r, const Field& f, Add add) {
  auto list = r.one_or_many(f);
  if (!list) {
    return false;
  }
  bool ok = true;
  for (const auto& element : *list) {
    ok = add(element) && ok;
  }
  return ok;
}

/// each_element for string elements: add(element, text) sees only those that are strings.
template <class Add> bool each_string(const YamlReader& r, const Field& f, Add add) {
  return each_element(r, f, [&](const Field& element) {
    auto s = r.string(element);
    return s && add(element, std::move(*s));
  });
}

std::optional<std::vector<std::string>> parse_strings(const YamlReader& r, const Field& f) {
  std::vector<std::string> out;
  const bool ok = each_string(r, f, [&](const Field& element, std::string s) {
    if (s.empty()) {
      r.error(element, "expected a non-empty string");
      return false;
    }
    out.push_back(std::move(s));
    return true;
  });
  return ok ? std::optional<std::vector<std::string>>(std::move(out)) : std::nullopt;
}

std::optional<policy::McpMatch> parse_mcp(const YamlReader& r, const Field& f) {
  policy::McpMatch m;
  bool ok = true;
  if (!r.for_each(f, {"tool", "arguments"},
                  [&](const std::string& key, const YAML::Mark&, const Field& value) {
                    if (key == "tool") {
                      auto s = r.string(value);
                      if (s && s->empty()) {
                        r.error(value, "expected a tool name");
                        s.reset();
                      }
                      ok = ok && s.has_value();
                      m.tool = s.value_or("");
                    } else {
                      auto args = parse_pointer_map(r, value);
                      ok = ok && args.has_value();
                      if (args) {
                        m.arguments = std::move(*args);
                      }
                    }
                  })) {
    return std::nullopt;
  }
  if (!r.require(f, "tool")) {
    return std::nullopt;
  }
  return ok ? std::optional<policy::McpMatch>(std::move(m)) : std::nullopt;
}

std::optional<policy::Matcher> parse_matcher(const YamlReader& r, const Field& f) {
  policy::Matcher m;
  m.mark = r.mark(f.mark);
  bool ok = true;
  std::optional<YAML::Mark> path_mark;
  std::optional<Field> path_regex_field;
  std::optional<Field> jsonrpc_field;
  bool has_mcp = false;
  const auto fail = [&] { ok = false; };
  const bool is_map = r.for_each(
      f,
      {"scheme", "host", "port", "method", "path", "path_regex", "query", "headers", "body", "mcp",
       "jsonrpc"},
      [&](const std::string& key, const YAML::Mark& key_mark, const Field& value) {
        if (key == "scheme") {
          if (!each_string(r, value, [&](const Field& element, std::string s) {
                if (s != "http" && s != "https") {
                  r.error(element, "scheme must be \"http\" or \"https\", got \"" + s + "\"");
                  return false;
                }
                m.schemes.push_back(std::move(s));
                return true;
              })) {
            fail();
          }
        } else if (key == "host") {
          if (!each_string(r, value, [&](const Field& element, const std::string& s) {
                std::string why;
                auto host = policy::HostPattern::parse(s, &why);
                if (!host) {
                  r.error(element, "invalid host pattern \"" + s + "\": " + why);
                  return false;
                }
                m.hosts.push_back(std::move(*host));
                return true;
              })) {
            fail();
          }
        } else if (key == "port") {
          if (!each_element(r, value, [&](const Field& element) {
                auto p = r.integer(element, 1, 65535);
                if (p) {
                  m.ports.push_back(static_cast<std::uint16_t>(*p));
                }
                return p.has_value();
              })) {
            fail();
          }
        } else if (key == "method") {
          if (!each_string(r, value, [&](const Field& element, std::string s) {
                if (std::any_of(s.begin(), s.end(), [](char c) { return c >= 'a' && c <= 'z'; })) {
                  std::string upper = s;
                  std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) {
                    return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
                  });
                  r.error(element, "method \"" + s +
                                       "\" must be upper case: HTTP methods are case-sensitive "
                                       "(write \"" +
                                       upper + "\")");
                  return false;
                }
                if (!is_token(s)) {
                  r.error(element, "invalid HTTP method \"" + s + "\"");
                  return false;
                }
                m.methods.push_back(std::move(s));
                return true;
              })) {
            fail();
          }
        } else if (key == "path") {
          path_mark = key_mark;
          auto s = r.string(value);
          if (!s) {
            return fail();
          }
          if (!s->starts_with('/')) {
            r.error(value, "path glob \"" + *s + "\" must start with \"/\"");
            return fail();
          }
          std::string why;
          auto glob = policy::Glob::compile(*s, policy::Glob::Kind::path, &why);
          if (!glob) {
            r.error(value, "invalid path glob \"" + *s + "\": " + why);
            return fail();
          }
          m.path = std::move(*glob);
        } else if (key == "path_regex") {
          path_regex_field.emplace(Field{value.node, key_mark, value.path});
          auto s = r.string(value);
          if (!s) {
            return fail();
          }
          m.path_regex = compile_regex(r, value, *s);
          if (!m.path_regex) {
            fail();
          }
        } else if (key == "query" || key == "headers") {
          auto named = parse_named_map(r, value, key == "headers");
          if (!named) {
            return fail();
          }
          (key == "query" ? m.query : m.headers) = std::move(*named);
        } else if (key == "body") {
          auto body = parse_pointer_map(r, value);
          if (!body) {
            return fail();
          }
          m.body = std::move(*body);
        } else if (key == "mcp") {
          has_mcp = true;
          m.mcp = parse_mcp(r, value);
          if (!m.mcp) {
            fail();
          }
        } else if (key == "jsonrpc") {
          jsonrpc_field.emplace(Field{value.node, key_mark, value.path});
          policy::JsonRpcMatch j;
          bool j_ok = r.for_each(value, {"method"},
                                 [&](const std::string&, const YAML::Mark&, const Field& v) {
                                   auto methods = parse_strings(r, v);
                                   if (methods) {
                                     j.methods = std::move(*methods);
                                   } else {
                                     j_ok = false;
                                   }
                                 });
          if (!j_ok || !r.require(value, "method")) {
            return fail();
          }
          m.jsonrpc = std::move(j);
        }
      });
  if (!is_map) {
    return std::nullopt;
  }
  if (f.node.size() == 0) {
    r.error(f, "a matcher needs at least one condition (an empty matcher would match every "
               "request)");
    return std::nullopt;
  }
  if (path_mark && path_regex_field) {
    r.error(path_regex_field->mark, path_regex_field->path,
            "path and path_regex are mutually exclusive (path is at line " +
                std::to_string(path_mark->line + 1) + ")");
    ok = false;
  }
  if (has_mcp && jsonrpc_field) {
    r.error(
        jsonrpc_field->mark, jsonrpc_field->path,
        "mcp and jsonrpc are mutually exclusive: mcp matches tools/call, jsonrpc other methods");
    ok = false;
  }
  return ok ? std::optional<policy::Matcher>(std::move(m)) : std::nullopt;
}

} // namespace

std::shared_ptr<const re2::RE2> compile_regex(const YamlReader& r, const Field& f,
                                              const std::string& pattern) {
  re2::RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_shared<const re2::RE2>(pattern, options);
  if (!re->ok()) {
    r.error(f, "invalid regular expression \"" + pattern + "\": " + re->error());
    return nullptr;
  }
  return re;
}

std::optional<std::vector<policy::Predicate>> parse_predicates(const YamlReader& r, const Field& f,
                                                               bool text_values) {
  using policy::PredicateOp;
  std::vector<policy::Predicate> out;
  if (f.node.IsSequence()) {
    r.error(f, "a list is ambiguous here: write {in: [...]} to accept any of these values, or "
               "{eq: [...]} to compare with the whole list");
    return std::nullopt;
  }
  if (!f.node.IsMap()) {
    // Scalar shorthand: `/currency: usd` means {eq: usd}.
    auto operand = text_values ? text_operand(r, f) : r.json(f);
    if (!operand) {
      return std::nullopt;
    }
    policy::Predicate p;
    p.op = PredicateOp::eq;
    p.operand = std::move(*operand);
    p.mark = r.mark(f.mark);
    out.push_back(std::move(p));
    return out;
  }
  bool ok = true;
  r.for_each(f, {"eq", "in", "glob", "regex", "lt", "lte", "gt", "gte", "exists"},
             [&](const std::string& key, const YAML::Mark& key_mark, const Field& value) {
               policy::Predicate p;
               p.mark = r.mark(key_mark);
               if (key == "eq") {
                 p.op = PredicateOp::eq;
                 auto operand = text_values ? text_operand(r, value) : r.json(value);
                 if (!operand) {
                   ok = false;
                   return;
                 }
                 p.operand = std::move(*operand);
               } else if (key == "in") {
                 p.op = PredicateOp::in;
                 auto list = r.elements(value);
                 if (!list) {
                   ok = false;
                   return;
                 }
                 if (list->empty()) {
                   r.error(value, "expected at least one value (an empty list matches nothing)");
                   ok = false;
                   return;
                 }
                 p.operand = nlohmann::json::array();
                 for (const auto& element : *list) {
                   auto operand = text_values ? text_operand(r, element) : r.json(element);
                   if (!operand) {
                     ok = false;
                     return;
                   }
                   p.operand.push_back(std::move(*operand));
                 }
               } else if (key == "glob" || key == "regex") {
                 auto s = r.string(value);
                 if (!s) {
                   ok = false;
                   return;
                 }
                 if (key == "glob") {
                   p.op = PredicateOp::glob;
                   std::string why;
                   p.glob = policy::Glob::compile(*s, policy::Glob::Kind::text, &why);
                   if (!p.glob) {
                     r.error(value, "invalid glob \"" + *s + "\": " + why);
                   }
                 } else {
                   p.op = PredicateOp::regex;
                   p.regex = compile_regex(r, value, *s);
                 }
                 if (!p.glob && !p.regex) {
                   ok = false;
                   return;
                 }
                 p.operand = *s;
               } else if (key == "exists") {
                 p.op = PredicateOp::exists;
                 auto b = r.boolean(value);
                 if (!b) {
                   ok = false;
                   return;
                 }
                 p.operand = *b;
               } else {
                 p.op = key == "lt"    ? PredicateOp::lt
                        : key == "lte" ? PredicateOp::lte
                        : key == "gt"  ? PredicateOp::gt
                                       : PredicateOp::gte;
                 auto operand = value.node.IsScalar() ? r.json(value) : std::nullopt;
                 if (value.node.IsScalar() && !operand) {
                   ok = false;
                   return;
                 }
                 if (!operand || !operand->is_number()) {
                   r.error(value, key + " needs a number, got " +
                                      (operand ? "\"" + value.node.Scalar() + "\""
                                               : std::string("a non-scalar value")));
                   ok = false;
                   return;
                 }
                 p.operand = std::move(*operand);
               }
               out.push_back(std::move(p));
             });
  if (!ok) {
    return std::nullopt;
  }
  if (out.empty()) {
    r.error(f, "expected at least one predicate: eq, in, glob, regex, lt, lte, gt, gte or exists");
    return std::nullopt;
  }
  return out;
}

std::shared_ptr<policy::Catalogue> load_catalogue(const std::filesystem::path& file,
                                                  std::string display, Diagnostics& diag,
                                                  const policy::SourceMark* from,
                                                  std::string_view from_path) {
  auto reader = YamlReader::open(file, std::move(display), diag, from, from_path);
  if (!reader) {
    return nullptr;
  }
  const YamlReader& r = *reader;
  auto catalogue = std::make_shared<policy::Catalogue>();
  catalogue->file = r.file();
  r.for_each(r.root(), {"actions"},
             [&](const std::string&, const YAML::Mark&, const Field& actions) {
               r.for_each_any(actions, [&](const std::string& name, const YAML::Mark& name_mark,
                                           const Field& value) {
                 if (!is_action_name(name)) {
                   r.error(name_mark, value.path,
                           "invalid action name \"" + name +
                               "\": use letters, digits, '_', '-', '.' or ':'");
                   return;
                 }
                 auto list = r.elements(value);
                 if (!list) {
                   return;
                 }
                 if (list->empty()) {
                   r.error(value, "action \"" + name + "\" needs at least one matcher");
                   return;
                 }
                 policy::Action action;
                 action.name = name;
                 action.mark = r.mark(name_mark);
                 bool ok = true;
                 for (const auto& element : *list) {
                   auto matcher = parse_matcher(r, element);
                   if (matcher) {
                     action.matchers.push_back(std::move(*matcher));
                   } else {
                     ok = false;
                   }
                 }
                 if (ok) {
                   catalogue->actions.emplace(name, std::move(action));
                 } else {
                   // Keep the name known so runbooks that list it do not add a second,
                   // misleading "unknown action" error; diag already holds the real one.
                   catalogue->actions.emplace(name, policy::Action{name, {}, r.mark(name_mark)});
                 }
               });
             });
  r.require(r.root(), "actions");
  return catalogue;
}

} // namespace runwarden::config

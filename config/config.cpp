#include "config/config.hpp"

#include "config/catalogue_loader.hpp"
#include "config/diagnostics.hpp"
#include "config/runbook_loader.hpp"
#include "config/yaml_reader.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cctype>
#include <charconv>
#include <map>
#include <set>
#include <utility>

namespace runwarden::config {
namespace {

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) {
    if (!out.empty()) {
      out.push_back('\n');
    }
    out += l;
  }
  return out;
}

bool is_ipv4(const std::string& s) {
  in_addr a{};
  return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool is_ipv6(const std::string& s) {
  in6_addr a{};
  return inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

/// "127.0.0.1:15001" or "[::1]:15001". Port 0 asks the OS for a free port (tests).
std::optional<Endpoint> parse_endpoint(std::string_view text, std::string& why) {
  std::string host;
  std::string_view port_text;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      why = "expected [IPv6]:port, e.g. [::1]:15001";
      return std::nullopt;
    }
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
    if (!is_ipv6(host)) {
      why = "\"" + host + "\" is not an IPv6 address";
      return std::nullopt;
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      why = "expected host:port, e.g. 127.0.0.1:15001";
      return std::nullopt;
    }
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      why = "an IPv6 address must be in brackets, e.g. [::1]:15001";
      return std::nullopt;
    }
    if (!is_ipv4(host)) {
      why = "\"" + host +
            "\" is not an IP address (listen addresses are literal, e.g. 127.0.0.1 or [::1]; "
            "host names are not resolved)";
      return std::nullopt;
    }
  }
  unsigned port = 0;
  const auto res = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || res.ec != std::errc{} ||
      res.ptr != port_text.data() + port_text.size() || port > 65535) {
    why = "port \"" + std::string(port_text) + "\" is not a number from 0 to 65535";
    return std::nullopt;
  }
  return Endpoint{host, static_cast<std::uint16_t>(port)};
}

bool is_env_name(std::string_view s) {
  return !s.empty() && (std::isdigit(static_cast<unsigned char>(s[0])) == 0) &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
         });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  return s;
}

class ConfigParser {
public:
  ConfigParser(const YamlReader& r, Config& c) : r_(r), c_(c) {}

  void parse() {
    r_.for_each(r_.root(),
                {"listen", "agent", "catalogue", "runbooks", "active_runbook",
                 "selectable_runbooks", "tls", "approvals", "audit", "redaction", "limits",
                 "kill_switch_file", "threads"},
                [&](const std::string& key, const YAML::Mark&, const Field& v) {
                  if (key == "listen") {
                    listen(v);
                  } else if (key == "agent") {
                    agent(v);
                  } else if (key == "catalogue") {
                    if (auto p = r_.path(v)) {
                      c_.catalogue_file = *p;
                      catalogue_field.emplace(v);
                    }
                  } else if (key == "runbooks") {
                    runbooks(v);
                  } else if (key == "active_runbook") {
                    if (auto s = r_.string(v)) {
                      c_.active_runbook = *s;
                      active_field.emplace(v);
                    }
                  } else if (key == "selectable_runbooks") {
                    if (auto list = r_.elements(v)) {
                      for (const auto& element : *list) {
                        if (auto s = r_.string(element)) {
                          c_.selectable_runbooks.push_back(*s);
                          selectable_fields.push_back(element);
                        }
                      }
                    }
                  } else if (key == "tls") {
                    tls(v);
                  } else if (key == "approvals") {
                    approvals(v);
                  } else if (key == "audit") {
                    audit(v);
                  } else if (key == "redaction") {
                    redaction(v);
                  } else if (key == "limits") {
                    limits(v);
                  } else if (key == "kill_switch_file") {
                    c_.kill_switch_file = r_.path(v).value_or("");
                  } else if (key == "threads") {
                    c_.threads = static_cast<unsigned>(r_.integer(v, 0, 1024).value_or(0));
                  }
                });
    for (const auto* key : {"listen", "catalogue", "runbooks", "active_runbook"}) {
      r_.require(r_.root(), key);
    }
    const YAML::Node& root = r_.root().node;
    if (!root["audit"]) {
      c_.audit.path = (c_.file.parent_path() / "audit" / "audit.jsonl").lexically_normal();
    }
  }

  std::optional<Field> catalogue_field;
  std::optional<Field> active_field;
  std::vector<Field> selectable_fields;
  /// Each runbook file to load, and the key that named it.
  std::vector<std::pair<std::filesystem::path, Field>> runbook_files;

private:
  void endpoint(const Field& v, Endpoint& out) {
    auto s = r_.string(v);
    if (!s) {
      return;
    }
    std::string why;
    if (auto e = parse_endpoint(*s, why)) {
      out = *e;
    } else {
      r_.error(v, "invalid listen address \"" + *s + "\": " + why);
    }
  }

  /// `agent: {id, runs}`; `runs` says what a call without Runwarden-Run belongs to.
  void agent(const Field& v) {
    r_.for_each(v, {"id", "runs"}, [&](const std::string& key, const YAML::Mark&, const Field& f) {
      if (key == "id") {
        c_.agent_id = r_.string(f).value_or("");
        return;
      }
      auto s = r_.string(f);
      if (!s) {
        return;
      }
      if (*s == "per_connection") {
        c_.run_ids = RunIds::per_connection;
      } else if (*s == "shared") {
        c_.run_ids = RunIds::shared;
      } else if (*s == "required") {
        c_.run_ids = RunIds::required;
      } else {
        r_.error(f, "agent.runs must be per_connection, shared or required, not \"" + *s + "\"");
      }
    });
    r_.require(v, "id");
  }

  void listen(const Field& f) {
    std::optional<Field> admin;
    std::optional<Field> transparent_field;
    r_.for_each(f, {"proxy", "transparent", "admin"},
                [&](const std::string& key, const YAML::Mark&, const Field& v) {
                  if (key == "proxy") {
                    endpoint(v, c_.listen.proxy);
                  } else if (key == "admin") {
                    endpoint(v, c_.listen.admin);
                    admin = v;
                  } else {
                    transparent(v);
                    transparent_field = v;
                  }
                });
    r_.require(f, "proxy");
    r_.require(f, "admin");
    // Listeners that would take each other's connections: an error here, not a bind
    // failure (or an agent reaching the admin API) at start-up.
    if (auto reason = overlap(c_.listen.proxy, c_.listen.admin); reason && admin) {
      r_.error(*admin, c_.listen.admin.to_string() + " overlaps listen.proxy " +
                           c_.listen.proxy.to_string() + ": " + *reason);
    }
    for (const auto& t : c_.listen.transparent) {
      for (const auto* other : {&c_.listen.proxy, &c_.listen.admin}) {
        if (auto reason = overlap(t, *other); reason && transparent_field) {
          r_.error(*transparent_field, t.to_string() + " overlaps listen." +
                                           (other == &c_.listen.proxy ? "proxy " : "admin ") +
                                           other->to_string() + ": " + *reason);
        }
      }
    }
  }

  /// listen.transparent: "127.0.0.1:15006" or a list of such endpoints. Two endpoints that
  /// would take the same connections (the same address, or a wildcard covering the other on
  /// the same port) are an error here rather than EADDRINUSE at start-up.
  void transparent(const Field& f) {
    if (f.node.IsMap()) {
      r_.error(f, "expected an endpoint or a list of endpoints; an unquoted [IPv6]:port reads "
                  "as YAML, quote it: \"[::1]:15006\"");
      return;
    }
    auto list = r_.one_or_many(f);
    if (!list) {
      return;
    }
    for (const auto& element : *list) {
      if (!element.node.IsScalar()) {
        r_.error(element, "expected an endpoint such as 127.0.0.1:15006; quote IPv6 ones: "
                          "\"[::1]:15006\"");
        continue;
      }
      std::string why;
      auto s = r_.string(element);
      if (!s) {
        continue;
      }
      auto parsed = parse_endpoint(*s, why);
      if (!parsed) {
        r_.error(element, "invalid listen address \"" + *s + "\": " + why);
        continue;
      }
      bool clash = false;
      for (const auto& earlier : c_.listen.transparent) {
        if (auto reason = overlap(earlier, *parsed)) {
          r_.error(element,
                   parsed->to_string() + " overlaps " + earlier.to_string() + ": " + *reason);
          clash = true;
          break;
        }
      }
      if (!clash) {
        c_.listen.transparent.push_back(*parsed);
      }
    }
  }

  /// Why two listen endpoints would receive the same connections, if they would.
  static std::optional<std::string> overlap(const Endpoint& a, const Endpoint& b) {
    if (a.port != b.port || a.port == 0) {
      return std::nullopt; // port 0: each gets its own free port
    }
    auto bytes = [](const Endpoint& e) {
      std::array<unsigned char, 16> out{};
      bool v6 = e.host.find(':') != std::string::npos;
      inet_pton(v6 ? AF_INET6 : AF_INET, e.host.c_str(), out.data());
      return std::pair{v6, out};
    };
    auto [a6, ab] = bytes(a);
    auto [b6, bb] = bytes(b);
    if (a6 == b6 && ab == bb) {
      return "the same endpoint twice";
    }
    const std::array<unsigned char, 16> zero{};
    if ((a6 && ab == zero) || (b6 && bb == zero)) {
      return "[::] is dual-stack and already receives every IPv4 and IPv6 connection on that "
             "port; list it alone or list specific addresses";
    }
    if ((!a6 && !b6) && (ab == zero || bb == zero)) {
      return "0.0.0.0 already receives every IPv4 connection on that port";
    }
    return std::nullopt;
  }

  void runbooks(const Field& f) {
    auto list = r_.one_or_many(f);
    if (!list) {
      return;
    }
    for (const auto& element : *list) {
      auto p = r_.path(element);
      if (!p) {
        continue;
      }
      c_.runbook_paths.push_back(*p);
      std::error_code ec;
      if (!std::filesystem::is_directory(*p, ec)) {
        runbook_files.emplace_back(*p, element); // a missing file is reported when loaded
        continue;
      }
      std::vector<std::filesystem::path> found;
      for (const auto& entry : std::filesystem::directory_iterator(*p, ec)) {
        const auto ext = entry.path().extension();
        if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml")) {
          found.push_back(entry.path().lexically_normal());
        }
      }
      if (ec) {
        r_.error(element, "cannot list folder \"" + p->string() + "\": " + ec.message());
        continue;
      }
      if (found.empty()) {
        r_.error(element, "folder \"" + p->string() + "\" holds no *.yaml or *.yml runbook");
        continue;
      }
      std::sort(found.begin(), found.end());
      for (auto& file : found) {
        runbook_files.emplace_back(std::move(file), element);
      }
    }
  }

  void tls(const Field& f) {
    r_.for_each(f, {"ca_cert", "ca_key", "upstream_trust", "passthrough"},
                [&](const std::string& key, const YAML::Mark&, const Field& v) {
                  if (key == "ca_cert") {
                    c_.tls.ca_cert = r_.path(v).value_or("");
                  } else if (key == "ca_key") {
                    c_.tls.ca_key = r_.path(v).value_or("");
                  } else if (key == "upstream_trust") {
                    auto s = r_.string(v);
                    if (s && *s != "system") {
                      c_.tls.upstream_trust = r_.path(v).value_or(std::filesystem::path{}).string();
                    }
                  } else if (key == "passthrough") {
                    if (v.node.IsNull()) {
                      return;
                    }
                    if (auto list = r_.elements(v)) {
                      for (const auto& element : *list) {
                        auto s = r_.string(element);
                        if (!s) {
                          continue;
                        }
                        std::string why;
                        if (auto h = policy::HostPattern::parse(*s, &why)) {
                          c_.tls.passthrough.push_back(std::move(*h));
                        } else {
                          r_.error(element, "invalid host pattern \"" + *s + "\": " + why);
                        }
                      }
                    }
                  }
                });
    const YAML::Node& node = f.node;
    if (node.IsMap() && (node["ca_cert"] || node["ca_key"])) {
      r_.require(f, "ca_cert");
      r_.require(f, "ca_key");
    }
  }

  void approvals(const Field& f) {
    auto& a = c_.approvals;
    r_.for_each(
        f, {"hold_timeout", "on_timeout", "max_pending", "webhooks", "operator_tokens_file"},
        [&](const std::string& key, const YAML::Mark&, const Field& v) {
          if (key == "hold_timeout") {
            a.hold_timeout = r_.duration(v).value_or(a.hold_timeout);
          } else if (key == "on_timeout") {
            auto s = r_.string(v);
            if (s && *s != "deny") {
              r_.error(v, "on_timeout must be \"deny\" (a hold that times out is never "
                          "forwarded), got \"" +
                              *s + "\"");
            }
          } else if (key == "max_pending") {
            a.max_pending = static_cast<std::size_t>(
                r_.integer(v, 1, 10'000'000).value_or(static_cast<std::int64_t>(a.max_pending)));
          } else if (key == "webhooks") {
            webhooks(v);
          } else if (key == "operator_tokens_file") {
            a.operator_tokens_file = r_.path(v).value_or("");
          }
        });
  }

  void webhooks(const Field& f) {
    auto list = r_.elements(f);
    if (!list) {
      return;
    }
    for (const auto& element : *list) {
      Webhook w;
      r_.for_each(element, {"url", "secret_env"},
                  [&](const std::string& key, const YAML::Mark&, const Field& v) {
                    auto s = r_.string(v);
                    if (!s) {
                      return;
                    }
                    if (key == "url") {
                      if (!s->starts_with("https://") && !s->starts_with("http://")) {
                        r_.error(v, "webhook url must start with https:// or http://, got \"" + *s +
                                        "\"");
                        return;
                      }
                      w.url = *s;
                    } else if (!is_env_name(*s)) {
                      r_.error(v, "\"" + *s +
                                      "\" is not an environment variable name (the secret "
                                      "itself never goes in the config)");
                    } else {
                      w.secret_env = *s;
                    }
                  });
      const bool has_url = r_.require(element, "url");
      const bool has_secret = r_.require(element, "secret_env");
      if (has_url && has_secret) {
        c_.approvals.webhooks.push_back(std::move(w));
      }
    }
  }

  void audit(const Field& f) {
    auto& a = c_.audit;
    r_.for_each(f,
                {"path", "fsync", "body_bytes", "rotate_bytes", "signing_key", "checkpoint_records",
                 "checkpoint_interval"},
                [&](const std::string& key, const YAML::Mark&, const Field& v) {
                  if (key == "path") {
                    a.path = r_.path(v).value_or("");
                  } else if (key == "fsync") {
                    if (v.node.IsScalar() && v.node.Scalar() == "always") {
                      a.fsync_always = true;
                    } else if (auto d = r_.duration(v)) {
                      a.fsync_always = false;
                      a.fsync_interval = *d;
                    }
                  } else if (key == "body_bytes") {
                    a.body_bytes = r_.size(v).value_or(a.body_bytes);
                  } else if (key == "rotate_bytes") {
                    a.rotate_bytes = r_.size(v).value_or(a.rotate_bytes);
                  } else if (key == "signing_key") {
                    a.signing_key = r_.path(v).value_or("");
                  } else if (key == "checkpoint_records") {
                    a.checkpoint_records = static_cast<std::uint64_t>(
                        r_.integer(v, 1, 1'000'000'000)
                            .value_or(static_cast<std::int64_t>(a.checkpoint_records)));
                  } else if (key == "checkpoint_interval") {
                    a.checkpoint_interval = r_.duration(v).value_or(a.checkpoint_interval);
                  }
                });
    r_.require(f, "path");
  }

  void redaction(const Field& f) {
    auto& red = c_.redaction;
    r_.for_each(f, {"headers", "json_keys", "patterns"},
                [&](const std::string& key, const YAML::Mark&, const Field& v) {
                  auto list = r_.elements(v);
                  if (!list) {
                    return;
                  }
                  for (const auto& element : *list) {
                    auto s = r_.string(element);
                    if (!s) {
                      continue;
                    }
                    if (s->empty()) {
                      r_.error(element, "expected a non-empty string");
                    } else if (key == "headers") {
                      red.headers.push_back(lower(*s));
                    } else if (key == "json_keys") {
                      red.json_keys.push_back(lower(*s));
                    } else if (compile_regex(r_, element, *s)) {
                      red.patterns.push_back(*s);
                    }
                  }
                });
  }

  void limits(const Field& f) {
    auto& l = c_.limits;
    r_.for_each(f,
                {"header_bytes", "header_count", "inspect_body_bytes", "header_timeout",
                 "idle_timeout", "upstream_connect_timeout", "upstream_response_timeout",
                 "max_connections", "max_json_depth"},
                [&](const std::string& key, const YAML::Mark&, const Field& v) {
                  const auto count = [&](std::size_t current, std::int64_t max) {
                    return static_cast<std::size_t>(
                        r_.integer(v, 1, max).value_or(static_cast<std::int64_t>(current)));
                  };
                  if (key == "header_bytes") {
                    l.header_bytes = r_.size(v).value_or(l.header_bytes);
                  } else if (key == "inspect_body_bytes") {
                    l.inspect_body_bytes = r_.size(v).value_or(l.inspect_body_bytes);
                  } else if (key == "header_count") {
                    l.header_count = count(l.header_count, 100'000);
                  } else if (key == "max_connections") {
                    l.max_connections = count(l.max_connections, 10'000'000);
                  } else if (key == "max_json_depth") {
                    l.max_json_depth = count(l.max_json_depth, 10'000);
                  } else if (key == "header_timeout") {
                    l.header_timeout = r_.duration(v).value_or(l.header_timeout);
                  } else if (key == "idle_timeout") {
                    l.idle_timeout = r_.duration(v).value_or(l.idle_timeout);
                  } else if (key == "upstream_connect_timeout") {
                    l.upstream_connect_timeout =
                        r_.duration(v).value_or(l.upstream_connect_timeout);
                  } else if (key == "upstream_response_timeout") {
                    l.upstream_response_timeout =
                        r_.duration(v).value_or(l.upstream_response_timeout);
                  }
                });
  }

  const YamlReader& r_;
  Config& c_;
};

} // namespace

std::string Endpoint::to_string() const {
  if (host.find(':') != std::string::npos) {
    return "[" + host + "]:" + std::to_string(port);
  }
  return host + ":" + std::to_string(port);
}

ConfigError::ConfigError(std::vector<std::string> errors)
    : std::runtime_error(join_lines(errors)), errors_(std::move(errors)) {}

std::shared_ptr<const Config> load_config(const std::filesystem::path& file) {
  Diagnostics diag;
  auto config = std::make_shared<Config>();
  config->file = file;
  auto reader = YamlReader::open(file, file.string(), diag);
  if (!reader) {
    throw ConfigError(diag.take());
  }
  ConfigParser parser(*reader, *config);
  parser.parse();

  std::shared_ptr<policy::Catalogue> catalogue;
  if (parser.catalogue_field) {
    const auto from = reader->mark(parser.catalogue_field->mark);
    catalogue = load_catalogue(config->catalogue_file, config->catalogue_file.string(), diag, &from,
                               parser.catalogue_field->path);
  }
  // Runbooks are loaded even without a catalogue so that their own errors show.
  std::map<std::string, const policy::Runbook*, std::less<>> by_name;
  bool runbooks_complete = true; // false when a file gave no runbook: its name is unknown
  for (const auto& [path, field] : parser.runbook_files) {
    const auto from = reader->mark(field.mark);
    auto rb = load_runbook(path, path.string(), catalogue.get(), diag, &from, field.path);
    if (!rb) {
      runbooks_complete = false;
      continue;
    }
    const auto [it, inserted] = by_name.emplace(rb->name, rb.get());
    if (!inserted) {
      diag.error(rb->mark, "runbook",
                 "runbook \"" + rb->name + "\" is already defined in " + it->second->file + ":" +
                     std::to_string(it->second->mark.line) + ":" +
                     std::to_string(it->second->mark.col));
      continue;
    }
    config->runbooks.push_back(std::move(rb));
  }

  const auto known_runbooks = [&] {
    std::vector<std::string> names;
    for (const auto& [name, rb] : by_name) {
      names.push_back(name);
    }
    return names;
  };
  const auto check_runbook_exists = [&](const Field& f, const std::string& name) {
    if (by_name.count(name) != 0) {
      return;
    }
    std::string msg = "no runbook named \"" + name + "\"";
    const auto names = known_runbooks();
    const std::string hint = closest_key(name, names);
    if (!hint.empty()) {
      msg += " (did you mean \"" + hint + "\"?)";
    } else if (!names.empty()) {
      std::string all;
      for (const auto& n : names) {
        all += (all.empty() ? "" : ", ") + n;
      }
      msg += "; loaded: " + all;
    }
    reader->error(f, msg);
  };
  // Only meaningful when every runbook file gave a name; otherwise it may be in the broken one.
  if (parser.active_field && runbooks_complete) {
    check_runbook_exists(*parser.active_field, config->active_runbook);
  }
  for (std::size_t i = 0; runbooks_complete && i < parser.selectable_fields.size(); ++i) {
    check_runbook_exists(parser.selectable_fields[i], config->selectable_runbooks[i]);
  }

  if (!diag.empty()) {
    throw ConfigError(diag.take());
  }
  config->catalogue = catalogue;
  policy::EngineLimits limits;
  limits.max_json_depth = config->limits.max_json_depth;
  limits.inspect_body_bytes = config->limits.inspect_body_bytes;
  try {
    config->engine =
        std::make_shared<const policy::Engine>(config->catalogue, config->runbooks, limits);
  } catch (const std::exception& e) {
    throw ConfigError(
        {file.string() + ":1:1: policy: cannot build the decision engine: " + e.what()});
  }
  return config;
}

std::vector<std::string> serve_requirements(const Config& config) {
  std::vector<std::string> out;
  for (const auto& [key, path] : {std::pair<std::string_view, const std::filesystem::path*>{
                                      "tls.ca_cert", &config.tls.ca_cert},
                                  {"tls.ca_key", &config.tls.ca_key}}) {
    if (path->empty()) {
      out.push_back(config.file.string() + ": " + std::string(key) +
                    ": not set; `serve` intercepts TLS with this CA and does not start without "
                    "it (set tls.ca_cert and tls.ca_key; `runwarden ca init DIR` creates "
                    "DIR/ca.pem and DIR/ca.key)");
    }
  }
  return out;
}

} // namespace runwarden::config

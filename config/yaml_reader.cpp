#include "config/yaml_reader.hpp"

#include "config/units.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>

namespace runwarden::config {
namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1);
  std::vector<std::size_t> cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    prev[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

template <typename Range> std::string closest_in(std::string_view key, const Range& known) {
  const std::size_t limit = std::max<std::size_t>(1, std::min<std::size_t>(3, key.size() / 3));
  std::string best;
  std::size_t best_d = limit + 1;
  for (const auto& k : known) {
    const std::size_t d = edit_distance(key, k);
    if (d < best_d) {
      best_d = d;
      best = std::string(k);
    }
  }
  return best;
}

bool is_plain_key(std::string_view key) {
  if (key.empty()) {
    return false;
  }
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::string type_name(const YAML::Node& n) {
  switch (n.Type()) {
  case YAML::NodeType::Map:
    return "a map";
  case YAML::NodeType::Sequence:
    return "a list";
  case YAML::NodeType::Null:
  case YAML::NodeType::Undefined:
    return "nothing";
  case YAML::NodeType::Scalar:
    break;
  }
  return "a scalar";
}

std::string json_type_name(const nlohmann::json& j) {
  if (j.is_string()) {
    return "a string";
  }
  if (j.is_boolean()) {
    return "a boolean";
  }
  if (j.is_number()) {
    return "a number";
  }
  if (j.is_null()) {
    return "null";
  }
  if (j.is_array()) {
    return "a list";
  }
  return "a map";
}

bool all_of_chars(std::string_view s, bool (*pred)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}

bool is_dec(char c) {
  return c >= '0' && c <= '9';
}
bool is_oct(char c) {
  return c >= '0' && c <= '7';
}
bool is_hex(char c) {
  return is_dec(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/// YAML 1.2 core schema float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool is_core_float(std::string_view s) {
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
    ++i;
  }
  std::size_t int_digits = 0;
  while (i < s.size() && is_dec(s[i])) {
    ++i;
    ++int_digits;
  }
  std::size_t frac_digits = 0;
  bool dot = false;
  if (i < s.size() && s[i] == '.') {
    dot = true;
    ++i;
    while (i < s.size() && is_dec(s[i])) {
      ++i;
      ++frac_digits;
    }
  }
  if (int_digits == 0 && frac_digits == 0) {
    return false;
  }
  if (int_digits == 0 && !dot) {
    return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
      ++i;
    }
    std::size_t exp_digits = 0;
    while (i < s.size() && is_dec(s[i])) {
      ++i;
      ++exp_digits;
    }
    if (exp_digits == 0) {
      return false;
    }
  }
  return i == s.size();
}

enum class Resolved { null, boolean, integer, floating, string };

Resolved resolve_plain(std::string_view s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") {
    return Resolved::null;
  }
  if (s == "true" || s == "True" || s == "TRUE" || s == "false" || s == "False" || s == "FALSE") {
    return Resolved::boolean;
  }
  std::string_view digits = s;
  if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
    digits.remove_prefix(1);
  }
  if (all_of_chars(digits, is_dec)) {
    return Resolved::integer;
  }
  if ((s.starts_with("0o") && all_of_chars(s.substr(2), is_oct)) ||
      (s.starts_with("0x") && all_of_chars(s.substr(2), is_hex))) {
    return Resolved::integer;
  }
  const std::string_view special = s.substr(s.starts_with('-') || s.starts_with('+') ? 1 : 0);
  if (special == ".inf" || special == ".Inf" || special == ".INF" || s == ".nan" || s == ".NaN" ||
      s == ".NAN" || is_core_float(s)) {
    return Resolved::floating;
  }
  return Resolved::string;
}

} // namespace

std::string closest_key(std::string_view key, std::initializer_list<std::string_view> known) {
  return closest_in(key, known);
}

std::string closest_key(std::string_view key, const std::vector<std::string>& known) {
  return closest_in(key, known);
}

std::string child_path(const std::string& path, std::string_view key) {
  if (is_plain_key(key)) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  return path + "[" + nlohmann::json(std::string(key)).dump() + "]";
}

std::optional<YamlReader> YamlReader::open(const std::filesystem::path& file, std::string display,
                                           Diagnostics& diag, const policy::SourceMark* from,
                                           std::string_view from_path) {
  const auto io_error = [&](const std::string& why) -> std::optional<YamlReader> {
    const std::string msg = "cannot read \"" + display + "\": " + why;
    if (from != nullptr) {
      diag.error(*from, from_path, msg);
    } else {
      diag.error(display, 1, 1, "", msg);
    }
    return std::nullopt;
  };
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  if (ec || !std::filesystem::exists(status)) {
    return io_error("no such file");
  }
  if (std::filesystem::is_directory(status)) {
    return io_error("is a directory");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return io_error(std::strerror(errno));
  }
  YamlReader r;
  std::array<char, 64 * 1024> buf{};
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
    r.bytes_.append(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) {
    return io_error(std::strerror(errno));
  }
  r.file_ = std::move(display);
  r.dir_ = file.parent_path();
  r.diag_ = &diag;
  try {
    const auto docs = YAML::LoadAll(r.bytes_);
    if (docs.size() > 1) {
      diag.error(r.file_, 1, 1, "", "only one YAML document per file is accepted");
      return std::nullopt;
    }
    r.root_ = docs.empty() ? YAML::Node() : docs.front();
  } catch (const YAML::Exception& e) {
    const int line = e.mark.is_null() ? 1 : e.mark.line + 1;
    const int col = e.mark.is_null() ? 1 : e.mark.column + 1;
    diag.error(r.file_, line, col, "", "YAML syntax error: " + e.msg);
    return std::nullopt;
  }
  if (!r.root_.IsMap()) {
    diag.error(r.file_, 1, 1, "",
               "expected a map at the top of the file, got " + type_name(r.root_));
    return std::nullopt;
  }
  r.check_duplicates(r.root_, "");
  return r;
}

Field YamlReader::root() const {
  return Field{root_, root_.Mark(), ""};
}

policy::SourceMark YamlReader::mark(const YAML::Mark& m) const {
  if (m.is_null()) {
    return policy::SourceMark{file_, 1, 1};
  }
  return policy::SourceMark{file_, m.line + 1, m.column + 1};
}

void YamlReader::error(const YAML::Mark& m, std::string_view path, std::string_view message) const {
  diag_->error(mark(m), path, message);
}

void YamlReader::check_duplicates(const YAML::Node& node, const std::string& path) const {
  if (node.IsSequence()) {
    std::size_t i = 0;
    for (const auto& element : node) {
      check_duplicates(element, path + "[" + std::to_string(i) + "]");
      ++i;
    }
    return;
  }
  if (!node.IsMap()) {
    return;
  }
  std::map<std::string, int, std::less<>> seen; // key -> 1-based line of its first use
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      error(kv.first.Mark(), path, "keys must be plain strings, got " + type_name(kv.first));
      continue;
    }
    const std::string& key = kv.first.Scalar();
    const std::string p = child_path(path, key);
    const auto [it, inserted] = seen.emplace(key, kv.first.Mark().line + 1);
    if (!inserted) {
      error(kv.first.Mark(), p,
            "duplicate key \"" + key + "\" (first defined at line " + std::to_string(it->second) +
                ")");
      continue;
    }
    check_duplicates(kv.second, p);
  }
}

bool YamlReader::for_each(const Field& map, std::initializer_list<std::string_view> known,
                          const KeyFn& fn) const {
  if (!map.node.IsMap()) {
    error(map, "expected a map, got " + type_name(map.node));
    return false;
  }
  std::set<std::string, std::less<>> seen;
  for (const auto& kv : map.node) {
    if (!kv.first.IsScalar()) {
      continue; // reported by check_duplicates
    }
    const std::string& key = kv.first.Scalar();
    if (!seen.insert(key).second) {
      continue; // duplicate: reported by check_duplicates; the first one is used
    }
    const std::string p = child_path(map.path, key);
    if (known.size() != 0 && std::find(known.begin(), known.end(), key) == known.end()) {
      std::string msg = "unknown key \"" + key + "\"";
      const std::string hint = closest_key(key, known);
      if (!hint.empty()) {
        msg += " (did you mean \"" + hint + "\"?)";
      }
      error(kv.first.Mark(), p, msg);
      continue;
    }
    const YAML::Mark value_mark = kv.second.IsNull() ? kv.first.Mark() : kv.second.Mark();
    fn(key, kv.first.Mark(), Field{kv.second, value_mark, p});
  }
  return true;
}

bool YamlReader::for_each_any(const Field& map, const KeyFn& fn) const {
  return for_each(map, {}, fn);
}

bool YamlReader::require(const Field& map, std::string_view key) const {
  const YAML::Node& node = map.node;
  if (node.IsMap() && node[std::string(key)]) {
    return true;
  }
  if (map.node.IsMap()) {
    error(map.mark, child_path(map.path, key), "missing required key \"" + std::string(key) + "\"");
  }
  return false;
}

std::optional<std::vector<Field>> YamlReader::elements(const Field& seq) const {
  if (!seq.node.IsSequence()) {
    error(seq, "expected a list, got " + type_name(seq.node));
    return std::nullopt;
  }
  std::vector<Field> out;
  std::size_t i = 0;
  for (const auto& element : seq.node) {
    const YAML::Mark m = element.IsNull() || element.Mark().is_null() ? seq.mark : element.Mark();
    out.push_back(Field{element, m, seq.path + "[" + std::to_string(i) + "]"});
    ++i;
  }
  return out;
}

std::optional<std::vector<Field>> YamlReader::one_or_many(const Field& f) const {
  if (f.node.IsScalar()) {
    return std::vector<Field>{f};
  }
  if (f.node.IsSequence()) {
    auto list = elements(f);
    if (list && list->empty()) {
      error(f, "expected at least one value");
      return std::nullopt;
    }
    return list;
  }
  error(f, "expected a value or a list of values, got " + type_name(f.node));
  return std::nullopt;
}

std::optional<nlohmann::json> YamlReader::scalar_json(const Field& f) const {
  const std::string& text = f.node.Scalar();
  const std::string& tag = f.node.Tag();
  Resolved kind = Resolved::string;
  if (tag == "!" || tag == "tag:yaml.org,2002:str") {
    return nlohmann::json(text);
  }
  if (tag == "?") {
    kind = resolve_plain(text);
  } else if (tag == "tag:yaml.org,2002:int") {
    kind = Resolved::integer;
  } else if (tag == "tag:yaml.org,2002:float") {
    kind = Resolved::floating;
  } else if (tag == "tag:yaml.org,2002:bool") {
    kind = Resolved::boolean;
  } else if (tag == "tag:yaml.org,2002:null") {
    kind = Resolved::null;
  } else {
    error(f, "unsupported YAML tag \"" + tag + "\"");
    return std::nullopt;
  }
  switch (kind) {
  case Resolved::null:
    return nlohmann::json(nullptr);
  case Resolved::boolean:
    if (text == "true" || text == "True" || text == "TRUE") {
      return nlohmann::json(true);
    }
    if (text == "false" || text == "False" || text == "FALSE") {
      return nlohmann::json(false);
    }
    error(f, "\"" + text + "\" is not a boolean");
    return std::nullopt;
  case Resolved::integer: {
    std::string_view s = text;
    bool negative = false;
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
      negative = s[0] == '-';
      s.remove_prefix(1);
    }
    int base = 10;
    if (s.starts_with("0o")) {
      base = 8;
      s.remove_prefix(2);
    } else if (s.starts_with("0x")) {
      base = 16;
      s.remove_prefix(2);
    }
    std::uint64_t magnitude = 0;
    const auto res = std::from_chars(s.data(), s.data() + s.size(), magnitude, base);
    if (s.empty() || res.ec != std::errc{} || res.ptr != s.data() + s.size()) {
      error(f, "integer \"" + text + "\" is out of range or malformed");
      return std::nullopt;
    }
    if (!negative) {
      return nlohmann::json(magnitude);
    }
    constexpr std::uint64_t min_magnitude = 1ull << 63;
    if (magnitude > min_magnitude) {
      error(f, "integer \"" + text + "\" is out of range");
      return std::nullopt;
    }
    if (magnitude == min_magnitude) {
      return nlohmann::json(std::numeric_limits<std::int64_t>::min());
    }
    return nlohmann::json(-static_cast<std::int64_t>(magnitude));
  }
  case Resolved::floating: {
    double v = 0;
    std::string_view s = text;
    if (s.starts_with('+')) {
      s.remove_prefix(1);
    }
    const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    if (res.ec != std::errc{} || res.ptr != s.data() + s.size() || !std::isfinite(v)) {
      error(f,
            "number \"" + text + "\" cannot be represented in JSON (out of range or not finite)");
      return std::nullopt;
    }
    return nlohmann::json(v);
  }
  case Resolved::string:
    break;
  }
  return nlohmann::json(text);
}

std::optional<nlohmann::json> YamlReader::json(const Field& f) const {
  switch (f.node.Type()) {
  case YAML::NodeType::Null:
  case YAML::NodeType::Undefined:
    return nlohmann::json(nullptr);
  case YAML::NodeType::Scalar:
    return scalar_json(f);
  case YAML::NodeType::Sequence: {
    auto list = elements(f);
    if (!list) {
      return std::nullopt;
    }
    nlohmann::json out = nlohmann::json::array();
    bool ok = true;
    for (const auto& element : *list) {
      auto v = json(element);
      if (v) {
        out.push_back(std::move(*v));
      } else {
        ok = false;
      }
    }
    return ok ? std::optional<nlohmann::json>(std::move(out)) : std::nullopt;
  }
  case YAML::NodeType::Map:
    break;
  }
  nlohmann::json out = nlohmann::json::object();
  bool ok = true;
  for_each_any(f, [&](const std::string& key, const YAML::Mark&, const Field& value) {
    auto v = json(value);
    if (v) {
      out[key] = std::move(*v);
    } else {
      ok = false;
    }
  });
  return ok ? std::optional<nlohmann::json>(std::move(out)) : std::nullopt;
}

std::optional<std::string> YamlReader::string(const Field& f) const {
  if (!f.node.IsScalar()) {
    error(f, "expected a string, got " + type_name(f.node));
    return std::nullopt;
  }
  auto j = scalar_json(f);
  if (!j) {
    return std::nullopt;
  }
  if (!j->is_string()) {
    error(f, "expected a string, got " + json_type_name(*j) + " (quote it if it is meant as text)");
    return std::nullopt;
  }
  return j->get<std::string>();
}

std::optional<std::int64_t> YamlReader::integer(const Field& f, std::int64_t min,
                                                std::int64_t max) const {
  std::optional<nlohmann::json> j;
  if (f.node.IsScalar()) {
    j = scalar_json(f);
    if (!j) {
      return std::nullopt;
    }
  }
  const std::string range = " between " + std::to_string(min) + " and " + std::to_string(max);
  if (!j || !j->is_number_integer()) {
    error(f,
          "expected an integer" + range + ", got " + (j ? json_type_name(*j) : type_name(f.node)));
    return std::nullopt;
  }
  if (j->is_number_unsigned() &&
      j->get<std::uint64_t>() >
          static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    error(f, "expected an integer" + range + ", got " + j->dump());
    return std::nullopt;
  }
  const auto v = j->get<std::int64_t>();
  if (v < min || v > max) {
    error(f, "expected an integer" + range + ", got " + std::to_string(v));
    return std::nullopt;
  }
  return v;
}

std::optional<bool> YamlReader::boolean(const Field& f) const {
  std::optional<nlohmann::json> j;
  if (f.node.IsScalar()) {
    j = scalar_json(f);
    if (!j) {
      return std::nullopt;
    }
  }
  if (!j || !j->is_boolean()) {
    error(f, "expected true or false, got " + (j ? json_type_name(*j) : type_name(f.node)));
    return std::nullopt;
  }
  return j->get<bool>();
}

std::optional<std::chrono::milliseconds> YamlReader::duration(const Field& f) const {
  if (!f.node.IsScalar()) {
    error(f, "expected a duration such as 10s, got " + type_name(f.node));
    return std::nullopt;
  }
  std::string why;
  auto d = parse_duration(f.node.Scalar(), &why);
  if (!d) {
    error(f, why);
  }
  return d;
}

std::optional<std::size_t> YamlReader::size(const Field& f) const {
  if (!f.node.IsScalar()) {
    error(f, "expected a size such as 16KiB, got " + type_name(f.node));
    return std::nullopt;
  }
  std::string why;
  auto s = parse_size(f.node.Scalar(), &why);
  if (!s) {
    error(f, why);
  }
  return s;
}

std::optional<std::filesystem::path> YamlReader::path(const Field& f) const {
  auto s = string(f);
  if (!s) {
    return std::nullopt;
  }
  if (s->empty()) {
    error(f, "expected a file path, got an empty string");
    return std::nullopt;
  }
  std::filesystem::path p(*s);
  if (p.is_relative()) {
    p = dir_ / p;
  }
  return p.lexically_normal();
}

} // namespace runwarden::config

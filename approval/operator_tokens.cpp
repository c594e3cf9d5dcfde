#include "approval/operator_tokens.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace runwarden::approval {

namespace {

bool same_groups(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

std::string join(const std::vector<std::string>& errors) {
  std::string out;
  for (const auto& e : errors) {
    if (!out.empty()) {
      out.push_back('\n');
    }
    out += e;
  }
  return out;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r';
}

/// Parses the optional third field: comma-separated group names, none empty or repeated.
bool parse_groups(std::string_view text, std::vector<std::string>& groups, std::string& error) {
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) {
      comma = text.size();
    }
    const std::string_view g = text.substr(pos, comma - pos);
    if (!valid_principal_name(g)) {
      error = g.empty() ? "empty group name in \"" + std::string(text) + "\""
                        : "group name \"" + std::string(g) + "\" must be 1-128 of [A-Za-z0-9._@-]";
      return false;
    }
    if (std::find(groups.begin(), groups.end(), g) != groups.end()) {
      error = "group \"" + std::string(g) + "\" is listed twice";
      return false;
    }
    groups.emplace_back(g);
    pos = comma + 1;
  }
  return true;
}

// Splits a line into whitespace-separated fields.
std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) {
      ++i;
    }
    const std::size_t start = i;
    while (i < line.size() && !is_space(line[i])) {
      ++i;
    }
    if (i > start) {
      out.push_back(line.substr(start, i - start));
    }
  }
  return out;
}

} // namespace

OperatorTokens::OperatorTokens() : shared_(std::make_shared<Shared>()) {
  shared_->entries = std::make_shared<const Entries>();
}

std::shared_ptr<const OperatorTokens::Entries> OperatorTokens::snapshot() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->entries;
}

void OperatorTokens::replace_with(const OperatorTokens& fresh) {
  auto entries = fresh.snapshot();
  std::lock_guard lock(shared_->mutex);
  shared_->entries = std::move(entries);
}

TokenFileError::TokenFileError(std::vector<std::string> errors)
    : std::runtime_error(join(errors)), errors_(std::move(errors)) {}

OperatorTokens OperatorTokens::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw TokenFileError({path + ": cannot open operator tokens file"});
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::vector<std::string> errors;
  OperatorTokens tokens = parse(text.str(), path, errors);
  if (!errors.empty()) {
    throw TokenFileError(std::move(errors));
  }
  return tokens;
}

OperatorTokens OperatorTokens::parse(std::string_view text, std::string_view file,
                                     std::vector<std::string>& errors) {
  OperatorTokens tokens;
  Entries entries;
  std::vector<std::size_t> lines; // line of each entry, for duplicate messages
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    const std::string_view line = text.substr(pos, end - pos);
    ++line_no;
    pos = end + 1;
    const auto where = std::string(file) + ":" + std::to_string(line_no) + ": ";
    const auto f = fields(line);
    if (f.empty() || f[0].front() == '#') {
      continue;
    }
    if (f.size() != 2 && f.size() != 3) {
      errors.push_back(where + "expected `NAME SHA256HEX [GROUP,...]`, found " +
                       std::to_string(f.size()) + " field(s)");
      continue;
    }
    if (!valid_principal_name(f[0])) {
      errors.push_back(where + "operator name must be 1-128 of [A-Za-z0-9._@-]");
      continue;
    }
    const auto hash = sha256_from_hex(f[1]);
    if (!hash) {
      errors.push_back(where + "token hash must be 64 hex digits (the SHA-256 of the token)");
      continue;
    }
    Principal who{std::string(f[0]), {}};
    if (f.size() == 3) {
      std::string error;
      if (!parse_groups(f[2], who.groups, error)) {
        errors.push_back(where + error);
        continue;
      }
    }
    bool duplicate = false;
    for (std::size_t i = 0; i < entries.size() && !duplicate; ++i) {
      const Entry& e = entries[i];
      const std::string first = " (line " + std::to_string(lines[i]) + ")";
      if (digest_equal(e.hash, *hash)) {
        errors.push_back(where + "the same token hash is already listed for \"" + e.who.name +
                         "\"" + first);
        duplicate = true;
      } else if (e.who.name == who.name && !same_groups(e.who.groups, who.groups)) {
        // Several tokens per operator are fine (rotation); a name must mean one set of groups.
        errors.push_back(where + "operator \"" + who.name + "\" is listed with other groups" +
                         first + "; every token of one operator carries the same groups");
        duplicate = true;
      }
    }
    if (!duplicate) {
      entries.push_back(Entry{std::move(who), *hash});
      lines.push_back(line_no);
    }
  }
  tokens.shared_->entries = std::make_shared<const Entries>(std::move(entries));
  return tokens;
}

std::optional<std::string> OperatorTokens::authenticate(std::string_view token) const {
  auto who = identify(token);
  if (!who) {
    return std::nullopt;
  }
  return std::move(who->name);
}

std::optional<std::string>
OperatorTokens::authenticate_header(std::string_view authorization) const {
  auto who = identify_header(authorization);
  if (!who) {
    return std::nullopt;
  }
  return std::move(who->name);
}

bool OperatorTokens::knows(std::string_view name_or_group) const {
  const auto entries = snapshot();
  return std::any_of(entries->begin(), entries->end(), [name_or_group](const Entry& e) {
    return e.who.name == name_or_group ||
           std::find(e.who.groups.begin(), e.who.groups.end(), name_or_group) != e.who.groups.end();
  });
}

std::optional<Principal> OperatorTokens::identify(std::string_view token) const {
  if (token.empty()) {
    return std::nullopt;
  }
  const Sha256 presented = sha256(token);
  const auto entries = snapshot();
  const Entry* found = nullptr;
  for (const auto& e : *entries) { // no early exit: every entry is compared
    const bool match = digest_equal(e.hash, presented);
    if (match && found == nullptr) {
      found = &e;
    }
  }
  if (found == nullptr) {
    return std::nullopt;
  }
  return found->who;
}

std::optional<Principal> OperatorTokens::identify_header(std::string_view authorization) const {
  constexpr std::string_view scheme = "bearer ";
  if (authorization.size() <= scheme.size()) {
    return std::nullopt;
  }
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    char c = authorization[i];
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
    if (c != scheme[i]) {
      return std::nullopt;
    }
  }
  std::string_view token = authorization.substr(scheme.size());
  while (!token.empty() && token.front() == ' ') {
    token.remove_prefix(1);
  }
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
    token.remove_suffix(1);
  }
  return identify(token);
}

} // namespace runwarden::approval

#include "approval/operator_tokens.hpp"

#include <fstream>
#include <sstream>

namespace runwarden::approval {

namespace {

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

bool valid_name(std::string_view name) {
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == '@';
    if (!ok) {
      return false;
    }
  }
  return !name.empty() && name.size() <= 128;
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
    if (f.size() != 2) {
      errors.push_back(where + "expected `NAME SHA256HEX`, found " + std::to_string(f.size()) +
                       " field(s)");
      continue;
    }
    if (!valid_name(f[0])) {
      errors.push_back(where + "operator name must be 1-128 of [A-Za-z0-9._@-]");
      continue;
    }
    const auto hash = sha256_from_hex(f[1]);
    if (!hash) {
      errors.push_back(where + "token hash must be 64 hex digits (the SHA-256 of the token)");
      continue;
    }
    bool duplicate = false;
    for (const auto& e : tokens.entries_) {
      if (digest_equal(e.hash, *hash)) {
        errors.push_back(where + "the same token hash is already listed for \"" + e.name + "\"");
        duplicate = true;
        break;
      }
    }
    if (!duplicate) {
      tokens.entries_.push_back(Entry{std::string(f[0]), *hash});
    }
  }
  return tokens;
}

std::optional<std::string> OperatorTokens::authenticate(std::string_view token) const {
  if (token.empty()) {
    return std::nullopt;
  }
  const Sha256 presented = sha256(token);
  const Entry* found = nullptr;
  for (const auto& e : entries_) { // no early exit: every entry is compared
    const bool match = digest_equal(e.hash, presented);
    if (match && found == nullptr) {
      found = &e;
    }
  }
  if (found == nullptr) {
    return std::nullopt;
  }
  return found->name;
}

std::optional<std::string>
OperatorTokens::authenticate_header(std::string_view authorization) const {
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
  return authenticate(token);
}

} // namespace runwarden::approval

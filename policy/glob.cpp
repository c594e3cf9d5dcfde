// Glob compilation. Path globs are normalized like request paths first, so
// "/v1/%7euser/*" and "/v1/~user/*" are the same pattern. Semantics:
// '*' matches within one segment; a "**" segment matches zero or more whole
// segments, so "/a/**" matches "/a", "/a/" and "/a/b/c", and "/a/**/z"
// matches "/a/z" and "/a/b/z". Text globs: '*' matches any run of characters.

#include "policy/model.hpp"
#include "policy/normalize.hpp"

#include <re2/re2.h>

namespace runwarden::policy {
namespace {

std::shared_ptr<const re2::RE2> compile_full(const std::string& expr, bool dot_nl,
                                             std::string* error) {
  re2::RE2::Options opts;
  opts.set_log_errors(false);
  opts.set_dot_nl(dot_nl);
  auto re = std::make_shared<const re2::RE2>("^(?:" + expr + ")$", opts);
  if (!re->ok()) {
    if (error != nullptr) {
      *error = "cannot compile glob: " + re->error();
    }
    return nullptr;
  }
  return re;
}

std::string quote(char c) {
  return re2::RE2::QuoteMeta(std::string_view(&c, 1));
}

bool fail(std::string* error, std::string msg) {
  if (error != nullptr) {
    *error = std::move(msg);
  }
  return false;
}

} // namespace

std::optional<Glob> Glob::compile(std::string_view pattern, Kind kind, std::string* error) {
  Glob g;
  g.kind_ = kind;
  g.pattern_ = std::string(pattern);
  if (kind == Kind::text) {
    if (pattern.find('*') == std::string_view::npos) {
      g.fast_ = Fast::exact;
      g.literal_ = g.pattern_;
      return g;
    }
    std::string expr;
    for (char c : pattern) {
      expr += c == '*' ? std::string(".*") : quote(c);
    }
    g.re_ = compile_full(expr, true, error);
    if (!g.re_) {
      return std::nullopt;
    }
    g.fast_ = Fast::regex;
    return g;
  }

  if (pattern.empty() || pattern.front() != '/') {
    fail(error, "path glob must start with '/'");
    return std::nullopt;
  }
  // Validate segments before normalization: dot-segments and partial "**" are mistakes.
  std::size_t pos = 1;
  while (pos <= pattern.size()) {
    std::size_t slash = pattern.find('/', pos);
    std::string_view seg =
        pattern.substr(pos, slash == std::string_view::npos ? pattern.npos : slash - pos);
    if (seg == "." || seg == "..") {
      fail(error, "path glob must not contain '.' or '..' segments");
      return std::nullopt;
    }
    if (seg.find("**") != std::string_view::npos && seg != "**") {
      fail(error, "'**' must be a whole path segment");
      return std::nullopt;
    }
    if (slash == std::string_view::npos) {
      break;
    }
    pos = slash + 1;
  }
  std::string canon;
  if (NormalizeError e = normalize_path(pattern, canon); e != NormalizeError::ok) {
    fail(error, "path glob is not a valid path: " + std::string(to_string(e)));
    return std::nullopt;
  }
  g.pattern_ = canon;
  std::size_t stars = 0;
  for (char c : canon) {
    stars += c == '*' ? 1U : 0U;
  }
  if (stars == 0) {
    g.fast_ = Fast::exact;
    g.literal_ = canon;
    return g;
  }
  if (canon == "/**") {
    g.fast_ = Fast::any;
    return g;
  }
  if (stars == 2 && canon.ends_with("/**")) {
    g.fast_ = Fast::prefix;
    g.literal_ = canon.substr(0, canon.size() - 3);
    return g;
  }
  std::string expr;
  std::string_view rest = std::string_view(canon).substr(1);
  while (true) {
    std::size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    if (seg == "**") {
      expr += "(?:/.*)?";
    } else {
      expr += "/";
      for (char c : seg) {
        expr += c == '*' ? std::string("[^/]*") : quote(c);
      }
    }
    if (slash == std::string_view::npos) {
      break;
    }
    rest = rest.substr(slash + 1);
  }
  g.re_ = compile_full(expr, false, error);
  if (!g.re_) {
    return std::nullopt;
  }
  g.fast_ = Fast::regex;
  return g;
}

bool Glob::matches(std::string_view text) const {
  switch (fast_) {
  case Fast::exact:
    return text == literal_;
  case Fast::any:
    return true;
  case Fast::prefix:
    return text.starts_with(literal_) &&
           (text.size() == literal_.size() || text[literal_.size()] == '/');
  case Fast::regex:
    return re_ && re2::RE2::FullMatch(text, *re_);
  }
  return false;
}

} // namespace runwarden::policy

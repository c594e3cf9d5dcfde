// A strict, single-pass JSON parser (RFC 8259) with selective materialization.

#include "policy/strict_json.hpp"

#include "policy/hex.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <memory>
#include <unordered_set>
#include <vector>

namespace runwarden::policy {
namespace {

using json = nlohmann::json;

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const JsonWant kWhole = [] {
  JsonWant w;
  w.whole = true;
  return w;
}();

class Parser {
public:
  Parser(std::string_view text, std::size_t max_depth)
      : p_(text.data()), begin_(text.data()), end_(text.data() + text.size()),
        max_depth_(max_depth) {}

  StrictJsonResult run(const JsonWant& want) {
    StrictJsonResult r;
    ws();
    json value;
    if (parse_value(&want, &value)) {
      ws();
      if (p_ != end_) {
        fail(JsonError::not_json, "unexpected content after the JSON value");
      }
    }
    r.error = error_;
    r.detail = std::move(detail_);
    if (error_ == JsonError::ok) {
      r.value = std::move(value);
    }
    return r;
  }

private:
  bool fail(JsonError e, std::string_view what) {
    if (error_ == JsonError::ok) {
      error_ = e;
      detail_ = std::string(what) + " at byte " + std::to_string(p_ - begin_);
    }
    return false;
  }

  void ws() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) {
      ++p_;
    }
  }

  // want == nullptr: validate only. Otherwise *out receives the (possibly pruned) value.
  bool parse_value(const JsonWant* want, json* out) {
    if (p_ == end_) {
      return fail(JsonError::not_json, "unexpected end of input");
    }
    switch (*p_) {
    case '{':
      return parse_object(want, out);
    case '[':
      return parse_array(want, out);
    case '"': {
      ++p_;
      if (want == nullptr) {
        return parse_string(nullptr);
      }
      std::string s;
      if (!parse_string(&s)) {
        return false;
      }
      *out = std::move(s);
      return true;
    }
    case 't':
      return literal("true", want ? out : nullptr, json(true));
    case 'f':
      return literal("false", want ? out : nullptr, json(false));
    case 'n':
      return literal("null", want ? out : nullptr, json(nullptr));
    default:
      return parse_number(want ? out : nullptr);
    }
  }

  bool literal(std::string_view word, json* out, json value) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() ||
        std::string_view(p_, word.size()) != word) {
      return fail(JsonError::not_json, "invalid literal");
    }
    p_ += word.size();
    if (out != nullptr) {
      *out = std::move(value);
    }
    return true;
  }

  bool enter() {
    if (++depth_ > max_depth_) {
      return fail(JsonError::too_deep, "nesting deeper than " + std::to_string(max_depth_));
    }
    return true;
  }

  bool parse_object(const JsonWant* want, json* out) {
    if (!enter()) {
      return false;
    }
    ++p_; // '{'
    if (want != nullptr) {
      *out = json::object();
    }
    std::size_t first_key = keys_.size();
    std::unique_ptr<std::unordered_set<std::string_view>> big;
    ws();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      --depth_;
      return true;
    }
    while (true) {
      ws();
      if (p_ == end_ || *p_ != '"') {
        return fail(JsonError::not_json, "expected a string key");
      }
      ++p_;
      std::string_view key;
      if (!parse_key(key)) {
        return false;
      }
      // Duplicate check: linear for small objects, a hash set beyond 16 keys.
      if (big) {
        if (!big->insert(key).second) {
          return fail(JsonError::duplicate_key, "duplicate key \"" + std::string(key) + "\"");
        }
      } else {
        for (std::size_t i = first_key; i < keys_.size(); ++i) {
          if (keys_[i] == key) {
            return fail(JsonError::duplicate_key, "duplicate key \"" + std::string(key) + "\"");
          }
        }
        keys_.push_back(key);
        if (keys_.size() - first_key > 16) {
          big = std::make_unique<std::unordered_set<std::string_view>>(
              keys_.begin() + static_cast<std::ptrdiff_t>(first_key), keys_.end());
        }
      }
      ws();
      if (p_ == end_ || *p_ != ':') {
        return fail(JsonError::not_json, "expected ':'");
      }
      ++p_;
      ws();
      const JsonWant* child = nullptr;
      if (want != nullptr) {
        if (want->whole) {
          child = want;
        } else if (auto it = want->children.find(key); it != want->children.end()) {
          child = &it->second;
        }
      }
      if (child != nullptr) {
        json v;
        if (!parse_value(child, &v)) {
          return false;
        }
        out->get_ref<json::object_t&>().emplace(std::string(key), std::move(v));
      } else if (!parse_value(nullptr, nullptr)) {
        return false;
      }
      ws();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == '}') {
        ++p_;
        break;
      }
      return fail(JsonError::not_json, "expected ',' or '}'");
    }
    keys_.resize(first_key);
    --depth_;
    return true;
  }

  bool parse_array(const JsonWant* want, json* out) {
    if (!enter()) {
      return false;
    }
    ++p_; // '['
    if (want != nullptr) {
      *out = json::array();
    }
    ws();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      --depth_;
      return true;
    }
    std::size_t index = 0;
    while (true) {
      ws();
      const JsonWant* child = nullptr;
      if (want != nullptr) {
        if (want->whole) {
          child = want;
        } else if (!want->children.empty()) {
          if (auto it = want->children.find(std::to_string(index)); it != want->children.end()) {
            child = &it->second;
          }
        }
      }
      // Arrays keep their positions: unwanted elements become null placeholders.
      json v;
      if (!parse_value(child, child ? &v : nullptr)) {
        return false;
      }
      if (want != nullptr) {
        out->get_ref<json::array_t&>().push_back(std::move(v));
      }
      ++index;
      ws();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == ']') {
        ++p_;
        break;
      }
      return fail(JsonError::not_json, "expected ',' or ']'");
    }
    --depth_;
    return true;
  }

  // After the opening quote. Keys without escapes are views into the input.
  bool parse_key(std::string_view& key) {
    const char* start = p_;
    const char* q = p_;
    while (q != end_ && *q != '"' && *q != '\\' && static_cast<unsigned char>(*q) >= 0x20 &&
           static_cast<unsigned char>(*q) < 0x80) {
      ++q;
    }
    if (q != end_ && *q == '"') {
      key = std::string_view(start, static_cast<std::size_t>(q - start));
      p_ = q + 1;
      return true;
    }
    arena_.emplace_back();
    if (!parse_string(&arena_.back())) {
      return false;
    }
    key = arena_.back();
    return true;
  }

  // After the opening quote; consumes the closing quote.
  bool parse_string(std::string* out) {
    while (true) {
      if (p_ == end_) {
        return fail(JsonError::not_json, "unterminated string");
      }
      auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) {
        return fail(JsonError::not_json, "control character in string");
      }
      if (c == '\\') {
        if (!parse_escape(out)) {
          return false;
        }
        continue;
      }
      if (c < 0x80) {
        if (out != nullptr) {
          out->push_back(static_cast<char>(c));
        }
        ++p_;
        continue;
      }
      if (!parse_utf8(out)) {
        return false;
      }
    }
  }

  bool parse_utf8(std::string* out) {
    auto b = [&](std::size_t i) { return static_cast<unsigned char>(p_[i]); };
    auto c = b(0);
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      lo = c == 0xE0 ? 0xA0 : 0x80;
      hi = c == 0xED ? 0x9F : 0xBF; // no encoded surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      lo = c == 0xF0 ? 0x90 : 0x80;
      hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
      return fail(JsonError::invalid_utf8, "invalid UTF-8 lead byte");
    }
    if (static_cast<std::size_t>(end_ - p_) < len) {
      return fail(JsonError::invalid_utf8, "truncated UTF-8 sequence");
    }
    if (b(1) < lo || b(1) > hi) {
      return fail(JsonError::invalid_utf8, "invalid UTF-8 continuation byte");
    }
    for (std::size_t i = 2; i < len; ++i) {
      if (b(i) < 0x80 || b(i) > 0xBF) {
        return fail(JsonError::invalid_utf8, "invalid UTF-8 continuation byte");
      }
    }
    if (out != nullptr) {
      out->append(p_, len);
    }
    p_ += len;
    return true;
  }

  bool read_hex4(std::uint32_t& v) {
    if (end_ - p_ < 4) {
      return fail(JsonError::not_json, "truncated \\u escape");
    }
    v = 0;
    for (int i = 0; i < 4; ++i) {
      int h = hex_value(p_[i]);
      if (h < 0) {
        return fail(JsonError::not_json, "invalid \\u escape");
      }
      v = v * 16 + static_cast<std::uint32_t>(h);
    }
    p_ += 4;
    return true;
  }

  bool parse_escape(std::string* out) {
    ++p_; // backslash
    if (p_ == end_) {
      return fail(JsonError::not_json, "unterminated escape");
    }
    char e = *p_++;
    char plain = 0;
    switch (e) {
    case '"':
      plain = '"';
      break;
    case '\\':
      plain = '\\';
      break;
    case '/':
      plain = '/';
      break;
    case 'b':
      plain = '\b';
      break;
    case 'f':
      plain = '\f';
      break;
    case 'n':
      plain = '\n';
      break;
    case 'r':
      plain = '\r';
      break;
    case 't':
      plain = '\t';
      break;
    case 'u': {
      std::uint32_t cp = 0;
      if (!read_hex4(cp)) {
        return false;
      }
      if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return fail(JsonError::invalid_utf8, "lone low surrogate");
      }
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
          return fail(JsonError::invalid_utf8, "lone high surrogate");
        }
        p_ += 2;
        std::uint32_t low = 0;
        if (!read_hex4(low)) {
          return false;
        }
        if (low < 0xDC00 || low > 0xDFFF) {
          return fail(JsonError::invalid_utf8, "high surrogate not followed by a low surrogate");
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      }
      if (out != nullptr) {
        append_utf8(*out, cp);
      }
      return true;
    }
    default:
      return fail(JsonError::not_json, "invalid escape");
    }
    if (out != nullptr) {
      out->push_back(plain);
    }
    return true;
  }

  bool parse_number(json* out) {
    const char* start = p_;
    auto digit = [&] { return p_ != end_ && *p_ >= '0' && *p_ <= '9'; };
    if (p_ != end_ && *p_ == '-') {
      ++p_;
    }
    if (!digit()) {
      return fail(JsonError::not_json, "invalid value");
    }
    if (*p_ == '0') {
      ++p_;
    } else {
      while (digit()) {
        ++p_;
      }
    }
    bool integral = true;
    if (p_ != end_ && *p_ == '.') {
      integral = false;
      ++p_;
      if (!digit()) {
        return fail(JsonError::not_json, "invalid number");
      }
      while (digit()) {
        ++p_;
      }
    }
    bool has_exp = false;
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      integral = false;
      has_exp = true;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) {
        ++p_;
      }
      if (!digit()) {
        return fail(JsonError::not_json, "invalid number");
      }
      while (digit()) {
        ++p_;
      }
    }
    std::string_view text(start, static_cast<std::size_t>(p_ - start));
    if (out == nullptr && !has_exp && text.size() < 300) {
      return true; // cannot exceed double range
    }
    if (integral) {
      if (text.front() == '-') {
        std::int64_t v = 0;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc() && ptr == text.data() + text.size()) {
          if (out != nullptr) {
            *out = v;
          }
          return true;
        }
      } else {
        std::uint64_t v = 0;
        auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc() && ptr == text.data() + text.size()) {
          if (out != nullptr) {
            *out = v;
          }
          return true;
        }
      }
    }
    // Beyond 64-bit integers, or with a fraction or exponent: a double, which must be finite.
    std::string copy(text);
    char* endp = nullptr;
    double d = std::strtod(copy.c_str(), &endp);
    if (!std::isfinite(d)) {
      return fail(JsonError::number_out_of_range, "number " + copy + " is out of range");
    }
    if (out != nullptr) {
      *out = d;
    }
    return true;
  }

  const char* p_;
  const char* begin_;
  const char* end_;
  std::size_t max_depth_;
  std::size_t depth_ = 0;
  std::vector<std::string_view> keys_; // keys of the open objects, innermost last
  std::deque<std::string> arena_;      // unescaped keys the views point into
  JsonError error_ = JsonError::ok;
  std::string detail_;
};

} // namespace

void JsonWant::add(const std::vector<std::string>& tokens) {
  JsonWant* node = this;
  for (const std::string& t : tokens) {
    if (node->whole) {
      return;
    }
    node = &node->children[t];
  }
  node->whole = true;
  node->children.clear();
}

std::string_view to_code(JsonError e) {
  switch (e) {
  case JsonError::ok:
    return "ok";
  case JsonError::not_json:
    return "body_not_json";
  case JsonError::duplicate_key:
    return "body_duplicate_key";
  case JsonError::invalid_utf8:
    return "body_invalid_utf8";
  case JsonError::too_deep:
    return "body_too_deep";
  case JsonError::number_out_of_range:
    return "body_number_out_of_range";
  }
  return "body_not_json";
}

StrictJsonResult parse_strict_json(std::string_view text, std::size_t max_depth) {
  return Parser(text, max_depth).run(kWhole);
}

StrictJsonResult parse_strict_json(std::string_view text, std::size_t max_depth,
                                   const JsonWant& want) {
  return Parser(text, max_depth).run(want);
}

} // namespace runwarden::policy

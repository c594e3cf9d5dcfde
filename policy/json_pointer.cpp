// RFC 6901 JSON Pointer: parse once at load time, resolve without throwing.

#include "policy/model.hpp"

namespace runwarden::policy {

std::optional<JsonPointer> JsonPointer::parse(std::string_view text, std::string* error) {
  JsonPointer p;
  p.text_ = std::string(text);
  if (text.empty()) {
    return p; // the whole document
  }
  if (text.front() != '/') {
    if (error != nullptr) {
      *error = "JSON pointer must be empty or start with '/'";
    }
    return std::nullopt;
  }
  std::string token;
  for (std::size_t i = 1; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '/') {
      p.tokens_.push_back(std::move(token));
      token.clear();
      continue;
    }
    if (text[i] == '~') {
      if (i + 1 < text.size() && (text[i + 1] == '0' || text[i + 1] == '1')) {
        token.push_back(text[i + 1] == '0' ? '~' : '/');
        ++i;
        continue;
      }
      if (error != nullptr) {
        *error = "JSON pointer has '~' not followed by '0' or '1'";
      }
      return std::nullopt;
    }
    token.push_back(text[i]);
  }
  return p;
}

const nlohmann::json* JsonPointer::resolve(const nlohmann::json& doc) const {
  const nlohmann::json* cur = &doc;
  for (const std::string& tok : tokens_) {
    if (cur->is_object()) {
      auto it = cur->find(tok);
      if (it == cur->end()) {
        return nullptr;
      }
      cur = &*it;
    } else if (cur->is_array()) {
      if (tok.empty() || tok.size() > 9 || (tok.size() > 1 && tok[0] == '0')) {
        return nullptr;
      }
      std::size_t idx = 0;
      for (char c : tok) {
        if (c < '0' || c > '9') {
          return nullptr;
        }
        idx = idx * 10 + static_cast<std::size_t>(c - '0');
      }
      if (idx >= cur->size()) {
        return nullptr;
      }
      cur = &(*cur)[idx];
    } else {
      return nullptr;
    }
  }
  return cur;
}

} // namespace runwarden::policy

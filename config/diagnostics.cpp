#include "config/diagnostics.hpp"

namespace runwarden::config {

void Diagnostics::error(std::string_view file, int line, int col, std::string_view path,
                        std::string_view message) {
  std::string s;
  s.reserve(file.size() + path.size() + message.size() + 24);
  s.append(file);
  s.push_back(':');
  s.append(std::to_string(line));
  s.push_back(':');
  s.append(std::to_string(col));
  s.append(": ");
  if (!path.empty()) {
    s.append(path);
    s.append(": ");
  }
  s.append(message);
  errors_.push_back(std::move(s));
}

void Diagnostics::error(const policy::SourceMark& mark, std::string_view path,
                        std::string_view message) {
  error(mark.file, mark.line, mark.col, path, message);
}

} // namespace runwarden::config

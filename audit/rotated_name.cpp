#include "audit/rotated_name.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>

namespace runwarden::audit {
namespace {

constexpr std::string_view kExt = ".jsonl";

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 20) {
    return false;
  }
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

} // namespace

std::string RotatedName::stem_of(std::string_view filename) {
  if (filename.size() > kExt.size() && filename.substr(filename.size() - kExt.size()) == kExt) {
    filename.remove_suffix(kExt.size());
  }
  return std::string(filename);
}

std::string RotatedName::make(std::string_view stem, std::uint64_t first, std::uint64_t last) {
  return std::string(stem) + "-" + std::to_string(first) + "-" + std::to_string(last) +
         std::string(kExt);
}

std::optional<RotatedName> RotatedName::parse(std::string_view filename) {
  if (filename.size() <= kExt.size() || filename.substr(filename.size() - kExt.size()) != kExt) {
    return std::nullopt;
  }
  const std::string_view base = filename.substr(0, filename.size() - kExt.size());
  const std::size_t d2 = base.rfind('-');
  if (d2 == std::string_view::npos || d2 == 0) {
    return std::nullopt;
  }
  const std::size_t d1 = base.rfind('-', d2 - 1);
  if (d1 == std::string_view::npos || d1 == 0) {
    return std::nullopt;
  }
  RotatedName out;
  if (!parse_u64(base.substr(d1 + 1, d2 - d1 - 1), out.first) ||
      !parse_u64(base.substr(d2 + 1), out.last) || out.first == 0 || out.last < out.first) {
    return std::nullopt;
  }
  out.stem = std::string(base.substr(0, d1));
  out.path = std::string(filename);
  return out;
}

std::vector<RotatedName> RotatedName::list(const std::string& dir, std::string_view stem) {
  std::vector<RotatedName> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    auto parsed = parse(entry.path().filename().string());
    if (parsed && parsed->stem == stem && entry.is_regular_file(ec)) {
      parsed->path = entry.path().string();
      out.push_back(std::move(*parsed));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const RotatedName& a, const RotatedName& b) { return a.first < b.first; });
  return out;
}

} // namespace runwarden::audit

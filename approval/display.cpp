#include "approval/display.hpp"

#include <cstdint>
#include <cstdio>

namespace runwarden::approval {

namespace {

void append_byte_escape(std::string& out, unsigned char c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
  out += buf;
}

void append_code_point_escape(std::string& out, std::uint32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\u{%04x}", static_cast<unsigned>(cp));
  out += buf;
}

// Code points that change how surrounding text renders, or render as nothing.
bool invisible_or_bidi(std::uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) ||                   // C1 controls
         (cp >= 0x200b && cp <= 0x200f) ||               // zero-width, LRM, RLM
         (cp >= 0x2028 && cp <= 0x202e) ||               // separators, embeddings
         (cp >= 0x2060 && cp <= 0x2069) ||               // word joiner, isolates
         cp == 0xfeff || cp == 0x061c || cp == 0x00ad || // BOM, ALM, soft hyphen
         (cp >= 0xfff9 && cp <= 0xfffb) || cp == 0x180e; // annotations, MVS
}

// Decodes one UTF-8 sequence at text[i]; returns its length or 0 if invalid.
std::size_t decode_utf8(std::string_view text, std::size_t i, std::uint32_t& cp) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  std::size_t len = 0;
  std::uint32_t min = 0;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2;
    cp = b0 & 0x1fu;
    min = 0x80;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    cp = b0 & 0x0fu;
    min = 0x800;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    cp = b0 & 0x07u;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > text.size()) {
    return 0;
  }
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(text[i + k]);
    if ((b & 0xc0) != 0x80) {
      return 0;
    }
    cp = (cp << 6) | (b & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  return len;
}

} // namespace

namespace {

std::string escape(std::string_view text, bool keep_newlines, bool backslash) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      if (c == '\\' && backslash) {
        out += "\\\\";
      } else if (keep_newlines && (c == '\n' || c == '\t')) {
        out.push_back(static_cast<char>(c));
      } else if (c < 0x20 || c == 0x7f) {
        append_byte_escape(out, c);
      } else {
        out.push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    std::uint32_t cp = 0;
    const std::size_t len = decode_utf8(text, i, cp);
    if (len == 0) {
      append_byte_escape(out, c);
      ++i;
      continue;
    }
    if (invisible_or_bidi(cp)) {
      append_code_point_escape(out, cp);
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out;
}

} // namespace

std::string escape_display(std::string_view text, bool keep_newlines) {
  return escape(text, keep_newlines, true);
}

std::string terminal_safe(std::string_view text, bool keep_newlines) {
  return escape(text, keep_newlines, false);
}

bool host_has_punycode(std::string_view host) {
  std::size_t start = 0;
  while (start <= host.size()) {
    std::size_t end = host.find('.', start);
    if (end == std::string_view::npos) {
      end = host.size();
    }
    const std::string_view label = host.substr(start, end - start);
    if (label.size() >= 4 && (label[0] == 'x' || label[0] == 'X') &&
        (label[1] == 'n' || label[1] == 'N') && label[2] == '-' && label[3] == '-') {
      return true;
    }
    start = end + 1;
  }
  return false;
}

} // namespace runwarden::approval

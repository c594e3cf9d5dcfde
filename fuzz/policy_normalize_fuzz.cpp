// Fuzzes URL, target and host normalization. Invariants on success: the canonical
// path starts with '/', holds no dot-segment, no "//", no encoded '/', '\' or NUL,
// no lower-case hex escape; normalizing the canonical form again changes nothing.

#include "policy/request.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace runwarden::policy;

void require(bool ok) {
  if (!ok) {
    std::abort();
  }
}

void check_path(const std::string& path) {
  require(!path.empty() && path.front() == '/');
  require(path.find("/../") == std::string::npos && !path.ends_with("/.."));
  require(path.find("/./") == std::string::npos && !path.ends_with("/."));
  require(path.find("//") == std::string::npos);
  require(path.find('\\') == std::string::npos);
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '%') {
      require(i + 2 < path.size());
      std::string_view esc(path.data() + i, 3);
      require(esc != "%2F" && esc != "%5C" && esc != "%00");
      require(!(esc[1] >= 'a' && esc[1] <= 'f') && !(esc[2] >= 'a' && esc[2] <= 'f'));
    }
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  Request r;
  if (normalize_absolute_url(input, r) == NormalizeError::ok) {
    check_path(r.path);
    require(!r.host.empty());
    Request again;
    require(normalize_absolute_url(r.url(), again) == NormalizeError::ok);
    require(again.host == r.host && again.path == r.path && again.query == r.query &&
            again.port == r.port);
  }

  std::string path;
  std::string query;
  if (normalize_target(input, path, query) == NormalizeError::ok) {
    check_path(path);
    std::string path2;
    std::string query2;
    require(normalize_target(path, path2, query2) == NormalizeError::ok && path2 == path);
  }

  std::string host;
  if (normalize_host(input, host) == NormalizeError::ok) {
    for (char c : host) {
      require(!(c >= 'A' && c <= 'Z') && static_cast<unsigned char>(c) < 0x80);
    }
    require(host.back() != '.');
    std::string host2;
    require(normalize_host(host, host2) == NormalizeError::ok && host2 == host);
  }
  return 0;
}

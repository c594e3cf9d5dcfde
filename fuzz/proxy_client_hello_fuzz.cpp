// libFuzzer target: the transparent listener's ClientHello/SNI parser and first-byte
// classifier on arbitrary bytes. Invariants: no crash, no over-read (ASan), and a parsed SNI
// is always a bounded DNS-style name.
#include "proxy/client_hello.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto hello = runwarden::proxy::parse_client_hello(bytes);
  if (hello.has_sni && (hello.sni.empty() || hello.sni.size() > 255)) {
    std::abort();
  }
  if (hello.status == runwarden::proxy::HelloStatus::ok && !bytes.empty() &&
      static_cast<std::uint8_t>(bytes[0]) != 0x16) {
    std::abort();
  }
  (void)runwarden::proxy::classify_first_bytes(bytes);
  return 0;
}

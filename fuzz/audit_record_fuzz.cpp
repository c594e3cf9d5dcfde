// libFuzzer: whatever bytes reach a record's fields, the writer emits exactly one valid JSON
// line per record, pure ASCII, and the chain verifies.

#include "audit/audit_log.hpp"
#include "audit/record_builder.hpp"
#include "audit/record_codec.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const runwarden::audit::RecordBuilder builder({}, 64);
  const std::string in(reinterpret_cast<const char*>(data), size);
  runwarden::audit::Exchange ex;
  ex.id = in;
  ex.run = in.substr(0, size / 2);
  ex.reason = in;
  ex.request.method = in.substr(size / 2);
  ex.request.url = "https://h/" + in;
  ex.request.headers = {{in, in}, {"Content-Type", in}};
  ex.request.body = in;
  runwarden::audit::ResponseInfo resp;
  resp.headers = {{"X", in}};
  resp.body = in;
  ex.response = resp;
  std::string hash;
  const std::string line = runwarden::audit::RecordCodec::seal(
      1, "2026-01-01T00:00:00.000000Z", builder.exchange_members(ex, true),
      runwarden::audit::kGenesisHash, hash);
  if (line.empty() || line.back() != '\n' || line.find('\n') != line.size() - 1) {
    std::abort();
  }
  for (char c : line.substr(0, line.size() - 1)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      std::abort();
    }
  }
  const std::string_view body(line.data(), line.size() - 1);
  const auto parsed = nlohmann::json::parse(body, nullptr, false);
  const auto cut = runwarden::audit::RecordCodec::unseal(body);
  if (parsed.is_discarded() || !cut || cut->hash != hash ||
      runwarden::audit::RecordCodec::chain_hash(runwarden::audit::kGenesisHash, cut->unsealed) !=
          hash) {
    std::abort();
  }
  // The writer's in-place seal (an uncontended leader's path) gives the same bytes.
  const runwarden::audit::RecordBuilder::Slot slot = builder.exchange_slot(ex, true);
  std::array<char, 64> slot_hash{};
  const std::string_view in_place = runwarden::audit::RecordCodec::seal_in_place(
      slot.data, slot.size, runwarden::audit::RecordBuilder::kSlotHeadroom,
      runwarden::audit::RecordBuilder::kSlotTailroom, 1, "2026-01-01T00:00:00.000000Z",
      runwarden::audit::kGenesisHash, slot_hash);
  if (in_place != line || std::string_view(slot_hash.data(), slot_hash.size()) != hash) {
    std::abort();
  }
  (void)builder.event_members(in, nlohmann::json::parse(in, nullptr, false));
  return 0;
}

#pragma once
// Turns an Exchange or an event into the redacted JSON members of one record. Runs on the
// caller's thread, outside the writer's lock: redaction is the expensive part.

#include "audit/audit_log.hpp"
#include "audit/redactor.hpp"

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace runwarden::audit {

class RawWriter; // record_builder.cpp: the raw cursor the members are written through

class RecordBuilder {
public:
  RecordBuilder(const RedactionRules& rules, std::size_t body_bytes);

  /// `"type":"decision"|"exchange",...` members, pure ASCII (every non-ASCII byte,
  /// control character, U+2028 and invalid UTF-8 escaped or replaced).
  std::string exchange_members(const Exchange& exchange, bool final) const;
  /// The same members appended to `out` (the writer reuses one buffer per thread).
  void exchange_members(const Exchange& exchange, bool final, std::string& out) const;
  /// Room the writer may use around a slot's members without copying them: the record's
  /// head (`{"v":1,"seq":N,"ts":"...",`) before, `,"prev":"<64 hex>"}` and the hash suffix
  /// after (RecordCodec::seal_in_place).
  static constexpr std::size_t kSlotHeadroom = 96;
  static constexpr std::size_t kSlotTailroom = 192;
  /// Members written in place, with kSlotHeadroom writable bytes before `data` and
  /// kSlotTailroom after `data + size`.
  struct Slot {
    char* data = nullptr;
    std::size_t size = 0;
    std::string_view view() const { return {data, size}; }
  };
  /// The same members as exchange_members, in a per-thread buffer the writer seals in place
  /// (no copy of the ~4 KB record into a string and then into the batch). Valid until this
  /// thread's next exchange_slot call, and the slot may be written to around its members.
  Slot exchange_slot(const Exchange& exchange, bool final) const;
  /// `"type":"event","event":"<type>","data":{...}`; string values pass the text patterns.
  std::string event_members(std::string_view type, const nlohmann::json& fields) const;

  const Redactor& redactor() const { return redactor_; }

  /// Compact dump that keeps every line one valid ASCII JSON value.
  static std::string dump(const nlohmann::ordered_json& value);

private:
  void write_exchange(RawWriter& w, const Exchange& exchange, bool final) const;
  void append_headers(RawWriter& w, const HeaderList& list) const;
  /// whole_sha256, when set, is written as body_sha256 instead of the digest of `text`.
  void append_body(RawWriter& w, std::string_view text, const HeaderList& headers, bool complete,
                   std::string_view whole_sha256) const;
  nlohmann::json redact_json(const nlohmann::json& value) const;

  Redactor redactor_;
  std::size_t body_bytes_;
};

} // namespace runwarden::audit

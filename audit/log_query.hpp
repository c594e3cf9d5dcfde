#pragma once
// `runwarden audit query` and `blast-radius`: read-only views over the records. They do
// not verify the chain (run `audit verify` for that); they read what is there.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runwarden::audit {

struct QueryFilter {
  std::string run;
  std::string action;
  std::string outcome;
  std::string host;                     // exact, case-insensitive
  std::string approval;                 // approval id or approver
  std::optional<std::int64_t> since_us; // inclusive
  std::optional<std::int64_t> until_us; // exclusive
  bool events = false;                  // include event and checkpoint records
};

class LogQuery {
public:
  /// Every parseable record of the log files under `paths`, in sequence order.
  /// False with `error` when nothing can be read.
  static bool load(const std::vector<std::string>& paths, std::vector<nlohmann::json>& records,
                   std::string& error);
  /// One record per request: its exchange record when written, else its decision record.
  /// Events (and checkpoints) are kept only when `events` is set.
  static std::vector<nlohmann::json> latest_per_request(const std::vector<nlohmann::json>& records,
                                                        bool events);
  static bool matches(const nlohmann::json& record, const QueryFilter& filter);
  /// Filter applied over latest_per_request.
  static std::vector<nlohmann::json> run(const std::vector<nlohmann::json>& records,
                                         const QueryFilter& filter);
  /// Lower-case host of a URL, without userinfo and port.
  static std::string host_of(std::string_view url);
  /// Fixed-width table for people; control characters are shown escaped.
  static std::string table(const std::vector<nlohmann::json>& records);

  /// What run R touched: hosts with counts, writes in order, approvals, denied attempts.
  static nlohmann::json blast_radius(const std::vector<nlohmann::json>& records,
                                     std::string_view run);
  /// Text for people; a report with no calls says so and lists its `candidates`.
  static std::string blast_radius_text(const nlohmann::json& report);

  /// How many runs run_candidates() names at most.
  static constexpr std::size_t kMaxRunCandidates = 5;
  /// Run ids that start with `partial` (then those that contain it), first seen first, at
  /// most kMaxRunCandidates: what an operator who pasted a cut id meant. blast_radius()
  /// adds them as `candidates` when the run has no records.
  static std::vector<std::string> run_candidates(const std::vector<nlohmann::json>& records,
                                                 std::string_view partial);
};

} // namespace runwarden::audit

#pragma once
// `runwarden audit verify`: walks the chain across files and reports the FIRST bad record
// and why. Never trusts file names or record fields more than the hashes.

#include <cstdint>
#include <string>
#include <vector>

namespace runwarden::audit {

struct VerifyOptions {
  std::string public_key;                  // PEM text or file: checks every checkpoint signature
  bool partial = false;                    // accept a log that does not start at seq 1 (retention)
  std::uint64_t max_unsigned = UINT64_MAX; // with a key: fail when the unsigned tail is longer
};

struct VerifyReport {
  bool ok = true;
  /// edited | inserted | removed | reordered | truncated | spliced | bad_signature |
  /// malformed | unreadable
  std::string kind;
  std::string file;
  std::uint64_t line = 0; // 1-based line within `file`
  std::uint64_t seq = 0;  // seq of the bad record when readable
  std::string detail;

  std::vector<std::string> files; // in the order they were chained
  std::uint64_t records = 0;
  std::uint64_t first_seq = 0;
  std::uint64_t last_seq = 0;
  std::string head_hash;
  std::uint64_t checkpoints = 0;
  bool signatures_checked = false;
  std::uint64_t signed_through = 0; // seq of the last valid checkpoint
  std::uint64_t unsigned_tail = 0;  // records after it ("unsigned yet")
};

class Verifier {
public:
  static VerifyReport verify(const std::vector<std::string>& paths, const VerifyOptions& options);
  /// Files and directories -> log files ordered by sequence (rotated by their names, the
  /// active file by its first record). `.torn` files are not part of the chain.
  static std::vector<std::string> log_files(const std::vector<std::string>& paths,
                                            std::string& error);
};

} // namespace runwarden::audit

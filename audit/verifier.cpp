#include "audit/verifier.hpp"

#include "audit/checkpoint_key.hpp"
#include "audit/record_codec.hpp"
#include "audit/rotated_name.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

namespace runwarden::audit {
namespace {

namespace fs = std::filesystem;

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

std::uint64_t first_seq_of(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::string line;
  if (!in || !std::getline(in, line)) {
    return 0;
  }
  const auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_object() && j.contains("seq") && j["seq"].is_number_unsigned()) {
    return j["seq"].get<std::uint64_t>();
  }
  return 0;
}

} // namespace

std::vector<std::string> Verifier::log_files(const std::vector<std::string>& paths,
                                             std::string& error) {
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& entry : fs::directory_iterator(p, ec)) {
        if (entry.is_regular_file(ec) && entry.path().extension() == ".jsonl") {
          files.push_back(entry.path().string());
        }
      }
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
    } else {
      error = p + ": no such log file or directory";
      return {};
    }
  }
  std::vector<std::pair<std::uint64_t, std::string>> keyed;
  for (const std::string& f : files) {
    std::uint64_t key = 0;
    if (const auto r = RotatedName::parse(fs::path(f).filename().string())) {
      key = r->first;
    } else {
      key = first_seq_of(f);
    }
    keyed.emplace_back(key == 0 ? UINT64_MAX : key, f);
  }
  std::sort(keyed.begin(), keyed.end());
  files.clear();
  for (auto& [key, f] : keyed) {
    files.push_back(std::move(f));
  }
  if (files.empty()) {
    error = "no log files found";
  }
  return files;
}

VerifyReport Verifier::verify(const std::vector<std::string>& paths, const VerifyOptions& options) {
  VerifyReport r;
  auto fail = [&r](std::string kind, const std::string& file, std::uint64_t line, std::uint64_t seq,
                   std::string detail) {
    r.ok = false;
    r.kind = std::move(kind);
    r.file = file;
    r.line = line;
    r.seq = seq;
    r.detail = std::move(detail);
    return r;
  };
  std::string error;
  r.files = log_files(paths, error);
  if (r.files.empty()) {
    return fail("unreadable", "", 0, 0, error);
  }
  std::unique_ptr<CheckpointKey> key;
  if (!options.public_key.empty()) {
    try {
      key = CheckpointKey::load_public(options.public_key);
    } catch (const std::exception& e) {
      return fail("unreadable", options.public_key, 0, 0, e.what());
    }
    r.signatures_checked = true;
  }

  std::string head(kGenesisHash);
  std::uint64_t expected = 0; // 0: nothing read yet
  for (const std::string& file : r.files) {
    std::string data;
    if (!read_file(file, data)) {
      return fail("unreadable", file, 0, 0, "cannot read the file");
    }
    const auto rotated = RotatedName::parse(fs::path(file).filename().string());
    if (rotated && data.empty()) {
      return fail("truncated", file, 0, rotated->first,
                  "rotated file is empty; its name says it holds seq " +
                      std::to_string(rotated->first) + ".." + std::to_string(rotated->last));
    }
    bool file_start = true;
    std::uint64_t file_last = 0;
    std::uint64_t line_no = 0;
    std::size_t pos = 0;
    // Each iteration consumes one line: bounded by the file size.
    while (pos < data.size()) {
      ++line_no;
      const std::size_t nl = data.find('\n', pos);
      if (nl == std::string::npos) {
        return fail("truncated", file, line_no, 0,
                    "the file ends with a partial line of " + std::to_string(data.size() - pos) +
                        " bytes (torn write)");
      }
      const std::string_view line = std::string_view(data).substr(pos, nl - pos);
      const std::size_t next = nl + 1;
      const auto cut = RecordCodec::unseal(line);
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (!cut || !j.is_object() || !j.contains("seq") || !j["seq"].is_number_unsigned() ||
          !j.contains("prev") || !j["prev"].is_string() || j.value("v", 0) != 1) {
        return fail("malformed", file, line_no, 0,
                    "not a sealed v1 record (edited, or not a runwarden audit log)");
      }
      const std::uint64_t seq = j["seq"].get<std::uint64_t>();
      const std::string prev = j["prev"].get<std::string>();
      if (RecordCodec::chain_hash(prev, cut->unsealed) != cut->hash) {
        return fail("edited", file, line_no, seq,
                    "hash mismatch: the record's content was changed after it was written");
      }
      if (expected == 0) {
        if ((seq != 1 || prev != kGenesisHash) && !options.partial) {
          return fail("removed", file, line_no, seq,
                      "the log starts at seq " + std::to_string(seq) +
                          ", not 1: earlier records or files are missing (--partial accepts "
                          "a log cut by retention)");
        }
        expected = seq;
        head = prev;
        r.first_seq = seq;
      }
      if (file_start && rotated && seq != rotated->first) {
        return fail("removed", file, line_no, seq,
                    "rotated file starts at seq " + std::to_string(seq) + " but its name says " +
                        std::to_string(rotated->first));
      }
      if (seq > expected) {
        // A later record first: reordered if the expected one follows in this file.
        std::size_t p = next;
        for (int k = 0; k < 100000 && p < data.size(); ++k) {
          const std::size_t e = data.find('\n', p);
          const std::size_t end = e == std::string::npos ? data.size() : e;
          const auto other = nlohmann::json::parse(data.substr(p, end - p), nullptr, false);
          if (other.is_object() && other.value("seq", std::uint64_t{0}) == expected) {
            return fail("reordered", file, line_no, seq,
                        "seq " + std::to_string(seq) + " appears before seq " +
                            std::to_string(expected));
          }
          p = end + 1;
        }
        return fail("removed", file, line_no, seq,
                    "records " + std::to_string(expected) + ".." + std::to_string(seq - 1) +
                        " are missing");
      }
      if (seq < expected) {
        return fail("inserted", file, line_no, seq,
                    "seq " + std::to_string(seq) + " where " + std::to_string(expected) +
                        " was expected (inserted, duplicated or reordered record)");
      }
      if (prev != head) {
        if (file_start && r.records > 0) {
          return fail("spliced", file, line_no, seq,
                      "the first record's prev does not match the last hash of the previous "
                      "file: spliced from another log or the previous file was altered");
        }
        return fail("inserted", file, line_no, seq,
                    "prev does not match the hash of seq " + std::to_string(seq - 1) +
                        " (a record was inserted or replaced, or the previous one was edited "
                        "and re-hashed)");
      }
      if (j.value("type", "") == "checkpoint") {
        const std::uint64_t head_seq = j.value("head_seq", std::uint64_t{0});
        const std::string head_hash = j.value("head_hash", "");
        if (head_seq + 1 != seq || head_hash != prev) {
          return fail("edited", file, line_no, seq,
                      "checkpoint does not name the record before it");
        }
        ++r.checkpoints;
        if (key) {
          if (j.value("key_id", "") != key->key_id()) {
            return fail("bad_signature", file, line_no, seq,
                        "checkpoint signed with another key (key_id " + j.value("key_id", "") +
                            ", expected " + key->key_id() + ")");
          }
          if (!key->verify(head_seq, head_hash, j.value("sig", ""))) {
            return fail("bad_signature", file, line_no, seq,
                        "checkpoint signature does not verify: the chain was rebuilt");
          }
          r.signed_through = seq;
        }
      }
      head = cut->hash;
      expected = seq + 1;
      file_last = seq;
      r.last_seq = seq;
      ++r.records;
      file_start = false;
      pos = next;
    }
    if (rotated && file_last != rotated->last) {
      return fail("truncated", file, line_no, file_last,
                  "rotated file ends at seq " + std::to_string(file_last) + " but its name says " +
                      std::to_string(rotated->last));
    }
  }
  r.head_hash = head;
  if (key && r.records > 0) {
    r.unsigned_tail = r.last_seq - (r.signed_through == 0 ? r.first_seq - 1 : r.signed_through);
    if (r.unsigned_tail > options.max_unsigned) {
      return fail("bad_signature", r.files.back(), 0, r.last_seq,
                  std::to_string(r.unsigned_tail) +
                      " records after the last signed checkpoint (more than --max-unsigned)");
    }
  }
  return r;
}

} // namespace runwarden::audit

#include "audit/audit_log.hpp"
#include "audit/checkpoint_key.hpp"
#include "audit/record_codec.hpp"
#include "audit/verifier.hpp"
#include "test_support.hpp"

#include <filesystem>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace runwarden::audit {
namespace {

using testing::TempDir;

void write_log(const Options& o, int n) {
  auto log = AuditLog::open(o);
  testing::Completions c;
  for (int i = 0; i < n; ++i) {
    log->record(testing::sample_exchange(i), true, c.make());
  }
  ASSERT_TRUE(c.wait(n));
}

// Re-seals a line after its content was changed, as an attacker without the key would.
std::string reseal(const std::string& line) {
  auto j = nlohmann::ordered_json::parse(line);
  const std::string prev = j["prev"];
  j.erase("hash");
  std::string unsealed = j.dump(-1, ' ', true);
  const std::string hash = RecordCodec::chain_hash(prev, unsealed);
  unsealed.pop_back();
  return unsealed + ",\"hash\":\"" + hash + "\"}";
}

class Tamper : public ::testing::Test {
protected:
  void SetUp() override {
    o_.path = dir_.file("audit.jsonl");
    write_log(o_, 10);
    lines_ = testing::split_lines(testing::read_all(o_.path));
    ASSERT_EQ(lines_.size(), 10u);
    ASSERT_TRUE(Verifier::verify({o_.path}, {}).ok);
  }
  VerifyReport verify_lines(const std::vector<std::string>& lines) {
    testing::write_all(o_.path, testing::join_lines(lines));
    return Verifier::verify({dir_.path()}, {});
  }
  TempDir dir_;
  Options o_;
  std::vector<std::string> lines_;
};

TEST_F(Tamper, EditedRecordIsAHashMismatch) {
  auto lines = lines_;
  const auto at = lines[4].find("\"outcome\":\"forwarded\"");
  ASSERT_NE(at, std::string::npos);
  lines[4].replace(at, 21, "\"outcome\":\"denied\"");
  const auto r = verify_lines(lines);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "edited");
  EXPECT_EQ(r.seq, 5u);
  EXPECT_EQ(r.line, 5u);
}

TEST_F(Tamper, EditedAndRehashedRecordBreaksTheNextLink) {
  auto lines = lines_;
  auto j = nlohmann::ordered_json::parse(lines[4]);
  j["outcome"] = "denied";
  lines[4] = reseal(j.dump());
  const auto r = verify_lines(lines);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "inserted");
  EXPECT_EQ(r.seq, 6u);
}

TEST_F(Tamper, RemovedRecordIsASeqGap) {
  auto lines = lines_;
  lines.erase(lines.begin() + 4);
  const auto r = verify_lines(lines);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "removed");
  EXPECT_EQ(r.seq, 6u);
}

TEST_F(Tamper, RemovedFirstRecordIsDetectedUnlessPartial) {
  auto lines = lines_;
  lines.erase(lines.begin());
  auto r = verify_lines(lines);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "removed");
  VerifyOptions partial;
  partial.partial = true;
  EXPECT_TRUE(Verifier::verify({o_.path}, partial).ok);
}

TEST_F(Tamper, InsertedRecordIsDetected) {
  auto lines = lines_;
  lines.insert(lines.begin() + 6, lines[2]); // a replayed copy
  auto r = verify_lines(lines);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "inserted");
  EXPECT_EQ(r.line, 7u);

  // A forged record with the right seq and prev, re-hashed: the next record exposes it.
  lines = lines_;
  auto forged = nlohmann::ordered_json::parse(lines[5]);
  forged["run"] = "forged";
  lines.insert(lines.begin() + 6, reseal(forged.dump()));
  r = verify_lines(lines);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.kind == "inserted") << r.kind;
}

TEST_F(Tamper, ReorderedRecordsAreDetected) {
  auto lines = lines_;
  std::swap(lines[3], lines[4]);
  const auto r = verify_lines(lines);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "reordered");
  EXPECT_EQ(r.seq, 5u);
}

TEST_F(Tamper, TruncatedTailIsDetected) {
  std::string data = testing::join_lines(lines_);
  data.resize(data.size() - 40);
  testing::write_all(o_.path, data);
  const auto r = Verifier::verify({o_.path}, {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "truncated");
  EXPECT_EQ(r.line, 10u);
}

TEST(TamperFiles, TruncatedRotatedFileIsDetected) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  o.rotate_bytes = 3000;
  write_log(o, 12);
  std::string victim;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().filename().string().rfind("audit-1-", 0) == 0) {
      victim = e.path().string();
    }
  }
  ASSERT_FALSE(victim.empty());
  auto lines = testing::split_lines(testing::read_all(victim));
  lines.pop_back(); // whole last line gone: only the file name tells
  testing::write_all(victim, testing::join_lines(lines));
  const auto r = Verifier::verify({dir.path()}, {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "truncated");
  EXPECT_EQ(r.file, victim);
}

TEST(TamperFiles, SplicedFileFromAnotherLogIsDetected) {
  TempDir a;
  TempDir b;
  Options oa;
  oa.path = a.file("audit.jsonl");
  oa.rotate_bytes = 3000;
  Options ob = oa;
  ob.path = b.file("audit.jsonl");
  write_log(oa, 12);
  write_log(ob, 12);
  // Same seq ranges, different chain: replace A's second rotated file with B's.
  std::string name;
  for (const auto& e : std::filesystem::directory_iterator(b.path())) {
    const std::string n = e.path().filename().string();
    if (n.rfind("audit-", 0) == 0 && n.rfind("audit-1-", 0) != 0 &&
        std::filesystem::exists(a.file(n))) {
      name = n;
    }
  }
  ASSERT_FALSE(name.empty());
  std::filesystem::copy_file(b.file(name), a.file(name),
                             std::filesystem::copy_options::overwrite_existing);
  const auto r = Verifier::verify({a.path()}, {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "spliced");
  EXPECT_EQ(r.line, 1u);
}

TEST(TamperFiles, RebuiltChainFailsTheCheckpointSignature) {
  TempDir dir;
  CheckpointKey::generate(dir.file("k"), dir.file("k.pub"));
  Options o;
  o.path = dir.file("log/audit.jsonl");
  o.signing_key_pem = dir.file("k");
  o.checkpoint_records = 3;
  write_log(o, 9);
  // Attacker edits record 2 and rebuilds every hash after it, checkpoints included.
  auto lines = testing::split_lines(testing::read_all(o.path));
  std::string prev(kGenesisHash);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    auto j = nlohmann::ordered_json::parse(lines[i]);
    if (i == 1) {
      j["outcome"] = "forwarded-edited";
    }
    if (j["type"] == "checkpoint") {
      j["head_hash"] = prev;
    }
    j["prev"] = prev;
    lines[i] = reseal(j.dump());
    prev = nlohmann::json::parse(lines[i])["hash"];
  }
  testing::write_all(o.path, testing::join_lines(lines));
  EXPECT_TRUE(Verifier::verify({o.path}, {}).ok); // without the key, undetectable
  VerifyOptions vo;
  vo.public_key = dir.file("k.pub");
  const auto r = Verifier::verify({o.path}, vo);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "bad_signature");
}

TEST(TamperFiles, MissingPathIsUnreadable) {
  const auto r = Verifier::verify({"/nonexistent/runwarden/audit"}, {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, "unreadable");
}

} // namespace
} // namespace runwarden::audit

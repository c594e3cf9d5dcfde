#include "audit/audit_log.hpp"
#include "audit/checkpoint_key.hpp"
#include "audit/verifier.hpp"
#include "test_support.hpp"

#include <atomic>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace runwarden::audit {
namespace {

using testing::Completions;
using testing::TempDir;

Options options_for(const TempDir& dir) {
  Options o;
  o.path = dir.file("audit.jsonl");
  return o;
}

void write_records(const Options& o, int n, int start = 0) {
  auto log = AuditLog::open(o);
  Completions c;
  for (int i = start; i < start + n; ++i) {
    log->record(testing::sample_exchange(i), i % 4 == 0, c.make());
  }
  ASSERT_TRUE(c.wait(n));
  ASSERT_EQ(c.errors(), 0);
}

TEST(AuditLog, WritesChainedRecordsThatVerify) {
  TempDir dir;
  const Options o = options_for(dir);
  {
    auto log = AuditLog::open(o);
    Completions c;
    log->record(testing::sample_exchange(1), false, c.make());
    log->record(testing::sample_exchange(1), true, c.make());
    log->event("mode_changed", {{"mode", "read_only"}, {"by", "alice"}}, c.make());
    ASSERT_TRUE(c.wait(3));
    EXPECT_EQ(c.errors(), 0);
    EXPECT_TRUE(log->healthy());
    EXPECT_FALSE(log->sync());
  }
  const auto lines = testing::split_lines(testing::read_all(o.path));
  ASSERT_EQ(lines.size(), 3u);
  const auto first = nlohmann::json::parse(lines[0]);
  const auto second = nlohmann::json::parse(lines[1]);
  const auto third = nlohmann::json::parse(lines[2]);
  EXPECT_EQ(first["v"], 1);
  EXPECT_EQ(first["seq"], 1);
  EXPECT_EQ(first["type"], "decision");
  EXPECT_FALSE(first.contains("response"));
  EXPECT_EQ(second["type"], "exchange");
  EXPECT_EQ(second["response"]["status"], 200);
  EXPECT_EQ(second["prev"], first["hash"]);
  EXPECT_EQ(third["type"], "event");
  EXPECT_EQ(third["event"], "mode_changed");
  EXPECT_EQ(third["data"]["mode"], "read_only");
  // hash is the last member, so the verifier can recompute from raw bytes.
  EXPECT_EQ(lines[2].rfind(",\"hash\":\""), lines[2].size() - 75);
  const auto report = Verifier::verify({dir.path()}, {});
  EXPECT_TRUE(report.ok) << report.kind << ": " << report.detail;
  EXPECT_EQ(report.records, 3u);
}

TEST(AuditLog, SyncedModeGroupCommitsFromManyThreads) {
  TempDir dir;
  Options o = options_for(dir);
  o.durability = Durability::synced;
  Completions c;
  {
    auto log = AuditLog::open(o);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 100; ++i) {
          log->record(testing::sample_exchange(t * 1000 + i), true, c.make());
        }
      });
    }
    for (auto& th : threads) {
      th.join();
    }
    ASSERT_TRUE(c.wait(400));
  }
  EXPECT_EQ(c.errors(), 0);
  const auto report = Verifier::verify({o.path}, {});
  EXPECT_TRUE(report.ok) << report.detail;
  EXPECT_EQ(report.records, 400u);
}

// close() returns only once every queued record is written and its completion has run (the
// proxy calls it while the executors those completions post to still exist). A completion
// that records again while close() drains (the proxy's decision completion writes the final
// record) is written too; a record after close() returned fails at once instead of waiting
// for a writer that is gone.
TEST(AuditLog, CloseCompletesWhatIsQueuedThenRefuses) {
  for (const Durability durability : {Durability::synced, Durability::written}) {
    SCOPED_TRACE(durability == Durability::synced ? "synced" : "written");
    TempDir dir;
    Options o = options_for(dir);
    o.durability = durability;
    auto log = AuditLog::open(o);
    std::atomic<int> done{0};
    std::atomic<int> inner_done{0};
    std::atomic<int> inner_failed{0};
    for (int i = 0; i < 200; ++i) {
      log->record(testing::sample_exchange(i), false, [&, i](std::error_code ec) {
        EXPECT_FALSE(ec);
        ++done;
        log->record(testing::sample_exchange(i), true,
                    [&](std::error_code inner_ec) { ++(inner_ec ? inner_failed : inner_done); });
      });
    }
    log->close();
    EXPECT_EQ(done.load(), 200); // not "eventually": close() waited for them
    EXPECT_EQ(inner_done.load(), 200);
    EXPECT_EQ(inner_failed.load(), 0);
    bool refused = false;
    log->record(testing::sample_exchange(999), true,
                [&](std::error_code ec) { refused = bool(ec); });
    EXPECT_TRUE(refused);
    log.reset();
    const auto report = Verifier::verify({o.path}, {});
    EXPECT_TRUE(report.ok) << report.detail;
    EXPECT_EQ(report.records, 400u);
  }
}

TEST(AuditLog, LinesStayOneJsonObjectWhateverTheInput) {
  TempDir dir;
  const Options o = options_for(dir);
  const std::vector<std::string> nasty = {
      "a\r\nb",
      "x\n{\"v\":1,\"seq\":99}",
      "line\xe2\x80\xa8sep\xe2\x80\xa9para",
      "\x1b[31mred\x1b[0m\x07",
      std::string("nul\0byte", 8),
      "bad \xff\xfe utf8 \xc3",
      "\",\"hash\":\"" + std::string(64, 'f') + "\"}",
      "\\\"quoted\\",
  };
  {
    auto log = AuditLog::open(o);
    Completions c;
    int n = 0;
    for (const auto& s : nasty) {
      Exchange ex = testing::sample_exchange(n);
      ex.id = s;
      ex.run = s;
      ex.reason = s;
      ex.traceparent = s;
      ex.request.url = "https://h.example/" + s;
      ex.request.method = s;
      ex.request.headers = {{s, s}, {"X-Note", s}};
      ex.request.body = s;
      ex.request.headers.emplace_back("Content-Type", "text/plain");
      ex.response->headers = {{"X-Note", s}};
      ex.response->body = s;
      log->record(ex, true, c.make());
      log->event(s, {{s, s}}, c.make());
      n += 2;
    }
    ASSERT_TRUE(c.wait(n));
    ASSERT_EQ(c.errors(), 0);
  }
  const std::string data = testing::read_all(o.path);
  for (char ch : data) {
    const auto u = static_cast<unsigned char>(ch);
    ASSERT_TRUE(ch == '\n' || (u >= 0x20 && u < 0x7f)) << "raw byte " << int(u);
  }
  const auto lines = testing::split_lines(data);
  ASSERT_EQ(lines.size(), nasty.size() * 2);
  for (const auto& l : lines) {
    const auto j = nlohmann::json::parse(l, nullptr, false);
    ASSERT_TRUE(j.is_object()) << l;
  }
  EXPECT_EQ(nlohmann::json::parse(lines[0])["run"], "a\r\nb");
  const auto report = Verifier::verify({o.path}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.detail;
}

TEST(AuditLog, TornLastLineIsMovedAsideAndChainResumes) {
  TempDir dir;
  const Options o = options_for(dir);
  write_records(o, 5);
  {
    std::ofstream out{o.path, std::ios::binary | std::ios::app};
    out << "{\"v\":1,\"seq\":6,\"ts\":\"2026-";
  }
  write_records(o, 3, 10);
  const auto lines = testing::split_lines(testing::read_all(o.path));
  ASSERT_EQ(lines.size(), 9u);
  const auto event = nlohmann::json::parse(lines[5]);
  EXPECT_EQ(event["type"], "event");
  EXPECT_EQ(event["event"], "torn_line_recovered");
  EXPECT_EQ(event["seq"], 6);
  EXPECT_EQ(event["data"]["resumed_after_seq"], 5);
  const std::string torn = dir.file(event["data"]["file"].get<std::string>());
  EXPECT_EQ(testing::read_all(torn), "{\"v\":1,\"seq\":6,\"ts\":\"2026-");
  const auto report = Verifier::verify({dir.path()}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.detail;
  EXPECT_EQ(report.records, 9u);
}

TEST(AuditLog, UnparseableLastLineIsTornToo) {
  TempDir dir;
  const Options o = options_for(dir);
  write_records(o, 2);
  {
    std::ofstream out{o.path, std::ios::binary | std::ios::app};
    out << "garbage\n";
  }
  write_records(o, 1, 5);
  const auto report = Verifier::verify({o.path}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.detail;
  EXPECT_EQ(report.records, 4u);
}

TEST(AuditLog, RotationContinuesTheChainAcrossFilesAndRestarts) {
  TempDir dir;
  Options o = options_for(dir);
  o.rotate_bytes = 3000;
  write_records(o, 20);
  write_records(o, 20, 100);
  std::size_t rotated = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    rotated += e.path().filename().string().rfind("audit-", 0) == 0 ? 1u : 0u;
  }
  EXPECT_GE(rotated, 5u);
  const auto report = Verifier::verify({dir.path()}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.file << " " << report.detail;
  EXPECT_EQ(report.records, 40u);
  EXPECT_EQ(report.last_seq, 40u);
}

TEST(AuditLog, ResumesFromTheNewestRotatedFileWhenTheActiveOneIsGone) {
  TempDir dir;
  Options o = options_for(dir);
  o.rotate_bytes = 2000;
  write_records(o, 10);
  std::filesystem::remove(o.path); // crash between rename and re-open
  write_records(o, 3, 50);
  const auto report = Verifier::verify({dir.path()}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.detail;
  EXPECT_EQ(report.last_seq, report.records);
}

TEST(AuditLog, SignedCheckpointsVerifyWithThePublicKeyOnly) {
  TempDir dir;
  const std::string priv = dir.file("signing.key");
  const std::string pub = dir.file("signing.pub");
  CheckpointKey::generate(priv, pub);
  Options o = options_for(dir);
  o.path = dir.file("log/audit.jsonl");
  o.signing_key_pem = priv;
  o.checkpoint_records = 4;
  write_records(o, 10);
  VerifyOptions vo;
  vo.public_key = pub;
  auto report = Verifier::verify({dir.file("log")}, vo);
  ASSERT_TRUE(report.ok) << report.kind << " " << report.detail;
  EXPECT_TRUE(report.signatures_checked);
  EXPECT_GE(report.checkpoints, 3u);
  EXPECT_EQ(report.unsigned_tail, 0u); // a clean close signs the tail
  EXPECT_EQ(report.signed_through, report.last_seq);

  // Another key does not vouch for this log.
  const std::string other_priv = dir.file("other.key");
  const std::string other_pub = dir.file("other.pub");
  CheckpointKey::generate(other_priv, other_pub);
  vo.public_key = other_pub;
  report = Verifier::verify({dir.file("log")}, vo);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.kind, "bad_signature");
}

TEST(AuditLog, UnsignedTailIsReported) {
  TempDir dir;
  const std::string priv = dir.file("signing.key");
  const std::string pub = dir.file("signing.pub");
  CheckpointKey::generate(priv, pub);
  Options o = options_for(dir);
  o.signing_key_pem = testing::read_all(priv); // PEM text works as well as a path
  o.checkpoint_records = 5;
  auto log = AuditLog::open(o);
  Completions c;
  for (int i = 0; i < 7; ++i) {
    log->record(testing::sample_exchange(i), true, c.make());
  }
  ASSERT_TRUE(c.wait(7));
  VerifyOptions vo;
  vo.public_key = pub;
  auto report = Verifier::verify({o.path}, vo);
  ASSERT_TRUE(report.ok) << report.detail;
  EXPECT_EQ(report.signed_through, 6u); // 5 records + the checkpoint
  EXPECT_EQ(report.unsigned_tail, 2u);
  vo.max_unsigned = 1;
  report = Verifier::verify({o.path}, vo);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.kind, "bad_signature");
}

// The active file reserves blocks ahead of its end while open (fallocate, KEEP_SIZE), never
// changes its size for it, and gives them back when the log closes.
TEST(AuditLog, BlocksReservedAheadAreGivenBackAtClose) {
  TempDir dir;
  const Options o = options_for(dir);
  // Whether this file system reserves blocks at all (tmpfs and ext4 do).
  bool reserves = false;
  {
    const std::string probe = dir.file("probe");
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    reserves = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20) == 0;
    ::close(fd);
    std::filesystem::remove(probe);
  }
  const auto blocks_bytes = [&] {
    struct stat st {};
    EXPECT_EQ(::stat(o.path.c_str(), &st), 0);
    return std::pair<std::uint64_t, std::uint64_t>{static_cast<std::uint64_t>(st.st_size),
                                                   static_cast<std::uint64_t>(st.st_blocks) * 512};
  };
  {
    auto log = AuditLog::open(o);
    Completions c;
    for (int i = 0; i < 20; ++i) {
      log->record(testing::sample_exchange(i), true, c.make());
    }
    ASSERT_TRUE(c.wait(20));
    ASSERT_EQ(c.errors(), 0);
    const auto [size, allocated] = blocks_bytes();
    EXPECT_EQ(size, testing::read_all(o.path).size());
    if (reserves) {
      EXPECT_GE(allocated, size + (1u << 20)) << "no blocks reserved ahead";
    }
  }
  const auto [size, allocated] = blocks_bytes();
  EXPECT_LT(allocated, size + (64u << 10)) << "reserved blocks kept after close";
  const auto report = Verifier::verify({dir.path()}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.detail;
  EXPECT_EQ(report.records, 20u);
}

// Blocks a crashed writer left reserved on the active file go back at the next close, even
// when that process wrote nothing (a restart with no traffic, then a clean stop).
TEST(AuditLog, AReservationLeftByACrashGoesBackAtACloseWithoutWrites) {
  TempDir dir;
  const Options o = options_for(dir);
  write_records(o, 3);
  const int fd = ::open(o.path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 8 << 20), 0); // as a crash leaves it
  ::close(fd);
  struct stat st {};
  ASSERT_EQ(::stat(o.path.c_str(), &st), 0);
  ASSERT_GE(static_cast<std::uint64_t>(st.st_blocks) * 512, 8u << 20);
  { auto log = AuditLog::open(o); } // writes nothing
  ASSERT_EQ(::stat(o.path.c_str(), &st), 0);
  EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512,
            static_cast<std::uint64_t>(st.st_size) + (64u << 10))
      << "the crash's reservation kept";
  EXPECT_TRUE(Verifier::verify({dir.path()}, {}).ok);
}

// A child process gets a 4 KiB file-size limit (SIGXFSZ ignored, so write(2) fails with
// EFBIG): the log must turn unhealthy, say why, and fail every later record.
TEST(AuditLog, WriteErrorMakesTheLogUnhealthyAndRefuseLaterRecords) {
  TempDir dir;
  const Options o = options_for(dir);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    auto log = AuditLog::open(o);
    std::error_code last;
    int i = 0;
    for (; i < 1000 && !last; ++i) {
      log->record(testing::sample_exchange(i), true, [&](std::error_code ec) { last = ec; });
    }
    if (!last || log->healthy() || log->failure().find("File too large") == std::string::npos) {
      ::_exit(10);
    }
    std::error_code after;
    log->event("x", {}, [&](std::error_code ec) { after = ec; });
    ::_exit(after ? 0 : 11);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // What was written before the failure still verifies (the partial line is a torn tail).
  const auto report = Verifier::verify({o.path}, {});
  EXPECT_TRUE(report.ok || report.kind == "truncated") << report.kind << " " << report.detail;
}

} // namespace
} // namespace runwarden::audit

namespace runwarden::audit {
namespace {

TEST(AuditLog, ValidUtf8RoundTripsThroughTheAsciiLine) {
  TempDir dir;
  const Options o = options_for(dir);
  const std::string text = "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x80\xa8 \"q\" \\ \t\x7f end";
  {
    auto log = AuditLog::open(o);
    Completions c;
    Exchange ex = testing::sample_exchange(1);
    ex.run = text;
    log->record(ex, true, c.make());
    ASSERT_TRUE(c.wait(1));
  }
  const auto line = testing::split_lines(testing::read_all(o.path)).at(0);
  EXPECT_EQ(nlohmann::json::parse(line)["run"], text);
  EXPECT_NE(line.find("\\ud83d\\ude00"), std::string::npos);
  EXPECT_NE(line.find("\\u2028"), std::string::npos);
}

} // namespace
} // namespace runwarden::audit

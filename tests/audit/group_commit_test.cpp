// Group commit in `written` mode (leader/follower, audit/file_audit_log.cpp): the file order
// is the chain order, every completion is called exactly once and only after write(2) of its
// bytes returned, a completion may record again, an error fails the whole batch and every
// later record, and rotation keeps the chain whole while many threads append.

#include "audit/checkpoint_key.hpp"
#include "audit/file_audit_log.hpp"
#include "audit/verifier.hpp"
#include "test_support.hpp"

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace runwarden::audit {
namespace {

using testing::file_size;
using testing::TempDir;

Exchange numbered(int n) {
  Exchange ex = testing::sample_exchange(n);
  ex.id = "req_" + std::to_string(n);
  return ex;
}

/// One-shot flag with a bounded wait, so a lost signal fails the test instead of hanging.
class Latch {
public:
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [this] { return open_; });
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

/// Where each record (by the number in its id) ends in the file, in file order.
struct Layout {
  std::vector<int> order;                  // record numbers, file order
  std::map<int, std::uint64_t> end_offset; // record number -> offset after its newline
  std::vector<std::uint64_t> seqs;         // seq of every line, file order
};

Layout layout_of(const std::string& path) {
  Layout out;
  std::uint64_t offset = 0;
  for (const std::string& line : testing::split_lines(testing::read_all(path))) {
    offset += line.size() + 1;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) {
      ADD_FAILURE() << "not a JSON line: " << line;
      continue;
    }
    out.seqs.push_back(j["seq"].get<std::uint64_t>());
    if (j.contains("id")) {
      const int n = std::stoi(j["id"].get<std::string>().substr(4));
      out.order.push_back(n);
      EXPECT_TRUE(out.end_offset.emplace(n, offset).second) << "record " << n << " twice";
    }
  }
  return out;
}

TEST(GroupCommit, ManyThreadsEveryRecordOnceInChainOrderAndCompletedAfterItsWrite) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  constexpr int kThreads = 8;
  constexpr int kPerThread = 150;
  constexpr int kTotal = kThreads * kPerThread;
  std::vector<std::atomic<int>> calls(kTotal);
  std::vector<std::atomic<int>> errors(kTotal);
  std::vector<std::uint64_t> size_at_completion(kTotal, 0);
  {
    auto log = AuditLog::open(o);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          const int n = t * kPerThread + i;
          log->record(numbered(n), i % 2 == 1, [&, n](std::error_code ec) {
            size_at_completion[static_cast<std::size_t>(n)] = file_size(o.path);
            errors[static_cast<std::size_t>(n)] += ec ? 1 : 0;
            ++calls[static_cast<std::size_t>(n)];
          });
        }
      });
    }
    for (auto& th : threads) {
      th.join();
    }
    // No waiting: once every caller has returned (and the log is closed), every completion
    // has run, whether its caller led a batch or followed.
  }
  for (int n = 0; n < kTotal; ++n) {
    ASSERT_EQ(calls[static_cast<std::size_t>(n)].load(), 1) << "completion of record " << n;
    ASSERT_EQ(errors[static_cast<std::size_t>(n)].load(), 0) << "record " << n;
  }
  const Layout layout = layout_of(o.path);
  ASSERT_EQ(layout.order.size(), static_cast<std::size_t>(kTotal));
  for (std::size_t k = 0; k < layout.seqs.size(); ++k) {
    ASSERT_EQ(layout.seqs[k], k + 1) << "file order must be seq order";
  }
  for (const auto& [n, end] : layout.end_offset) {
    EXPECT_GE(size_at_completion[static_cast<std::size_t>(n)], end)
        << "record " << n << " completed before its bytes were in the file";
  }
  // Each thread's records keep the order in which that thread submitted them.
  std::vector<int> last_of_thread(kThreads, -1);
  for (const int n : layout.order) {
    const int t = n / kPerThread;
    EXPECT_GT(n, last_of_thread[static_cast<std::size_t>(t)]);
    last_of_thread[static_cast<std::size_t>(t)] = n;
  }
  const auto report = Verifier::verify({o.path}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.detail;
  EXPECT_EQ(report.records, static_cast<std::uint64_t>(kTotal));
}

// While the leader is busy (here: inside its own completion), other callers do not wait for
// it: their record() returns at once, and the leader then writes all of their records with
// ONE write(2) and calls their completions on its own thread.
TEST(GroupCommit, FollowersReturnAtOnceAndTheLeaderWritesTheirRecordsInOneWrite) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  constexpr int kFollowers = 50;
  auto log = AuditLog::open(o);
  Latch leader_inside;
  Latch followers_submitted;
  std::atomic<int> leader_calls{0};
  std::thread::id leader_id;
  std::thread leader([&] {
    leader_id = std::this_thread::get_id();
    log->record(numbered(0), false, [&](std::error_code ec) {
      EXPECT_FALSE(ec);
      ++leader_calls;
      leader_inside.open();
      EXPECT_TRUE(followers_submitted.wait());
    });
  });
  ASSERT_TRUE(leader_inside.wait());
  // Counted on the file, not with /proc/self/io: sanitizer runtimes probe memory with
  // write(2)s of their own, so a process-wide count is not the audit log's.
  const std::uint64_t size_before = file_size(o.path);
  std::vector<std::atomic<int>> calls(kFollowers);
  std::vector<std::thread::id> called_on(kFollowers);
  std::vector<std::uint64_t> size_at_completion(kFollowers, 0);
  for (int n = 1; n <= kFollowers; ++n) {
    log->record(numbered(n), n % 2 == 0, [&, n](std::error_code ec) {
      EXPECT_FALSE(ec);
      const auto k = static_cast<std::size_t>(n - 1);
      called_on[k] = std::this_thread::get_id();
      size_at_completion[k] = file_size(o.path);
      ++calls[k];
    });
  }
  // Nothing of the followers is written yet: the leader is still inside its completion.
  for (const auto& c : calls) {
    ASSERT_EQ(c.load(), 0);
  }
  EXPECT_EQ(file_size(o.path), size_before);
  followers_submitted.open();
  leader.join();
  EXPECT_EQ(leader_calls.load(), 1);
  const Layout layout = layout_of(o.path);
  // One batch: the first follower completion already sees every follower's bytes.
  const std::uint64_t whole = file_size(o.path);
  ASSERT_EQ(layout.order.size(), static_cast<std::size_t>(kFollowers + 1));
  for (int n = 1; n <= kFollowers; ++n) {
    const auto k = static_cast<std::size_t>(n - 1);
    EXPECT_EQ(calls[k].load(), 1) << "record " << n;
    EXPECT_EQ(called_on[k], leader_id) << "record " << n;
    EXPECT_GE(size_at_completion[k], layout.end_offset.at(n)) << "record " << n;
    EXPECT_EQ(size_at_completion[k], whole)
        << "record " << n << " completed before the batch was whole";
  }
}

// A completion that records again must not deadlock; a chain of re-entries longer than the
// leader's bound is handed to the background thread, which finishes it.
TEST(GroupCommit, ReentrantRecordFromACompletionCompletesAndIsHandedOffPastTheBound) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  // No interval fdatasync during the test: while the background thread is in one, the
  // leader keeps writing instead of handing off, which a slow run could hit at round 4.
  o.fsync_interval = std::chrono::hours(1);
  constexpr int kChain = FileAuditLog::kLeaderRounds + 6;
  auto log = AuditLog::open(o);
  std::vector<std::atomic<int>> calls(kChain);
  std::vector<std::thread::id> called_on(kChain);
  Latch last_completed;
  std::function<void(int)> submit;
  submit = [&](int n) {
    log->record(numbered(n), false, [&, n](std::error_code ec) {
      EXPECT_FALSE(ec);
      called_on[static_cast<std::size_t>(n)] = std::this_thread::get_id();
      ++calls[static_cast<std::size_t>(n)];
      if (n + 1 < kChain) {
        submit(n + 1);
      } else {
        last_completed.open();
      }
    });
  };
  submit(0);
  // The caller led the first kLeaderRounds batches (one record each, inline), then handed off.
  for (int n = 0; n < FileAuditLog::kLeaderRounds; ++n) {
    EXPECT_EQ(called_on[static_cast<std::size_t>(n)], std::this_thread::get_id()) << n;
  }
  ASSERT_TRUE(last_completed.wait());
  log.reset();
  for (int n = 0; n < kChain; ++n) {
    EXPECT_EQ(calls[static_cast<std::size_t>(n)].load(), 1) << "record " << n;
  }
  for (int n = FileAuditLog::kLeaderRounds; n < kChain; ++n) {
    EXPECT_NE(called_on[static_cast<std::size_t>(n)], std::this_thread::get_id()) << n;
  }
  const Layout layout = layout_of(o.path);
  ASSERT_EQ(layout.order.size(), static_cast<std::size_t>(kChain));
  for (int n = 0; n < kChain; ++n) {
    EXPECT_EQ(layout.order[static_cast<std::size_t>(n)], n);
  }
  EXPECT_TRUE(Verifier::verify({o.path}, {}).ok);
}

TEST(GroupCommit, ReentrantRecordsFromManyThreadsAllComplete) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100;
  testing::Completions inner;
  std::atomic<int> outer{0};
  {
    auto log = AuditLog::open(o);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          const int n = t * kPerThread + i;
          // Like the proxy: the decision's completion writes the final record.
          log->record(numbered(n), false, [&, n](std::error_code ec) {
            EXPECT_FALSE(ec);
            ++outer;
            log->record(numbered(n), true, inner.make());
          });
        }
      });
    }
    for (auto& th : threads) {
      th.join();
    }
  }
  EXPECT_EQ(outer.load(), kThreads * kPerThread);
  ASSERT_TRUE(inner.wait(kThreads * kPerThread));
  EXPECT_EQ(inner.errors(), 0);
  const auto report = Verifier::verify({o.path}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.detail;
  EXPECT_EQ(report.records, static_cast<std::uint64_t>(2 * kThreads * kPerThread));
}

// A child process gets a 64 KiB file-size limit (SIGXFSZ ignored, so write(2) fails with
// EFBIG). A batch of followers that crosses the limit fails as a whole, each completion
// once; the log turns unhealthy and fails every later record.
TEST(GroupCommit, WriteErrorFailsTheWholeBatchAndEveryLaterRecord) {
  TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{64 * 1024, 64 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    constexpr int kBatch = 200; // ~1 KiB each: well past the limit together
    int code = 0;
    {
      auto log = AuditLog::open(o);
      Latch leader_inside;
      Latch followers_submitted;
      std::error_code leader_ec = std::make_error_code(std::errc::interrupted);
      std::thread leader([&] {
        log->record(numbered(0), false, [&](std::error_code ec) {
          leader_ec = ec;
          leader_inside.open();
          followers_submitted.wait();
        });
      });
      if (!leader_inside.wait()) {
        ::_exit(20);
      }
      std::vector<std::atomic<int>> calls(kBatch);
      std::vector<std::atomic<int>> failed(kBatch);
      for (int n = 1; n <= kBatch; ++n) {
        log->record(numbered(n), false, [&, n](std::error_code ec) {
          failed[static_cast<std::size_t>(n - 1)] += ec == std::errc::file_too_large ? 1 : 0;
          ++calls[static_cast<std::size_t>(n - 1)];
        });
      }
      followers_submitted.open();
      leader.join();
      if (leader_ec) {
        code = 21; // the leader's record was written before the limit
      }
      for (int k = 0; k < kBatch && code == 0; ++k) {
        if (calls[static_cast<std::size_t>(k)].load() != 1) {
          code = 22;
        } else if (failed[static_cast<std::size_t>(k)].load() != 1) {
          code = 23;
        }
      }
      if (code == 0 &&
          (log->healthy() || log->failure().find("File too large") == std::string::npos)) {
        code = 24;
      }
      int later_calls = 0;
      std::error_code later;
      log->record(numbered(kBatch + 1), true, [&](std::error_code ec) {
        ++later_calls;
        later = ec;
      });
      if (code == 0 && (later_calls != 1 || later != std::errc::file_too_large)) {
        code = 25;
      }
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "20 leader never ran, 21 leader failed, 22 a completion "
                                       "not called once, 23 a batch record succeeded, 24 still "
                                       "healthy, 25 a later record did not fail";
  // The first record is whole; the failed batch left at most a torn tail.
  const auto report = Verifier::verify({o.path}, {});
  EXPECT_TRUE(report.ok || report.kind == "truncated") << report.kind << " " << report.detail;
  EXPECT_GE(report.records, 1u);
}

TEST(GroupCommit, RotationAndCheckpointsUnderConcurrencyKeepTheChainVerifiable) {
  TempDir dir;
  const std::string priv = dir.file("signing.key");
  const std::string pub = dir.file("signing.pub");
  CheckpointKey::generate(priv, pub);
  Options o;
  o.path = dir.file("log/audit.jsonl");
  o.rotate_bytes = 4 * 1024;
  o.signing_key_pem = priv;
  o.checkpoint_records = 25;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 150;
  testing::Completions c;
  {
    auto log = AuditLog::open(o);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          log->record(numbered(t * kPerThread + i), i % 2 == 1, c.make());
        }
      });
    }
    for (auto& th : threads) {
      th.join();
    }
  }
  ASSERT_TRUE(c.wait(kThreads * kPerThread));
  EXPECT_EQ(c.errors(), 0);
  std::size_t rotated = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("log"))) {
    rotated += e.path().filename().string().rfind("audit-", 0) == 0 ? 1u : 0u;
  }
  EXPECT_GE(rotated, 3u); // batches vary in size, so files do too
  VerifyOptions vo;
  vo.public_key = pub;
  const auto report = Verifier::verify({dir.file("log")}, vo);
  ASSERT_TRUE(report.ok) << report.kind << " " << report.file << ":" << report.line << " "
                         << report.detail;
  EXPECT_GE(report.checkpoints, static_cast<std::uint64_t>(kThreads * kPerThread / 25));
  EXPECT_EQ(report.unsigned_tail, 0u);
  EXPECT_EQ(report.last_seq, report.records);
  EXPECT_GE(report.files.size(), rotated);
}

} // namespace
} // namespace runwarden::audit

// TurnBatching (audit/audit_log.hpp): on a thread that has one, the records of one loop turn
// are sealed at once but written by one task the loop runs after the turn, in one write(2);
// each completion still follows the write of its record. A task that never runs loses
// nothing (the background thread, or close(), writes its batch), and one that runs late, even
// after the log is gone, does nothing.

#include "audit/file_audit_log.hpp"
#include "audit/verifier.hpp"
#include "test_support.hpp"

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace runwarden::audit {
namespace {

using testing::file_size;
using testing::TempDir;
namespace net = boost::asio;

Exchange numbered(int n) {
  return testing::sample_exchange(n); // id req_<n>
}

void expect_chain_verifies(const std::string& path, std::size_t records) {
  const auto report = Verifier::verify({path}, {});
  EXPECT_TRUE(report.ok) << report.kind << " " << report.detail;
  EXPECT_EQ(report.records, records);
}

std::size_t lines_in(const std::string& path) {
  return testing::split_lines(testing::read_all(path)).size();
}

/// A loop turn by hand: what the log posts is kept, and run when the test says so.
struct Turn {
  std::vector<std::function<void()>> posted;
  TurnBatching batching{[this](std::function<void()> task) { posted.push_back(std::move(task)); }};

  void run_posted() {
    auto tasks = std::move(posted);
    posted.clear();
    for (auto& t : tasks) {
      t();
    }
  }
};

/// Completion bookkeeping: calls, errors, the file size each completion saw, its thread.
struct Completions {
  explicit Completions(std::string path, std::size_t n)
      : path_(std::move(path)), calls(n), size_seen(n, 0), thread(n) {}

  Completion at(std::size_t k) {
    return [this, k](std::error_code ec) {
      std::lock_guard lock(mu_);
      errors += ec ? 1 : 0;
      size_seen[k] = file_size(path_);
      thread[k] = std::this_thread::get_id();
      ++calls[k];
      ++total;
      cv_.notify_all();
    };
  }
  int count(std::size_t k) {
    std::lock_guard lock(mu_);
    return calls[k];
  }
  int error_count() {
    std::lock_guard lock(mu_);
    return errors;
  }
  bool wait_total(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return total >= n; });
  }

  std::string path_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> calls;
  std::vector<std::uint64_t> size_seen;
  std::vector<std::thread::id> thread;
  int total = 0;
  int errors = 0;
};

class TurnBatchingTest : public ::testing::Test {
protected:
  TempDir dir;
  Options o;
  void SetUp() override { o.path = dir.file("audit.jsonl"); }
};

TEST_F(TurnBatchingTest, ATurnsRecordsAreWrittenTogetherByOneTaskAfterIt) {
  auto log = AuditLog::open(o);
  constexpr std::size_t kRecords = 5;
  Completions done(o.path, kRecords);
  Turn turn;
  const std::uint64_t before = file_size(o.path);
  for (std::size_t k = 0; k < kRecords; ++k) {
    log->record(numbered(static_cast<int>(k)), k % 2 == 1, done.at(k));
  }
  // Sealed, not written: nothing in the file, no completion, one task for the whole turn.
  EXPECT_EQ(file_size(o.path), before);
  for (std::size_t k = 0; k < kRecords; ++k) {
    EXPECT_EQ(done.count(k), 0) << "record " << k << " completed before its write";
  }
  ASSERT_EQ(turn.posted.size(), 1u);
  turn.run_posted();
  const std::uint64_t whole = file_size(o.path);
  EXPECT_GT(whole, before);
  for (std::size_t k = 0; k < kRecords; ++k) {
    EXPECT_EQ(done.count(k), 1) << "record " << k;
    // One write(2): every completion already sees all five records.
    EXPECT_EQ(done.size_seen[k], whole) << "record " << k;
    EXPECT_EQ(done.thread[k], std::this_thread::get_id());
  }
  EXPECT_EQ(done.errors, 0);
  EXPECT_EQ(lines_in(o.path), kRecords);
  // The next turn starts a batch of its own.
  Completions next(o.path, 1);
  log->record(numbered(9), true, next.at(0));
  EXPECT_EQ(turn.posted.size(), 1u);
  EXPECT_EQ(next.count(0), 0);
  turn.run_posted();
  EXPECT_EQ(next.count(0), 1);
  log->close();
  expect_chain_verifies(o.path, kRecords + 1);
}

// Another thread without a loop of its own (no TurnBatching) does not wait for this thread's
// loop: it takes the waiting batch over and writes both records at once, on its own thread;
// the task then finds nothing.
TEST_F(TurnBatchingTest, AnotherThreadTakesTheWaitingBatchOver) {
  auto log = AuditLog::open(o);
  Completions done(o.path, 2);
  Turn turn;
  log->record(numbered(0), false, done.at(0));
  EXPECT_EQ(done.count(0), 0);
  std::thread::id other_id;
  std::thread other([&] {
    other_id = std::this_thread::get_id();
    log->record(numbered(1), true, done.at(1));
  });
  other.join();
  EXPECT_EQ(done.count(0), 1) << "the waiting batch was not taken over";
  EXPECT_EQ(done.count(1), 1);
  EXPECT_EQ(done.thread[0], other_id);
  EXPECT_EQ(done.size_seen[0], done.size_seen[1]) << "not one write";
  ASSERT_EQ(turn.posted.size(), 1u);
  turn.run_posted();
  EXPECT_EQ(lines_in(o.path), 2u);
  EXPECT_EQ(done.count(0), 1);
}

// Another thread with a loop of its own joins the waiting batch instead: its records are
// not written at once, its loop gets one task for the turn (not one per record), and
// whichever of the two tasks runs first writes the records of both in one write(2); the
// other then finds nothing, and no completion runs twice.
TEST_F(TurnBatchingTest, AnotherLoopJoinsTheWaitingBatchAndTheFirstTaskWritesIt) {
  auto log = AuditLog::open(o);
  for (const bool other_first : {true, false}) {
    SCOPED_TRACE(other_first ? "the other loop's task first" : "this loop's task first");
    const std::size_t lines_before = lines_in(o.path);
    Completions done(o.path, 3);
    Turn turn;
    log->record(numbered(0), false, done.at(0));
    std::mutex mu;
    std::condition_variable cv;
    int step = 0; // 1: the other thread recorded; 2: run its task; 3: it ran
    std::size_t other_posted = 0;
    std::thread other([&] {
      Turn other_turn;
      log->record(numbered(1), false, done.at(1));
      log->record(numbered(2), true, done.at(2));
      std::unique_lock lock(mu);
      other_posted = other_turn.posted.size();
      step = 1;
      cv.notify_all();
      cv.wait(lock, [&] { return step == 2; });
      lock.unlock();
      other_turn.run_posted();
      lock.lock();
      step = 3;
      cv.notify_all();
    });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return step == 1; });
    EXPECT_EQ(other_posted, 1u) << "one task per turn, not one per record";
    for (std::size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(done.count(k), 0) << "record " << k << " written before a turn ended";
    }
    ASSERT_EQ(turn.posted.size(), 1u);
    if (!other_first) {
      lock.unlock();
      turn.run_posted();
      lock.lock();
    }
    step = 2;
    cv.notify_all();
    cv.wait(lock, [&] { return step == 3; });
    lock.unlock();
    other.join();
    turn.run_posted(); // nothing left when the other ran first
    for (std::size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(done.count(k), 1) << "record " << k;
      EXPECT_EQ(done.size_seen[k], done.size_seen[0]) << "not one write: record " << k;
    }
    EXPECT_EQ(done.errors, 0);
    EXPECT_EQ(lines_in(o.path), lines_before + 3);
  }
  log->close();
  expect_chain_verifies(o.path, 6);
}

// A completion that records again (the proxy's decision completion writes the final record)
// is written by the same task, in a later round, with no second task.
TEST_F(TurnBatchingTest, ARecordFromACompletionIsWrittenByTheSameTask) {
  auto log = AuditLog::open(o);
  Completions done(o.path, 2);
  Turn turn;
  log->record(numbered(0), false, [&](std::error_code ec) {
    EXPECT_FALSE(ec);
    log->record(numbered(1), true, done.at(1));
  });
  ASSERT_EQ(turn.posted.size(), 1u);
  turn.run_posted();
  EXPECT_EQ(done.count(1), 1);
  EXPECT_TRUE(turn.posted.empty());
  EXPECT_EQ(lines_in(o.path), 2u);
}

// The loop never runs the task (stuck in one long turn, or stopped): the background thread
// writes the batch after about one fsync interval, and the task, run later, writes nothing.
TEST_F(TurnBatchingTest, ATaskThatDoesNotRunIsWrittenByTheBackgroundThread) {
  o.fsync_interval = std::chrono::milliseconds(20);
  auto log = AuditLog::open(o);
  Completions done(o.path, 2);
  Turn turn;
  log->record(numbered(0), false, done.at(0));
  log->record(numbered(1), true, done.at(1));
  ASSERT_EQ(turn.posted.size(), 1u);
  ASSERT_TRUE(done.wait_total(2)) << "a deferred batch whose task never ran was not written";
  EXPECT_NE(done.thread[0], std::this_thread::get_id());
  EXPECT_EQ(done.errors, 0);
  EXPECT_EQ(lines_in(o.path), 2u);
  turn.run_posted();
  EXPECT_EQ(lines_in(o.path), 2u) << "the late task wrote the batch again";
  EXPECT_EQ(done.count(0), 1);
  EXPECT_EQ(done.count(1), 1);
}

// close() writes a batch still waiting for its task; the task, run after the log is gone,
// touches nothing (AddressSanitizer would see it).
TEST_F(TurnBatchingTest, CloseWritesAWaitingBatchAndALateTaskDoesNothing) {
  o.fsync_interval = std::chrono::seconds(30); // the background thread does not take it
  Completions done(o.path, 2);
  Turn turn;
  {
    auto log = AuditLog::open(o);
    log->record(numbered(0), false, done.at(0));
    log->record(numbered(1), true, done.at(1));
    ASSERT_EQ(turn.posted.size(), 1u);
    EXPECT_EQ(done.count(0), 0);
    log->close();
    EXPECT_EQ(done.count(0), 1);
    EXPECT_EQ(done.count(1), 1);
    EXPECT_EQ(done.errors, 0);
  }
  turn.run_posted();
  expect_chain_verifies(o.path, 2);
}

// A completion run by the deferred task may close the log (a shutdown begun from it): close()
// does not wait for the task it is inside, and still writes what that task left.
TEST_F(TurnBatchingTest, ACompletionInsideTheTaskMayCloseTheLog) {
  auto log = AuditLog::open(o);
  Completions done(o.path, 2);
  Turn turn;
  log->record(numbered(0), false, [&](std::error_code ec) {
    done.at(0)(ec);
    log->record(numbered(1), true, done.at(1)); // joins the batch being written
    log->close();
  });
  ASSERT_EQ(turn.posted.size(), 1u);
  turn.run_posted();
  EXPECT_EQ(done.count(0), 1);
  EXPECT_EQ(done.count(1), 1);
  EXPECT_EQ(done.errors, 0);
  expect_chain_verifies(o.path, 2);
}

// `synced` durability keeps its writer thread: nothing is deferred.
TEST_F(TurnBatchingTest, SyncedDurabilityIsNotDeferred) {
  o.durability = Durability::synced;
  auto log = AuditLog::open(o);
  Completions done(o.path, 1);
  Turn turn;
  log->record(numbered(0), true, done.at(0));
  ASSERT_TRUE(done.wait_total(1));
  EXPECT_TRUE(turn.posted.empty());
}

// Real loops: three io_contexts, each thread with TurnBatching posting to its own, records
// made by handlers and by completions (the final record after the decision), a loop stalled
// now and then past the fsync interval. Every completion runs once, without error, and the
// chain verifies.
TEST_F(TurnBatchingTest, RealLoopsOnThreeThreadsLoseNothing) {
  o.fsync_interval = std::chrono::milliseconds(5);
  auto log = AuditLog::open(o);
  constexpr int kThreads = 3;
  constexpr int kPerThread = 600;
  constexpr std::size_t kMax = kThreads * kPerThread * 2;
  Completions done(o.path, kMax);
  std::atomic<std::size_t> next{0};
  std::vector<std::unique_ptr<net::io_context>> loops;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    loops.push_back(std::make_unique<net::io_context>(1));
    net::io_context* loop = loops.back().get();
    for (int i = 0; i < kPerThread; ++i) {
      net::post(*loop, [&, i] {
        if (i % 200 == 199) {
          std::this_thread::sleep_for(std::chrono::milliseconds(12)); // one long turn
        }
        const std::size_t k = next.fetch_add(1);
        auto first = done.at(k);
        log->record(numbered(static_cast<int>(k)), false, [&, k, first](std::error_code ec) {
          // The follow-up takes its number before this completion counts: once every number
          // taken has completed, no completion can still be about to record.
          if (k % 2 == 0) {
            const std::size_t k2 = next.fetch_add(1);
            log->record(numbered(static_cast<int>(k2)), true, done.at(k2));
          }
          first(ec);
        });
      });
    }
    threads.emplace_back([loop] {
      const TurnBatching batching(
          [loop](std::function<void()> task) { net::post(*loop, std::move(task)); });
      loop->run();
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  // Completions may still run on the log's background thread (a long turn's batch), and
  // record their follow-ups: wait until every number taken has completed.
  std::size_t made = next.load();
  for (int tries = 0; tries < 100; ++tries) {
    ASSERT_TRUE(done.wait_total(static_cast<int>(made)));
    if (next.load() == made) {
      break;
    }
    made = next.load();
  }
  ASSERT_EQ(next.load(), made);
  for (std::size_t k = 0; k < made; ++k) {
    ASSERT_EQ(done.count(k), 1) << "record " << k;
  }
  EXPECT_EQ(done.error_count(), 0);
  log->close();
  expect_chain_verifies(o.path, made);
}

// A loop stopped in the turn that recorded (the proxy's I/O threads at shutdown) does not
// run the task; TurnBatching's destructor does, on the loop's thread after run() returned,
// while the executor the completion dispatches to still exists.
TEST_F(TurnBatchingTest, ALoopStoppedMidTurnLeavesNothingWaiting) {
  o.fsync_interval = std::chrono::seconds(30); // the background thread does not take it
  auto log = AuditLog::open(o);
  Completions done(o.path, 1);
  auto loop = std::make_unique<net::io_context>(1);
  net::io_context* ctx = loop.get();
  net::post(*ctx, [&] {
    log->record(numbered(0), true, [&](std::error_code ec) {
      done.at(0)(ec);
      net::dispatch(ctx->get_executor(), [] {}); // as a session's completion does
    });
    ctx->stop();
  });
  std::thread th([ctx] {
    const TurnBatching batching(
        [ctx](std::function<void()> task) { net::post(*ctx, std::move(task)); });
    ctx->run();
  });
  th.join();
  EXPECT_EQ(done.count(0), 1) << "the record waited past its loop";
  EXPECT_EQ(lines_in(o.path), 1u);
  loop.reset();
  log->close();
  EXPECT_EQ(lines_in(o.path), 1u);
}

// A defers, B joins, and A's task writes both. B then records again while its first task
// is still queued: B posts no second task, and that queued one writes B's new record (and
// the record A joins to it meanwhile).
TEST_F(TurnBatchingTest, AJoinersQueuedTaskWritesItsNextRecord) {
  o.fsync_interval = std::chrono::seconds(30);
  auto log = AuditLog::open(o);
  Completions done(o.path, 4);
  Turn a;
  log->record(numbered(0), false, done.at(0)); // A defers
  ASSERT_EQ(a.posted.size(), 1u);
  std::mutex mu;
  std::condition_variable cv;
  int step = 0;
  std::size_t b_posted_1 = 0, b_posted_2 = 0;
  std::thread b([&] {
    Turn bt;
    log->record(numbered(1), false, done.at(1)); // joins A's batch
    std::unique_lock lock(mu);
    b_posted_1 = bt.posted.size();
    step = 1;
    cv.notify_all();
    cv.wait(lock, [&] { return step == 2; });
    lock.unlock();
    log->record(numbered(2), false, done.at(2)); // defers, post deduped
    lock.lock();
    b_posted_2 = bt.posted.size();
    step = 3;
    cv.notify_all();
    cv.wait(lock, [&] { return step == 4; });
    lock.unlock();
    bt.run_posted(); // the stale task
    lock.lock();
    step = 5;
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return step == 1; });
  EXPECT_EQ(b_posted_1, 1u);
  lock.unlock();
  a.run_posted(); // writes 0 and 1
  EXPECT_EQ(done.count(0), 1);
  EXPECT_EQ(done.count(1), 1);
  lock.lock();
  step = 2;
  cv.notify_all();
  cv.wait(lock, [&] { return step == 3; });
  EXPECT_EQ(b_posted_2, 1u) << "deduped";
  EXPECT_EQ(done.count(2), 0);
  lock.unlock();
  log->record(numbered(3), false, done.at(3)); // A joins B's deferral, posts its own task
  EXPECT_EQ(a.posted.size(), 1u);
  lock.lock();
  step = 4;
  cv.notify_all();
  cv.wait(lock, [&] { return step == 5; });
  lock.unlock();
  b.join();
  EXPECT_EQ(done.count(2), 1) << "B's record stranded";
  EXPECT_EQ(done.count(3), 1) << "A's joined record stranded";
  a.run_posted(); // finds nothing
  for (std::size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(done.count(k), 1) << k;
  }
  EXPECT_EQ(done.error_count(), 0);
  log->close();
  expect_chain_verifies(o.path, 4);
}

// A loop blocked in a long turn after it deferred (or joined) never delays the other loop's
// records, and its own deferred record is written by the other loop's task (the background
// thread's backstop is out of reach: 10 s).
TEST_F(TurnBatchingTest, ALoopBlockedInALongTurnDelaysNoRecordOfTheOther) {
  o.fsync_interval = std::chrono::seconds(10); // no backstop
  auto log = AuditLog::open(o);
  net::io_context a(1), b(1);
  auto ga = net::make_work_guard(a);
  auto gb = net::make_work_guard(b);
  auto runner = [](net::io_context& c) {
    return std::thread([&c] {
      const TurnBatching batching([&c](std::function<void()> t) { net::post(c, std::move(t)); });
      c.run();
    });
  };
  std::thread ta = runner(a), tb = runner(b);
  using clock = std::chrono::steady_clock;
  std::mutex mu;
  std::vector<std::pair<std::string, long>> lat;
  auto rec = [&](const std::string& name, int n) {
    const auto t0 = clock::now();
    log->record(numbered(n), false, [&, name, t0](std::error_code) {
      std::lock_guard lock(mu);
      lat.emplace_back(
          name,
          static_cast<long>(
              std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t0).count()));
    });
  };
  for (int it = 0; it < 2; ++it) {
    // B records, then blocks 300 ms in the same turn; A records meanwhile (joins B's batch).
    std::promise<void> b_recorded;
    net::post(b, [&] {
      rec("b-deferred-then-blocked", 1);
      b_recorded.set_value();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    });
    b_recorded.get_future().wait();
    net::post(a, [&] { rec("a-joins-blocked-b", 2); });
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    // A defers, B joins, then B blocks; A's records keep flowing.
    std::promise<void> a_recorded;
    net::post(a, [&] {
      rec("a-defers", 3);
      a_recorded.set_value();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    });
    a_recorded.get_future().wait();
    net::post(b, [&] {
      rec("b-joins-then-blocks", 4);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (int i = 0; i < 5; ++i) {
      net::post(a, [&] { rec("a-while-b-blocked", 5); });
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  ga.reset();
  gb.reset();
  ta.join();
  tb.join();
  std::map<std::string, long> worst;
  for (auto& [n, ms] : lat) {
    worst[n] = std::max(worst[n], ms);
  }
  EXPECT_LT(worst["a-joins-blocked-b"], 100);
  EXPECT_LT(worst["b-deferred-then-blocked"], 100);
  EXPECT_LT(worst["a-while-b-blocked"], 100);
  EXPECT_EQ(lat.size(), 2u * 9u);
  log->close();
  expect_chain_verifies(o.path, lat.size());
}

// One connection at a time: batches that only ever hold one record stop waiting for the
// turn to end (each wait cost a hop through the loop and an extra reactor poll), a probe
// every kProbeEvery records waits again, and a probe that gathers two records switches
// waiting back on.
TEST_F(TurnBatchingTest, SingleRecordTurnsWriteAtOnceUntilAProbeGathersMore) {
  o.fsync_interval = std::chrono::seconds(30);
  auto log = AuditLog::open(o);
  constexpr int kSingles = TurnBatching::kSinglesBeforeInline;
  constexpr int kProbe = TurnBatching::kProbeEvery;
  Completions done(o.path, kSingles + kProbe + 8);
  Turn turn;
  std::size_t k = 0;
  for (int i = 0; i < kSingles; ++i, ++k) {
    log->record(numbered(static_cast<int>(k)), true, done.at(k));
    ASSERT_EQ(done.count(k), 0) << "turn " << i << " did not wait";
    ASSERT_EQ(turn.posted.size(), 1u);
    turn.run_posted();
    ASSERT_EQ(done.count(k), 1);
  }
  // Written at once from here: the completion runs inside record(), nothing is posted.
  for (int i = 1; i < kProbe; ++i, ++k) {
    log->record(numbered(static_cast<int>(k)), true, done.at(k));
    ASSERT_EQ(done.count(k), 1) << "record " << k << " waited";
    ASSERT_TRUE(turn.posted.empty());
  }
  // The probe waits, and a second record of the same turn joins it.
  log->record(numbered(static_cast<int>(k)), true, done.at(k));
  EXPECT_EQ(done.count(k), 0) << "no probe";
  ASSERT_EQ(turn.posted.size(), 1u);
  ++k;
  log->record(numbered(static_cast<int>(k)), true, done.at(k));
  EXPECT_EQ(done.count(k), 0);
  turn.run_posted();
  EXPECT_EQ(done.count(k - 1), 1);
  EXPECT_EQ(done.count(k), 1);
  EXPECT_EQ(done.size_seen[k - 1], done.size_seen[k]) << "the probe's two records, one write";
  ++k;
  // Two records gathered: the next record waits again.
  log->record(numbered(static_cast<int>(k)), true, done.at(k));
  EXPECT_EQ(done.count(k), 0) << "waiting did not come back on";
  turn.run_posted();
  EXPECT_EQ(done.count(k), 1);
  ++k;
  EXPECT_EQ(done.error_count(), 0);
  log->close();
  expect_chain_verifies(o.path, k);
}

} // namespace
} // namespace runwarden::audit

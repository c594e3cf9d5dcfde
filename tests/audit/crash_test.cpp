// Crash safety: a writer child is killed with SIGKILL at random points (seeded, 30 rounds).
// After each kill the log is reopened (recovering any torn line), `verify` must pass, and
// every record whose completion the child acknowledged through a pipe must be present.

#include "audit/audit_log.hpp"
#include "audit/log_query.hpp"
#include "audit/verifier.hpp"
#include "test_support.hpp"

#include <cerrno>
#include <csignal>
#include <gtest/gtest.h>
#include <random>
#include <set>
#include <sys/wait.h>
#include <unistd.h>

namespace runwarden::audit {
namespace {

constexpr int kRounds = 30;
constexpr int kMaxRecordsPerRound = 400;

[[noreturn]] void child_writer(const Options& o, int round, int ack_fd) {
  auto log = AuditLog::open(o);
  for (int i = 0; i < kMaxRecordsPerRound; ++i) {
    Exchange ex = testing::sample_exchange(i, "crash");
    ex.id = "req_" + std::to_string(round) + "_" + std::to_string(i);
    ex.request.body = std::string(static_cast<std::size_t>(100 + (i * 977) % 6000), 'b');
    ex.request.headers.emplace_back("Content-Type", "text/plain");
    log->record(ex, true, [ack_fd, i](std::error_code ec) {
      if (!ec) {
        const std::int32_t v = i;
        // The parent counts this record as acknowledged only once this write returns.
        while (::write(ack_fd, &v, sizeof v) < 0 && errno == EINTR) {
        }
      }
    });
  }
  ::pause(); // wait for the kill
  ::_exit(0);
}

TEST(Crash, KilledWriterLosesNothingAcknowledgedAndTheChainVerifies) {
  testing::TempDir dir;
  Options o;
  o.path = dir.file("audit.jsonl");
  o.rotate_bytes = 256 * 1024;
  std::mt19937 rng(20261121);
  std::set<std::string> acked;
  for (int round = 0; round < kRounds; ++round) {
    o.durability = round % 2 == 0 ? Durability::written : Durability::synced;
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      child_writer(o, round, fds[1]);
    }
    ::close(fds[1]);
    // Kill while the child is writing: wait for its first acknowledgement (or its death),
    // then a random delay.
    std::int32_t first = 0;
    if (::read(fds[0], &first, sizeof first) == sizeof first) {
      acked.insert("req_" + std::to_string(round) + "_" + std::to_string(first));
    }
    ::usleep(static_cast<useconds_t>(std::uniform_int_distribution<int>(0, 8000)(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    std::int32_t v = 0;
    // Bounded: the child is dead, so the pipe ends after at most kMaxRecordsPerRound values.
    for (int k = 0; k <= kMaxRecordsPerRound && ::read(fds[0], &v, sizeof v) == sizeof v; ++k) {
      acked.insert("req_" + std::to_string(round) + "_" + std::to_string(v));
    }
    ::close(fds[0]);

    // Recovery happens on open; then the whole chain must verify.
    { auto reopened = AuditLog::open(o); }
    const auto report = Verifier::verify({dir.path()}, {});
    ASSERT_TRUE(report.ok) << "round " << round << ": " << report.kind << " " << report.file << ":"
                           << report.line << " " << report.detail;
  }
  std::vector<nlohmann::json> records;
  std::string error;
  ASSERT_TRUE(LogQuery::load({dir.path()}, records, error)) << error;
  std::set<std::string> present;
  for (const auto& r : records) {
    if (r.contains("id") && r["id"].is_string()) {
      present.insert(r["id"].get<std::string>());
    }
  }
  std::size_t missing = 0;
  for (const auto& id : acked) {
    if (present.count(id) == 0) {
      ++missing;
      ADD_FAILURE() << "acknowledged record " << id << " is missing";
      if (missing > 5) {
        break;
      }
    }
  }
  EXPECT_GT(acked.size(), 0u);
  RecordProperty("acknowledged", static_cast<int>(acked.size()));
}

} // namespace
} // namespace runwarden::audit

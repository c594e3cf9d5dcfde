// Audit group commit at the default durability (`written`, issue 4): N threads (1, 2, 4)
// each append small decision + final record pairs, as the proxy's I/O threads do. Reports
// records/s, write(2)s per record (from /proc/self/io syscw), voluntary context switches
// per record (getrusage: a thread that blocks on a lock or a condition switches out) and
// CPU microseconds per record (user + system, all threads: steadier than records/s on a
// shared machine).
// Run: build-groupcommit/bench/audit_group_bench --benchmark_min_time=1
// The log goes to $RUNWARDEN_BENCH_DIR (default: a fresh directory under /tmp).

#include "audit/audit_log.hpp"

#include <atomic>
#include <benchmark/benchmark.h>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using namespace runwarden::audit;

constexpr int kPairsPerThread = 2000;

std::uint64_t write_syscalls() {
  std::ifstream in{"/proc/self/io"};
  std::string key;
  std::uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "syscw:") {
      return value;
    }
  }
  return 0;
}

struct Usage {
  std::uint64_t voluntary_switches = 0;
  double cpu_us = 0; // user + system, all threads
};

Usage usage() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  const auto us = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) * 1e6 + static_cast<double>(tv.tv_usec);
  };
  return {static_cast<std::uint64_t>(ru.ru_nvcsw), us(ru.ru_utime) + us(ru.ru_stime)};
}

Exchange small_exchange(int thread, int i) {
  Exchange ex;
  ex.id = "req_" + std::to_string(thread) + "_" + std::to_string(i);
  ex.run = "run_7f3a9c";
  ex.agent = "payments-agent";
  ex.runbook = "payment-api-latency";
  ex.runbook_sha256 = std::string(64, 'c');
  ex.action = "fetch_logs";
  ex.cls = "read_only";
  ex.outcome = "forwarded";
  ex.reason = "matched actions.fetch_logs[0]";
  ex.request.method = "GET";
  ex.request.url = "http://logs.internal.example/bench/item?i=" + std::to_string(i);
  ex.request.headers = {{"Host", "logs.internal.example"}, {"Accept", "*/*"}};
  ex.request.body_bytes = 0;
  ResponseInfo resp;
  resp.status = 200;
  resp.headers = {{"Content-Type", "application/json"}, {"Content-Length", "11"}};
  resp.body = "{\"ok\":true}";
  resp.bytes = resp.body.size();
  ex.response = resp;
  ex.timing = {0.4, 0.3, 0};
  ex.client = "127.0.0.1:40000";
  return ex;
}

std::string bench_dir() {
  if (const char* d = std::getenv("RUNWARDEN_BENCH_DIR"); d != nullptr && *d != '\0') {
    return d;
  }
  std::string tmpl = (std::filesystem::temp_directory_path() / "rw-group-bench-XXXXXX").string();
  return ::mkdtemp(tmpl.data()) != nullptr ? tmpl : std::string("/tmp");
}

/// Counts completions; wait() is bounded so a lost completion ends the run visibly.
class Pending {
public:
  void done() {
    if (left_.fetch_sub(1) == 1) {
      std::lock_guard lock(mu_);
      cv_.notify_all();
    }
  }
  void expect(std::int64_t n) { left_.store(n); }
  bool wait() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(60), [this] { return left_.load() == 0; });
  }

private:
  std::atomic<std::int64_t> left_{0};
  std::mutex mu_;
  std::condition_variable cv_;
};

// One iteration: every thread appends kPairsPerThread decision + final pairs, back to back
// (the proxy has the upstream exchange in between; here only the log's cost is measured).
void BM_GroupCommitPairs(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const std::string dir = bench_dir();
  Options o;
  o.path = dir + "/audit.jsonl";
  o.rotate_bytes = 64ull * 1024 * 1024;
  auto log = AuditLog::open(o);
  std::vector<std::vector<Exchange>> exchanges(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    for (int i = 0; i < kPairsPerThread; ++i) {
      exchanges[static_cast<std::size_t>(t)].push_back(small_exchange(t, i));
    }
  }
  std::uint64_t records = 0;
  std::uint64_t writes = 0;
  std::uint64_t switches = 0;
  double cpu_us = 0;
  std::atomic<int> errors{0};
  for (auto _ : state) {
    Pending pending;
    pending.expect(static_cast<std::int64_t>(threads) * kPairsPerThread * 2);
    const std::uint64_t w0 = write_syscalls();
    const Usage u0 = usage();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (const Exchange& ex : exchanges[static_cast<std::size_t>(t)]) {
          log->record(ex, false, [&](std::error_code ec) {
            errors += ec ? 1 : 0;
            pending.done();
          });
          log->record(ex, true, [&](std::error_code ec) {
            errors += ec ? 1 : 0;
            pending.done();
          });
        }
      });
    }
    for (auto& w : workers) {
      w.join();
    }
    if (!pending.wait()) {
      state.SkipWithError("completions lost");
      break;
    }
    writes += write_syscalls() - w0;
    const Usage u1 = usage();
    switches += u1.voluntary_switches - u0.voluntary_switches;
    cpu_us += u1.cpu_us - u0.cpu_us;
    records += static_cast<std::uint64_t>(threads) * kPairsPerThread * 2;
  }
  if (errors.load() != 0) {
    state.SkipWithError("audit write errors");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(records));
  const double r = records > 0 ? static_cast<double>(records) : 1.0;
  state.counters["writes_per_record"] = static_cast<double>(writes) / r;
  state.counters["vcsw_per_record"] = static_cast<double>(switches) / r;
  state.counters["cpu_us_per_record"] = cpu_us / r;
  log.reset();
  if (std::getenv("RUNWARDEN_BENCH_DIR") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
}
BENCHMARK(BM_GroupCommitPairs)
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();

// Audit throughput (issue 3): appends with redaction + hash chain on a realistic 2 KiB
// request/response pair at the default durability (target >= 100,000 records/s on one
// core), and redaction speed on JSON bodies (target >= 200 MB/s).
// Run: build-audit-rel/bench/audit_bench --benchmark_min_time=2
// Profile: valgrind --tool=callgrind audit_bench --fixed=2000 runs each workload a fixed
// number of times outside the benchmark loop, so instruction counts compare across builds.

#include "audit/audit_log.hpp"
#include "audit/record_builder.hpp"
#include "audit/redactor.hpp"

#include <benchmark/benchmark.h>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace {

using namespace runwarden::audit;

std::string json_body(std::size_t target) {
  std::string body = "{\"items\":[";
  int i = 0;
  while (body.size() < target) {
    if (i > 0) {
      body += ',';
    }
    body += R"({"id":"ord_)" + std::to_string(100000 + i) +
            R"(","customer":{"name":"Ada Lovelace","email":"ada@example.com","tier":"gold"},)"
            R"("amount":)" +
            std::to_string(1999 + i) +
            R"(,"currency":"usd","status":"pending","metadata":{"source":"agent","retry":false},)"
            R"("notes":"customer asked for a refund after the outage on 2026-11-20"})";
    ++i;
  }
  body += "]}";
  return body;
}

Exchange realistic_exchange() {
  Exchange ex;
  ex.id = "req_01JD8Y3M9W2ZK";
  ex.run = "run_7f3a9c";
  ex.agent = "payments-agent";
  ex.runbook = "payment-api-latency";
  ex.runbook_sha256 = std::string(64, 'c');
  ex.action = "issue_small_refund";
  ex.cls = "allowed";
  ex.outcome = "forwarded";
  ex.reason = "matched actions.issue_small_refund[0]";
  ex.request.method = "POST";
  ex.request.url = "https://api.stripe.com/v1/refunds?expand=charge";
  ex.request.headers = {{"Host", "api.stripe.com"},
                        {"Authorization", "Bearer sk_live_abcdefghijklmnopqrstuvwx"},
                        {"Content-Type", "application/json"},
                        {"User-Agent", "agent-http/1.4"},
                        {"Idempotency-Key", "f1b2c3d4-e5f6"},
                        {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}};
  ex.request.body = json_body(1024);
  ex.request.body_bytes = ex.request.body.size();
  ResponseInfo resp;
  resp.status = 200;
  resp.headers = {{"Content-Type", "application/json"},
                  {"Request-Id", "req_abc123"},
                  {"Set-Cookie", "__stripe_mid=abcdef; Secure"}};
  resp.body = json_body(1024);
  resp.bytes = resp.body.size();
  ex.response = resp;
  ex.timing = {12.3, 10.1, 0};
  ex.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  ex.client = "127.0.0.1:40312";
  return ex;
}

// A typical proxied call: GET without a body, a few headers, a small JSON answer.
Exchange small_exchange() {
  Exchange ex = realistic_exchange();
  ex.request.method = "GET";
  ex.request.url = "https://api.github.com/repos/acme/app/pulls?state=open";
  ex.request.headers = {{"Host", "api.github.com"},
                        {"Authorization", "Bearer ghp_abcdefghijklmnopqrstuvwxyz0123456789"},
                        {"Accept", "application/json"},
                        {"User-Agent", "agent-http/1.4"}};
  ex.request.body.clear();
  ex.request.body_bytes = 0;
  ex.response->headers = {{"Content-Type", "application/json"}, {"Content-Length", "121"}};
  ex.response->body =
      R"({"id":1347,"state":"open","title":"Fix the retry budget","user":{"login":"octocat"},"draft":false,"mergeable":true})";
  ex.response->bytes = ex.response->body.size();
  return ex;
}

// The proxy's pair per forwarded request: the decision record, then the exchange record.
void BM_AppendSmallPair(benchmark::State& state) {
  const std::string dir = "/tmp/runwarden-audit-bench-small-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  Options o;
  o.path = dir + "/audit.jsonl";
  o.rotate_bytes = 64ull << 20;
  const Exchange ex = small_exchange();
  {
    auto log = AuditLog::open(o);
    std::size_t errors = 0;
    std::int64_t n = 0;
    for (auto _ : state) {
      log->record(ex, false, [&errors](std::error_code ec) { errors += ec ? 1u : 0u; });
      log->record(ex, true, [&errors](std::error_code ec) { errors += ec ? 1u : 0u; });
      if ((++n & 0x3fff) == 0) {
        state.PauseTiming();
        for (const auto& e : std::filesystem::directory_iterator(dir)) {
          if (e.path().filename() != "audit.jsonl") {
            std::filesystem::remove(e.path());
          }
        }
        state.ResumeTiming();
      }
    }
    if (errors != 0) {
      state.SkipWithError("audit write failed");
    }
  }
  state.SetItemsProcessed(2 * state.iterations());
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_AppendSmallPair)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_AppendWritten(benchmark::State& state) {
  const std::string dir = "/tmp/runwarden-audit-bench-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  Options o;
  o.path = dir + "/audit.jsonl";
  o.rotate_bytes = 64ull << 20;
  const Exchange ex = realistic_exchange();
  {
    auto log = AuditLog::open(o);
    std::size_t errors = 0;
    std::int64_t n = 0;
    for (auto _ : state) {
      log->record(ex, true, [&errors](std::error_code ec) { errors += ec ? 1u : 0u; });
      // Keep the disk footprint bounded: drop rotated files now and then.
      if ((++n & 0x3fff) == 0) {
        state.PauseTiming();
        for (const auto& e : std::filesystem::directory_iterator(dir)) {
          if (e.path().filename() != "audit.jsonl") {
            std::filesystem::remove(e.path());
          }
        }
        state.ResumeTiming();
      }
    }
    if (errors != 0) {
      state.SkipWithError("audit write failed");
    }
  }
  state.SetItemsProcessed(state.iterations());
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_AppendWritten)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_BuildRecordOnly(benchmark::State& state) {
  const RecordBuilder builder({}, 16 * 1024);
  const Exchange ex = realistic_exchange();
  for (auto _ : state) {
    benchmark::DoNotOptimize(builder.exchange_members(ex, true));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BuildRecordOnly)->Unit(benchmark::kMicrosecond);

void BM_RedactJsonBody(benchmark::State& state) {
  const Redactor redactor;
  const std::string body = json_body(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(redactor.redact_body(body, "application/json", 1u << 30));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(BM_RedactJsonBody)->Arg(2048)->Arg(64 * 1024)->Arg(1024 * 1024);

// --fixed=N: N appends, N small decision + exchange pairs, N record builds and N
// redactions of a 2 KiB JSON body, no timing.
int run_fixed(long n) {
  const std::string dir = "/tmp/runwarden-audit-fixed-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  Options o;
  o.path = dir + "/audit.jsonl";
  o.rotate_bytes = 1ull << 30;
  const Exchange ex = realistic_exchange();
  std::size_t errors = 0;
  {
    auto log = AuditLog::open(o);
    for (long i = 0; i < n; ++i) {
      log->record(ex, true, [&errors](std::error_code ec) { errors += ec ? 1u : 0u; });
    }
    const Exchange small = small_exchange();
    for (long i = 0; i < n; ++i) {
      log->record(small, false, [&errors](std::error_code ec) { errors += ec ? 1u : 0u; });
      log->record(small, true, [&errors](std::error_code ec) { errors += ec ? 1u : 0u; });
    }
  }
  std::filesystem::remove_all(dir);
  const RecordBuilder builder({}, 16 * 1024);
  std::size_t sink = 0;
  for (long i = 0; i < n; ++i) {
    sink += builder.exchange_members(ex, true).size();
  }
  const Redactor redactor;
  const std::string body = json_body(2048);
  for (long i = 0; i < n; ++i) {
    sink += redactor.redact_body(body, "application/json", 1u << 30).text.size();
  }
  return errors == 0 && sink > 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strncmp(argv[1], "--fixed=", 8) == 0) {
    return run_fixed(std::atol(argv[1] + 8));
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// The run table (RuntimeState) counts every judged call under one lock. With
// agent.runs: per_connection every new agent connection is a new run, and past 10,000 runs
// each new one evicts the least recently seen live run. BM_CallOfAKnownRun is the baseline
// (a keep-alive request of a run already in the table); BM_NewRunInAFullTable must stay
// within a small factor of it, whatever the table's size (it was a scan of the table).
//
//   build-bench/bench/run_table_bench

#include "proxy/runtime_state.hpp"

#include <benchmark/benchmark.h>
#include <malloc.h>
#include <memory>
#include <string>

namespace {

using runwarden::proxy::CallKind;
using runwarden::proxy::RuntimeState;

std::shared_ptr<const runwarden::config::Config> config() {
  return std::make_shared<runwarden::config::Config>();
}

void fill(RuntimeState& state, int runs) {
  for (int i = 0; i < runs; ++i) {
    state.note_call("run_" + std::to_string(i), "rb", CallKind::allowed_read);
  }
}

void BM_CallOfAKnownRun(benchmark::State& st) {
  RuntimeState state(config());
  fill(state, static_cast<int>(st.range(0)));
  const std::string run = "run_7";
  for (auto _ : st) {
    state.note_call(run, "rb", CallKind::allowed_read);
  }
}

void BM_NewRunInAFullTable(benchmark::State& st) {
  RuntimeState state(config());
  fill(state, 10000); // full: every new run evicts one
  std::uint64_t next = 0;
  std::string run;
  for (auto _ : st) {
    run = "new_" + std::to_string(next++);
    state.note_call(run, "rb", CallKind::allowed_read);
  }
}

// Heap bytes per run of a full table (each per_connection agent connection is one run).
void BM_HeapBytesPerRun(benchmark::State& st) {
  for (auto _ : st) {
    const auto before = mallinfo2().uordblks;
    RuntimeState state(config());
    fill(state, 10000);
    st.counters["bytes_per_run"] = static_cast<double>(mallinfo2().uordblks - before) / 10000.0;
  }
}

} // namespace

BENCHMARK(BM_HeapBytesPerRun)->Iterations(1);
BENCHMARK(BM_CallOfAKnownRun)->Arg(100)->Arg(10000);
BENCHMARK(BM_NewRunInAFullTable);

BENCHMARK_MAIN();

// Decision latency over generated catalogues of 10, 100 and 1,000 actions
// (5 matchers each), with a realistic mix: GET and POST over many hosts, one host
// in ten a wildcard, some requests that match nothing. Two families:
//   BM_decide_no_body/N   requests whose candidates need no body
//   BM_decide_json_4k/N   POSTs whose candidate matchers test a 4 KiB JSON body
// Run: build-policy-rel/bench/policy_bench --benchmark_repetitions=9
//        --benchmark_report_aggregates_only=true

#include "policy/engine.hpp"

#include <benchmark/benchmark.h>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace runwarden::policy;
using json = nlohmann::json;

std::string host_of(int i) {
  if (i % 10 == 0) {
    return "*.zone" + std::to_string(i) + ".example.com";
  }
  return "svc" + std::to_string(i / 2) + ".team" + std::to_string(i % 7) + ".internal";
}

Predicate pred(PredicateOp op, json operand) {
  Predicate p;
  p.op = op;
  p.operand = std::move(operand);
  return p;
}

struct World {
  std::unique_ptr<Engine> engine;
  std::vector<Request> no_body;
  std::vector<Request> json_body;
};

std::string body_4k(int amount) {
  json doc;
  doc["amount"] = amount;
  doc["currency"] = "eur";
  doc["customer"] = {{"id", "cus_123456"}, {"email", "someone@example.com"}};
  json items = json::array();
  int n = 0;
  while (doc.dump().size() < 4000) {
    items.push_back({{"sku", "sku_" + std::to_string(n)},
                     {"qty", n % 5},
                     {"price", 199 + n},
                     {"note", "standard item line"}});
    doc["items"] = items;
    ++n;
  }
  return doc.dump();
}

World make_world(int actions) {
  auto cat = std::make_shared<Catalogue>();
  auto rb = std::make_shared<Runbook>();
  rb->name = "bench";
  for (int i = 0; i < actions; ++i) {
    Action a;
    a.name = "action_" + std::to_string(i);
    HostPattern host = *HostPattern::parse(host_of(i), nullptr);
    std::string base = "/api/v1/res" + std::to_string(i);
    for (int j = 0; j < 5; ++j) {
      Matcher m;
      m.hosts = {host};
      m.mark = SourceMark{"bench.yaml", i * 5 + j + 1, 1};
      switch (j) {
      case 0:
        m.methods = {"GET"};
        m.path = Glob::compile(base + "/**", Glob::Kind::path, nullptr);
        break;
      case 1:
        m.methods = {"GET"};
        m.path = Glob::compile(base + "/*/items", Glob::Kind::path, nullptr);
        break;
      case 2: {
        m.methods = {"POST"};
        m.path = Glob::compile(base + "/orders", Glob::Kind::path, nullptr);
        PointerPredicates amount{
            *JsonPointer::parse("/amount", nullptr), {pred(PredicateOp::lte, 5000)}, {}};
        PointerPredicates currency{*JsonPointer::parse("/currency", nullptr),
                                   {pred(PredicateOp::in, json::array({"eur", "usd"}))},
                                   {}};
        m.body = {amount, currency};
        break;
      }
      case 3: {
        m.methods = {"POST"};
        m.path = Glob::compile(base + "/orders", Glob::Kind::path, nullptr);
        m.body = {PointerPredicates{
            *JsonPointer::parse("/amount", nullptr), {pred(PredicateOp::gt, 5000)}, {}}};
        break;
      }
      default:
        m.methods = {"DELETE"};
        m.path = Glob::compile(base + "/*", Glob::Kind::path, nullptr);
        break;
      }
      a.matchers.push_back(std::move(m));
    }
    RunbookAction ra;
    ra.name = a.name;
    ra.cls = static_cast<ActionClass>(i % 4);
    rb->actions.emplace(a.name, ra);
    cat->actions.emplace(a.name, std::move(a));
  }
  World w;
  w.engine = std::make_unique<Engine>(cat, std::vector<std::shared_ptr<const Runbook>>{rb});
  std::string body = body_4k(4200);
  for (int k = 0; k < 64; ++k) {
    int i = (k * 7919) % actions;
    std::string h = host_of(i);
    if (h.starts_with("*.")) {
      h = "api" + std::to_string(k) + h.substr(1);
    }
    std::string base = "/api/v1/res" + std::to_string(i);
    Request r;
    std::string url = "https://" + h;
    switch (k % 4) {
    case 0:
      url += base + "/logs/query?since=1h";
      break;
    case 1:
      url += base + "/42/items";
      break;
    case 2:
      url += "/not/in/catalogue"; // candidates exist, none match
      break;
    default:
      url = "https://unknown" + std::to_string(k) + ".elsewhere.net" + base; // no candidates
      break;
    }
    if (normalize_absolute_url(url, r) != NormalizeError::ok) {
      continue;
    }
    r.method = "GET";
    w.no_body.push_back(r);
    Request post;
    normalize_absolute_url("https://" + h + base + "/orders", post);
    post.method = "POST";
    post.body = body;
    w.json_body.push_back(post);
  }
  return w;
}

void run(benchmark::State& state, bool with_body) {
  World w = make_world(static_cast<int>(state.range(0)));
  const std::vector<Request>& reqs = with_body ? w.json_body : w.no_body;
  std::size_t i = 0;
  for (auto _ : state) {
    Decision d = w.engine->decide(reqs[i], "bench", Mode::normal);
    benchmark::DoNotOptimize(d);
    i = (i + 1) % reqs.size();
  }
  state.counters["requests"] = static_cast<double>(reqs.size());
}

void BM_decide_no_body(benchmark::State& state) {
  run(state, false);
}
void BM_decide_json_4k(benchmark::State& state) {
  run(state, true);
}

BENCHMARK(BM_decide_no_body)->Arg(10)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_decide_json_4k)->Arg(10)->Arg(100)->Arg(1000)->Unit(benchmark::kMicrosecond);

} // namespace

BENCHMARK_MAIN();

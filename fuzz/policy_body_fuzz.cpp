// Fuzzes strict JSON parsing and body-predicate evaluation through the engine.
// Invariants: a body accepted by the strict parser is accepted by nlohmann with the
// same value; the pruned parse agrees with the full one on the error; a decision
// that needed the body and got an error is a deny with a body_* code.

#include "policy/engine.hpp"
#include "policy/strict_json.hpp"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

namespace {

using namespace runwarden::policy;

void require(bool ok) {
  if (!ok) {
    std::abort();
  }
}

Predicate pred(PredicateOp op, nlohmann::json operand) {
  Predicate p;
  p.op = op;
  p.operand = std::move(operand);
  return p;
}

std::shared_ptr<const Engine> make_engine() {
  auto c = std::make_shared<Catalogue>();
  auto rb = std::make_shared<Runbook>();
  rb->name = "fuzz";
  auto add = [&](const char* name, Matcher m, ActionClass cls) {
    m.methods = {"POST"};
    m.hosts = {*HostPattern::parse("api.example.com", nullptr)};
    Action a;
    a.name = name;
    a.matchers.push_back(std::move(m));
    c->actions.emplace(name, std::move(a));
    RunbookAction ra;
    ra.name = name;
    ra.cls = cls;
    rb->actions.emplace(name, ra);
  };
  Matcher small;
  small.body.push_back(
      {*JsonPointer::parse("/amount", nullptr), {pred(PredicateOp::lte, 5000)}, {}});
  add("small", small, ActionClass::allowed);
  Matcher tagged;
  Predicate g = pred(PredicateOp::glob, nullptr);
  g.glob = Glob::compile("refund-*", Glob::Kind::text, nullptr);
  tagged.body.push_back({*JsonPointer::parse("/tags/0", nullptr), {g}, {}});
  add("tagged", tagged, ActionClass::approval_required);
  Matcher tool;
  tool.mcp = McpMatch{
      "delete", {{*JsonPointer::parse("/force", nullptr), {pred(PredicateOp::exists, true)}, {}}}};
  add("delete", tool, ActionClass::denied);
  return std::make_shared<const Engine>(c, std::vector<std::shared_ptr<const Runbook>>{rb},
                                        EngineLimits{32, 1 << 16});
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::shared_ptr<const Engine> engine = make_engine();
  std::string_view body(reinterpret_cast<const char*>(data), size);

  StrictJsonResult full = parse_strict_json(body, 32);
  JsonWant want;
  want.add({"amount"});
  StrictJsonResult pruned = parse_strict_json(body, 32, want);
  require(full.error == pruned.error);
  if (full.error == JsonError::ok) {
    nlohmann::json reference = nlohmann::json::parse(body, nullptr, false);
    require(!reference.is_discarded());
    require(reference == full.value);
  }

  Request req;
  req.scheme = "https";
  req.host = "api.example.com";
  req.port = 443;
  req.method = "POST";
  req.path = "/";
  req.body = std::string(body);
  Decision d = engine->decide(req, "fuzz", Mode::normal);
  if (full.error != JsonError::ok) {
    require(d.verdict == Verdict::deny && d.code == to_code(full.error));
  }
  for (const JsonRpcCall& call : d.jsonrpc) {
    if (call.tool == "delete") {
      require(d.verdict != Verdict::allow);
    }
  }
  engine->explain(req, "fuzz");
  return 0;
}

#include "approval/journal.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <unistd.h>

namespace runwarden::approval {

namespace {

std::string_view kind_name(HoldEvent::Kind k) {
  switch (k) {
  case HoldEvent::Kind::created:
    return "created";
  case HoldEvent::Kind::deferred:
    return "deferred";
  case HoldEvent::Kind::resolved:
    return "resolved";
  }
  return "resolved";
}

std::error_code write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return {errno, std::generic_category()};
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    return {errno, std::generic_category()};
  }
  return {};
}

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error("approvals journal " + path + ": " + what + ": " + std::strerror(errno));
}

struct Replayed {
  RecoveredHold hold;
  bool resolved = false;
};

} // namespace

std::unique_ptr<Journal> Journal::open(const std::string& path, const Clock& clock,
                                       std::vector<RecoveredHold>& expired) {
  std::map<std::string, Replayed> holds; // ordered: deterministic recovery order
  std::vector<std::string> order;
  std::uint64_t skipped = 0;
  {
    std::ifstream in(path, std::ios::binary);
    std::string line;
    while (in && std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string() ||
          !j.contains("event") || !j["event"].is_string()) {
        ++skipped;
        continue;
      }
      const std::string id = j["id"].get<std::string>();
      const std::string event = j["event"].get<std::string>();
      auto [it, inserted] = holds.try_emplace(id);
      if (inserted) {
        order.push_back(id);
      }
      Replayed& r = it->second;
      r.hold.id = id;
      if (event == "created") {
        r.hold.run = j.value("run", "");
        r.hold.agent = j.value("agent", "");
        r.hold.runbook = j.value("runbook", "");
        r.hold.action = j.value("action", "");
        r.hold.request_id = j.value("request_id", "");
        r.hold.created = j.value("ts", "");
      } else if (event == "resolved" || event == "expired_on_restart") {
        // Any terminal record ends the hold, even if it precedes `created` in the file.
        r.resolved = true;
      }
    }
  }
  expired.clear();
  for (const auto& id : order) {
    if (!holds[id].resolved) {
      expired.push_back(holds[id].hold);
    }
  }
  // Record the expiries in the old file first, then rotate it away.
  if (!expired.empty()) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
      fail("cannot open for recovery", path);
    }
    std::string lines;
    const std::string ts = format_time(clock.wall());
    for (const auto& h : expired) {
      lines += nlohmann::json{{"v", 1},
                              {"ts", ts},
                              {"event", "expired_on_restart"},
                              {"id", h.id},
                              {"state", "expired"},
                              {"reason", "pending when runwarden stopped; nothing was released"}}
                   .dump();
      lines.push_back('\n');
    }
    const std::error_code ec = write_all(fd, lines);
    ::close(fd);
    if (ec) {
      errno = ec.value();
      fail("cannot record recovered holds", path);
    }
  }
  if (::access(path.c_str(), F_OK) == 0 && ::rename(path.c_str(), (path + ".prev").c_str()) != 0) {
    fail("cannot rotate", path);
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    fail("cannot open", path);
  }
  return std::unique_ptr<Journal>(new Journal(fd, clock, skipped));
}

Journal::Journal(int fd, const Clock& clock, std::uint64_t skipped)
    : fd_(fd), clock_(clock), skipped_(skipped), writer_([this] { run(); }) {}

Journal::~Journal() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  writer_.join(); // writes what is still queued first
  ::close(fd_);
}

void Journal::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
    if (queued_.empty()) {
      return; // stopping, nothing left
    }
    std::string batch;
    batch.swap(queued_);
    const std::uint64_t upto = queued_count_;
    const bool failed = static_cast<bool>(failure_);
    lock.unlock();
    const std::error_code ec = failed ? std::error_code() : write_all(fd_, batch);
    lock.lock();
    if (ec && !failure_) {
      failure_ = ec;
    }
    synced_count_ = upto;
    written_.notify_all();
  }
}

std::error_code Journal::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = queued_count_;
  written_.wait(lock, [this, target] { return synced_count_ >= target; });
  return failure_;
}

std::error_code Journal::append(const HoldEvent& event) {
  const HoldView& h = event.hold;
  nlohmann::json j = {{"v", 1},           {"ts", format_time(clock_.wall())},
                      {"seq", event.seq}, {"event", kind_name(event.kind)},
                      {"id", h.id},       {"state", to_string(h.state)}};
  if (event.kind == HoldEvent::Kind::created && h.packet) {
    j["run"] = h.packet->run;
    j["agent"] = h.packet->agent;
    j["runbook"] = h.packet->runbook;
    j["action"] = h.packet->action;
    j["request_id"] = h.packet->request_id;
    j["digest"] = h.packet->digest;
  }
  if (event.kind == HoldEvent::Kind::resolved) {
    j["by"] = h.by;
    j["reason"] = h.reason;
    j["wait_ms"] = h.wait.count();
  }
  std::string line = j.dump();
  line.push_back('\n');
  {
    std::lock_guard lock(mutex_);
    if (failure_) {
      return failure_;
    }
    queued_ += line;
    ++queued_count_;
  }
  wake_.notify_one();
  return {};
}

EventListener Journal::listener() {
  return [this](const HoldEvent& e) { (void)append(e); };
}

bool Journal::healthy() const {
  std::lock_guard lock(mutex_);
  return !failure_;
}

} // namespace runwarden::approval

#pragma once
// The passthrough tunnels open right now, across every I/O thread, with what an operations
// change needs to pick them out: their run and whether their CONNECT was judged a read_only
// action. A tunnel carries bytes nobody judges, so pausing runwarden, killing a run or
// switching to read_only cannot refuse "its next request": it closes the tunnel instead
// (DESIGN §7, fail closed). Thread-safe; each tunnel is closed on its own executor.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace runwarden::proxy {

/// Why an operations change closed a tunnel: the closing record's code and reason
/// (outcome `aborted`).
struct TunnelClose {
  std::string code; // paused, run_killed, read_only_mode
  std::string reason;
};

/// `paused` refuses everything, and a tunnel's bytes cannot be refused one request at a time.
inline TunnelClose paused_tunnel_close() {
  return {"paused", "runwarden was paused with the tunnel open: a tunnel's bytes cannot be "
                    "judged request by request, so it is closed"};
}
/// A killed run's calls are refused, and its open tunnels would carry them on.
inline TunnelClose run_killed_tunnel_close(const std::string& run) {
  return {"run_killed", "run \"" + run + "\" was killed with the tunnel open"};
}
/// read_only lets only read_only actions pass; a tunnel judged as any other class cannot be
/// shown to carry only reads (a new CONNECT to it is refused read_only_mode as well).
inline TunnelClose read_only_tunnel_close() {
  return {"read_only_mode", "runwarden switched to read_only with the tunnel open, and the "
                            "tunnel's action is not read_only"};
}

/// tls.passthrough no longer lists the tunnel's host (a reload took it out): its calls are
/// to be intercepted and judged one by one from now on, not carried unjudged.
inline TunnelClose passthrough_removed_tunnel_close() {
  return {"passthrough_changed", "a reload took the host out of tls.passthrough with the "
                                 "tunnel open: reconnect, and each call is judged"};
}

/// A tunnel that can be told to close.
class ClosableTunnel {
public:
  /// Ends the tunnel with its closing record (outcome aborted, `why`): called from any
  /// thread, so it dispatches to the tunnel's own executor. Returns at once. `keep` (the
  /// caller's reference, if any) moves into that dispatch, so the tunnel's last reference is
  /// dropped on its own thread, never on the caller's.
  virtual void close_for(TunnelClose why, std::shared_ptr<ClosableTunnel> keep = nullptr) = 0;
  virtual ~ClosableTunnel() = default;

protected:
  ClosableTunnel() = default;
  ClosableTunnel(const ClosableTunnel&) = delete;
  ClosableTunnel& operator=(const ClosableTunnel&) = delete;
};

class TunnelRegistry {
public:
  struct Entry {
    std::string run;
    bool read_only = false; // its CONNECT was allowed as a read_only action
    std::string host;       // the tls.passthrough host it was opened for
    std::weak_ptr<ClosableTunnel> tunnel;
  };

  /// Links a tunnel; the key unlinks it. A tunnel checks the mode and its run's kill after
  /// linking, so a change racing its start either finds it here or is seen by it.
  std::uint64_t add(Entry entry) {
    std::lock_guard lock(mu_);
    const std::uint64_t key = next_++;
    open_.emplace(key, std::move(entry));
    return key;
  }

  void remove(std::uint64_t key) {
    std::lock_guard lock(mu_);
    open_.erase(key);
  }

  std::size_t size() const {
    std::lock_guard lock(mu_);
    return open_.size();
  }

  /// Tells every linked tunnel `pick` selects to close with `why`. Returns how many.
  std::size_t close_if(const std::function<bool(const Entry&)>& pick, const TunnelClose& why) {
    std::vector<std::shared_ptr<ClosableTunnel>> live;
    {
      std::lock_guard lock(mu_);
      for (const auto& [key, entry] : open_) {
        if (pick(entry)) {
          if (auto t = entry.tunnel.lock()) {
            live.push_back(std::move(t));
          }
        }
      }
    }
    // Outside the lock: a tunnel on this thread closes inline and unlinks itself. Each
    // reference moves into the close, so none is dropped here, on the wrong thread.
    const std::size_t asked = live.size();
    for (auto& t : live) {
      ClosableTunnel& tunnel = *t;
      tunnel.close_for(why, std::move(t));
    }
    return asked;
  }

private:
  mutable std::mutex mu_;
  std::uint64_t next_ = 1;
  std::unordered_map<std::uint64_t, Entry> open_;
};

} // namespace runwarden::proxy

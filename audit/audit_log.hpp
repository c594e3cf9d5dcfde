#pragma once
// The audit log's front door: the proxy hands it an exchange and a decision,
// it redacts, chains and writes. DESIGN §6. Thread-safe.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace runwarden::audit {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct RedactionRules; // redactor.hpp

struct ApprovalInfo {
  std::string id;
  std::string by;
  std::int64_t wait_ms = 0;
};

struct RequestInfo {
  std::string method;
  std::string url;              // canonical URL (userinfo never present; redacted anyway)
  HeaderList headers;           // unredacted; redaction happens inside the audit module
  std::string body;             // the assembled body (or its inspected prefix)
  std::uint64_t body_bytes = 0; // full length on the wire
  bool body_complete = true;    // false: `body` is a prefix
  std::string body_sha256;      // set: every byte relayed's digest, `body` only a prefix of them
};

struct ResponseInfo {
  int status = 0;
  HeaderList headers;
  std::string body; // assembled prefix kept for the record
  std::uint64_t bytes = 0;
  bool body_complete = true;
  std::string body_sha256; // set: every byte relayed's digest, `body` only a prefix of them
};

struct Timing {
  double total_ms = 0;
  double upstream_ms = 0;
  double hold_ms = 0;
};

/// One request's record. `outcome` is one of: forwarded, denied, held, approved_forwarded,
/// approval_denied, approval_timeout, approval_pending, paused, refused (malformed/limits),
/// upstream_error, client_gone, aborted (runwarden shut down before the response completed).
struct Exchange {
  std::string id; // request id "req_..."
  std::string run;
  std::string agent;
  std::string runbook;
  std::string runbook_sha256;
  std::string action;
  std::string cls; // action class or ""
  std::string outcome;
  std::string code; // decision code (e.g. denied_by_runbook)
  std::string reason;
  std::optional<ApprovalInfo> approval;
  RequestInfo request;
  std::optional<ResponseInfo> response;
  Timing timing;
  std::string traceparent;
  std::string client; // peer address of the agent connection
};

enum class Durability : std::uint8_t {
  written, // write(2) returned before the callback; fsync on an interval
  synced,  // fsync'ed (group commit) before the callback
};

struct Options {
  std::string path; // active file; rotated files sit beside it
  Durability durability = Durability::written;
  std::chrono::milliseconds fsync_interval{50};
  std::size_t body_bytes = 16 * 1024;
  std::uint64_t rotate_bytes = 256ull * 1024 * 1024;
  std::string signing_key_pem; // optional Ed25519 private key for checkpoints
  std::uint64_t checkpoint_records = 1000;
  std::chrono::milliseconds checkpoint_interval{10000};
  // Additions to the built-in redaction set (at open; AuditLog::set_redaction replaces them).
  std::vector<std::string> redact_headers;
  std::vector<std::string> redact_json_keys;
  std::vector<std::string> redact_patterns; // RE2
};

/// Called once the record is as durable as Options::durability says, or with the error
/// that prevented it (the caller must then refuse to act). Called exactly once, possibly on
/// another thread than the caller of record()/event(): records are group-committed, so in
/// `written` mode it runs on whichever thread wrote the batch holding the record (the caller
/// itself, another caller of record()/event(), or the log's background thread), in `synced`
/// mode on the writer thread. A completion that must run on the caller's executor dispatches
/// itself there. It is never called under the log's internal lock, so it may call record()
/// or event() again.
using Completion = std::function<void(std::error_code)>;

/// Lets the records one thread submits in one turn of its event loop share a write(2). While
/// an instance lives on a thread, a record that would have been written at once on it (no
/// other thread writing) is sealed into the chain and queued instead, and `post` is given a
/// task that writes everything queued by then and calls the completions; records this
/// thread makes meanwhile join that write. `post` must run the task on this thread after
/// the handlers already ready (Asio's post). Each completion still runs after the write(2)
/// that holds its record. A thread posts one task at a time: while its task waits in the
/// loop, its further records join the batch that task writes. What is never left waiting on
/// one thread's loop:
/// - a record from another thread that has an instance of its own joins the waiting batch
///   and has its own loop post a task too: whichever loop ends its turn first writes the
///   records of both (the other's task then finds nothing), so neither waits for a long turn
///   of the other's (a handshake, a large body); a record from a thread without an instance
///   takes the waiting batch over and writes it at once;
/// - the destructor runs every task it was given that may still be waiting: put it around
///   the loop's run(), so a loop stopped in the middle of a turn leaves nothing unwritten
///   while the executors the completions dispatch to still exist;
/// - the log's background thread writes a batch left waiting for one to two fsync
///   intervals (a loop stuck in one turn), and close() one still waiting then.
/// A task that runs after its batch was written, or after the log is gone, does nothing.
/// Only the `written` durability of the file log batches this way. One per thread.
class TurnBatching {
public:
  using Post = std::function<void(std::function<void()>)>;
  explicit TurnBatching(Post post);
  ~TurnBatching();
  TurnBatching(const TurnBatching&) = delete;
  TurnBatching& operator=(const TurnBatching&) = delete;
  /// The instance in force on the calling thread, or nullptr.
  static TurnBatching* current();
  /// Posts `task`, which writes the batch of the log `key` names, unless a task for `key`
  /// posted here has not run yet (it will write what this one would). One task per key
  /// (each log posts the same one every time) is kept for the destructor.
  void post(const void* key, const std::function<void()>& task);

  /// Whether a record that would open a batch should wait for the turn to end. A batch that
  /// only ever holds one record (one connection at a time) gains nothing from waiting and
  /// pays a hop through the loop, with an extra poll of the reactor, twice per request: after
  /// kSinglesBeforeInline such batches in a row the thread writes at once, as without an
  /// instance, and tries waiting again every kProbeEvery records; a batch of two or more
  /// switches waiting back on.
  bool defer_next();
  /// How many records the batch a task of this thread just wrote held.
  void note_batch(std::size_t records);
  static constexpr int kSinglesBeforeInline = 8;
  static constexpr int kProbeEvery = 64;

private:
  struct Kept {
    std::function<void()> task;
    bool queued = false; // posted and not run yet
  };
  Post post_;
  TurnBatching* previous_;
  bool deferring_ = true;
  int singles_ = 0;     // single-record batches in a row
  int since_probe_ = 0; // records written at once since the last probe
  // One per log; shared with the posted wrappers, since the loop may outlive this instance.
  std::vector<std::pair<const void*, std::shared_ptr<Kept>>> kept_;
};

class AuditLog {
public:
  /// Opens (or creates) the log, recovers a torn last line, resumes the chain.
  /// Throws std::runtime_error at start-up on failure.
  static std::unique_ptr<AuditLog> open(const Options& options);
  virtual ~AuditLog() = default;

  /// The decision record, written before a request is forwarded (or the only record of
  /// a refused request when `final` is true). May return before `done` is called (see
  /// Completion for the thread that calls it), but never keeps a reference to `exchange`:
  /// the proxy reuses it for its connection's next request as soon as this returns.
  virtual void record(const Exchange& exchange, bool final, Completion done) = 0;
  /// An event record: mode change, reload, run killed, recovery, ...
  virtual void event(std::string_view type, const nlohmann::json& fields, Completion done) = 0;

  /// False after a write/fsync error: the proxy refuses new traffic with failure().
  virtual bool healthy() const = 0;
  virtual std::string failure() const = 0;
  /// Flushes and syncs everything written so far.
  virtual std::error_code sync() = 0;
  /// Replaces the additions to the built-in redaction set (a reload): every record built
  /// after it returns uses `rules`; a record being built meanwhile may finish with the rules
  /// it started with. Throws std::invalid_argument, changing nothing, when `rules` do not
  /// build (a pattern that does not compile). Returns false when this log cannot change
  /// them while it runs (the default; the log open() returns can).
  virtual bool set_redaction(const RedactionRules& rules) {
    (void)rules;
    return false;
  }
  /// Writes what is queued, calls its completions, and stops the log's own threads; a
  /// record a completion submits meanwhile is written too, one submitted after close()
  /// returned fails at once. Called at shutdown while the executors the
  /// completions post to still exist (they may run after the I/O threads stopped, but must
  /// not run after their io_contexts are destroyed). Idempotent.
  virtual void close() {}
};

} // namespace runwarden::audit

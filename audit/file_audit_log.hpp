#pragma once
// The hash-chained JSON Lines writer behind AuditLog::open: redaction on the caller's
// thread, sealing under one lock, group commit (leader/follower in `written` mode, a writer
// thread in `synced` mode), rotation by size, torn-line recovery on open, optional Ed25519
// checkpoints. docs/audit.md describes the guarantees.

#include "audit/audit_log.hpp"
#include "audit/checkpoint_key.hpp"
#include "audit/record_builder.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace runwarden::audit {

class FileAuditLog final : public AuditLog {
public:
  /// Recovers and opens; throws std::runtime_error (start-up only) on failure.
  explicit FileAuditLog(const Options& options);
  ~FileAuditLog() override;
  FileAuditLog(const FileAuditLog&) = delete;
  FileAuditLog& operator=(const FileAuditLog&) = delete;

  void record(const Exchange& exchange, bool final, Completion done) override;
  void event(std::string_view type, const nlohmann::json& fields, Completion done) override;
  bool healthy() const override;
  std::string failure() const override;
  std::error_code sync() override;
  void close() override;
  bool set_redaction(const RedactionRules& rules) override;

  /// Sequence number the next record will get (tests and status pages).
  std::uint64_t next_seq() const;

  /// A leader writes at most this many batches before handing the rest to the background
  /// thread. Why a bound: the leader is one of the proxy's I/O threads, and while it writes
  /// for others its own connections wait; without a bound, a steady stream of records from
  /// the other threads (or completions that record again) could keep it writing for ever.
  /// Why not 1: under contention a batch often has a successor, and a hand-off costs a
  /// wake-up of the background thread plus a cross-thread hop for each completion it calls.
  /// Four small write(2)s take tens of microseconds, less than the request the leader is
  /// serving, and usually empty the queue, so hand-offs stay rare.
  static constexpr int kLeaderRounds = 4;

private:
  struct FileHandle {
    int fd = -1;
    explicit FileHandle(int f) : fd(f) {}
    ~FileHandle();
    FileHandle(const FileHandle&) = delete;
    FileHandle& operator=(const FileHandle&) = delete;
  };
  struct Pending {
    std::string bytes;
    Completion done;
    std::uint64_t first_seq = 0;
    std::uint64_t last_seq = 0;
  };
  /// `written` mode: sealed records waiting for the current writer, one completion each.
  struct Batch {
    Pending data;
    std::vector<Completion> dones;
  };

  void recover_and_open();
  // `slot`, when given, holds `members` with room around them (RecordBuilder::Slot): an
  // uncontended leader seals and writes the record there instead of copying it.
  void submit(std::string_view members, Completion done, RecordBuilder::Slot* slot = nullptr);
  // mu_ held on entry and on return, writing_ set by this thread: writes batches until
  // none is left (then clears writing_) or `max_rounds` are done (then hands off).
  void drain_locked(std::unique_lock<std::mutex>& lock, int max_rounds);
  // mu_ held: a fresh open_ batch, its buffer's capacity reused.
  void start_batch_locked();
  // The task TurnBatching was given: writes the batch it deferred, unless the background
  // thread or close() took it over meanwhile.
  void write_deferred();
  // mu_ held: assigns seq/ts/prev, seals straight onto the end of `out.bytes` (the open
  // batch in `written` mode), appends a checkpoint when one is due, sets out.last_seq.
  void seal_locked(std::string_view members, bool force_checkpoint, Pending& out);
  std::string checkpoint_line_locked();
  // mu_ held: the same checkpoint line appended to `out`.
  void append_checkpoint_locked(std::string& out);
  std::error_code write_batch(const Pending& batch, bool sync_now);
  std::error_code write_batch(std::string_view bytes, std::uint64_t first_seq,
                              std::uint64_t last_seq, bool sync_now);
  std::error_code rotate_io_locked();
  std::error_code fail(const std::string& what, int err);
  std::error_code current_error() const;
  void writer_loop();
  void syncer_loop();

  /// The builder (and its redactor) records are built with: loaded once per record, on the
  /// caller's thread, and replaced whole by set_redaction. Immutable once published, so a
  /// record finishes with the one it loaded, and the old one goes with its last record.
  std::shared_ptr<const RecordBuilder> builder() const { return builder_.load(); }

  Options options_; // its redact_* fields are the rules at open only
  std::string dir_;
  std::string stem_;
  std::atomic<std::shared_ptr<const RecordBuilder>> builder_;
  std::unique_ptr<CheckpointKey> key_;

  // Chain state.
  mutable std::mutex mu_;
  std::uint64_t next_seq_ = 1;
  std::string head_hash_;
  std::uint64_t since_checkpoint_ = 0;
  std::chrono::steady_clock::time_point last_checkpoint_;
  std::deque<Pending> queue_; // synced mode
  std::condition_variable queue_cv_;
  Batch open_;            // written mode: sealed, not yet taken by a writer
  Batch taken_;           // written mode: the batch being written; only the thread that set
                          // writing_ touches it, and its vector keeps its capacity
  bool writing_ = false;  // written mode: some thread owns open_ (invariant: open_ non-empty
                          // implies writing_, so no record waits with nobody to write it)
  bool handoff_ = false;  // written mode: a leader passed the writer role to syncer_
  bool syncing_ = false;  // written mode: syncer_ is in its interval fdatasync (mu_ released)
  bool deferred_ = false; // written mode: writing_ is held for a TurnBatching task not run yet
  std::thread::id deferred_by_;         // the thread whose loop will run that task
  std::uint64_t deferred_gen_ = 0;      // counts deferrals; the background thread takes over
  std::uint64_t deferred_seen_gen_ = 0; // one that is still the same one tick later
  /// What a deferred task holds instead of `this`: close() clears `log` and waits for the
  /// tasks running (not holding a lock while they write), so one that runs late, or is
  /// destroyed unrun, touches nothing.
  struct DeferTicket {
    std::mutex mu;
    std::condition_variable idle;
    FileAuditLog* log = nullptr;
    int running = 0; // tasks inside write_deferred now: close() waits for them
    static void run(DeferTicket& ticket);
  };
  std::shared_ptr<DeferTicket> ticket_;
  std::function<void()> defer_task_; // runs ticket_: built once, TurnBatching copies it once
  std::condition_variable bg_cv_;
  bool stop_ = false;   // close() began: the threads drain and return
  bool closed_ = false; // nothing would write a new record: submit() refuses it

  // File state.
  std::mutex io_mu_;
  std::shared_ptr<FileHandle> file_;
  std::uint64_t file_bytes_ = 0;
  std::uint64_t file_first_seq_ = 0;
  std::uint64_t file_last_seq_ = 0;
  std::uint64_t preallocated_end_ = 0; // blocks reserved up to here (0: none, or trimmed)
  bool preallocate_ = true;            // false once the file system refused fallocate
  std::atomic<bool> dirty_{false};

  std::atomic<bool> healthy_{true};
  mutable std::mutex fail_mu_;
  std::string failure_;
  std::error_code error_;

  std::thread writer_;
  std::thread syncer_;
};

} // namespace runwarden::audit

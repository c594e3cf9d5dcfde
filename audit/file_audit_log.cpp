#include "audit/file_audit_log.hpp"

#include "audit/digest.hpp"
#include "audit/record_codec.hpp"
#include "audit/rotated_name.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace runwarden::audit {
namespace {

namespace fs = std::filesystem;

// Takes the chain lock, trying for a short while before blocking. Its holders keep it for
// about a microsecond (sealing one record: a SHA-256 over a line); a thread that sleeps on
// the futex instead costs itself a context switch and the holder a wake-up syscall at
// unlock, several times the wait. Bounded: a holder preempted mid-seal is waited for the
// usual way after ~64 tries.
void lock_briefly_spinning(std::unique_lock<std::mutex>& lock) {
  for (int i = 0; i < 64; ++i) {
    if (lock.try_lock()) {
      return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  lock.lock();
}

thread_local TurnBatching* t_turn_batching = nullptr;
// The ticket whose deferred task this thread is running (a completion may call close()).
thread_local const void* t_running_ticket = nullptr;

// Writes everything or returns the errno; each iteration writes at least one byte.
int write_all(int fd, std::string_view bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno;
    }
    if (n == 0) {
      return EIO;
    }
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

int fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return errno;
  }
  const int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

std::string read_range(int fd, std::uint64_t offset, std::size_t size) {
  std::string out(size, '\0');
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n =
        ::pread(fd, out.data() + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  out.resize(done);
  return out;
}

struct LastGood {
  std::uint64_t seq = 0;
  std::string hash;
};

// A whole line whose hash recomputes and whose seq parses.
std::optional<LastGood> check_line(std::string_view line) {
  const auto cut = RecordCodec::unseal(line);
  if (!cut) {
    return std::nullopt;
  }
  const auto parsed = nlohmann::json::parse(line, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("seq") ||
      !parsed["seq"].is_number_unsigned() || !parsed.contains("prev") ||
      !parsed["prev"].is_string()) {
    return std::nullopt;
  }
  if (RecordCodec::chain_hash(parsed["prev"].get<std::string>(), cut->unsealed) != cut->hash) {
    return std::nullopt;
  }
  return LastGood{parsed["seq"].get<std::uint64_t>(), cut->hash};
}

constexpr std::size_t kTailWindow = 8u << 20;

// Blocks are reserved ahead of the active file's end this much at a time (fallocate with
// FALLOC_FL_KEEP_SIZE): a write(2) into reserved blocks skips ext4's per-write delayed
// allocation bookkeeping (about 4% of the write's CPU measured for 3.8 KB records). The size
// and every byte on disk are unchanged; the reservation is given back at rotation and close.
constexpr std::uint64_t kPreallocateBytes = 8u << 20;

// Gives back the blocks reserved past the end of the file: a truncate to its own size
// (ext4 drops the KEEP_SIZE blocks then). Failure only leaves the reservation in place.
void trim_preallocation(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    static_cast<void>(::ftruncate(fd, st.st_size));
  }
}

// A batch buffer keeps its capacity between batches up to this size (two buffers alternate).
constexpr std::size_t kKeptBatchBytes = 1u << 20;

} // namespace

TurnBatching::TurnBatching(Post post) : post_(std::move(post)), previous_(t_turn_batching) {
  t_turn_batching = this;
}

TurnBatching::~TurnBatching() {
  t_turn_batching = previous_;
  // Tasks the loop may not have run (it stopped mid-turn): each does nothing if its batch
  // is written already or its log is gone.
  for (auto& [key, kept] : kept_) {
    kept->task();
  }
}

bool TurnBatching::defer_next() {
  if (deferring_) {
    return true;
  }
  if (++since_probe_ >= kProbeEvery) {
    since_probe_ = 0;
    return true; // a probe: does a batch gather more than one record again?
  }
  return false;
}

void TurnBatching::note_batch(std::size_t records) {
  if (records >= 2) {
    deferring_ = true;
    singles_ = 0;
    return;
  }
  if (++singles_ >= kSinglesBeforeInline) {
    deferring_ = false;
    singles_ = 0;
  }
}

TurnBatching* TurnBatching::current() {
  return t_turn_batching;
}

void TurnBatching::post(const void* key, const std::function<void()>& task) {
  // A log posts the same task every turn (its ticket): kept once, not copied per turn.
  auto it =
      std::find_if(kept_.begin(), kept_.end(), [key](const auto& e) { return e.first == key; });
  if (it == kept_.end()) {
    it = kept_.insert(kept_.end(), {key, std::make_shared<Kept>(Kept{task})});
  }
  Kept& kept = *it->second;
  if (kept.queued) {
    return; // still waiting in the loop: it writes whatever this record joined
  }
  kept.queued = true;
  // Cleared before the task runs: a record its completions make starts a new wait.
  post_([kept = it->second] {
    kept->queued = false;
    kept->task();
  });
}

std::unique_ptr<AuditLog> AuditLog::open(const Options& options) {
  return std::make_unique<FileAuditLog>(options);
}

FileAuditLog::FileHandle::~FileHandle() {
  if (fd >= 0) {
    ::close(fd);
  }
}

FileAuditLog::FileAuditLog(const Options& options)
    : options_(options),
      builder_(std::make_shared<const RecordBuilder>(
          RedactionRules{options.redact_headers, options.redact_json_keys, options.redact_patterns},
          options.body_bytes)),
      head_hash_(kGenesisHash) {
  if (options_.path.empty()) {
    throw std::runtime_error("audit: no log path configured");
  }
  const fs::path p{options_.path};
  dir_ = p.has_parent_path() ? p.parent_path().string() : std::string(".");
  stem_ = RotatedName::stem_of(p.filename().string());
  if (!options_.signing_key_pem.empty()) {
    key_ = CheckpointKey::load_private(options_.signing_key_pem);
  }
  last_checkpoint_ = std::chrono::steady_clock::now();
  ticket_ = std::make_shared<DeferTicket>();
  ticket_->log = this;
  defer_task_ = [ticket = ticket_] { DeferTicket::run(*ticket); };
  recover_and_open();
  if (options_.durability == Durability::synced) {
    writer_ = std::thread([this] { writer_loop(); });
  } else {
    syncer_ = std::thread([this] { syncer_loop(); });
  }
}

void FileAuditLog::recover_and_open() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) {
    throw std::runtime_error("audit: cannot create " + dir_ + ": " + ec.message());
  }
  const bool existed = fs::exists(options_.path);
  const int fd =
      ::open(options_.path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, S_IRUSR | S_IWUSR);
  if (fd < 0) {
    throw std::runtime_error("audit: cannot open " + options_.path + ": " + std::strerror(errno));
  }
  file_ = std::make_shared<FileHandle>(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    throw std::runtime_error("audit: " + options_.path + " is not a regular file");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  std::optional<LastGood> last;
  nlohmann::json torn_event;
  if (size > 0) {
    const std::size_t window = static_cast<std::size_t>(std::min<std::uint64_t>(size, kTailWindow));
    const std::uint64_t base = size - window;
    const std::string tail = read_range(fd, base, window);
    std::size_t good_end = tail.rfind('\n');
    good_end = good_end == std::string::npos ? 0 : good_end + 1; // bytes of whole lines
    if (good_end == 0 && base > 0) {
      throw std::runtime_error("audit: " + options_.path + ": last line longer than 8 MiB");
    }
    if (good_end > 0) {
      const std::size_t prev_nl =
          good_end >= 2 ? tail.rfind('\n', good_end - 2) : std::string::npos;
      const std::size_t line_start = prev_nl == std::string::npos ? 0 : prev_nl + 1;
      if (line_start == 0 && base > 0) {
        throw std::runtime_error("audit: " + options_.path + ": last line longer than 8 MiB");
      }
      last = check_line(std::string_view(tail).substr(line_start, good_end - 1 - line_start));
      if (!last) {
        good_end = line_start; // an unparseable last line is torn too
        if (good_end > 0) {
          const std::size_t p2 = good_end >= 2 ? tail.rfind('\n', good_end - 2) : std::string::npos;
          const std::size_t s2 = p2 == std::string::npos ? 0 : p2 + 1;
          last = check_line(std::string_view(tail).substr(s2, good_end - 1 - s2));
          if (!last) {
            throw std::runtime_error("audit: " + options_.path +
                                     ": the last two lines are damaged; run `runwarden audit "
                                     "verify` and move the file aside");
          }
        }
      }
    }
    if (base + good_end < size) {
      const std::string torn = tail.substr(good_end);
      const std::string torn_path = options_.path + "." + std::to_string(size) + ".torn";
      const int tfd =
          ::open(torn_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, S_IRUSR | S_IWUSR);
      if (tfd < 0 || write_all(tfd, torn) != 0 || ::fsync(tfd) != 0) {
        throw std::runtime_error("audit: cannot save torn line to " + torn_path);
      }
      ::close(tfd);
      if (::ftruncate(fd, static_cast<off_t>(base + good_end)) != 0 || ::fsync(fd) != 0) {
        throw std::runtime_error("audit: cannot truncate torn line of " + options_.path + ": " +
                                 std::strerror(errno));
      }
      torn_event = {{"file", fs::path(torn_path).filename().string()},
                    {"bytes", torn.size()},
                    {"sha256", sha256_hex(torn)},
                    {"resumed_after_seq", last ? last->seq : 0}};
    }
    file_bytes_ = base + good_end;
    if (file_bytes_ > 0) {
      const std::string head = read_range(fd, 0, std::min<std::size_t>(file_bytes_, 1u << 20));
      const auto first = nlohmann::json::parse(head.substr(0, head.find('\n')), nullptr, false);
      if (!first.is_discarded() && first.contains("seq") && first["seq"].is_number_unsigned()) {
        file_first_seq_ = first["seq"].get<std::uint64_t>();
      }
      file_last_seq_ = last ? last->seq : 0;
    }
  }
  if (!last) {
    // The active file is empty: resume from the newest rotated file.
    const auto rotated = RotatedName::list(dir_, stem_);
    if (!rotated.empty()) {
      const RotatedName& newest = rotated.back();
      const int rfd = ::open(newest.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (rfd < 0) {
        throw std::runtime_error("audit: cannot read " + newest.path);
      }
      struct stat rst {};
      ::fstat(rfd, &rst);
      const auto rsize = static_cast<std::uint64_t>(rst.st_size);
      const std::size_t window =
          static_cast<std::size_t>(std::min<std::uint64_t>(rsize, kTailWindow));
      const std::string tail = read_range(rfd, rsize - window, window);
      ::close(rfd);
      const std::size_t end = tail.size() > 0 && tail.back() == '\n' ? tail.size() - 1 : 0;
      const std::size_t prev_nl = end > 0 ? tail.rfind('\n', end - 1) : std::string::npos;
      const std::size_t start = prev_nl == std::string::npos ? 0 : prev_nl + 1;
      last = end > 0 ? check_line(std::string_view(tail).substr(start, end - start)) : std::nullopt;
      if (!last) {
        throw std::runtime_error("audit: cannot resume the chain: last record of " + newest.path +
                                 " is damaged; run `runwarden audit verify`");
      }
    }
  }
  if (last) {
    next_seq_ = last->seq + 1;
    head_hash_ = last->hash;
  }
  if (!existed) {
    fsync_dir(dir_);
  }
  if (!torn_event.is_null()) {
    const std::string members = builder()->event_members("torn_line_recovered", torn_event);
    std::lock_guard lock(mu_);
    Pending p;
    p.first_seq = next_seq_;
    seal_locked(members, false, p);
    if (const std::error_code wec = write_batch(p, true)) {
      throw std::runtime_error("audit: cannot record torn-line recovery: " + wec.message());
    }
  }
}

void FileAuditLog::close() {
  {
    // A deferred task running now finishes first; one that runs later does nothing, and
    // what it would have written is written below.
    std::unique_lock ticket(ticket_->mu);
    ticket_->log = nullptr;
    // Not the task this thread is inside, if a completion of it called close().
    const int own = t_running_ticket == ticket_.get() ? 1 : 0;
    ticket_->idle.wait(ticket, [&] { return ticket_->running <= own; });
  }
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  queue_cv_.notify_all();
  bg_cv_.notify_all();
  // Both threads drain what was handed to them before they return.
  if (writer_.joinable()) {
    writer_.join();
  }
  if (syncer_.joinable()) {
    syncer_.join();
  }
  std::unique_lock lock(mu_);
  if (deferred_) {
    deferred_ = false;
    drain_locked(lock, std::numeric_limits<int>::max());
  }
  closed_ = true;
}

FileAuditLog::~FileAuditLog() {
  close();
  if (healthy_.load()) {
    std::unique_lock lock(mu_);
    if (key_ && since_checkpoint_ > 0) {
      Pending p;
      p.first_seq = next_seq_;
      p.bytes = checkpoint_line_locked();
      p.last_seq = next_seq_ - 1;
      write_batch(p, false);
    }
    lock.unlock();
    sync();
  }
  // Blocks reserved ahead go back at every close: also when the log failed (a full disk
  // keeps a partial reservation), and when this process wrote nothing (a crash left one).
  std::lock_guard io(io_mu_);
  if (file_) {
    trim_preallocation(file_->fd);
  }
}

std::uint64_t FileAuditLog::next_seq() const {
  std::lock_guard lock(mu_);
  return next_seq_;
}

bool FileAuditLog::healthy() const {
  return healthy_.load();
}

std::string FileAuditLog::failure() const {
  std::lock_guard lock(fail_mu_);
  return failure_;
}

std::error_code FileAuditLog::current_error() const {
  std::lock_guard lock(fail_mu_);
  return error_ ? error_ : std::make_error_code(std::errc::io_error);
}

std::error_code FileAuditLog::fail(const std::string& what, int err) {
  std::lock_guard lock(fail_mu_);
  if (healthy_.exchange(false)) {
    error_ = std::error_code(err, std::system_category());
    failure_ = "audit log unavailable: " + what + " " + options_.path + ": " + std::strerror(err);
  }
  return error_;
}

void FileAuditLog::record(const Exchange& exchange, bool final, Completion done) {
  if (!healthy_.load()) {
    done(current_error());
    return;
  }
  // The members sit in the builder's per-thread buffer with room around them: a leader
  // seals and writes its record right there, a follower's record is copied into the batch
  // when it is sealed, in both cases before any completion (which may record again and
  // reuse the buffer) runs.
  RecordBuilder::Slot slot = builder()->exchange_slot(exchange, final);
  submit(slot.view(), std::move(done), &slot);
}

void FileAuditLog::event(std::string_view type, const nlohmann::json& fields, Completion done) {
  if (!healthy_.load()) {
    done(current_error());
    return;
  }
  submit(builder()->event_members(type, fields), std::move(done));
}

bool FileAuditLog::set_redaction(const RedactionRules& rules) {
  // Built (the patterns compiled) before it is published: a throw leaves the rules in force.
  builder_.store(std::make_shared<const RecordBuilder>(rules, options_.body_bytes));
  return true;
}

std::string FileAuditLog::checkpoint_line_locked() {
  std::string line;
  append_checkpoint_locked(line);
  return line;
}

void FileAuditLog::append_checkpoint_locked(std::string& out) {
  const std::uint64_t head_seq = next_seq_ - 1;
  nlohmann::ordered_json cp;
  cp["type"] = "checkpoint";
  cp["head_seq"] = head_seq;
  cp["head_hash"] = head_hash_;
  cp["key_id"] = key_->key_id();
  cp["sig"] = key_->sign(head_seq, head_hash_);
  const std::string members = RecordBuilder::dump(cp);
  std::array<char, 32> ts{};
  std::array<char, 64> hash{};
  RecordCodec::seal_into(out, next_seq_, RecordCodec::now_rfc3339(ts),
                         std::string_view(members).substr(1, members.size() - 2), head_hash_, hash);
  ++next_seq_;
  head_hash_.assign(hash.data(), hash.size());
  since_checkpoint_ = 0;
  last_checkpoint_ = std::chrono::steady_clock::now();
}

void FileAuditLog::seal_locked(std::string_view members, bool force_checkpoint, Pending& out) {
  std::array<char, 32> ts{};
  std::array<char, 64> hash{};
  RecordCodec::seal_into(out.bytes, next_seq_, RecordCodec::now_rfc3339(ts), members, head_hash_,
                         hash);
  ++next_seq_;
  head_hash_.assign(hash.data(), hash.size()); // within its capacity: no allocation
  ++since_checkpoint_;
  if (key_ &&
      (force_checkpoint || since_checkpoint_ >= options_.checkpoint_records ||
       std::chrono::steady_clock::now() - last_checkpoint_ >= options_.checkpoint_interval)) {
    append_checkpoint_locked(out.bytes);
  }
  out.last_seq = next_seq_ - 1;
}

void FileAuditLog::submit(std::string_view members, Completion done, RecordBuilder::Slot* slot) {
  std::unique_lock lock(mu_, std::defer_lock);
  lock_briefly_spinning(lock);
  if (!healthy_.load()) {
    lock.unlock();
    done(current_error());
    return;
  }
  // While close() drains, a completion may still record (the proxy's decision completion
  // writes the final record): that record is taken, and written by the drain. Only once
  // nothing would write it is a record refused.
  if (closed_) {
    lock.unlock();
    done(std::make_error_code(std::errc::operation_canceled));
    return;
  }
  if (options_.durability == Durability::synced) {
    Pending p;
    p.first_seq = next_seq_;
    seal_locked(members, false, p);
    p.done = std::move(done);
    queue_.push_back(std::move(p));
    lock.unlock();
    queue_cv_.notify_one();
    return;
  }
  // A thread with TurnBatching (a proxy I/O thread) and no writer: the record opens a batch
  // that its loop writes once the handlers ready in this turn have run, so the records they
  // make share its write(2). Not while closing: close() would have to take it over.
  if (TurnBatching* batching = TurnBatching::current();
      batching != nullptr && !writing_ && !stop_ && batching->defer_next()) {
    start_batch_locked();
    seal_locked(members, false, open_.data);
    open_.dones.push_back(std::move(done));
    writing_ = true;
    deferred_ = true;
    deferred_by_ = std::this_thread::get_id();
    ++deferred_gen_;
    lock.unlock();
    batching->post(ticket_.get(), defer_task_);
    return;
  }
  // Another thread's batch waits for its loop, whose turn may be long (a handshake, a large
  // body). A caller with a loop of its own joins the batch and has its loop post a task as
  // well: whichever turn ends first writes both threads' records, the other task finds
  // nothing (two threads recording steadily would otherwise write once per record). A
  // caller without one takes the batch over and writes it now with its own record.
  if (deferred_ && deferred_by_ != std::this_thread::get_id()) {
    if (TurnBatching* batching = TurnBatching::current(); batching != nullptr && !stop_) {
      seal_locked(members, false, open_.data);
      open_.dones.push_back(std::move(done));
      lock.unlock();
      batching->post(ticket_.get(), defer_task_);
      return;
    }
    deferred_ = false;
    seal_locked(members, false, open_.data);
    open_.dones.push_back(std::move(done));
    drain_locked(lock, kLeaderRounds);
    return;
  }
  // No writer and nothing waiting (the usual case with one thread recording): this caller
  // is the leader, and its record is the first of the file order from here, so it is sealed
  // and written where the builder put it, without a copy into the batch. Records sealed
  // meanwhile join open_ and are written after it. With checkpoints the batch path below
  // keeps a due checkpoint line right after its record.
  if (slot != nullptr && !writing_ && open_.dones.empty() && !key_) {
    std::array<char, 32> ts{};
    std::array<char, 64> hash{};
    const std::string_view line = RecordCodec::seal_in_place(
        slot->data, slot->size, RecordBuilder::kSlotHeadroom, RecordBuilder::kSlotTailroom,
        next_seq_, RecordCodec::now_rfc3339(ts), head_hash_, hash);
    if (!line.empty()) {
      const std::uint64_t seq = next_seq_;
      ++next_seq_;
      head_hash_.assign(hash.data(), hash.size()); // within its capacity: no allocation
      ++since_checkpoint_;
      writing_ = true;
      lock.unlock();
      const std::error_code ec = write_batch(line, seq, seq, false);
      done(ec);
      done = nullptr; // what it captured is destroyed unlocked, as in drain_locked
      lock_briefly_spinning(lock);
      drain_locked(lock, kLeaderRounds - 1);
      return;
    }
  }
  // Group commit, leader/follower: the record is sealed straight onto the end of the open
  // batch, in seal order, so the file order is the chain order. A follower returns at
  // once; the writer calls its completion after the write(2) holding its bytes returned.
  if (open_.dones.empty()) {
    start_batch_locked();
  }
  seal_locked(members, false, open_.data);
  open_.dones.push_back(std::move(done));
  if (writing_) {
    return;
  }
  writing_ = true;
  drain_locked(lock, kLeaderRounds);
}

void FileAuditLog::start_batch_locked() {
  // The buffer is the one a writer emptied at an earlier swap: its capacity is reused, so a
  // batch allocates nothing, unless one large batch left it oversized.
  if (open_.data.bytes.capacity() > kKeptBatchBytes) {
    std::string().swap(open_.data.bytes);
  }
  open_.data.bytes.clear();
  open_.data.first_seq = next_seq_;
}

void FileAuditLog::DeferTicket::run(DeferTicket& ticket) {
  FileAuditLog* log = nullptr;
  {
    std::lock_guard lock(ticket.mu);
    log = ticket.log;
    if (log == nullptr) {
      return;
    }
    ++ticket.running;
  }
  const void* outer = std::exchange(t_running_ticket, &ticket);
  log->write_deferred();
  t_running_ticket = outer;
  std::lock_guard lock(ticket.mu);
  if (--ticket.running == 0) {
    ticket.idle.notify_all();
  }
}

void FileAuditLog::write_deferred() {
  std::unique_lock lock(mu_, std::defer_lock);
  lock_briefly_spinning(lock);
  if (!deferred_) {
    return; // the background thread took it over
  }
  deferred_ = false;
  if (TurnBatching* batching = TurnBatching::current(); batching != nullptr) {
    batching->note_batch(open_.dones.size());
  }
  drain_locked(lock, kLeaderRounds);
}

void FileAuditLog::drain_locked(std::unique_lock<std::mutex>& lock, int max_rounds) {
  for (int round = 0;; ++round) {
    if (open_.dones.empty()) {
      writing_ = false;
      return;
    }
    // The hand-off is skipped, and this thread keeps writing, when syncer_ could not take
    // the role at once: inside its interval fdatasync the batch would wait one disk flush,
    // and once stop_ is set syncer_ may already have returned and would never drain it.
    if (round >= max_rounds && !syncing_ && !stop_) {
      // writing_ stays set: the role passes to syncer_loop, which drains without a bound.
      handoff_ = true;
      bg_cv_.notify_one();
      return;
    }
    std::swap(taken_, open_);
    lock.unlock();
    const std::error_code ec = write_batch(taken_.data, false);
    for (Completion& done : taken_.dones) {
      if (done) {
        done(ec);
      }
    }
    // What the completions captured is destroyed here, still unlocked; the emptied vector
    // goes back to open_ at the next swap with its capacity, so a batch allocates nothing.
    taken_.dones.clear();
    lock_briefly_spinning(lock);
  }
}

std::error_code FileAuditLog::write_batch(const Pending& batch, bool sync_now) {
  return write_batch(batch.bytes, batch.first_seq, batch.last_seq, sync_now);
}

std::error_code FileAuditLog::write_batch(std::string_view bytes, std::uint64_t first_seq,
                                          std::uint64_t last_seq, bool sync_now) {
  std::lock_guard io(io_mu_);
  if (!healthy_.load()) {
    return current_error();
  }
  if (file_bytes_ + bytes.size() > preallocated_end_ && preallocate_) {
    // Up to kPreallocateBytes ahead, not past the rotation point (unless this batch is).
    const std::uint64_t end =
        std::max(file_bytes_ + bytes.size(),
                 std::min(file_bytes_ + kPreallocateBytes, options_.rotate_bytes));
    const std::uint64_t start = std::max(preallocated_end_, file_bytes_);
    if (::fallocate(file_->fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(start),
                    static_cast<off_t>(end - start)) != 0 &&
        (errno == EOPNOTSUPP || errno == ENOSYS)) {
      preallocate_ = false; // a file system without it: plain appends, as before
    }
    // Also after ENOSPC and the like: the write below reports what matters, and the next
    // attempt waits for the next chunk instead of costing a call per write.
    preallocated_end_ = end;
  }
  if (const int err = write_all(file_->fd, bytes); err != 0) {
    return fail("write to", err);
  }
  if (file_first_seq_ == 0) {
    file_first_seq_ = first_seq;
  }
  file_last_seq_ = last_seq;
  file_bytes_ += bytes.size();
  dirty_.store(true);
  if (sync_now) {
    if (::fdatasync(file_->fd) != 0) {
      return fail("fdatasync of", errno);
    }
    dirty_.store(false);
  }
  if (file_bytes_ >= options_.rotate_bytes) {
    return rotate_io_locked();
  }
  return {};
}

std::error_code FileAuditLog::rotate_io_locked() {
  if (preallocated_end_ > 0) {
    trim_preallocation(file_->fd); // a rotated file keeps no reserved blocks
    preallocated_end_ = 0;
  }
  if (::fdatasync(file_->fd) != 0) {
    return fail("fdatasync before rotating", errno);
  }
  const std::string rotated =
      (fs::path(dir_) / RotatedName::make(stem_, file_first_seq_, file_last_seq_)).string();
  if (::rename(options_.path.c_str(), rotated.c_str()) != 0) {
    return fail("rename for rotation of", errno);
  }
  const int fd =
      ::open(options_.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, S_IRUSR | S_IWUSR);
  if (fd < 0) {
    return fail("re-open after rotation of", errno);
  }
  file_ = std::make_shared<FileHandle>(fd);
  if (const int err = fsync_dir(dir_); err != 0) {
    return fail("directory fsync after rotating", err);
  }
  file_bytes_ = 0;
  file_first_seq_ = 0;
  file_last_seq_ = 0;
  dirty_.store(false);
  return {};
}

std::error_code FileAuditLog::sync() {
  std::shared_ptr<FileHandle> handle;
  {
    std::lock_guard io(io_mu_);
    handle = file_;
  }
  if (!healthy_.load()) {
    return current_error();
  }
  dirty_.store(false);
  if (::fdatasync(handle->fd) != 0) {
    return fail("fdatasync of", errno);
  }
  return {};
}

void FileAuditLog::writer_loop() {
  for (;;) {
    std::deque<Pending> batch;
    {
      std::unique_lock lock(mu_);
      queue_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) {
        closed_ = true; // stop_ and drained: a later synced record has no writer
        return;
      }
      batch.swap(queue_);
    }
    // Group commit: one write, one fdatasync, then every completion.
    Pending all;
    all.first_seq = batch.front().first_seq;
    all.last_seq = batch.back().last_seq;
    for (const Pending& p : batch) {
      all.bytes += p.bytes;
    }
    const std::error_code ec = write_batch(all, true);
    for (Pending& p : batch) {
      p.done(ec);
    }
  }
}

// `written` mode's background thread: the interval fdatasync, and the writer role when a
// leader hands it off. It drains a hand-off even when stopping, so no record is left.
void FileAuditLog::syncer_loop() {
  std::unique_lock lock(mu_);
  auto next_sync = std::chrono::steady_clock::now() + options_.fsync_interval;
  for (;;) {
    bg_cv_.wait_until(lock, next_sync, [this] { return stop_ || handoff_; });
    if (handoff_) {
      handoff_ = false;
      drain_locked(lock, std::numeric_limits<int>::max());
    }
    if (stop_) {
      return;
    }
    if (std::chrono::steady_clock::now() >= next_sync) {
      // A batch deferred since the last tick: its loop is stuck in one long turn, or stopped
      // and dropped the task. This thread writes it, and the task, if it runs, does nothing.
      if (deferred_ && deferred_gen_ == deferred_seen_gen_) {
        deferred_ = false;
        drain_locked(lock, std::numeric_limits<int>::max());
      }
      deferred_seen_gen_ = deferred_gen_;
      syncing_ = true;
      lock.unlock();
      if (dirty_.load() && healthy_.load()) {
        sync();
      }
      lock.lock();
      syncing_ = false;
      next_sync = std::chrono::steady_clock::now() + options_.fsync_interval;
    }
  }
}

} // namespace runwarden::audit

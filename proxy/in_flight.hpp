#pragma once
// The exchanges in flight on one io_context (forwarded, response not yet complete), so that
// a drain whose grace period runs out ends each of them with an audit record instead of
// stopping the I/O threads under them: the log then shows what happened to every request
// it saw forwarded (DESIGN §6: nothing is lost from the audit log).

#include <boost/asio/execution_context.hpp>
#include <memory>
#include <mutex>
#include <vector>

namespace runwarden::proxy {

/// A session with an exchange in flight. Linked into its io_context's InFlightExchanges
/// while it is; it must unlink itself (InFlightExchanges::remove) before it is destroyed.
class InFlightExchange {
public:
  /// Ends the exchange now with an audit record: called from any thread, so it dispatches
  /// to the session's own executor. Returns at once.
  virtual void abort_for_shutdown() = 0;
  /// The session, kept alive while abort_for_shutdown runs; null once it is being destroyed.
  virtual std::shared_ptr<InFlightExchange> lock_exchange() = 0;

  virtual ~InFlightExchange() = default;

  /// Whether it is linked. Read by its own session only: it links and unlinks itself.
  bool in_flight_linked() const { return linked_; }

protected:
  InFlightExchange() = default;
  InFlightExchange(const InFlightExchange&) = delete;
  InFlightExchange& operator=(const InFlightExchange&) = delete;

private:
  friend class InFlightExchanges;
  InFlightExchange* prev_ = nullptr;
  InFlightExchange* next_ = nullptr;
  bool linked_ = false;
};

/// One per io_context (an Asio service). An intrusive list: linking and unlinking a
/// session allocates nothing; the mutex is uncontended when one thread runs the context
/// (the proxy's I/O threads), and correct when several do (sessions on strands).
class InFlightExchanges : public boost::asio::execution_context::service {
public:
  using key_type = InFlightExchanges;
  static inline boost::asio::execution_context::id id;

  explicit InFlightExchanges(boost::asio::execution_context& ctx)
      : boost::asio::execution_context::service(ctx) {}

  void add(InFlightExchange& e) {
    std::lock_guard lock(mu_);
    if (e.linked_) {
      return;
    }
    e.prev_ = nullptr;
    e.next_ = head_;
    if (head_ != nullptr) {
      head_->prev_ = &e;
    }
    head_ = &e;
    e.linked_ = true;
  }

  void remove(InFlightExchange& e) {
    std::lock_guard lock(mu_);
    if (!e.linked_) {
      return;
    }
    (e.prev_ != nullptr ? e.prev_->next_ : head_) = e.next_;
    if (e.next_ != nullptr) {
      e.next_->prev_ = e.prev_;
    }
    e.prev_ = e.next_ = nullptr;
    e.linked_ = false;
  }

  /// Asks every linked session to end its exchange with a record. Returns how many.
  std::size_t abort_all() {
    std::vector<std::shared_ptr<InFlightExchange>> live;
    {
      std::lock_guard lock(mu_);
      for (InFlightExchange* e = head_; e != nullptr; e = e->next_) {
        if (auto sp = e->lock_exchange()) {
          live.push_back(std::move(sp));
        }
      }
    }
    for (auto& e : live) {
      e->abort_for_shutdown();
    }
    return live.size();
  }

private:
  void shutdown() override {}

  std::mutex mu_;
  InFlightExchange* head_ = nullptr;
};

} // namespace runwarden::proxy

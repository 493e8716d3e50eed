// HandshakeBudget: how many incoming connections may be in their handshake at once
// (sync.max_handshakes), counted from accept (before TLS) until the peer manager admits the
// peer. Connections that never finish cannot lock real peers out: a full budget evicts the
// oldest holder to make room for the newest.
//
// Ownership: the peer manager owns the budget; a Slot may outlive it (it then counts
// nothing). Thread-safety: none; one io_context thread.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>

namespace fieldsync::transports {

class HandshakeBudget {
  struct State;

 public:
  class Slot {
   public:
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    // The connection finished its handshake (or ended): frees the slot. Idempotent.
    void release();
    bool held() const { return held_; }
    // What to do when this slot is evicted (close the connection, or fail its session).
    // The slot is already released when `evict` runs.
    void on_evict(std::function<void()> evict) { evict_ = std::move(evict); }
    const std::string& label() const { return label_; }

   private:
    friend class HandshakeBudget;
    Slot(std::weak_ptr<State> state, std::string label)
        : state_(std::move(state)), label_(std::move(label)) {}
    std::weak_ptr<State> state_;
    std::string label_;
    std::function<void()> evict_;
    bool held_ = true;
  };

  explicit HandshakeBudget(std::size_t max);
  ~HandshakeBudget();
  HandshakeBudget(const HandshakeBudget&) = delete;
  HandshakeBudget& operator=(const HandshakeBudget&) = delete;

  // A slot for a new connection labelled `label` (its address, for the log). When the budget
  // is full the oldest holder is evicted first (logged through `log`); nullptr when there is
  // nothing to evict (max is 0).
  std::shared_ptr<Slot> take(std::string label,
                             const std::function<void(const std::string&)>& log = {});
  std::size_t in_use() const;
  std::size_t max() const;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace fieldsync::transports

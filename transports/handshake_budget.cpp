#include "transports/handshake_budget.hpp"

#include <algorithm>

namespace fieldsync::transports {

struct HandshakeBudget::State {
  std::size_t max = 0;
  std::list<Slot*> holders;  // oldest first
};

HandshakeBudget::HandshakeBudget(std::size_t max) : state_(std::make_shared<State>()) {
  state_->max = max;
}

HandshakeBudget::~HandshakeBudget() = default;

HandshakeBudget::Slot::~Slot() { release(); }

void HandshakeBudget::Slot::release() {
  if (!held_) return;
  held_ = false;
  if (auto st = state_.lock()) st->holders.remove(this);
}

std::shared_ptr<HandshakeBudget::Slot> HandshakeBudget::take(
    std::string label, const std::function<void(const std::string&)>& log) {
  State& st = *state_;
  if (st.max == 0) return nullptr;
  while (st.holders.size() >= st.max) {
    Slot* oldest = st.holders.front();
    if (log)
      log("sync.max_handshakes reached: dropping the oldest unfinished handshake (" +
          oldest->label_ + ")");
    oldest->release();
    auto evict = std::move(oldest->evict_);
    oldest->evict_ = nullptr;
    if (evict) evict();  // may destroy `oldest`
  }
  std::shared_ptr<Slot> s(new Slot(state_, std::move(label)));
  st.holders.push_back(s.get());
  return s;
}

std::size_t HandshakeBudget::in_use() const { return state_->holders.size(); }
std::size_t HandshakeBudget::max() const { return state_->max; }

}  // namespace fieldsync::transports

#include "proxy/memory_budget.hpp"

#include <utility>

namespace ifm::proxy {

bool memory_budget::try_reserve(std::size_t n) {
    auto used = used_.load(std::memory_order_relaxed);
    for (;;) {
        auto limit = limit_.load(std::memory_order_relaxed);
        if (n > limit || used > limit - n) return false;
        if (used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed)) return true;
    }
}

memory_budget& buffered_budget() {
    static memory_budget budget(256 * 1024 * 1024);   // config::limits_config's default
    return budget;
}

bool reserve_buffered(std::size_t n) { return buffered_budget().try_reserve(n); }
void release_buffered(std::size_t n) { buffered_budget().release(n); }

buffer_reservation& buffer_reservation::operator=(buffer_reservation&& o) noexcept {
    if (this != &o) {
        reset();
        budget_ = o.budget_;
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

bool buffer_reservation::grow(std::size_t n) {
    if (n == 0) return true;
    if (!budget_->try_reserve(n)) return false;
    size_ += n;
    return true;
}

void buffer_reservation::reset() {
    if (size_ > 0) budget_->release(std::exchange(size_, 0));
}

bool log_limiter::ready(std::uint64_t& suppressed) {
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto next = next_.load(std::memory_order_relaxed);
    if (now < next || !next_.compare_exchange_strong(next, now + interval_.count(), std::memory_order_relaxed)) {
        suppressed_.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
    return true;
}

}  // namespace ifm::proxy

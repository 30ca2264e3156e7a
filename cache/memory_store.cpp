#include "cache/memory_store.hpp"

#include <algorithm>

namespace ifm::cache {

using detail::normalized;

memory_backend::memory_backend()
    : clock_(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count())) {}

bool memory_backend::leased(entry& e, clock::time_point now) {
    if (e.lease_token.empty()) return false;
    if (now < e.lease_expiry) return true;
    e.lease_token.clear();  // expired, as Redis' PX would have deleted it
    return false;
}

// A write that took the lease and never committed: forget the state and move the generation,
// so that neither this state nor a read that started before the write can be trusted.
void memory_backend::settle(entry& e, clock::time_point now) {
    if (!e.writer.empty() && !leased(e, now)) {
        e.state = resource_state::unknown();
        e.writer.clear();
        e.generation = next_generation(e.generation);
    }
}

// The Redis rule max(g + 1, TIME in µs) with a process-wide monotonic counter for TIME: a
// generation never repeats, so a snapshot can never match a later generation.
std::uint64_t memory_backend::next_generation(std::uint64_t g) {
    return std::max(g + 1, ++clock_);
}

acquire_result memory_backend::acquire(const std::string& key, const condition& cond,
                                       std::chrono::milliseconds lease, std::string token) {
    const auto now = clock::now();
    std::lock_guard lock(mutex_);
    auto& e = entries_[key];
    settle(e, now);
    acquire_result r;
    r.current = e.state;
    if (leased(e, now)) {
        r.status = acquire_status::busy;
        return r;
    }
    if (!e.state.known()) {
        r.status = acquire_status::unknown;
    } else if (evaluate(cond, e.state) == verdict::pass) {
        r.status = acquire_status::ok;
    } else {
        r.status = acquire_status::mismatch;
        return r;
    }
    e.lease_token = token;
    e.writer = token;
    e.lease_expiry = now + std::max(lease, std::chrono::milliseconds(1));
    r.token = std::move(token);
    return r;
}

bool memory_backend::store_under_lease(const std::string& key, const std::string& token,
                                       const resource_state& state) {
    const auto now = clock::now();
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end() || !leased(it->second, now) || it->second.lease_token != token)
        return false;
    it->second.state = normalized(state);
    return true;
}

bool memory_backend::commit(const std::string& key, const std::string& token,
                            commit_outcome outcome, const resource_state& state) {
    const auto now = clock::now();
    std::lock_guard lock(mutex_);
    auto& e = entries_[key];
    const bool held = leased(e, now) && e.lease_token == token;
    if (held) {
        if (outcome == commit_outcome::set)
            e.state = normalized(state);
        else if (outcome == commit_outcome::unknown)
            e.state = resource_state::unknown();
        e.lease_token.clear();
        e.writer.clear();
    } else {
        e.state = resource_state::unknown();  // the write's effect is unknown: never trust it
    }
    e.generation = next_generation(e.generation);
    return held;
}

snapshot memory_backend::read(const std::string& key) {
    const auto now = clock::now();
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return {};
    if (!it->second.writer.empty() && !leased(it->second, now))
        return {resource_state::unknown(), it->second.generation, false};
    return {it->second.state, it->second.generation, leased(it->second, now)};
}

bool memory_backend::observe(const std::string& key, std::uint64_t generation,
                             const resource_state& state) {
    const auto now = clock::now();
    std::lock_guard lock(mutex_);
    auto& e = entries_[key];
    if (!e.writer.empty() || leased(e, now) || e.generation != generation) return false;
    e.state = normalized(state);
    return true;
}

std::size_t memory_backend::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

// ---------------------------------------------------------------------------------------------

memory_store::memory_store(std::shared_ptr<memory_backend> backend)
    : backend_(std::move(backend)), rng_(detail::make_token_rng()) {}

net::awaitable<result<acquire_result>> memory_store::async_acquire(
    std::string key, condition cond, std::chrono::milliseconds lease) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->acquire(key, cond, lease, detail::make_lease_token(rng_));
}

net::awaitable<result<bool>> memory_store::async_store_under_lease(
    std::string key, std::string token, resource_state state) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->store_under_lease(key, token, state);
}

net::awaitable<result<bool>> memory_store::async_commit(
    std::string key, std::string token, commit_outcome outcome, resource_state state) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->commit(key, token, outcome, state);
}

net::awaitable<result<snapshot>> memory_store::async_snapshot(std::string key) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->read(key);
}

net::awaitable<result<bool>> memory_store::async_observe(
    std::string key, std::uint64_t generation, resource_state state) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->observe(key, generation, state);
}

net::awaitable<result<void>> memory_store::async_ping() {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return result<void>{};
}

}  // namespace ifm::cache

// A process-wide memory budget for response bodies the proxy holds whole (hash mode reads,
// refresh_after_write) until the client has received them (limits.max_buffered_bytes). Without
// it, N clients that request a large document and stop reading cost N times its size.
// Lock-free: one atomic counter shared by the workers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace ifm::proxy {

class memory_budget {
public:
    explicit memory_budget(std::size_t limit) : limit_(limit) {}
    memory_budget(const memory_budget&) = delete;
    memory_budget& operator=(const memory_budget&) = delete;

    // Takes `n` bytes if they fit under the limit; all or nothing.
    bool try_reserve(std::size_t n);
    void release(std::size_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
    std::size_t used() const { return used_.load(std::memory_order_relaxed); }
    std::size_t limit() const { return limit_.load(std::memory_order_relaxed); }
    // Start and reload. Reservations already made stay; new ones see the new limit.
    void set_limit(std::size_t limit) { limit_.store(limit, std::memory_order_relaxed); }

private:
    std::atomic<std::size_t> used_{0};
    std::atomic<std::size_t> limit_;
};

// The process's budget of buffered response bytes (limits.max_buffered_bytes, set by each worker
// from its runtime).
memory_budget& buffered_budget();
// Shorthands on buffered_budget(), for callers that keep the count themselves.
bool reserve_buffered(std::size_t n);
void release_buffered(std::size_t n);

// Bytes reserved for one buffered body, given back when it is destroyed (or reset). Holds them
// for as long as the body is in memory, including while the client receives it.
class buffer_reservation {
public:
    buffer_reservation() = default;
    explicit buffer_reservation(memory_budget& b) : budget_(&b) {}
    buffer_reservation(buffer_reservation&& o) noexcept { *this = std::move(o); }
    buffer_reservation& operator=(buffer_reservation&& o) noexcept;
    ~buffer_reservation() { reset(); }

    // Reserves `n` more bytes; false (and nothing more reserved) when they do not fit.
    bool grow(std::size_t n);
    // Gives every reserved byte back.
    void reset();
    std::size_t size() const { return size_; }

private:
    memory_budget* budget_ = &buffered_budget();
    std::size_t size_ = 0;
};

// "At most once per interval", for warnings that a flood would otherwise repeat per request.
// Shared by the workers (one atomic).
class log_limiter {
public:
    explicit log_limiter(std::chrono::steady_clock::duration interval) : interval_(interval) {}
    // True for the first call of each interval; also counts the calls it suppressed, returned
    // (and reset) through `suppressed`.
    bool ready(std::uint64_t& suppressed);

private:
    std::chrono::steady_clock::duration interval_;
    std::atomic<std::int64_t> next_{0};   // steady_clock ticks
    std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace ifm::proxy

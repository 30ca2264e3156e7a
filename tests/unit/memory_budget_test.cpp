// The process-wide budget of buffered response bytes (limits.max_buffered_bytes).
#include "proxy/memory_budget.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

using ifm::proxy::buffer_reservation;
using ifm::proxy::log_limiter;
using ifm::proxy::memory_budget;

TEST_CASE("memory_budget: reservations are all or nothing and never pass the limit") {
    memory_budget b(100);
    CHECK(b.try_reserve(60));
    CHECK_FALSE(b.try_reserve(41));   // would be 101
    CHECK(b.used() == 60);
    CHECK(b.try_reserve(40));         // exactly the limit
    CHECK_FALSE(b.try_reserve(1));
    b.release(100);
    CHECK(b.used() == 0);
    CHECK_FALSE(b.try_reserve(101));  // more than the whole budget
    CHECK(b.used() == 0);
    // A lower limit (reload) refuses new reservations while old ones are still held.
    CHECK(b.try_reserve(80));
    b.set_limit(50);
    CHECK_FALSE(b.try_reserve(1));
    b.release(80);
    CHECK(b.try_reserve(50));
    b.release(50);
}

TEST_CASE("buffer_reservation: grows within the budget, gives everything back when destroyed or moved from") {
    memory_budget b(1000);
    {
        buffer_reservation r(b);
        CHECK(r.grow(400));
        CHECK(r.grow(0));
        CHECK(r.grow(500));
        CHECK(r.size() == 900);
        CHECK_FALSE(r.grow(200));     // refused: the reservation keeps what it had
        CHECK(r.size() == 900);
        CHECK(b.used() == 900);
        buffer_reservation moved = std::move(r);
        CHECK(r.size() == 0);
        CHECK(moved.size() == 900);
        CHECK(b.used() == 900);
        buffer_reservation other(b);
        CHECK(other.grow(100));
        other = std::move(moved);      // other's own 100 are given back
        CHECK(b.used() == 900);
        other.reset();
        CHECK(b.used() == 0);
        CHECK(other.grow(10));
    }
    CHECK(b.used() == 0);
}

TEST_CASE("memory_budget: concurrent reservations never exceed the limit") {
    memory_budget b(64 * 1024);
    std::vector<std::thread> threads;
    std::atomic<bool> over{false};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 20000; ++i) {
                buffer_reservation r(b);
                if (r.grow(16 * 1024) && b.used() > b.limit()) over = true;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK_FALSE(over.load());
    CHECK(b.used() == 0);
}

TEST_CASE("the process budget: reserve_buffered / release_buffered") {
    auto& b = ifm::proxy::buffered_budget();
    auto before = b.used();
    CHECK(ifm::proxy::reserve_buffered(1234));
    CHECK(b.used() == before + 1234);
    ifm::proxy::release_buffered(1234);
    CHECK(b.used() == before);
    {
        buffer_reservation r;   // on the process budget by default
        CHECK(r.grow(10));
        CHECK(b.used() == before + 10);
    }
    CHECK(b.used() == before);
}

TEST_CASE("log_limiter: the first call of each interval passes and reports how many were suppressed") {
    log_limiter l(std::chrono::milliseconds(200));
    std::uint64_t suppressed = 99;
    CHECK(l.ready(suppressed));
    CHECK(suppressed == 0);
    CHECK_FALSE(l.ready(suppressed));
    CHECK_FALSE(l.ready(suppressed));
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    CHECK(l.ready(suppressed));
    CHECK(suppressed == 2);
}

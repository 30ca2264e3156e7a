// Coroutine frames from the per-thread pool (proxy/frame_pool.hpp).
#include "proxy/frame_pool.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace net = boost::asio;
using boost::asio::detail::thread_info_base;

namespace {

// A frame of some kilobytes (the array lives across the suspension), as serve_one's is: Asio's
// own allocator never recycled frames over 1020 bytes.
net::awaitable<int> big_frame(int seed) {
    std::array<char, 3000> scratch;
    std::memset(scratch.data(), seed, scratch.size());
    net::steady_timer t(co_await net::this_coro::executor, std::chrono::steady_clock::time_point{});
    co_await t.async_wait(net::use_awaitable);
    co_return scratch[seed % scratch.size()];
}

// n big frames alive at once on `io` (each waits on its timer), freed as they finish.
void spawn_big_frames(net::io_context& io, int n, int& sum) {
    for (int r = 0; r < n; ++r) net::co_spawn(io, big_frame(r), [&sum](std::exception_ptr, int v) { sum += v; });
}

net::awaitable<void> request_like(int seed, int& sum) {
    for (int i = 0; i < 3; ++i) sum += co_await big_frame(seed + i);
}

}  // namespace

TEST_CASE("frame pool: a coroutine's frames come from the pool after the first ones") {
    // Each test runs the io_context on a thread of its own, whose pool starts empty.
    ifm::frame_pool::stats before, after;
    int sum = 0;
    std::thread([&] {
        net::io_context io;
        before = ifm::frame_pool::thread_stats();
        for (int r = 0; r < 200; ++r) {
            net::co_spawn(io, request_like(r, sum), net::detached);
            io.run();
            io.restart();
        }
        after = ifm::frame_pool::thread_stats();
    }).join();
    CHECK(sum > 0);
    CHECK(before.fresh == 0);
    CHECK(before.reused == 0);
    // 200 rounds of 5 frames (co_spawn's entry point, request_like, big_frame ×3 one at a time):
    // without the pool (the header not force-included, say) no frame would be counted at all.
    CHECK(after.reused + after.fresh >= 200 * 5);
    CHECK(after.fresh <= 10);
    CHECK(after.bytes <= ifm::frame_pool::max_pooled_bytes);
}

TEST_CASE("frame pool: what it keeps is bounded, the rest goes back to malloc") {
    ifm::frame_pool::stats after;
    std::thread([&] {
        net::io_context io;
        int sum = 0;
        // 400 big frames alive at once (each waits on its timer), all freed at the end: 1.2 MB.
        spawn_big_frames(io, 400, sum);
        io.run();
        after = ifm::frame_pool::thread_stats();
    }).join();
    CHECK(after.fresh >= 400);
    CHECK(after.bytes <= ifm::frame_pool::max_pooled_bytes);
    CHECK(after.bytes >= ifm::frame_pool::max_pooled_bytes - 4096);   // it did fill up
}

TEST_CASE("frame pool: released whole when the worker trims after a burst") {
    ifm::frame_pool::stats full, released, again;
    std::thread([&] {
        net::io_context io;
        int sum = 0;
        spawn_big_frames(io, 100, sum);
        io.run();
        full = ifm::frame_pool::thread_stats();
        ifm::frame_pool::release_thread_pool();
        released = ifm::frame_pool::thread_stats();
        // Still usable afterwards.
        io.restart();
        spawn_big_frames(io, 1, sum);
        io.run();
        again = ifm::frame_pool::thread_stats();
    }).join();
    CHECK(full.bytes > 0);
    CHECK(released.blocks == 0);
    CHECK(released.bytes == 0);
    CHECK(again.blocks > 0);
}

TEST_CASE("frame pool: a block too small for its size class is freed, never pooled") {
    ifm::frame_pool::stats before, after;
    std::thread([&] {
        before = ifm::frame_pool::thread_stats();
        // 100 bytes is in the 128-byte class; malloc's block for 100 bytes is smaller than 128,
        // so a frame of 120 bytes given this block later would overrun it.
        void* p = std::malloc(100);
        thread_info_base::deallocate(thread_info_base::awaitable_frame_tag(), nullptr, p, 100);
        after = ifm::frame_pool::thread_stats();
        // One of our own is pooled, and comes back for the next frame of its class.
        void* q = thread_info_base::allocate(thread_info_base::awaitable_frame_tag(), nullptr, 120);
        thread_info_base::deallocate(thread_info_base::awaitable_frame_tag(), nullptr, q, 120);
        CHECK(ifm::frame_pool::thread_stats().blocks == 1);
        void* r = thread_info_base::allocate(thread_info_base::awaitable_frame_tag(), nullptr, 100);
        CHECK(r == q);
        thread_info_base::deallocate(thread_info_base::awaitable_frame_tag(), nullptr, r, 100);
    }).join();
    CHECK(before.blocks == 0);
    CHECK(after.blocks == 0);
}

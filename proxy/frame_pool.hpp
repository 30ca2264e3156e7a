// Coroutine frames from a per-thread pool of size classes (proxy/frame_pool.cpp).
//
// Asio allocates every awaitable's frame through thread_info_base::allocate<awaitable_frame_tag>.
// That allocator keeps at most two freed blocks of at most 1020 bytes per thread; every larger
// frame (serve_one, run_write, the store calls...) went to aligned_alloc and free on each call:
// 9 per judged write at about 600 instructions each way (callgrind, 2026-12-07). The explicit
// specializations below replace it for frames only. An explicit specialization must be declared
// before any use in every translation unit, so CMake force-includes this header into all of them
// (ifm_boost's PUBLIC `-include`); the definitions live in ifm_boost, which everything links.
#pragma once

// Checked by the headers our coroutines include: compiling without this header is an error.
#define IFM_FRAME_POOL_INCLUDED 1

#include <boost/asio/detail/thread_info_base.hpp>

#include <cstddef>

namespace boost::asio::detail {

template <>
void* thread_info_base::allocate<thread_info_base::awaitable_frame_tag>(
    thread_info_base::awaitable_frame_tag, thread_info_base*, std::size_t size, std::size_t align);

template <>
void thread_info_base::deallocate<thread_info_base::awaitable_frame_tag>(
    thread_info_base::awaitable_frame_tag, thread_info_base*, void* pointer, std::size_t size);

}  // namespace boost::asio::detail

namespace ifm::frame_pool {

// This thread's pool, for tests and the metrics: blocks held, their bytes, and the allocations
// served from it / from malloc since the thread started.
struct stats {
    std::size_t blocks = 0;
    std::size_t bytes = 0;
    std::size_t reused = 0;
    std::size_t fresh = 0;
};
stats thread_stats() noexcept;

// Gives every block of this thread's pool back to malloc: the worker calls it before its
// malloc_trim after a burst, so that idle connections are not charged for the burst's frames.
void release_thread_pool() noexcept;

// Most bytes one thread's pool keeps; frames freed beyond it go back to malloc. What a worker
// reuses under load is the few frames freed between two allocations, far below this.
inline constexpr std::size_t max_pooled_bytes = 64 * 1024;
// Frames larger than this are never pooled.
inline constexpr std::size_t max_pooled_frame = 16 * 1024;

}  // namespace ifm::frame_pool

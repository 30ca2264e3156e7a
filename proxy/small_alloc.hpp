// Small blocks for operator new from a per-thread cache in front of malloc (proxy/small_alloc.cpp).
//
// A judged PUT made 58 heap allocations (strings, vectors, shared_ptr blocks, hiredis's replies...)
// and malloc/free were 19 % of its instructions (callgrind, 2026-12-07): glibc's per-thread cache
// keeps 7 blocks per size, and a worker frees a whole turn's requests' blocks of one size at once,
// so most of them went through its slower bins. Raising that limit (GLIBC_TUNABLES
// glibc.malloc.tcache_count=256) took a PUT from 92.5k to 85.2k instructions; tunables can only
// be set in the environment before the process starts, so the binary has its own cache instead:
// proxy/global_new.cpp replaces the global operator new and delete with these functions.
//
// Blocks come from malloc and go back to free; the cache holds at most max_cached_bytes per
// thread, in LIFO lists per 16-byte class of malloc_usable_size (so a block is filed by what it
// can hold, whatever size it was asked with or freed with). Aligned (align_val_t) allocations are
// not cached.
#pragma once

#include <cstddef>

namespace ifm::small_alloc {

// Largest request served from the cache; larger ones go to malloc and free directly.
inline constexpr std::size_t max_cached_block = 1024;
// Most bytes one thread's cache keeps; blocks freed beyond it go back to free().
inline constexpr std::size_t max_cached_bytes = 256 * 1024;

// operator new's contract: never null (std::bad_alloc, after the new_handler, as the standard's).
void* allocate(std::size_t size);
// Any block from allocate(), freed on any thread.
void deallocate(void* p) noexcept;

// This thread's cache: blocks held, their bytes, and the allocations served from it / from
// malloc since the thread started.
struct stats {
    std::size_t blocks = 0;
    std::size_t bytes = 0;
    std::size_t reused = 0;
    std::size_t fresh = 0;
};
stats thread_stats() noexcept;

// Gives every block of this thread's cache back to free(): the worker calls it before its
// malloc_trim after a burst, so that idle connections are not charged for the burst's blocks.
void release_thread_cache() noexcept;

// Whether proxy/global_new.cpp is linked in (operator new uses this cache): "ifmatch-proxy
// --version" says so. Defined there, and as false in small_alloc.cpp's weak default.
bool serves_operator_new() noexcept;

}  // namespace ifm::small_alloc

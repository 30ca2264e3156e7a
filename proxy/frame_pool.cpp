// The coroutine frame pool (proxy/frame_pool.hpp): per thread, one LIFO free list per 64-byte size
// class up to max_pooled_frame, at most max_pooled_bytes held. A request allocates and frees the
// same few frame sizes over and over, so after the first requests every frame comes from a list.
#include "proxy/frame_pool.hpp"

#include <malloc.h>

#include <array>
#include <cstdlib>
#include <new>

namespace ifm::frame_pool {
namespace {

constexpr std::size_t granule = 64;
constexpr std::size_t classes = max_pooled_frame / granule + 1;

struct free_block {
    free_block* next;
};

struct pool {
    std::array<free_block*, classes> heads{};
    std::size_t blocks = 0;
    std::size_t bytes = 0;
    std::size_t reused = 0;
    std::size_t fresh = 0;

    constexpr pool() = default;
    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;
    ~pool();
};

// Set once this thread's pool is destroyed (at thread exit): frames freed after that go to free().
// Trivially destructible, so it stays readable to the end of the thread.
constinit thread_local bool pool_gone = false;
constinit thread_local pool this_pool;

void release(pool& pl) noexcept {
    for (free_block*& head : pl.heads)
        while (head) {
            free_block* next = head->next;
            std::free(head);
            head = next;
        }
    pl.blocks = pl.bytes = 0;
}

pool::~pool() {
    release(*this);
    pool_gone = true;
}

constexpr std::size_t class_of(std::size_t size) noexcept { return (size + granule - 1) / granule; }

}  // namespace

void release_thread_pool() noexcept {
    if (!pool_gone) release(this_pool);
}

stats thread_stats() noexcept {
    if (pool_gone) return {};
    return {this_pool.blocks, this_pool.bytes, this_pool.reused, this_pool.fresh};
}

}  // namespace ifm::frame_pool

namespace boost::asio::detail {

using namespace ifm::frame_pool;

template <>
void* thread_info_base::allocate<thread_info_base::awaitable_frame_tag>(
    thread_info_base::awaitable_frame_tag, thread_info_base*, std::size_t size, std::size_t align) {
    void* p = nullptr;
    if (size <= max_pooled_frame && align <= alignof(std::max_align_t) && !pool_gone) {
        pool& pl = this_pool;
        const std::size_t c = class_of(size);
        if (free_block* b = pl.heads[c]) {
            pl.heads[c] = b->next;
            --pl.blocks;
            pl.bytes -= c * granule;
            ++pl.reused;
            return b;
        }
        ++pl.fresh;
        p = std::malloc(c * granule);  // the whole class, so that any frame of the class fits later
    } else {
        const std::size_t a = align < alignof(std::max_align_t) ? alignof(std::max_align_t) : align;
        p = std::aligned_alloc(a, (size + a - 1) / a * a);
    }
    if (!p) throw std::bad_alloc();
    return p;
}

template <>
void thread_info_base::deallocate<thread_info_base::awaitable_frame_tag>(
    thread_info_base::awaitable_frame_tag, thread_info_base*, void* pointer, std::size_t size) {
    if (size <= max_pooled_frame && !pool_gone) {
        pool& pl = this_pool;
        const std::size_t c = class_of(size);
        const std::size_t bytes = c * granule;
        // malloc_usable_size: a block pooled for class c must hold any frame of class c. Ours
        // always do; the check keeps a block from elsewhere (a translation unit that missed the
        // force-included header, and so Asio's own allocator) out of the lists.
        if (pl.bytes + bytes <= max_pooled_bytes && malloc_usable_size(pointer) >= bytes) {
            auto* b = static_cast<free_block*>(pointer);
            b->next = pl.heads[c];
            pl.heads[c] = b;
            ++pl.blocks;
            pl.bytes += bytes;
            return;
        }
    }
    std::free(pointer);
}

}  // namespace boost::asio::detail

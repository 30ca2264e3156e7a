#include "proxy/header_fields.hpp"

#include <array>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define IFM_FIELD_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IFM_FIELD_POOL 0
#endif
#endif
#ifndef IFM_FIELD_POOL
#define IFM_FIELD_POOL 1
#endif

namespace ifm::proxy {

namespace {

constexpr std::size_t classes = field_pool_largest / field_pool_granule;

// Sized where the compiler has sized deallocation (g++; clang 14 only with -fsized-deallocation).
void release(void* p, [[maybe_unused]] std::size_t bytes) noexcept {
#if defined(__cpp_sized_deallocation)
    ::operator delete(p, bytes);
#else
    ::operator delete(p);
#endif
}

struct free_block {
    free_block* next;
};

// One per thread: a singly linked list of freed blocks per size class. Blocks of class c are
// (c + 1) * granule bytes, whatever size was asked, so that any block of the class fits.
class thread_pool {
public:
    thread_pool() = default;
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;
    // Frees what it holds, and leaves the lists empty and full: a field map destroyed after the
    // thread's pool (a static's, at exit) goes straight to operator delete.
    ~thread_pool() {
        for (std::size_t c = 0; c < classes; ++c) {
            while (auto* b = heads_[c]) {
                heads_[c] = b->next;
                release(b, block_size(c));
            }
            counts_[c] = field_pool_depth;
        }
    }

    void* allocate(std::size_t c) {
        if (auto* b = heads_[c]) {
            heads_[c] = b->next;
            --counts_[c];
            return b;
        }
        return ::operator new(block_size(c));
    }

    void deallocate(void* p, std::size_t c) noexcept {
        if (counts_[c] >= field_pool_depth) {
            release(p, block_size(c));
            return;
        }
        heads_[c] = ::new (p) free_block{heads_[c]};
        ++counts_[c];
    }

    static constexpr std::size_t block_size(std::size_t c) { return (c + 1) * field_pool_granule; }

private:
    std::array<free_block*, classes> heads_{};
    std::array<std::size_t, classes> counts_{};
};

thread_local thread_pool pool;

constexpr std::size_t class_of(std::size_t bytes) { return (bytes - 1) / field_pool_granule; }

}  // namespace

void* field_pool_allocate(std::size_t bytes) {
    if (!IFM_FIELD_POOL || bytes == 0 || bytes > field_pool_largest) return ::operator new(bytes);
    return pool.allocate(class_of(bytes));
}

void field_pool_deallocate(void* p, std::size_t bytes) noexcept {
    if (!IFM_FIELD_POOL || bytes == 0 || bytes > field_pool_largest) {
        release(p, bytes);
        return;
    }
    pool.deallocate(p, class_of(bytes));
}

}  // namespace ifm::proxy

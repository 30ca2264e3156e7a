// The global operator new and delete on the small-block cache (proxy/small_alloc.hpp). Linked
// into the ifmatch-proxy binary and the optimized test binaries, never into a sanitizer build
// (AddressSanitizer must see every allocation and free to check them) or a mimalloc build.
// Aligned (align_val_t) forms keep libstdc++'s definitions: aligned_alloc and free.
#include "proxy/small_alloc.hpp"

#include <new>

namespace ifm::small_alloc {
bool serves_operator_new() noexcept { return true; }
}  // namespace ifm::small_alloc

void* operator new(std::size_t size) { return ifm::small_alloc::allocate(size); }
void* operator new[](std::size_t size) { return ifm::small_alloc::allocate(size); }

void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    try {
        return ifm::small_alloc::allocate(size);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
    try {
        return ifm::small_alloc::allocate(size);
    } catch (...) {
        return nullptr;
    }
}

void operator delete(void* p) noexcept { ifm::small_alloc::deallocate(p); }
void operator delete[](void* p) noexcept { ifm::small_alloc::deallocate(p); }
void operator delete(void* p, std::size_t) noexcept { ifm::small_alloc::deallocate(p); }
void operator delete[](void* p, std::size_t) noexcept { ifm::small_alloc::deallocate(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { ifm::small_alloc::deallocate(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { ifm::small_alloc::deallocate(p); }

// The header field maps of the proxy's messages, allocated from a pool of the worker's thread.
//
// Beast's basic_fields allocates each field line as one block (list and set hooks, name, value).
// A GET relays about twenty of them (the client's request and what we add, the origin's response
// and what we add), all alive together and freed together, and glibc's per-thread cache keeps 7
// blocks of a size: the rest went through its general allocator on both ends, 8 % of the
// instructions of an untracked GET (callgrind, bench/run --instructions get). The pool keeps up to
// `field_pool_depth` freed blocks of each size class per thread instead, so a request's field
// lines come from those of the request before. Blocks above `field_pool_largest` bytes go to
// operator new. Under AddressSanitizer the pool is bypassed, so that a field used after its
// message is gone is still reported.
#pragma once

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>

#include <cstddef>

namespace ifm::proxy {

namespace http = boost::beast::http;

inline constexpr std::size_t field_pool_granule = 32;    // bytes per size class step
inline constexpr std::size_t field_pool_largest = 512;   // largest block pooled
inline constexpr std::size_t field_pool_depth = 64;      // freed blocks kept per class and thread

void* field_pool_allocate(std::size_t bytes);
void field_pool_deallocate(void* p, std::size_t bytes) noexcept;

// Stateless: every instance allocates from the calling thread's pool, and a block freed on
// another thread than the one that allocated it simply joins that thread's pool.
template <class T>
struct field_allocator {
    using value_type = T;

    field_allocator() noexcept = default;
    template <class U>
    field_allocator(const field_allocator<U>&) noexcept {}

    T* allocate(std::size_t n) { return static_cast<T*>(field_pool_allocate(n * sizeof(T))); }
    void deallocate(T* p, std::size_t n) noexcept { field_pool_deallocate(p, n * sizeof(T)); }

    template <class U>
    bool operator==(const field_allocator<U>&) const noexcept { return true; }
};

using header_fields = http::basic_fields<field_allocator<char>>;
using request_header = http::request_header<header_fields>;
using response_header = http::response_header<header_fields>;
template <class Body>
using request_message = http::request<Body, header_fields>;
template <class Body>
using response_message = http::response<Body, header_fields>;

}  // namespace ifm::proxy

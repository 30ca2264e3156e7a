// The embedded validator store (store.kind: memory): one `memory_backend` per process, shared by
// every worker's `memory_store`. Same contract as the Redis store (the store suite runs both);
// a single instance only, since nothing is shared between processes.
#pragma once

#include "cache/store.hpp"

#include <mutex>
#include <random>
#include <unordered_map>

namespace ifm::cache {

class memory_backend {
public:
    memory_backend();

    acquire_result acquire(const std::string& key, const condition& cond,
                           std::chrono::milliseconds lease, std::string token);
    bool store_under_lease(const std::string& key, const std::string& token,
                           const resource_state& state);
    bool commit(const std::string& key, const std::string& token, commit_outcome outcome,
                const resource_state& state);
    snapshot read(const std::string& key);
    bool observe(const std::string& key, std::uint64_t generation, const resource_state& state);

    std::size_t size() const;

private:
    using clock = std::chrono::steady_clock;
    struct entry {
        resource_state state;
        std::uint64_t generation = 0;
        std::string lease_token;         // empty: no lease
        clock::time_point lease_expiry;
        // Token of a write that took the lease and has not committed. Once its lease is gone
        // the write's outcome is unknown (the writer crashed or lost the store): see I3.
        std::string writer;
    };
    // The state as the next operation must see it: unknown after an uncommitted write.
    void settle(entry& e, clock::time_point now);
    static bool leased(entry& e, clock::time_point now);
    std::uint64_t next_generation(std::uint64_t g);

    mutable std::mutex mutex_;
    std::unordered_map<std::string, entry> entries_;  // kept forever, like the Redis hashes
    std::uint64_t clock_;  // monotonic; seeded from the wall clock in µs like Redis TIME
};

class memory_store final : public validator_store {
public:
    explicit memory_store(std::shared_ptr<memory_backend> backend);

    net::awaitable<result<acquire_result>> async_acquire(
        std::string key, condition cond, std::chrono::milliseconds lease) override;
    net::awaitable<result<bool>> async_store_under_lease(
        std::string key, std::string token, resource_state state) override;
    net::awaitable<result<bool>> async_commit(
        std::string key, std::string token, commit_outcome outcome, resource_state state) override;
    net::awaitable<result<snapshot>> async_snapshot(std::string key) override;
    net::awaitable<result<bool>> async_observe(
        std::string key, std::uint64_t generation, resource_state state) override;
    net::awaitable<result<void>> async_ping() override;
    void close() override { closed_ = true; }

private:
    std::shared_ptr<memory_backend> backend_;
    std::mt19937_64 rng_;
    bool closed_ = false;
};

// Shared by both stores (defined in cache/store.cpp).
namespace detail {
// 128 random bits as 32 hex digits: a lease token.
std::string make_lease_token(std::mt19937_64& rng);
// A PRNG seeded from std::random_device (one per store object: no sharing between threads).
std::mt19937_64 make_token_rng();
// What a store records: absent and unknown carry no etag or date.
resource_state normalized(resource_state s);
// `co_return failure{ec}` for any result<T>: result<bool> cannot be built from an error_code
// directly (bool is constructible from one, so the constructor is ambiguous).
struct failure {
    boost::system::error_code ec;
    template <class T>
    operator result<T>() const { return result<T>(boost::system::in_place_error, ec); }
};
inline failure fail(store_errc e) { return {make_error_code(e)}; }
// Builds an argument vector without a braced list (g++ 12 miscompiles string-literal
// initializer lists inside coroutines: "array used as initializer").
template <class... A>
std::vector<std::string> argv_of(A&&... a) {
    std::vector<std::string> v;
    v.reserve(sizeof...(a));
    (v.emplace_back(std::forward<A>(a)), ...);
    return v;
}
}  // namespace detail

}  // namespace ifm::cache

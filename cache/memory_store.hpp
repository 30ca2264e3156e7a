// The embedded validator store (store.kind: memory): one `memory_backend` per process, shared by
// every worker's `memory_store`. Same contract as the Redis store (the store suite runs both, and
// the write-protocol simulator runs the backend as its model of Redis): a single instance only,
// since nothing is shared between processes.
#pragma once

#include "cache/store.hpp"

#include <functional>
#include <mutex>
#include <random>
#include <unordered_map>

namespace ifm::cache {

class memory_backend {
public:
    using clock = std::chrono::steady_clock;
    using clock_fn = std::function<clock::time_point()>;

    // `now`: the clock leases and validator expiry run on (the simulator passes its own).
    // `validator_ttl`: how long an untouched resource's state is kept (SPEC §4).
    explicit memory_backend(clock_fn now = nullptr, std::chrono::milliseconds validator_ttl = std::chrono::hours(1));

    // `fleet_lease`: the longest write lease the caller knows the fleet to take; after the
    // backend lost its data (lose_data) every acquire fails with `recovering` until that long
    // after the first one that noticed, so that no lease lost with the data can still be in use.
    result<acquire_result> acquire(const resource_ref& ref, const condition& cond, std::chrono::milliseconds lease,
                                   std::string token, std::chrono::milliseconds fleet_lease = {});
    bool store_under_lease(const resource_ref& ref, const std::string& token, const resource_state& state);
    bool commit(const resource_ref& ref, const std::string& token, commit_outcome outcome,
                const resource_state& state, std::chrono::milliseconds hold = {});
    // `fleet_lease` as for acquire: a read that finds the data lost starts the same wait.
    snapshot read(const resource_ref& ref, std::chrono::milliseconds fleet_lease = {});
    bool observe(const resource_ref& ref, std::uint64_t generation, const resource_state& state,
                 std::chrono::milliseconds fleet_lease = {});

    // Idempotency records (validator_store::async_idem_*).
    idem_result idem_begin(const std::string& id, const std::string& fingerprint, const std::string& owner,
                           std::chrono::milliseconds in_flight_ttl);
    bool idem_complete(const std::string& id, const std::string& owner, const std::string& response,
                       std::chrono::milliseconds ttl);
    bool idem_forget(const std::string& id, const std::string& owner);

    // Resources with a state (expired ones included until touched).
    std::size_t size() const;

    // For the simulator: a store that restarts without persistence, is flushed, or fails over to
    // a replica that lacks the latest writes. `image` is everything the store holds.
    struct image;
    image save() const;
    void restore(const image& i);   // a replica's data, epoch included
    void lose_data();               // FLUSHALL / restart without persistence: the epoch is gone too

private:
    struct entry {
        resource_state::kind kind = resource_state::kind::unknown;
        std::optional<std::int64_t> last_modified;
        std::vector<std::pair<std::string, std::string>> tags;   // variant -> strong etag
        bool overflow = false;           // a variant's validator was not recorded (max_variants)
        std::uint64_t generation = 0;
        std::string lease_token;         // empty: no lease
        clock::time_point lease_expiry;
        // Token of a write that took the lease and has not committed. Once its lease is gone
        // the write's outcome is unknown (the writer crashed or lost the store): see I3.
        std::string writer;
        clock::time_point expires;       // validator_ttl after the last change
    };
    entry& at(const std::string& key, clock::time_point now);   // creates; an expired entry starts anew
    void settle(entry& e, clock::time_point now);
    static bool leased(entry& e, clock::time_point now);
    std::uint64_t next_generation(std::uint64_t g);
    void forget_validators(entry& e);
    void record(entry& e, const std::string& variant, const resource_state& s);
    resource_state view(const entry& e, const std::string& variant) const;
    bool recovering(clock::time_point now, std::chrono::milliseconds fleet_lease, bool reading = false);

    struct idem_entry {
        std::string fingerprint, owner;
        bool completed = false;
        std::string response;
        clock::time_point expires;
    };
    // The live record of `id`, or null (an expired one is removed).
    idem_entry* idem_at(const std::string& id, clock::time_point now);

    clock_fn now_;
    std::chrono::milliseconds validator_ttl_;
    std::unordered_map<std::string, idem_entry> idem_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, entry> entries_;
    std::uint64_t clock_;  // generations: monotonic, seeded from the wall clock in µs like Redis TIME
    // The epoch (Redis: the `<prefix>:epoch` key): absent after lose_data until an acquire sets
    // it; writes wait until `ready_at`. `longest_lease`: the longest lease any acquire asked for.
    std::optional<clock::time_point> ready_at_;
    std::chrono::milliseconds longest_lease_{0};

public:
    struct image {
        std::unordered_map<std::string, entry> entries;
        std::optional<clock::time_point> ready_at;
        std::chrono::milliseconds longest_lease{0};
    };
};

class memory_store final : public validator_store {
public:
    explicit memory_store(std::shared_ptr<memory_backend> backend);

    net::awaitable<result<acquire_result>> async_acquire(
        resource_ref ref, condition cond, std::chrono::milliseconds lease) override;
    net::awaitable<result<bool>> async_store_under_lease(
        resource_ref ref, std::string token, resource_state state) override;
    net::awaitable<result<bool>> async_commit(
        resource_ref ref, std::string token, commit_outcome outcome, resource_state state,
        std::chrono::milliseconds hold = std::chrono::milliseconds(0)) override;
    net::awaitable<result<snapshot>> async_snapshot(resource_ref ref) override;
    net::awaitable<result<bool>> async_observe(
        resource_ref ref, std::uint64_t generation, resource_state state) override;
    net::awaitable<result<idem_result>> async_idem_begin(
        std::string resource, std::string key, std::string fingerprint, std::string owner,
        std::chrono::milliseconds in_flight_ttl) override;
    net::awaitable<result<bool>> async_idem_complete(
        std::string resource, std::string key, std::string owner, std::string response,
        std::chrono::milliseconds ttl) override;
    net::awaitable<result<bool>> async_idem_forget(std::string resource, std::string key, std::string owner) override;
    net::awaitable<result<void>> async_ping() override;
    void close() override { closed_ = true; }
    void expect_leases_up_to(std::chrono::milliseconds lease) override {
        longest_lease_ = std::max(longest_lease_, lease);
    }

private:
    std::shared_ptr<memory_backend> backend_;
    std::mt19937_64 rng_;
    std::chrono::milliseconds longest_lease_{0};
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

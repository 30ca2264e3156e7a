// The validator store in Redis (SPEC §5): each operation is one Lua script (cache/lua/*.lua),
// one round trip, over the worker's own connection to the master that holds the resource (one
// Redis, the Sentinel-named master, or the Cluster slot's master: cache/redis_topology.hpp).
//
// With `wait_replicas` > 0, a lease is confirmed with WAIT before the write may be forwarded:
// the lease and the write marker are then on a replica, so a failover that promotes it shows the
// write as in flight (busy, then unknown) instead of the pre-write validator. Unconfirmed: the
// lease is released and the acquire fails with `unavailable` (503).
//
// Keys: `<prefix>:{<key>}` (hash: s state, m last-modified, g generation, w writer, v:<variant>
// etags: cache/lua/prelude.lua), `<prefix>:{<key>}:l` (the lease token, PX TTL) and the epoch
// `<prefix>:epoch` (in Redis Cluster one per slot, `<prefix>:epoch:{<tag of the slot>}`). The
// hash tag keeps all three in one cluster slot.
// '{', '}' and '%' in the key are percent-encoded, so that no key can end the hash tag early
// and name another resource's lease key (`k}:l` would otherwise address the lease of `k`).
#pragma once

#include "cache/redis_connection.hpp"
#include "cache/redis_topology.hpp"
#include "cache/store.hpp"

#include <random>

namespace ifm::cache {

class redis_store final : public validator_store {
public:
    // Starts connecting at once (on `ex`); operations fail with `unavailable` until connected.
    // `wait_replicas`: 0 (no WAIT) or the replicas that must confirm a lease.
    redis_store(net::any_io_executor ex, const config::store_config& cfg, const redis_target& target,
                unsigned wait_replicas);
    ~redis_store() override;

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
    void close() override;
    void expect_leases_up_to(std::chrono::milliseconds lease) override {
        longest_lease_ = std::max(longest_lease_, lease);   // never shorter: older leases may be in flight
    }
    std::uint64_t reconnects() const override { return router_->reconnects(); }
    bool connected() const override { return router_->connected(); }

    // For /readyz and metrics: connected flag and reconnect counter.
    const redis_router& connection() const { return *router_; }

    // The store's scripts as loaded (the prelude prepended), in `script` order.
    static const std::vector<lua_script>& scripts();

    // "<prefix>:{<escaped key>}"; the lease key appends ":l".
    static std::string resource_key(std::string_view prefix, std::string_view key);

private:
    // KEYS: the resource hash, its lease, and the epoch of its slot (cache/lua/prelude.lua).
    std::vector<std::string> keys(std::string_view key) const;
    // The prelude's ARGV[1..3]: the fleet's longest lease, the validator TTL, the variant.
    std::vector<std::string> args(const resource_ref& ref) const;
    void saw_epoch(std::string_view key);
    std::size_t epoch_index(std::string_view key) const;
    std::string new_token();
    std::string idem_key(std::string_view resource, std::string_view key) const;

    // Confirms a lease just taken (see above); false: it was released again.
    net::awaitable<bool> async_confirm_lease(resource_ref ref, std::string token, routed_reply via);

    std::shared_ptr<redis_router> router_;
    std::string prefix_;
    bool cluster_ = false;
    std::chrono::milliseconds validator_ttl_{};
    unsigned wait_replicas_ = 0;
    std::chrono::milliseconds wait_timeout_{};
    std::chrono::milliseconds command_timeout_{};
    bool young_server_wait_ = true;
    std::vector<bool> epoch_seen_;   // per epoch key (one, or one per cluster slot)
    // The longest write lease configured or asked for (at least the default): how long reads
    // stay unrecorded after Redis was restarted (redis_connection::replacement_started_at).
    std::chrono::milliseconds longest_lease_{0};
    std::mt19937_64 rng_;
};

}  // namespace ifm::cache

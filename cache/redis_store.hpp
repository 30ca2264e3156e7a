// The validator store in Redis (SPEC §5): each operation is one Lua script (cache/lua/*.lua),
// one round trip, over the worker's own connection.
//
// Keys: `<prefix>:{<key>}` (hash: s state, e etag, m last-modified, g generation) and
// `<prefix>:{<key>}:l` (the lease token, PX TTL). The hash tag keeps both in one cluster slot.
// '{', '}' and '%' in the key are percent-encoded, so that no key can end the hash tag early
// and name another resource's lease key (`k}:l` would otherwise address the lease of `k`).
#pragma once

#include "cache/redis_connection.hpp"
#include "cache/store.hpp"

#include <random>

namespace ifm::cache {

class redis_store final : public validator_store {
public:
    // Starts connecting at once (on `ex`); operations fail with `unavailable` until connected.
    redis_store(net::any_io_executor ex, const config::store_config& cfg, redis_endpoint endpoint);
    ~redis_store() override;

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
    void close() override;

    // For /readyz and metrics: connected flag and reconnect counter.
    const redis_connection& connection() const { return *conn_; }

    // "<prefix>:{<escaped key>}"; the lease key appends ":l".
    static std::string resource_key(std::string_view prefix, std::string_view key);

private:
    std::vector<std::string> keys(std::string_view key) const;
    std::string new_token();

    std::shared_ptr<redis_connection> conn_;
    std::string prefix_;
    std::mt19937_64 rng_;
};

}  // namespace ifm::cache

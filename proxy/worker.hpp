// One worker thread: its own io_context, origin pools, store connection and sessions
// (nghttpx's model: nothing mutable is shared between workers on the hot path).
#pragma once

#include "cache/store.hpp"
#include "proxy/metrics.hpp"
#include "proxy/origin_pool.hpp"
#include "proxy/runtime.hpp"

#include <boost/asio/io_context.hpp>

#include <memory>
#include <unordered_set>
#include <vector>

namespace ifm::proxy {

class client_session;

struct worker {
    worker(std::shared_ptr<const runtime> rt, cache::store_factory& stores, metrics& m, unsigned index);
    ~worker();

    // Swaps in a new runtime (reload): new pools for the new upstreams; sessions pick the new
    // runtime at their next request. Runs on this worker's thread.
    void apply(std::shared_ptr<const runtime> rt);
    // Stops taking requests: idle keep-alive sessions are closed, busy ones finish their request.
    void begin_drain();

    net::io_context ioc{1};
    std::shared_ptr<const runtime> rt;
    // Aligned with rt->cfg.upstreams. Shared so that a request in flight during a reload keeps
    // the pools of the runtime it started with.
    std::shared_ptr<std::vector<std::unique_ptr<origin_pool>>> pools;
    std::unique_ptr<cache::validator_store> store;
    metrics& stats;
    unsigned index;
    std::unordered_set<client_session*> sessions;
    // Relay buffers of finished requests, handed to the next ones: a 16 KiB malloc and free per
    // request showed in profiles (malloc_consolidate). At most max_spare_buffers are kept.
    static constexpr std::size_t max_spare_buffers = 64;
    std::vector<std::unique_ptr<char[]>> spare_buffers;
    bool draining = false;
    std::uint64_t next_token = 0;
};

}  // namespace ifm::proxy

// The admin listener (separate from traffic, loopback by default): /healthz, /readyz, /metrics.
// Runs on a thread of its own so that a saturated worker never hides the process's health.
//   /healthz  200 while the process runs (liveness)
//   /readyz   200 when the store answers a ping and every upstream accepts a TCP connection,
//             else 503 {"status":"not ready","reason":"..."} (readiness)
//   /metrics  the Prometheus text format (metrics::render), after sampling the workers' gauges
#pragma once

#include "cache/store.hpp"
#include "proxy/metrics.hpp"
#include "proxy/runtime.hpp"

#include <memory>
#include <vector>

namespace ifm::proxy {

struct worker;

class admin_server {
public:
    // `workers` are sampled for gauges (origin connections, store connections) at each scrape;
    // they must outlive this object.
    admin_server(tcp::endpoint ep, std::shared_ptr<const runtime> rt, cache::store_factory& stores, metrics& m,
                 std::vector<worker*> workers);
    ~admin_server();
    std::uint16_t port() const;
    void apply(std::shared_ptr<const runtime> rt);
    void stop();

    struct impl;
private:
    std::unique_ptr<impl> impl_;
};

}  // namespace ifm::proxy

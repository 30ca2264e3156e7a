// The admin listener (separate from traffic, loopback by default): /healthz, /readyz, /metrics.
// Runs on a thread of its own so that a saturated worker never hides the process's health.
//   /healthz  200 when every worker's event loop runs a posted no-op within 1 s (liveness), else
//             503 {"status":"unhealthy","reason":"..."}
//   /readyz   200 when every upstream accepts a TCP connection and SIGTERM has not been received,
//             else 503 {"status":"not ready","reason":"..."}; either way the body shows each
//             upstream and the store's state. A store outage does not fail it (reads still flow).
//             The result is cached for 1 s.
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
    // SIGTERM: /readyz answers 503 from now on; everything else keeps answering.
    void begin_drain();
    void stop();

    struct impl;
private:
    std::unique_ptr<impl> impl_;
};

}  // namespace ifm::proxy

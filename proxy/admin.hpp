// The admin listener (separate from traffic, loopback by default): /healthz, /readyz, /metrics.
// Runs on a thread of its own so that a saturated worker never hides the process's health.
#pragma once

#include "cache/store.hpp"
#include "proxy/metrics.hpp"
#include "proxy/runtime.hpp"

#include <memory>

namespace ifm::proxy {

class admin_server {
public:
    admin_server(tcp::endpoint ep, std::shared_ptr<const runtime> rt, cache::store_factory& stores, metrics& m);
    ~admin_server();
    std::uint16_t port() const;
    void apply(std::shared_ptr<const runtime> rt);
    void stop();

    struct impl;
private:
    std::unique_ptr<impl> impl_;
};

// The Prometheus text exposition of `m`.
std::string render_metrics(const metrics& m);

}  // namespace ifm::proxy

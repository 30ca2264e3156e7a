// The process: N workers (one thread and io_context each) accepting on one port through
// SO_REUSEPORT listeners, graceful drain, reload.
#pragma once

#include "config/config.hpp"
#include "proxy/metrics.hpp"

#include <atomic>
#include <memory>
#include <string>

namespace ifm::proxy {

class server {
public:
    // Resolves the upstreams (a name that does not resolve yet is retried on connect); throws
    // std::runtime_error for what a config alone cannot show.
    explicit server(config::config cfg);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    // Binds the listeners (throws std::system_error naming the address) and starts the workers.
    void start();
    std::uint16_t port() const;
    std::uint16_t admin_port() const;   // 0 when there is no admin listener

    // SIGTERM: /readyz fails at once; the listeners keep accepting for limits.drain_delay (while
    // Kubernetes removes the endpoint), then stop accepting; in-flight requests get at most
    // limits.drain_timeout, idle connections and the store are closed, then the workers end.
    // The admin listener answers until the process ends. `immediate` (SIGINT, or a second
    // SIGTERM) skips the delay. Returns at once.
    void drain(bool immediate = false);
    // Blocks until every worker has ended.
    void wait();
    // SIGHUP: applies a new configuration (routes, upstreams, limits, log level). The listen
    // and admin addresses, workers and store cannot change without a restart; a change there is
    // refused. Returns an empty string on success, else why it was refused. Both outcomes are
    // counted in metrics (config_reloads_total).
    std::string reload(config::config cfg);

    metrics& stats();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace ifm::proxy

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
    // Validates what a config alone cannot (upstream names resolve); throws std::runtime_error.
    explicit server(config::config cfg);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    // Binds the listeners (throws std::system_error naming the address) and starts the workers.
    void start();
    std::uint16_t port() const;
    std::uint16_t admin_port() const;   // 0 when there is no admin listener

    // SIGTERM: stop accepting, let in-flight requests finish (at most limits.drain_timeout),
    // close idle connections and the store, then the workers end. Returns at once.
    void drain();
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

// An in-process proxy (the real server, workers and all) on 127.0.0.1:0 in front of a fake origin.
#pragma once

#include "config/config.hpp"
#include "proxy/server.hpp"
#include "tests/support/fake_origin.hpp"

#include <chrono>
#include <functional>
#include <memory>

namespace ifm::test {

// A config with one upstream "origin" at `origin_port` and two routes: "/plain/" untracked, and
// "/" tracked in hash mode. Memory store, one worker, short timeouts suited to tests.
config::config make_test_config(std::uint16_t origin_port);

// Switches a test config from the memory store to the Redis at `url`, `timeout` per command.
void use_redis_store(config::config& c, const std::string& url,
                     std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

class proxy_fixture {
public:
    explicit proxy_fixture(std::function<void(config::config&)> tweak = {});
    ~proxy_fixture();
    std::uint16_t port() const { return server_->port(); }
    proxy::server& server() { return *server_; }
    fake_origin& origin() { return origin_; }
    // Graceful drain, then waits for the workers to end.
    void drain_and_wait();

private:
    fake_origin origin_;
    std::unique_ptr<proxy::server> server_;
};

}  // namespace ifm::test

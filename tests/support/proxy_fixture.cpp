#include "tests/support/proxy_fixture.hpp"

#include "proxy/access_log.hpp"

namespace ifm::test {

config::config make_test_config(std::uint16_t origin_port) {
    using namespace std::chrono_literals;
    config::config cfg;
    cfg.listen = {"127.0.0.1", 0};
    cfg.workers = 1;
    cfg.log.level = "warn";
    cfg.log.access_log = false;
    cfg.store.young_server_wait = false;   // every test's Redis is brand new
    config::upstream_config up;
    up.name = "origin";
    up.host = "127.0.0.1";
    up.port = origin_port;
    up.connect_timeout = 1s;
    up.request_timeout = 2s;
    cfg.upstreams.push_back(up);
    config::route_config plain;
    plain.name = "plain";
    plain.match.path_prefix = "/plain/";
    plain.upstream = "origin";
    plain.track = false;
    config::route_config tracked;
    tracked.name = "tracked";
    tracked.match.path_prefix = "/";
    tracked.upstream = "origin";
    tracked.etag = config::etag_mode::hash;
    tracked.write_lease = 5s;
    cfg.routes = {plain, tracked};
    return cfg;
}

void use_redis_store(config::config& c, const std::string& url, std::chrono::milliseconds timeout) {
    c.store.kind = config::store_kind::redis;
    c.store.url = url;
    c.store.timeout = timeout;
}

proxy_fixture::proxy_fixture(std::function<void(config::config&)> tweak) {
    auto cfg = make_test_config(origin_.port());
    if (tweak) tweak(cfg);
    proxy::setup_logging(cfg.log);
    server_ = std::make_unique<proxy::server>(std::move(cfg));
    server_->start();
}

// Immediate drains: limits.drain_delay (keep accepting while Kubernetes removes the endpoint)
// has its own test; here it would only add seconds to every test.
proxy_fixture::~proxy_fixture() {
    server_->drain(true);
    server_->wait();
}

void proxy_fixture::drain_and_wait() {
    server_->drain(true);
    server_->wait();
}

}  // namespace ifm::test

// The store factories (store.kind: memory | redis), apart from cache/store.cpp so that the
// protocol library (ifm_protocol: the write machine and the memory backend, which the simulator
// links) does not pull in the Redis store.
#include "cache/memory_store.hpp"
#include "cache/redis_store.hpp"

#include <stdexcept>

namespace ifm::cache {

namespace {

class memory_factory final : public store_factory {
public:
    std::unique_ptr<validator_store> make(net::any_io_executor) override {
        return std::make_unique<memory_store>(backend_);
    }

private:
    std::shared_ptr<memory_backend> backend_ = std::make_shared<memory_backend>();
};

class redis_factory final : public store_factory {
public:
    explicit redis_factory(const config::store_config& cfg) : cfg_(cfg) {
        auto target = parse_store_url(cfg.url);
        if (!target) throw std::invalid_argument("store.url: " + target.error());
        target_ = std::move(*target);
        // IFM_REDIS_PASSWORD; for Sentinel and Cluster, the data nodes' password.
        if (!cfg.password.empty()) target_.endpoint.password = cfg.password;
        target_.sentinel_user = cfg.sentinel_username;
        target_.sentinel_password = cfg.sentinel_password;
        // Sentinel exists to fail over, and a failover must not lose a lease (README).
        wait_replicas_ = cfg.wait_replicas.value_or(target_.mode == redis_mode::sentinel ? 1 : 0);
    }
    std::unique_ptr<validator_store> make(net::any_io_executor ex) override {
        return std::make_unique<redis_store>(std::move(ex), cfg_, target_, wait_replicas_);
    }

private:
    config::store_config cfg_;
    redis_target target_;
    unsigned wait_replicas_ = 0;
};

}  // namespace

// Throws std::invalid_argument for a malformed store.url (the config loader should have said so).
std::unique_ptr<store_factory> make_store_factory(const config::store_config& cfg) {
    if (cfg.kind == config::store_kind::redis) return std::make_unique<redis_factory>(cfg);
    return std::make_unique<memory_factory>();
}

}  // namespace ifm::cache

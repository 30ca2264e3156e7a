#include "cache/store.hpp"

#include "cache/memory_store.hpp"
#include "cache/redis_store.hpp"

#include <stdexcept>

namespace ifm::cache {

namespace {

class store_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "ifm.store"; }
    std::string message(int ev) const override {
        switch (static_cast<store_errc>(ev)) {
        case store_errc::timeout: return "store timeout";
        case store_errc::unavailable: return "store unavailable";
        case store_errc::protocol: return "store protocol error";
        case store_errc::recovering: return "store restarted: waiting out the write leases it lost";
        }
        return "unknown store error";
    }
};

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

const boost::system::error_category& store_category() {
    static const store_category_impl category;
    return category;
}

boost::system::error_code make_error_code(store_errc e) {
    return {static_cast<int>(e), store_category()};
}

// Throws std::invalid_argument for a malformed store.url (the config loader should have said so).
std::unique_ptr<store_factory> make_store_factory(const config::store_config& cfg) {
    if (cfg.kind == config::store_kind::redis) return std::make_unique<redis_factory>(cfg);
    return std::make_unique<memory_factory>();
}

namespace detail {

std::mt19937_64 make_token_rng() {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
}

std::string make_lease_token(std::mt19937_64& rng) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string token;
    token.reserve(32);
    for (int word = 0; word < 2; ++word) {
        auto v = rng();
        for (int i = 0; i < 16; ++i, v >>= 4) token.push_back(digits[v & 0xf]);
    }
    return token;
}

resource_state normalized(resource_state s) {
    if (s.state != resource_state::kind::present) return {s.state, {}, {}};
    return s;
}

}  // namespace detail

}  // namespace ifm::cache

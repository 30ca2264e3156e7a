#include "cache/store.hpp"

#include "cache/memory_store.hpp"

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
        case store_errc::scripts_denied: return "the Redis user may not run scripts: see README \"Redis ACL\"";
        }
        return "unknown store error";
    }
};

}  // namespace

const boost::system::error_category& store_category() {
    static const store_category_impl category;
    return category;
}

boost::system::error_code make_error_code(store_errc e) {
    return {static_cast<int>(e), store_category()};
}

// Stores without idempotency records (test doubles) refuse: the proxy answers 503.
net::awaitable<result<idem_result>> validator_store::async_idem_begin(
    std::string, std::string, std::string, std::string, std::chrono::milliseconds) {
    co_return detail::fail(store_errc::unavailable);
}
net::awaitable<result<bool>> validator_store::async_idem_complete(
    std::string, std::string, std::string, std::string, std::chrono::milliseconds) {
    co_return detail::fail(store_errc::unavailable);
}
net::awaitable<result<bool>> validator_store::async_idem_forget(std::string, std::string, std::string) {
    co_return detail::fail(store_errc::unavailable);
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

#include "proxy/origin_pool.hpp"

#include "proxy/memory_budget.hpp"
#include "proxy/metrics.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <sys/socket.h>

#include <optional>

namespace ifm::proxy {

namespace {
struct origin_category_impl : boost::system::error_category {
    const char* name() const noexcept override { return "ifm.origin"; }
    std::string message(int ev) const override {
        switch (static_cast<origin_errc>(ev)) {
        case origin_errc::refused: return "origin refused the connection";
        case origin_errc::connect_timeout: return "origin connect timed out";
        case origin_errc::pool_exhausted: return "no origin connection available";
        case origin_errc::tls_failed: return "TLS handshake with the origin failed";
        }
        return "origin error";
    }
};
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t origin_read_size = 16 * 1024;
}  // namespace

const boost::system::error_category& origin_category() {
    static origin_category_impl c;
    return c;
}
boost::system::error_code make_error_code(origin_errc e) { return {static_cast<int>(e), origin_category()}; }

pooled_connection& pooled_connection::operator=(pooled_connection&& o) noexcept {
    if (this != &o) {
        reset();
        pool_ = std::exchange(o.pool_, nullptr);
        conn_ = std::move(o.conn_);
        reused_ = o.reused_;
        keep_ = std::exchange(o.keep_, false);
    }
    return *this;
}

void pooled_connection::reset() {
    if (pool_) std::exchange(pool_, nullptr)->release(std::move(conn_), keep_);
    conn_.reset();
    keep_ = false;
}

origin_pool::origin_pool(net::any_io_executor ex, const config::upstream_config& cfg,
                         std::vector<tcp::endpoint> endpoints, metrics* stats,
                         std::shared_ptr<net::ssl::context> tls)
    : ex_(std::move(ex)), cfg_(cfg), endpoints_(std::move(endpoints)), stats_(stats), tls_(std::move(tls)) {}

origin_pool::~origin_pool() {
    for (auto* w : waiters_) w->cancel();
}

void origin_pool::close_idle() { idle_.clear(); }

bool origin_pool::alive(origin_connection& c) const {
    // An idle connection must have nothing to read: EOF means the origin closed it, data means
    // it sent bytes we never asked for. Either way it cannot carry another request.
    char byte;
    auto n = ::recv(c.stream.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || n > 0) return false;
    return errno == EAGAIN || errno == EWOULDBLOCK;
}

void origin_pool::release(std::unique_ptr<origin_connection> c, bool keep) {
    --in_use_;
    if (c && keep && c->buffer.size() == 0 && idle_.size() < cfg_.max_idle_connections) {
        c->idle_since = std::chrono::steady_clock::now();
        idle_.push_back(std::move(c));
    }
    if (!waiters_.empty()) {
        waiters_.front()->cancel();
        waiters_.pop_front();
    }
}

std::unique_ptr<origin_connection> origin_pool::take_idle() {
    auto now = std::chrono::steady_clock::now();
    while (!idle_.empty()) {
        auto c = std::move(idle_.back());  // most recently used: least likely to have timed out
        idle_.pop_back();
        if (now - c->idle_since < cfg_.idle_timeout && alive(*c)) return c;
    }
    return nullptr;
}

net::awaitable<boost::system::result<pooled_connection>> origin_pool::async_acquire(bool fresh) {
    // One deadline for the whole wait, however often the waiter is woken: release() wakes the
    // first waiter, but a request that runs before it may take the slot, and then it waits on.
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + cfg_.pool_wait;
    std::optional<net::steady_timer> timer;
    for (bool expired = false;;) {
        if (!fresh) {
            if (auto c = take_idle()) {
                if (timer && stats_) stats_->origin_pool_wait.observe(std::chrono::steady_clock::now() - start);
                ++in_use_;
                co_return pooled_connection(this, std::move(c), true);
            }
        }
        if (in_use_ + idle_.size() >= cfg_.max_connections && !idle_.empty()) idle_.pop_front();
        if (in_use_ < cfg_.max_connections) break;
        if (expired || cfg_.pool_wait.count() == 0) {
            if (stats_) {
                stats_->origin_pool_exhausted.fetch_add(1, std::memory_order_relaxed);
                stats_->origin_pool_wait.observe(std::chrono::steady_clock::now() - start);
            }
            co_return make_error_code(origin_errc::pool_exhausted);
        }
        if (!timer) {
            timer.emplace(ex_);
            timer->expires_at(deadline);
            waiters_.push_back(&*timer);
        } else {
            waiters_.push_front(&*timer);  // woken but beaten to the slot: still first in line
        }
        auto [ec] = co_await timer->async_wait(use_tuple);
        if (!ec) {
            // Deadline. A release() that came too late to cancel the timer still left its slot:
            // one last look before giving up.
            std::erase(waiters_, &*timer);
            expired = true;
        }
    }
    if (timer && stats_) stats_->origin_pool_wait.observe(std::chrono::steady_clock::now() - start);
    ++in_use_;
    pooled_connection pc(this, tls_ ? std::make_unique<origin_connection>(ex_, *tls_)
                                    : std::make_unique<origin_connection>(ex_), false);
    // Beast reads at most the buffer's free capacity (never less than 512 bytes): without this a
    // 1 KiB response took three recv calls, and a large body was relayed 512 bytes at a time.
    pc->buffer.reserve(origin_read_size);
    boost::system::error_code ec = net::error::host_not_found;
    if (!endpoints_.empty()) {
        auto endpoints = endpoints_;   // a copy: another request may re-resolve meanwhile
        pc->stream.expires_after(cfg_.connect_timeout);
        auto [cec, ep] = co_await pc->stream.tcp().async_connect(endpoints, use_tuple);
        ec = cec;
    }
    // The name did not resolve at start, or the origin moved (a new Service IP, a rescheduled
    // host): look the name up again and try once more when it says something new.
    if (ec && ec != beast::error::timeout && co_await re_resolve()) {
        auto endpoints = endpoints_;
        pc->stream.expires_after(cfg_.connect_timeout);
        auto [cec, ep] = co_await pc->stream.tcp().async_connect(endpoints, use_tuple);
        ec = cec;
    }
    if (ec) {
        co_return make_error_code(ec == beast::error::timeout ? origin_errc::connect_timeout
                                                               : origin_errc::refused);
    }
    pc->stream.socket().set_option(tcp::no_delay(true));
    if (pc->stream.tls()) {
        if (auto hec = co_await handshake(pc->stream))
            co_return make_error_code(hec == beast::error::timeout ? origin_errc::connect_timeout
                                                                    : origin_errc::tls_failed);
    }
    pc->stream.expires_never();
    co_return std::move(pc);
}

namespace {
log_limiter tls_failure_log(std::chrono::seconds(10));
}  // namespace

net::awaitable<boost::system::error_code> origin_pool::handshake(origin_stream& s) {
    auto& tls = *s.tls();
    const auto& name = cfg_.tls.server_name.empty() ? cfg_.host : cfg_.tls.server_name;
    boost::system::error_code not_ip;
    net::ip::make_address(name, not_ip);
    // SNI carries host names only (RFC 6066 §3): none for an IP address.
    if (not_ip) SSL_set_tlsext_host_name(tls.native_handle(), name.c_str());
    if (cfg_.tls.verify) {
        // OpenSSL's own name check rather than asio's host_name_verification callback: same
        // rules, but a mismatch is reported as such ("hostname mismatch") in the log line.
        auto* param = SSL_get0_param(tls.native_handle());
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (not_ip) X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
        else X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
    }
    s.expires_after(cfg_.connect_timeout);
    auto [ec] = co_await tls.async_handshake(net::ssl::stream_base::client, use_tuple);
    if (ec && ec != beast::error::timeout) {
        std::string why = ec.message();
        auto result = SSL_get_verify_result(tls.native_handle());
        if (result != X509_V_OK) why += std::string(": ") + X509_verify_cert_error_string(result);
        std::uint64_t suppressed = 0;
        if (tls_failure_log.ready(suppressed))
            spdlog::warn("upstreams.{}: TLS handshake with {}:{} (name '{}') failed: {}; answering 502 "
                         "({} more TLS failures in the last 10 s)",
                         cfg_.name, cfg_.host, cfg_.port, name, why, suppressed);
    }
    co_return ec;
}

net::awaitable<bool> origin_pool::re_resolve() {
    // At most once a second per pool: an origin that is down must not turn into a DNS flood.
    auto now = std::chrono::steady_clock::now();
    if (now - last_resolve_ < std::chrono::seconds(1)) co_return false;
    last_resolve_ = now;
    tcp::resolver resolver(ex_);
    auto [ec, results] = co_await resolver.async_resolve(cfg_.host, std::to_string(cfg_.port), use_tuple);
    std::vector<tcp::endpoint> fresh;
    for (const auto& r : results) fresh.push_back(r.endpoint());
    if (ec || fresh.empty()) {
        spdlog::warn("upstreams.{}: cannot resolve '{}': {}", cfg_.name, cfg_.host,
                     ec ? ec.message() : std::string("no address"));
        co_return false;
    }
    if (fresh == endpoints_) co_return false;
    endpoints_ = std::move(fresh);
    co_return true;
}

}  // namespace ifm::proxy

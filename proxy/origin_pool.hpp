// Per-worker keep-alive pool of connections to one upstream (nghttpx's model: no locks, one
// pool per worker thread). Bounded: at most `max_connections` in use or idle, waiters queue for
// at most `pool_wait`, at most `max_idle_connections` kept idle.
#pragma once

#include "config/config.hpp"
#include "proxy/origin_stream.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <deque>
#include <memory>
#include <vector>

namespace ifm::proxy {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

struct origin_connection {
    explicit origin_connection(net::any_io_executor ex) : stream(ex) {}
    origin_connection(net::any_io_executor ex, net::ssl::context& tls) : stream(ex, tls) {}
    origin_stream stream;
    beast::flat_buffer buffer{64 * 1024};
    std::chrono::steady_clock::time_point idle_since;
    std::uint64_t requests = 0;
};

class origin_pool;
class metrics;

// A connection taken from the pool; returns it (or its slot) to the pool when destroyed.
class pooled_connection {
public:
    pooled_connection() = default;
    pooled_connection(origin_pool* pool, std::unique_ptr<origin_connection> c, bool reused)
        : pool_(pool), conn_(std::move(c)), reused_(reused) {}
    pooled_connection(pooled_connection&& o) noexcept { *this = std::move(o); }
    pooled_connection& operator=(pooled_connection&& o) noexcept;
    ~pooled_connection() { reset(); }

    origin_connection* operator->() const { return conn_.get(); }
    origin_connection& operator*() const { return *conn_; }
    explicit operator bool() const { return conn_ != nullptr; }
    bool reused() const { return reused_; }
    // Call when the exchange ended cleanly: the connection goes back to the idle list.
    void keep() { keep_ = true; }
    void reset();

private:
    origin_pool* pool_ = nullptr;
    std::unique_ptr<origin_connection> conn_;
    bool reused_ = false;
    bool keep_ = false;
};

enum class origin_errc {
    refused = 1,        // connect failed (refused, unreachable, reset): 502
    connect_timeout,    // 504
    pool_exhausted,     // no connection slot within pool_wait: 503
    tls_failed,         // TLS handshake or certificate verification failed: 502
};
const boost::system::error_category& origin_category();
boost::system::error_code make_error_code(origin_errc e);

class origin_pool {
public:
    // `stats` (may be null) receives pool waits and refusals. `tls` (the runtime's context for
    // this upstream) makes every connection TLS; null: plain TCP.
    origin_pool(net::any_io_executor ex, const config::upstream_config& cfg,
                std::vector<tcp::endpoint> endpoints, metrics* stats = nullptr,
                std::shared_ptr<net::ssl::context> tls = nullptr);
    ~origin_pool();

    // A live idle connection when there is one (unless `fresh`), else a new one.
    net::awaitable<boost::system::result<pooled_connection>> async_acquire(bool fresh = false);

    const config::upstream_config& config() const { return cfg_; }
    std::size_t in_use() const { return in_use_; }
    std::size_t idle() const { return idle_.size(); }
    // Drops idle connections (drain, reload).
    void close_idle();

private:
    friend class pooled_connection;
    void release(std::unique_ptr<origin_connection> c, bool keep);
    bool alive(origin_connection& c) const;
    // An idle connection still fit for a request, or null; the unfit ones are dropped.
    std::unique_ptr<origin_connection> take_idle();

    // Looks the upstream's name up again (async); true when it gave new addresses.
    net::awaitable<bool> re_resolve();
    // SNI, peer name check and handshake on a connected TLS stream, under connect_timeout.
    net::awaitable<boost::system::error_code> handshake(origin_stream& s);

    net::any_io_executor ex_;
    config::upstream_config cfg_;
    std::vector<tcp::endpoint> endpoints_;   // empty: the name did not resolve yet
    std::chrono::steady_clock::time_point last_resolve_{};
    std::deque<std::unique_ptr<origin_connection>> idle_;
    std::deque<net::steady_timer*> waiters_;
    std::size_t in_use_ = 0;
    metrics* stats_ = nullptr;
    std::shared_ptr<net::ssl::context> tls_;
};

}  // namespace ifm::proxy

template <>
struct boost::system::is_error_code_enum<ifm::proxy::origin_errc> : std::true_type {};

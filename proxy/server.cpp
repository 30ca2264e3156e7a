#include "proxy/server.hpp"

#include "cache/store.hpp"
#include "proxy/access_log.hpp"
#include "proxy/admin.hpp"
#include "proxy/memory_budget.hpp"
#include "proxy/runtime.hpp"
#include "proxy/session.hpp"
#include "proxy/worker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <future>
#include <thread>

namespace ifm::proxy {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

tcp::endpoint to_endpoint(const config::endpoint& e) {
    return {net::ip::make_address(e.host == "localhost" ? "127.0.0.1" : e.host), e.port};
}

// One listener per worker on the same port: the kernel spreads connections (SO_REUSEPORT).
tcp::acceptor open_acceptor(net::io_context& ioc, tcp::endpoint ep) {
    tcp::acceptor acc(ioc);
    acc.open(ep.protocol());
    acc.set_option(tcp::acceptor::reuse_address(true));
    int one = 1;
    ::setsockopt(acc.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    acc.bind(ep);
    acc.listen(net::socket_base::max_listen_connections);
    return acc;
}

}  // namespace

struct server::impl {
    std::shared_ptr<const runtime> rt;
    std::unique_ptr<cache::store_factory> stores;
    metrics stats;
    std::vector<std::unique_ptr<worker>> workers;
    std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
    std::vector<std::thread> threads;
    std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
    std::unique_ptr<admin_server> admin;
    std::uint16_t port = 0;
    std::atomic<std::int64_t> connections{0};
    std::atomic<bool> draining{false};
    log_limiter accept_pause_log{std::chrono::seconds(10)};

    // At limits.max_connections the listener stops accepting until a connection closes: new
    // clients wait in the kernel's listen backlog (as HAProxy's maxconn) instead of being
    // accepted and closed without a word. The workers' listeners check the shared count before
    // each accept, so the limit can be passed by at most one connection per other worker.
    net::awaitable<void> run_acceptor(worker& w, tcp::acceptor& acc) {
        net::steady_timer pause(w.ioc);
        for (;;) {
            if (at_connection_limit(w)) {
                stats.accept_paused.fetch_add(1, std::memory_order_relaxed);
                std::uint64_t suppressed = 0;
                if (accept_pause_log.ready(suppressed))
                    spdlog::warn("limits.max_connections ({}) reached: not accepting new connections until one "
                                 "closes ({} more pauses in the last 10 s)",
                                 w.rt->cfg.limits.max_connections, suppressed);
                // Sessions of every worker free slots, so the count is polled (10 ms: cheap, and
                // short next to a client's connect timeout).
                while (at_connection_limit(w) && acc.is_open()) {
                    pause.expires_after(std::chrono::milliseconds(10));
                    co_await pause.async_wait(use_tuple);
                }
                if (!acc.is_open()) co_return;
            }
            w.reserve_socket_states();
            auto [ec, socket] = co_await acc.async_accept(use_tuple);
            if (ec) {
                if (!acc.is_open() || ec == net::error::operation_aborted) co_return;
                // Out of descriptors and the like: back off instead of spinning.
                spdlog::warn("accept failed: {}", ec.message());
                net::steady_timer t(w.ioc);
                t.expires_after(std::chrono::milliseconds(50));
                co_await t.async_wait(use_tuple);
                continue;
            }
            start_session(w, std::move(socket));
        }
    }

    bool at_connection_limit(const worker& w) const {
        return static_cast<std::size_t>(stats.client_connections.load(std::memory_order_relaxed)) >=
               w.rt->cfg.limits.max_connections;
    }

    // Pings until the store answers or the deadline passes; reports whether it answered.
    static net::awaitable<void> run_wait_store(worker& w, std::chrono::steady_clock::time_point deadline,
                                               std::shared_ptr<std::promise<bool>> done) {
        net::steady_timer t(w.ioc);
        for (;;) {
            auto r = co_await w.store->async_ping();
            if (r || std::chrono::steady_clock::now() >= deadline) {
                done->set_value(static_cast<bool>(r));
                co_return;
            }
            t.expires_after(std::chrono::milliseconds(10));
            co_await t.async_wait(use_tuple);
        }
    }

    std::atomic<bool> skip_delay{false};

    net::awaitable<void> run_drain(worker& w, tcp::acceptor& acc) {
        // Still accepting while endpoints are removed: a client that resolved us a moment ago
        // must not be refused. The delay is read now, not kept across a reload.
        {
            net::steady_timer t(w.ioc);
            auto until = std::chrono::steady_clock::now() + w.rt->cfg.limits.drain_delay;
            while (!skip_delay && std::chrono::steady_clock::now() < until) {
                t.expires_after(std::min<std::chrono::steady_clock::duration>(
                    std::chrono::milliseconds(20), until - std::chrono::steady_clock::now()));
                co_await t.async_wait(use_tuple);
            }
        }
        boost::system::error_code ec;
        acc.close(ec);
        w.begin_drain();
        net::steady_timer t(w.ioc);
        auto deadline = std::chrono::steady_clock::now() + w.rt->cfg.limits.drain_timeout;
        while (!w.sessions.empty() && std::chrono::steady_clock::now() < deadline) {
            t.expires_after(std::chrono::milliseconds(10));
            co_await t.async_wait(use_tuple);
            for (auto* s : w.sessions) s->close_if_idle();
        }
        if (!w.sessions.empty())
            spdlog::warn("worker {}: drain timeout with {} connections open", w.index, w.sessions.size());
        w.store->close();
        w.ioc.stop();
    }
};

server::server(config::config cfg) : impl_(std::make_unique<impl>()) {
    impl_->stores = instrument(cache::make_store_factory(cfg.store), impl_->stats);
    impl_->rt = make_runtime(std::move(cfg));
    impl_->stats.bind_routes(*impl_->rt);
}

server::~server() {
    for (auto& w : impl_->workers) w->ioc.stop();
    for (auto& t : impl_->threads)
        if (t.joinable()) t.join();
    impl_->admin.reset();
    impl_->guards.clear();
    impl_->acceptors.clear();
    impl_->workers.clear();
}

metrics& server::stats() { return impl_->stats; }
std::uint16_t server::port() const { return impl_->port; }
std::uint16_t server::admin_port() const { return impl_->admin ? impl_->admin->port() : 0; }

void server::start() {
    auto& d = *impl_;
    const auto& cfg = d.rt->cfg;
    unsigned n = cfg.workers ? cfg.workers : std::max(1u, std::thread::hardware_concurrency());
    auto ep = to_endpoint(cfg.listen);
    for (unsigned i = 0; i < n; ++i) {
        d.workers.push_back(std::make_unique<worker>(d.rt, *d.stores, d.stats, i));
        auto& w = *d.workers.back();
        try {
            d.acceptors.push_back(std::make_unique<tcp::acceptor>(open_acceptor(w.ioc, ep)));
        } catch (const boost::system::system_error& e) {
            throw std::system_error(e.code(), "cannot listen on " + cfg.listen.host + ":" + std::to_string(ep.port()));
        }
        // Port 0: the first listener picks the port, the others share it.
        ep.port(d.acceptors.back()->local_endpoint().port());
    }
    d.port = ep.port();
    d.stats.workers = n;
    if (cfg.admin_listen) {
        std::vector<worker*> ws;
        for (auto& w : d.workers) ws.push_back(w.get());
        d.admin = std::make_unique<admin_server>(to_endpoint(*cfg.admin_listen), d.rt, *d.stores, d.stats, std::move(ws));
    }
    for (unsigned i = 0; i < n; ++i) {
        auto& w = *d.workers[i];
        d.guards.push_back(net::make_work_guard(w.ioc));
        net::co_spawn(w.ioc, d.run_acceptor(w, *d.acceptors[i]), net::detached);
        d.threads.emplace_back([&w] {
            for (;;) {
                try {
                    w.ioc.run();
                    return;
                } catch (const std::exception& e) {
                    spdlog::error("worker {}: unhandled exception (a bug): {}", w.index, e.what());
                }
            }
        });
    }
    // Give the store connections a moment so that the first requests do not meet a store that is
    // still connecting; an unreachable store is not fatal (writes fail closed until it is back).
    auto deadline = std::chrono::steady_clock::now() + cfg.store.connect_timeout;
    std::vector<std::future<bool>> ready;
    for (auto& w : d.workers) {
        auto p = std::make_shared<std::promise<bool>>();
        ready.push_back(p->get_future());
        net::co_spawn(w->ioc, impl::run_wait_store(*w, deadline, p), net::detached);
    }
    bool store_ok = true;
    for (auto& f : ready) store_ok = f.get() && store_ok;
    if (!store_ok) spdlog::warn("validator store not reachable yet: conditional writes get 503 until it is");
    spdlog::info("ifmatch-proxy {} listening on {}:{} with {} worker(s), store: {}", IFM_VERSION,
                 cfg.listen.host, d.port, n, cfg.store.kind == config::store_kind::redis ? cfg.store.url : "memory");
}

void server::drain(bool immediate) {
    auto& d = *impl_;
    if (d.draining.exchange(true)) {
        if (!d.skip_delay.exchange(true)) spdlog::info("draining now: the drain delay is skipped");
        return;
    }
    d.skip_delay = immediate;
    d.stats.draining = 1;
    if (d.admin) d.admin->begin_drain();   // /readyz fails from now on
    const auto& limits = d.rt->cfg.limits;
    spdlog::info("draining: /readyz fails; accepting for {} ms more, then in-flight requests get up to {} ms",
                 immediate ? 0 : limits.drain_delay.count(), limits.drain_timeout.count());
    for (std::size_t i = 0; i < d.workers.size(); ++i) {
        auto& w = *d.workers[i];
        auto& acc = *d.acceptors[i];
        net::co_spawn(w.ioc, d.run_drain(w, acc), net::detached);
    }
    // The admin listener is stopped by the destructor, once the workers are done: probes and
    // scrapes keep working during the drain.
}

void server::wait() {
    for (auto& t : impl_->threads)
        if (t.joinable()) t.join();
}

std::string server::reload(config::config cfg) {
    auto& d = *impl_;
    const auto& old = d.rt->cfg;
    std::string why;
    if (!(cfg.listen == old.listen)) why = "listen";
    else if (cfg.admin_listen != old.admin_listen) why = "admin_listen";
    else if (cfg.workers != old.workers) why = "workers";
    else if (!(cfg.store == old.store)) why = "store";   // every field, including ones added later
    if (!why.empty()) {
        d.stats.count_reload(false);
        return why + " changed: listen, admin_listen, workers and store need a restart";
    }
    std::shared_ptr<const runtime> rt;
    try {
        rt = make_runtime(std::move(cfg));
    } catch (const std::exception& e) {
        d.stats.count_reload(false);
        return e.what();
    }
    setup_logging(rt->cfg.log);
    // Counters first, so that the workers' first requests on the new runtime find their routes.
    d.stats.bind_routes(*rt);
    d.stats.count_reload(true);
    d.rt = rt;
    for (auto& w : d.workers) net::post(w->ioc, [wp = w.get(), rt] { wp->apply(rt); });
    if (d.admin) d.admin->apply(rt);
    spdlog::info("configuration reloaded: {} route(s), {} upstream(s)", rt->cfg.routes.size(), rt->cfg.upstreams.size());
    return {};
}

}  // namespace ifm::proxy

#include "proxy/admin.hpp"

#include "proxy/problem.hpp"
#include "proxy/worker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

#include <mutex>
#include <thread>

namespace ifm::proxy {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// Gauges that live in the workers' own state, gathered on each worker's thread.
struct worker_sample {
    std::atomic<std::size_t> pending{0};
    std::atomic<std::int64_t> in_use{0}, idle{0}, connected{0};
    std::atomic<std::uint64_t> reconnects{0};
};
}  // namespace

struct admin_server::impl {
    net::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    std::unique_ptr<cache::validator_store> store;
    std::shared_ptr<const runtime> rt;
    metrics& stats;
    std::vector<worker*> workers;
    std::uint16_t port = 0;
    std::thread thread;

    impl(metrics& m, std::vector<worker*> w) : stats(m), workers(std::move(w)) {}

    // Pools and store connections belong to their worker's thread: ask each worker, wait up to
    // 250 ms, and keep the previous values if a worker does not answer (saturated or drained).
    net::awaitable<void> sample_workers() {
        auto sample = std::make_shared<worker_sample>();
        sample->pending = workers.size();
        for (auto* w : workers) {
            net::post(w->ioc, [w, sample] {
                for (const auto& p : *w->pools) {
                    sample->in_use += static_cast<std::int64_t>(p->in_use());
                    sample->idle += static_cast<std::int64_t>(p->idle());
                }
                sample->reconnects += w->store->reconnects();
                if (w->store->connected()) ++sample->connected;
                --sample->pending;
            });
        }
        net::steady_timer t(ioc);
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
        while (sample->pending.load() > 0 && std::chrono::steady_clock::now() < deadline) {
            t.expires_after(std::chrono::milliseconds(1));
            co_await t.async_wait(use_tuple);
        }
        if (sample->pending.load() > 0) co_return;
        stats.origin_connections_in_use = sample->in_use.load();
        stats.origin_connections_idle = sample->idle.load();
        stats.store_reconnects = sample->reconnects.load();
        stats.store_connected = sample->connected.load();
    }

    // Ready when the store answers and every upstream accepts a connection. (GCC 12: awaitables
    // are made into named locals first, no temporaries inside co_await.)
    net::awaitable<std::string> not_ready_reason() {
        std::string why;
        auto ping_op = store->async_ping();
        auto ping = co_await std::move(ping_op);
        if (!ping) {
            why = "store: " + ping.error().message();
            co_return why;
        }
        auto r = rt;
        for (std::size_t i = 0; i < r->cfg.upstreams.size() && why.empty(); ++i) {
            auto connect_op = try_connect(r->upstream_endpoints[i], r->cfg.upstreams[i].connect_timeout);
            auto ec = co_await std::move(connect_op);
            if (ec) why = "upstream " + r->cfg.upstreams[i].name + ": " + ec.message();
        }
        co_return why;
    }

    net::awaitable<boost::system::error_code> try_connect(std::vector<tcp::endpoint> endpoints,
                                                          std::chrono::milliseconds timeout) {
        beast::tcp_stream s(ioc);
        s.expires_after(timeout);
        auto [ec, ep] = co_await s.async_connect(endpoints, use_tuple);
        co_return ec;
    }

    net::awaitable<void> serve(tcp::socket socket) {
        beast::tcp_stream stream(std::move(socket));
        beast::flat_buffer buffer(16 * 1024);
        for (;;) {
            http::request<http::string_body> req;
            stream.expires_after(std::chrono::seconds(10));
            auto [ec, n] = co_await http::async_read(stream, buffer, req, use_tuple);
            if (ec) co_return;
            http::response<http::string_body> res{http::status::ok, 11};
            res.set(http::field::server, "ifmatch-proxy");
            auto target = req.target().substr(0, req.target().find('?'));
            if (target == "/healthz") {
                res.set(http::field::content_type, "application/json");
                res.body() = "{\"status\":\"ok\"}\n";
            } else if (target == "/readyz") {
                auto why = co_await not_ready_reason();
                res.set(http::field::content_type, "application/json");
                if (why.empty()) {
                    res.body() = "{\"status\":\"ready\"}\n";
                } else {
                    res.result(http::status::service_unavailable);
                    std::string body = "{\"status\":\"not ready\",\"reason\":";
                    append_json_string(body, why);
                    res.body() = body + "}\n";
                }
            } else if (target == "/metrics") {
                co_await sample_workers();
                res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
                res.body() = stats.render();
            } else {
                res.result(http::status::not_found);
                res.set(http::field::content_type, "text/plain");
                res.body() = "not found: try /healthz, /readyz or /metrics\n";
            }
            res.keep_alive(req.keep_alive());
            res.prepare_payload();
            auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
            if (wec || !res.keep_alive()) co_return;
        }
    }

    net::awaitable<void> run_accept() {
        for (;;) {
            auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
            if (ec) {
                if (!acceptor.is_open()) co_return;
                continue;
            }
            net::co_spawn(ioc, serve(std::move(socket)), net::detached);
        }
    }
};

admin_server::admin_server(tcp::endpoint ep, std::shared_ptr<const runtime> rt, cache::store_factory& stores,
                           metrics& m, std::vector<worker*> workers)
    : impl_(std::make_unique<impl>(m, std::move(workers))) {
    impl_->rt = std::move(rt);
    impl_->store = stores.make(impl_->ioc.get_executor());
    impl_->acceptor.open(ep.protocol());
    impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    impl_->acceptor.bind(ep);
    impl_->acceptor.listen();
    impl_->port = impl_->acceptor.local_endpoint().port();
    net::co_spawn(impl_->ioc, impl_->run_accept(), net::detached);
    impl_->thread = std::thread([this] { impl_->ioc.run(); });
}

admin_server::~admin_server() {
    stop();
    if (impl_->thread.joinable()) impl_->thread.join();
}

std::uint16_t admin_server::port() const { return impl_->port; }

void admin_server::apply(std::shared_ptr<const runtime> rt) {
    net::post(impl_->ioc, [this, rt] { impl_->rt = rt; });
}

void admin_server::stop() {
    net::post(impl_->ioc, [this] {
        boost::system::error_code ec;
        impl_->acceptor.close(ec);
        impl_->store->close();
        impl_->ioc.stop();
    });
}

}  // namespace ifm::proxy

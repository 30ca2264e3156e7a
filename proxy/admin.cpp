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
    std::atomic<bool> draining{false};

    // The last readiness check, reused for `ready_ttl` so that probes (several kubelets, load
    // balancers, people) cannot multiply origin connects and store pings.
    static constexpr auto ready_ttl = std::chrono::seconds(1);
    struct readiness {
        std::chrono::steady_clock::time_point at{};
        std::string reason;                      // empty: ready
        std::vector<std::pair<std::string, std::string>> upstreams;   // name, "" or error
        bool store_reachable = false;
        std::string store_error;
    };
    readiness ready;
    bool checking = false;
    // The store's state, for /metrics (ifmatch_store_up) and /readyz's body; pinged at most
    // once per `ready_ttl` as well.
    std::chrono::steady_clock::time_point store_checked{};
    bool store_reachable = false;
    std::string store_error;
    bool pinging = false;

    impl(metrics& m, std::vector<worker*> w) : stats(m), workers(std::move(w)) {}

    static net::awaitable<void> pause(net::io_context& ioc, std::chrono::milliseconds d) {
        net::steady_timer t(ioc);
        t.expires_after(d);
        co_await t.async_wait(use_tuple);
    }

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
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
        while (sample->pending.load() > 0 && std::chrono::steady_clock::now() < deadline)
            co_await pause(ioc, std::chrono::milliseconds(1));
        if (sample->pending.load() > 0) co_return;
        stats.origin_connections_in_use = sample->in_use.load();
        stats.origin_connections_idle = sample->idle.load();
        stats.store_reconnects = sample->reconnects.load();
        stats.store_connected = sample->connected.load();
    }

    // Liveness: every worker's io_context runs a posted no-op within a second (a worker stuck
    // in a loop or a blocking call fails it, where the admin thread alone would not). Workers
    // that ended their drain are not counted.
    net::awaitable<std::string> unresponsive_worker() {
        auto answered = std::make_shared<std::vector<std::atomic<bool>>>(workers.size());
        for (std::size_t i = 0; i < workers.size(); ++i) {
            if (draining && workers[i]->ioc.stopped()) (*answered)[i] = true;
            else net::post(workers[i]->ioc, [answered, i] { (*answered)[i] = true; });
        }
        auto all = [&] {
            for (const auto& a : *answered)
                if (!a) return false;
            return true;
        };
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (!all() && std::chrono::steady_clock::now() < deadline) co_await pause(ioc, std::chrono::milliseconds(1));
        for (std::size_t i = 0; i < answered->size(); ++i)
            if (!(*answered)[i]) co_return "worker " + std::to_string(i) + " did not answer within 1s";
        co_return std::string{};
    }

    struct probe_state {
        std::size_t pending = 0;
        std::vector<std::string> errors;
    };

    // One upstream: resolve if start-up could not, then a TCP connect within connect_timeout.
    static net::awaitable<void> probe_upstream(net::io_context& ioc, std::shared_ptr<const runtime> r, std::size_t i,
                                               std::shared_ptr<probe_state> st) {
        const auto& up = r->cfg.upstreams[i];
        std::vector<tcp::endpoint> endpoints = r->upstream_endpoints[i];
        boost::system::error_code ec;
        if (endpoints.empty()) {
            tcp::resolver resolver(ioc);
            auto [rec, results] = co_await resolver.async_resolve(up.host, std::to_string(up.port), use_tuple);
            ec = rec;
            for (const auto& e : results) endpoints.push_back(e.endpoint());
            if (!ec && endpoints.empty()) ec = net::error::host_not_found;
        }
        if (!ec) {
            beast::tcp_stream s(ioc);
            s.expires_after(up.connect_timeout);
            auto [cec, ep] = co_await s.async_connect(endpoints, use_tuple);
            ec = cec;
        }
        if (ec) st->errors[i] = ec.message();
        --st->pending;
    }

    // Readiness: every upstream accepts a TCP connection. The store is reported, not required:
    // reads flow while it is down, and a shared Redis's outage must not empty the Service.
    net::awaitable<void> refresh_readiness() {
        auto now = std::chrono::steady_clock::now();
        if (checking) {   // another probe is checking: share its result
            while (checking) co_await pause(ioc, std::chrono::milliseconds(2));
            co_return;
        }
        if (ready.at != std::chrono::steady_clock::time_point{} && now - ready.at < ready_ttl) co_return;
        checking = true;
        auto r = rt;
        auto st = std::make_shared<probe_state>();
        st->pending = r->cfg.upstreams.size();
        st->errors.resize(r->cfg.upstreams.size());
        for (std::size_t i = 0; i < r->cfg.upstreams.size(); ++i)
            net::co_spawn(ioc, probe_upstream(ioc, r, i, st), net::detached);
        co_await refresh_store();
        while (st->pending > 0) co_await pause(ioc, std::chrono::milliseconds(2));
        co_await sample_workers();

        readiness next;
        next.store_reachable = store_reachable;
        next.store_error = store_error;
        for (std::size_t i = 0; i < r->cfg.upstreams.size(); ++i) {
            next.upstreams.emplace_back(r->cfg.upstreams[i].name, st->errors[i]);
            if (next.reason.empty() && !st->errors[i].empty())
                next.reason = "upstream " + r->cfg.upstreams[i].name + ": " + st->errors[i];
        }
        next.at = std::chrono::steady_clock::now();
        ready = std::move(next);
        checking = false;
    }

    net::awaitable<void> refresh_store() {
        if (pinging) {
            while (pinging) co_await pause(ioc, std::chrono::milliseconds(2));
            co_return;
        }
        auto now = std::chrono::steady_clock::now();
        if (store_checked != std::chrono::steady_clock::time_point{} && now - store_checked < ready_ttl) co_return;
        pinging = true;
        auto ping_op = store->async_ping();
        auto ping = co_await std::move(ping_op);
        store_reachable = static_cast<bool>(ping);
        store_error = ping ? std::string() : ping.error().message();
        stats.store_up = store_reachable ? 1 : 0;
        store_checked = std::chrono::steady_clock::now();
        pinging = false;
    }

    std::string readiness_body(const std::string& reason) const {
        std::string body = reason.empty() ? "{\"status\":\"ready\"" : "{\"status\":\"not ready\",\"reason\":";
        if (!reason.empty()) append_json_string(body, reason);
        body += ",\"draining\":";
        body += draining ? "true" : "false";
        body += ",\"upstreams\":{";
        for (std::size_t i = 0; i < ready.upstreams.size(); ++i) {
            if (i) body += ',';
            append_json_string(body, ready.upstreams[i].first);
            body += ':';
            append_json_string(body, ready.upstreams[i].second.empty() ? "ok" : ready.upstreams[i].second);
        }
        body += "},\"store\":{\"kind\":";
        append_json_string(body, rt->cfg.store.kind == config::store_kind::redis ? "redis" : "memory");
        body += ",\"reachable\":";
        body += ready.store_reachable ? "true" : "false";
        if (!ready.store_error.empty()) {
            body += ",\"error\":";
            append_json_string(body, ready.store_error);
        }
        // A write refused for the young-server window in the last 5 s: writes get 503 for now.
        auto last = stats.last_recovering_refusal.load();
        bool recovering = last != 0 && std::chrono::steady_clock::now().time_since_epoch().count() - last <
                                           std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                               std::chrono::seconds(5)).count();
        // A Redis that refused INFO server (a narrow ACL): restarts go unnoticed (README, "Redis ACL").
        body += ",\"restart_detection\":";
        body += cache::restart_detection_off() == 0 ? "true" : "false";
        body += ",\"recovering\":";
        body += recovering ? "true" : "false";
        body += ",\"workers_connected\":" + std::to_string(stats.store_connected.load()) +
                ",\"workers\":" + std::to_string(workers.size()) + "}}\n";
        return body;
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
                auto why = co_await unresponsive_worker();
                res.set(http::field::content_type, "application/json");
                if (why.empty()) {
                    res.body() = "{\"status\":\"ok\"}\n";
                } else {
                    res.result(http::status::service_unavailable);
                    std::string body = "{\"status\":\"unhealthy\",\"reason\":";
                    append_json_string(body, why);
                    res.body() = body + "}\n";
                }
            } else if (target == "/readyz") {
                co_await refresh_readiness();
                // Draining fails at once, whatever the cache says: endpoints must go first.
                auto reason = draining ? std::string("draining") : ready.reason;
                res.set(http::field::content_type, "application/json");
                if (!reason.empty()) res.result(http::status::service_unavailable);
                res.body() = readiness_body(reason);
            } else if (target == "/metrics") {
                co_await refresh_store();   // ifmatch_store_up; no origin connects for a scrape
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
    net::post(impl_->ioc, [this, rt] {
        impl_->rt = rt;
        impl_->ready.at = {};   // the upstreams may have changed: check anew
    });
}

void admin_server::begin_drain() { impl_->draining = true; }

void admin_server::stop() {
    net::post(impl_->ioc, [this] {
        boost::system::error_code ec;
        impl_->acceptor.close(ec);
        impl_->store->close();
        impl_->ioc.stop();
    });
}

}  // namespace ifm::proxy

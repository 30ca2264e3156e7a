#include "proxy/admin.hpp"

#include "proxy/problem.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
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
}

struct admin_server::impl {
    net::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    std::unique_ptr<cache::validator_store> store;
    std::shared_ptr<const runtime> rt;
    metrics& stats;
    std::thread thread;

    explicit impl(metrics& m) : stats(m) {}

    // Ready when the store answers and every upstream accepts a connection.
    net::awaitable<std::string> not_ready_reason() {
        auto ping = co_await store->async_ping();
        if (!ping) co_return "store: " + ping.error().message();
        auto r = rt;
        for (std::size_t i = 0; i < r->cfg.upstreams.size(); ++i) {
            beast::tcp_stream s(ioc);
            s.expires_after(r->cfg.upstreams[i].connect_timeout);
            auto [ec, ep] = co_await s.async_connect(r->upstream_endpoints[i], use_tuple);
            if (ec) co_return "upstream " + r->cfg.upstreams[i].name + ": " + ec.message();
        }
        co_return std::string{};
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
            auto target = req.target();
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
                res.set(http::field::content_type, "text/plain; version=0.0.4");
                res.body() = render_metrics(stats);
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
                           metrics& m)
    : impl_(std::make_unique<impl>(m)) {
    impl_->rt = std::move(rt);
    impl_->store = stores.make(impl_->ioc.get_executor());
    impl_->acceptor.open(ep.protocol());
    impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    impl_->acceptor.bind(ep);
    impl_->acceptor.listen();
    net::co_spawn(impl_->ioc, impl_->run_accept(), net::detached);
    impl_->thread = std::thread([this] { impl_->ioc.run(); });
}

admin_server::~admin_server() {
    stop();
    if (impl_->thread.joinable()) impl_->thread.join();
}

std::uint16_t admin_server::port() const { return impl_->acceptor.local_endpoint().port(); }

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

std::string render_metrics(const metrics& m) {
    std::string out;
    out += "# HELP ifmatch_responses_total Responses sent to clients, by status class.\n"
           "# TYPE ifmatch_responses_total counter\n";
    for (int c = 1; c <= 5; ++c)
        out += "ifmatch_responses_total{class=\"" + std::to_string(c) + "xx\"} " +
               std::to_string(m.responses_by_class[c].load()) + "\n";
    out += "# HELP ifmatch_precondition_outcomes_total Judged requests by precondition outcome.\n"
           "# TYPE ifmatch_precondition_outcomes_total counter\n";
    for (std::size_t i = 1; i < m.precondition_outcomes.size(); ++i)
        out += "ifmatch_precondition_outcomes_total{outcome=\"" + std::string(to_string(static_cast<outcome>(i))) +
               "\"} " + std::to_string(m.precondition_outcomes[i].load()) + "\n";
    out += "# HELP ifmatch_client_connections Open client connections.\n# TYPE ifmatch_client_connections gauge\n";
    out += "ifmatch_client_connections " + std::to_string(m.client_connections.load()) + "\n";
    out += "# HELP ifmatch_client_connections_total Accepted client connections.\n# TYPE ifmatch_client_connections_total counter\n";
    out += "ifmatch_client_connections_total " + std::to_string(m.client_connections_total.load()) + "\n";
    out += "# HELP ifmatch_untracked_large_bodies_total Representations over max_hash_body, passed through untracked.\n"
           "# TYPE ifmatch_untracked_large_bodies_total counter\n";
    out += "ifmatch_untracked_large_bodies_total " + std::to_string(m.untracked_large_bodies.load()) + "\n";
    out += "# HELP ifmatch_origin_errors_total Origin connect, timeout and protocol failures.\n"
           "# TYPE ifmatch_origin_errors_total counter\n";
    out += "ifmatch_origin_errors_total " + std::to_string(m.origin_errors.load()) + "\n";
    return out;
}

}  // namespace ifm::proxy

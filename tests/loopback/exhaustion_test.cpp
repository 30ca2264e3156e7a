// Resource exhaustion (issue 6): slowloris headers, slow bodies, idle keep-alive, slow origins,
// client connection floods, requests per connection and the origin connection cap. Each test
// runs bounded loops on loopback and checks that the proxy keeps serving other clients.
#include "proxy/origin_pool.hpp"
#include "proxy/response_spool.hpp"
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/proxy_fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <doctest/doctest.h>

#include <future>
#include <memory>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// Polls `done` every 10 ms for at most `timeout`.
template <class Pred>
bool eventually(Pred done, std::chrono::milliseconds timeout = 3s) {
    auto deadline = steady::now() + timeout;
    while (!done()) {
        if (steady::now() > deadline) return false;
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

std::int64_t open_clients(proxy_fixture& px) {
    return px.server().stats().client_connections.load();
}

// Sends without throwing once the proxy has closed the connection.
void try_send(raw_connection& c, std::string_view bytes) {
    try {
        c.send(bytes);
    } catch (const std::exception&) {
    }
}

unsigned ok_status(http_client& c) {
    return c.request("GET", "/plain/ok", {{"x-fake-status", "200"}}).status;
}

// A request the origin answers after `delay_ms`, holding one origin connection meanwhile;
// returns once the origin has it.
std::future<unsigned> hold_origin_connection(proxy_fixture& px, std::string delay_ms) {
    auto port = px.port();
    auto busy = std::async(std::launch::async, [port, delay_ms] {
        http_client c(port);
        return c.request("GET", "/plain/busy", {{"x-fake-delay-ms", delay_ms}, {"x-fake-status", "200"}}).status;
    });
    REQUIRE(px.origin().wait_for_requests(1, 2s));
    return busy;
}

// Two origin connections, waited for up to 2 s, and a client send timeout long enough for the
// stalled readers below to stay stalled throughout.
void two_origin_slots(ifm::config::config& c) {
    c.upstreams[0].max_connections = 2;
    c.upstreams[0].pool_wait = 2s;
    c.limits.body_timeout = 30s;
    c.limits.drain_timeout = 500ms;
}

// Four clients that each send `request(i)` and read nothing of the answer.
template <class Request>
std::vector<std::unique_ptr<raw_connection>> stalled_readers(std::uint16_t port, Request request) {
    std::vector<std::unique_ptr<raw_connection>> stalled;
    for (int i = 0; i < 4; ++i) {
        stalled.push_back(std::make_unique<raw_connection>(port));
        stalled.back()->send(request(i));
    }
    return stalled;
}

namespace net = boost::asio;
using ifm::proxy::origin_pool;

net::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    net::steady_timer t(co_await net::this_coro::executor);
    t.expires_after(d);
    co_await t.async_wait(net::as_tuple(net::use_awaitable));
}

struct waiter_outcome {
    boost::system::error_code ec;   // empty: it got a connection
    steady::duration waited{};
    int turn = 0;                   // 1, 2, ...: order in which the waiters got the connection
};

// Waits for a connection, holds it for `hold`, then gives it back to the pool.
net::awaitable<void> run_pool_waiter(origin_pool* pool, waiter_outcome* out, int* turns,
                                     std::chrono::milliseconds hold) {
    auto start = steady::now();
    auto c = co_await pool->async_acquire();
    out->waited = steady::now() - start;
    if (!c) {
        out->ec = c.error();
        co_return;
    }
    out->turn = ++*turns;
    co_await sleep_for(hold);
    c->keep();
}

// Holds the pool's only slot, gives it back and takes it again at once, before the waiter that
// release() woke has run (as a request of another client can); then holds it for `hold`.
net::awaitable<void> run_pool_thief(origin_pool* pool, bool* stole, std::chrono::milliseconds hold) {
    auto first = co_await pool->async_acquire();
    if (!first) co_return;
    co_await sleep_for(100ms);   // the waiters queue meanwhile
    first->keep();
    first->reset();   // wakes the first waiter
    auto again = co_await pool->async_acquire();
    if (!again) co_return;
    *stole = again->reused();   // taken from the idle list without waiting
    co_await sleep_for(hold);
    again->keep();
}

}  // namespace

TEST_CASE("slowloris: headers trickled byte by byte are cut at header_timeout; others are served") {
    proxy_fixture px([](ifm::config::config& c) { c.limits.header_timeout = 300ms; });
    std::vector<std::unique_ptr<raw_connection>> slow;
    for (int i = 0; i < 20; ++i) {
        slow.push_back(std::make_unique<raw_connection>(px.port()));
        slow.back()->send("GET /plain/s HTTP/1.1\r\nHost: a\r\n");
    }
    http_client c(px.port());
    std::vector<bool> closed(slow.size(), false);
    auto start = steady::now();
    std::size_t cut = 0;
    for (int round = 0; round < 100 && cut < slow.size(); ++round) {
        for (std::size_t i = 0; i < slow.size(); ++i) {
            if (closed[i]) continue;
            if (slow[i]->closed_by_peer(1ms)) {
                closed[i] = true;
                ++cut;
            } else {
                try_send(*slow[i], "X");   // one more header byte
            }
        }
        CHECK(ok_status(c) == 200);   // a normal client is served meanwhile
    }
    auto elapsed = steady::now() - start;
    CHECK(cut == slow.size());
    CHECK(elapsed > 250ms);
    CHECK(elapsed < 3s);   // cut at about header_timeout, not after the whole trickle
    // A header begun and not finished in time is answered 408 before the close (as HAProxy's
    // `timeout http-request`); closed_by_peer kept what arrived.
    for (auto& s : slow) CHECK(s->read_some(1ms).starts_with("HTTP/1.1 408"));
    CHECK(eventually([&] { return open_clients(px) == 1; }));   // only `c` is left
}

TEST_CASE("header_timeout: a begun header gets 408 problem+json and Connection: close; a silent connection is closed without a word") {
    proxy_fixture px([](ifm::config::config& c) {
        c.limits.header_timeout = 300ms;
        c.limits.idle_timeout = 300ms;
    });
    SUBCASE("first request, header begun") {
        raw_connection slow(px.port());
        slow.send("GET /plain/slow HTTP/1.1\r\nHost: a\r\nX-Partial: ");
        auto start = steady::now();
        CHECK(slow.closed_by_peer(3s));
        auto elapsed = steady::now() - start;
        CHECK(elapsed > 250ms);
        CHECK(elapsed < 2s);
        auto answer = slow.read_some(1ms);
        CHECK(answer.starts_with("HTTP/1.1 408"));
        CHECK(answer.find("Connection: close") != std::string::npos);
        CHECK(answer.find("application/problem+json") != std::string::npos);
        CHECK(answer.find("\"status\":408") != std::string::npos);
    }
    SUBCASE("a later request on a kept-alive connection, header begun") {
        raw_connection kept(px.port());
        kept.send("GET /plain/k HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
        CHECK(kept.read_some(2s).starts_with("HTTP/1.1 200"));
        kept.send("GET /plain/k HTTP/1.1\r\nHo");
        CHECK(kept.closed_by_peer(3s));
        CHECK(kept.read_some(1ms).starts_with("HTTP/1.1 408"));
    }
    SUBCASE("nothing sent: closed silently, first request or idle keep-alive") {
        raw_connection silent(px.port());
        CHECK(silent.closed_by_peer(3s));
        CHECK(silent.read_some(1ms).empty());
        raw_connection idle(px.port());
        idle.send("GET /plain/i HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
        CHECK(idle.read_some(2s).starts_with("HTTP/1.1 200"));
        CHECK(idle.closed_by_peer(3s));
        CHECK(idle.read_some(1ms).empty());
    }
    http_client c(px.port());
    CHECK(ok_status(c) == 200);
}

TEST_CASE("a request body slower than min_body_rate is cut off although no gap exceeds body_timeout") {
    proxy_fixture px([](ifm::config::config& c) {
        c.limits.body_timeout = 400ms;
        c.limits.min_body_rate = 1000;   // bytes per second
    });
    raw_connection slow(px.port());
    slow.send("PUT /plain/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
    auto start = steady::now();
    std::string answer;
    // 20 bytes every ~50 ms (about 400 B/s): every gap is far below body_timeout.
    for (int i = 0; i < 100 && !slow.closed_by_peer(50ms); ++i) try_send(slow, std::string(20, 'x'));
    auto elapsed = steady::now() - start;
    answer = slow.read_some(1ms);
    // Allowed: 0.4 s + received / 1000 B/s, i.e. cut after about 0.7 s; nothing is answered
    // on a connection cut at its deadline.
    CHECK(slow.closed_by_peer(3s));
    CHECK(elapsed > 400ms);
    CHECK(elapsed < 3s);
    CHECK(answer.empty());

    // A body at a decent rate passes.
    http_client c(px.port());
    auto r = c.request("PUT", "/plain/fast", {{"x-fake-echo", "1"}}, std::string(100000, 'f'));
    CHECK(r.status == 200);
    CHECK(r.body.size() == 100000);
}

TEST_CASE("a request body that stalls longer than body_timeout is cut off") {
    proxy_fixture px([](ifm::config::config& c) {
        c.limits.body_timeout = 300ms;
        c.limits.min_body_rate = 0;
    });
    raw_connection stalled(px.port());
    auto start = steady::now();
    stalled.send("PUT /plain/stall HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    CHECK(stalled.closed_by_peer(3s));
    auto elapsed = steady::now() - start;
    CHECK(elapsed > 250ms);
    CHECK(elapsed < 2s);
    http_client c(px.port());
    CHECK(ok_status(c) == 200);
}

TEST_CASE("idle keep-alive connections are closed after idle_timeout") {
    proxy_fixture px([](ifm::config::config& c) { c.limits.idle_timeout = 200ms; });
    raw_connection idle(px.port());
    idle.send("GET /plain/i HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
    CHECK(idle.read_some(2s).starts_with("HTTP/1.1 200"));
    auto start = steady::now();
    CHECK(idle.closed_by_peer(3s));
    CHECK(steady::now() - start < 2s);
    CHECK(eventually([&] { return open_clients(px) == 0; }));
}

// The waits for a next request share one timer per worker (worker::add_waiting), armed for the
// earliest deadline: a kept connection's short one must not wait behind a silent connection's
// long one, nor the silent one be cut at the kept one's.
TEST_CASE("waits for a next request with different deadlines each end at their own") {
    proxy_fixture px([](ifm::config::config& c) {
        c.limits.idle_timeout = 300ms;
        c.limits.header_timeout = 2500ms;
    });
    raw_connection silent(px.port());   // its first request is due in 2.5 s: the timer is armed for that
    std::this_thread::sleep_for(100ms);
    raw_connection kept(px.port());
    kept.send("GET /plain/w HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
    CHECK(kept.read_some(2s).starts_with("HTTP/1.1 200"));
    auto start = steady::now();
    CHECK(kept.closed_by_peer(3s));   // idle_timeout, earlier than the armed deadline
    CHECK(steady::now() - start < 1500ms);
    CHECK_FALSE(silent.closed_by_peer(1000ms));   // about 1.5 s in: still within its 2.5 s
    start = steady::now();
    CHECK(silent.closed_by_peer(4s));
    CHECK(steady::now() - start < 2500ms);
    CHECK(eventually([&] { return open_clients(px) == 0; }));
}

TEST_CASE("a connection's first request is due within header_timeout of the accept; later ones may idle first") {
    proxy_fixture px([](ifm::config::config& c) {
        c.limits.idle_timeout = 30s;
        c.limits.header_timeout = 400ms;
    });
    // Never a byte: closed at header_timeout, not held for idle_timeout (a silent flood).
    auto start = steady::now();
    raw_connection silent(px.port());
    CHECK(silent.closed_by_peer(5s));
    auto elapsed = steady::now() - start;
    CHECK(elapsed > 300ms);
    CHECK(elapsed < 3s);
    CHECK(silent.read_some(10ms).empty());

    // After a response, a keep-alive connection may wait longer than header_timeout for its
    // next request (idle_timeout) ...
    raw_connection kept(px.port());
    kept.send("GET /plain/k HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
    CHECK(kept.read_some(2s).starts_with("HTTP/1.1 200"));
    CHECK_FALSE(kept.closed_by_peer(1200ms));
    kept.send("GET /plain/k HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
    CHECK(kept.read_some(2s).starts_with("HTTP/1.1 200"));
    // ... but once the next request has begun, its header is due within header_timeout.
    kept.send("GET /plain/k HTTP/1.1\r\n");
    start = steady::now();
    CHECK(kept.closed_by_peer(5s));
    elapsed = steady::now() - start;
    CHECK(elapsed > 300ms);
    CHECK(elapsed < 3s);
    CHECK(eventually([&] { return open_clients(px) == 0; }));
}

TEST_CASE("an origin that does not answer within request_timeout gets 504; others are served") {
    proxy_fixture px([](ifm::config::config& c) { c.upstreams[0].request_timeout = 300ms; });
    auto port = px.port();
    auto slow = std::async(std::launch::async, [port] {
        http_client c(port);
        auto start = steady::now();
        auto status = c.request("GET", "/plain/slow", {{"x-fake-delay-ms", "3000"}}).status;
        return std::pair(status, steady::now() - start);
    });
    http_client c(px.port());
    for (int i = 0; i < 5; ++i) CHECK(ok_status(c) == 200);
    auto [status, elapsed] = slow.get();
    CHECK(status == 504);
    CHECK(elapsed < 2s);
}

TEST_CASE("at max_connections the proxy stops accepting: a new client waits in the backlog and is served once a slot frees") {
    proxy_fixture px([](ifm::config::config& c) { c.limits.max_connections = 8; });
    std::vector<std::unique_ptr<raw_connection>> held;
    for (int i = 0; i < 8; ++i) held.push_back(std::make_unique<raw_connection>(px.port()));
    REQUIRE(eventually([&] { return open_clients(px) == 8; }));
    // The ninth is neither served nor closed: it waits in the kernel's listen backlog.
    raw_connection extra(px.port());
    extra.send("GET /plain/e HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
    CHECK_FALSE(extra.closed_by_peer(500ms));
    CHECK(open_clients(px) == 8);
    CHECK(px.server().stats().accept_paused.load() >= 1);
    CHECK(px.server().stats().render().find("ifmatch_accept_paused_total") != std::string::npos);
    // Held connections still work.
    held[0]->send("GET /plain/h HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
    CHECK(held[0]->read_some(2s).starts_with("HTTP/1.1 200"));
    // Closing one lets the ninth in, and its request (sent while it waited) is answered.
    held.resize(7);
    CHECK(extra.read_some(3s).starts_with("HTTP/1.1 200"));
    CHECK(open_clients(px) <= 8);
}

TEST_CASE("connection flood: the proxy keeps serving, and slots come back at header_timeout") {
    // Long enough for the excess to be told apart: left waiting, not cut at the timeout.
    constexpr auto header_timeout = 3s;
    proxy_fixture px([=](ifm::config::config& c) {
        c.limits.max_connections = 64;
        c.limits.header_timeout = header_timeout;
    });
    // Below the cap: 50 connections that start a header and stall; a client is still served.
    std::vector<std::unique_ptr<raw_connection>> flood;
    for (int i = 0; i < 50; ++i) {
        flood.push_back(std::make_unique<raw_connection>(px.port()));
        flood.back()->send("GET /plain/f HTTP/1.1\r\n");
    }
    http_client c(px.port());
    for (int i = 0; i < 20; ++i) CHECK(ok_status(c) == 200);
    c.close();
    REQUIRE(eventually([&] { return open_clients(px) == 50; }));
    // Over the cap: 100 more. The proxy stops accepting at the cap and closes none of them: the
    // excess waits in the listen backlog, nothing hangs.
    const auto extra_start = steady::now();
    std::vector<std::unique_ptr<raw_connection>> extra;
    for (int i = 0; i < 100; ++i) extra.push_back(std::make_unique<raw_connection>(px.port()));
    CHECK(eventually([&] { return open_clients(px) == 64; }, 2s));
    std::this_thread::sleep_for(200ms);
    CHECK(open_clients(px) <= 64);
    std::size_t closed = 0;
    for (auto& e : extra) closed += e->closed_by_peer(1ms);
    CHECK(closed == 0);
    CHECK(steady::now() - extra_start < header_timeout);
    CHECK(px.server().stats().accept_paused.load() >= 1);
    // Those clients give up; the 50 stalled headers still hold their slots until header_timeout.
    extra.clear();
    // Stalled headers time out, their slots are freed, and new clients get through again.
    http_client late(px.port());
    late.set_timeout(1s);
    bool served = eventually(
        [&] {
            try {
                return ok_status(late) == 200;
            } catch (const std::exception&) {
                late.close();
                return false;
            }
        },
        5s);
    CHECK(served);
    late.close();
    // Stalled headers time out, their slots are freed.
    CHECK(eventually([&] { return open_clients(px) == 0; }, header_timeout + 2s));
}

TEST_CASE("max_requests_per_connection closes a keep-alive connection after N requests") {
    proxy_fixture px([](ifm::config::config& c) { c.limits.max_requests_per_connection = 3; });
    http_client c(px.port());
    for (int i = 0; i < 3; ++i) CHECK(ok_status(c) == 200);
    CHECK(c.connects() == 1);
    CHECK_FALSE(c.connected());   // the third response said close
    CHECK(ok_status(c) == 200);
    CHECK(c.connects() == 2);

    raw_connection raw(px.port());
    raw.send("GET /plain/1 HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n"
             "GET /plain/2 HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n"
             "GET /plain/3 HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n"
             "GET /plain/4 HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
    CHECK(raw.closed_by_peer(3s));
    auto all = raw.read_some(10ms);
    std::size_t responses = 0;
    for (auto pos = all.find("HTTP/1.1 200"); pos != std::string::npos; pos = all.find("HTTP/1.1 200", pos + 1))
        ++responses;
    CHECK(responses == 3);
    CHECK(all.find("Connection: close") != std::string::npos);
}

TEST_CASE("origin connections per upstream are capped: waiters queue up to pool_wait, then 503") {
    SUBCASE("the wait ends in 503 with Retry-After") {
        proxy_fixture px([](ifm::config::config& c) {
            c.upstreams[0].max_connections = 1;
            c.upstreams[0].pool_wait = 300ms;
            c.upstreams[0].request_timeout = 5s;
        });
        auto busy = hold_origin_connection(px, "1500");
        http_client c(px.port());
        auto start = steady::now();
        auto r = c.request("GET", "/plain/queued", {{"x-fake-status", "200"}});
        auto waited = steady::now() - start;
        CHECK(r.status == 503);
        CHECK(r.has_header("Retry-After"));
        CHECK(waited >= 250ms);
        CHECK(waited < 1400ms);
        CHECK(busy.get() == 200);
        CHECK(px.origin().connections_accepted() == 1);
    }
    SUBCASE("pool_wait, not connect_timeout, bounds the wait; waits and refusals are counted") {
        proxy_fixture px([](ifm::config::config& c) {
            c.upstreams[0].max_connections = 1;
            c.upstreams[0].connect_timeout = 5s;
            c.upstreams[0].pool_wait = 200ms;
            c.upstreams[0].request_timeout = 5s;
        });
        auto busy = hold_origin_connection(px, "1500");
        http_client c(px.port());
        auto start = steady::now();
        CHECK(c.request("GET", "/plain/queued", {{"x-fake-status", "200"}}).status == 503);
        auto waited = steady::now() - start;
        CHECK(waited >= 150ms);
        CHECK(waited < 1s);
        CHECK(px.server().stats().origin_pool_exhausted.load() == 1);
        CHECK(px.server().stats().origin_pool_wait.count() == 1);
        CHECK(px.server().stats().render().find("ifmatch_origin_pool_exhausted_total 1") != std::string::npos);
        CHECK(busy.get() == 200);
    }
    SUBCASE("several waiters are served in turn while the wait lasts") {
        proxy_fixture px([](ifm::config::config& c) {
            c.upstreams[0].max_connections = 1;
            c.upstreams[0].pool_wait = 3s;
        });
        auto busy = hold_origin_connection(px, "300");
        auto port = px.port();
        std::vector<std::future<unsigned>> queued;
        for (int i = 0; i < 4; ++i) {
            queued.push_back(std::async(std::launch::async, [port] {
                http_client c(port);
                return c.request("GET", "/plain/q", {{"x-fake-delay-ms", "50"}, {"x-fake-status", "200"}}).status;
            }));
        }
        for (auto& q : queued) CHECK(q.get() == 200);
        CHECK(busy.get() == 200);
        CHECK(px.origin().connections_accepted() == 1);
    }
    SUBCASE("a waiter gets the connection when it is released in time") {
        proxy_fixture px([](ifm::config::config& c) {
            c.upstreams[0].max_connections = 1;
            c.upstreams[0].pool_wait = 2s;
        });
        auto busy = hold_origin_connection(px, "200");
        http_client c(px.port());
        CHECK(ok_status(c) == 200);
        CHECK(busy.get() == 200);
        CHECK(px.origin().connections_accepted() == 1);
    }
}


TEST_CASE("origin pool: a woken waiter beaten to the freed slot keeps waiting until its deadline") {
    fake_origin origin;
    net::io_context ioc;
    ifm::config::upstream_config cfg;
    cfg.name = "origin";
    cfg.max_connections = 1;
    std::vector<net::ip::tcp::endpoint> eps{{net::ip::make_address("127.0.0.1"), origin.port()}};
    std::vector<waiter_outcome> waiters(3);
    int turns = 0;
    bool stole = false;

    SUBCASE("the slot comes back in time: every waiter is served, in queue order") {
        cfg.pool_wait = 2s;
        origin_pool pool(ioc.get_executor(), cfg, eps);
        net::co_spawn(ioc, run_pool_thief(&pool, &stole, 200ms), net::detached);
        for (auto& w : waiters) net::co_spawn(ioc, run_pool_waiter(&pool, &w, &turns, 20ms), net::detached);
        ioc.run();
        REQUIRE(stole);   // the race really happened
        for (std::size_t i = 0; i < waiters.size(); ++i) {
            CAPTURE(i);
            CHECK_FALSE(waiters[i].ec);
            CHECK(waiters[i].turn == static_cast<int>(i) + 1);
        }
        CHECK(waiters[0].waited >= 250ms);   // it waited for the thief to finish
        CHECK(origin.connections_accepted() == 1);
    }
    SUBCASE("the slot does not come back: 503 only at the deadline, not when beaten") {
        cfg.pool_wait = 600ms;
        origin_pool pool(ioc.get_executor(), cfg, eps);
        net::co_spawn(ioc, run_pool_thief(&pool, &stole, 1500ms), net::detached);
        for (auto& w : waiters) net::co_spawn(ioc, run_pool_waiter(&pool, &w, &turns, 20ms), net::detached);
        ioc.run();
        REQUIRE(stole);
        for (std::size_t i = 0; i < waiters.size(); ++i) {
            CAPTURE(i);
            CHECK(waiters[i].ec == make_error_code(ifm::proxy::origin_errc::pool_exhausted));
            CHECK(waiters[i].waited >= 550ms);
            CHECK(waiters[i].waited < 1400ms);
        }
    }
}

TEST_CASE("the origin pool keeps at most max_idle_connections idle; the rest are closed") {
    proxy_fixture px([](ifm::config::config& c) {
        c.upstreams[0].max_connections = 16;
        c.upstreams[0].max_idle_connections = 2;
    });
    auto port = px.port();
    // Five requests at once: five origin connections.
    std::vector<std::future<unsigned>> burst;
    for (int i = 0; i < 5; ++i) {
        burst.push_back(std::async(std::launch::async, [port] {
            http_client c(port);
            return c.request("GET", "/plain/b", {{"x-fake-delay-ms", "300"}, {"x-fake-status", "200"}}).status;
        }));
    }
    REQUIRE(px.origin().wait_for_requests(5, 3s));
    CHECK(px.origin().open_connections() == 5);
    for (auto& b : burst) CHECK(b.get() == 200);
    // Two are pooled, three closed (the origin sees them go).
    CHECK(eventually([&] { return px.origin().open_connections() == 2; }));
    std::this_thread::sleep_for(100ms);
    CHECK(px.origin().open_connections() == 2);
    // The pooled two are reused.
    http_client c(px.port());
    CHECK(ok_status(c) == 200);
    CHECK(px.origin().connections_accepted() == 5);
}

TEST_CASE("clients that stop reading a buffered response do not hold origin connections") {
    // Hash route: the 8 MiB body is read whole (to hash it) before the client gets a byte, so the
    // origin connection has nothing left to do while the client stalls.
    proxy_fixture px(two_origin_slots);
    auto stalled = stalled_readers(px.port(), [](int i) {
        return "GET /doc/" + std::to_string(i) + " HTTP/1.1\r\nHost: a\r\nx-fake-body-size: 8388608\r\n\r\n";
    });
    // All four reached the origin through two slots: each was given back once its body was read.
    CHECK(px.origin().wait_for_requests(4, 5s));
    http_client c(px.port());
    auto start = steady::now();
    CHECK(ok_status(c) == 200);
    CHECK(steady::now() - start < 1s);
    CHECK(px.origin().connections_accepted() <= 2);
}

TEST_CASE("a client that hangs up while the origin works frees the origin connection at once") {
    proxy_fixture px([](ifm::config::config& c) {
        c.upstreams[0].max_connections = 1;
        c.upstreams[0].pool_wait = 500ms;
        c.upstreams[0].request_timeout = 5s;
    });
    SUBCASE("plain forward") {
        raw_connection gone(px.port());
        gone.send("GET /plain/slow HTTP/1.1\r\nHost: a\r\nx-fake-delay-ms: 3000\r\nx-fake-status: 200\r\n\r\n");
        REQUIRE(px.origin().wait_for_requests(1, 2s));
    }
    SUBCASE("tracked read") {
        raw_connection gone(px.port());
        gone.send("GET /doc/slow HTTP/1.1\r\nHost: a\r\nx-fake-delay-ms: 3000\r\nx-fake-body-size: 100\r\n\r\n");
        REQUIRE(px.origin().wait_for_requests(1, 2s));
    }
    // `gone` has closed: the origin connection it held is dropped (the origin, still sleeping,
    // notices later), so the only slot is free at once: without that, 503 after pool_wait.
    REQUIRE(eventually([&] { return px.server().stats().client_aborts.load() == 1; }, 1s));
    http_client c(px.port());
    auto start = steady::now();
    CHECK(ok_status(c) == 200);
    CHECK(steady::now() - start < 400ms);
    CHECK(px.origin().connections_accepted() == 2);   // never pooled: it was mid-exchange
}

TEST_CASE("a pipelined request while the origin works is not mistaken for a hang-up") {
    proxy_fixture px([](ifm::config::config& c) { c.upstreams[0].request_timeout = 5s; });
    raw_connection raw(px.port());
    raw.send("GET /plain/1 HTTP/1.1\r\nHost: a\r\nx-fake-delay-ms: 300\r\nx-fake-status: 200\r\n\r\n");
    REQUIRE(px.origin().wait_for_requests(1, 2s));
    raw.send("GET /plain/2 HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n");
    std::string all;
    for (int i = 0; i < 20 && all.find("HTTP/1.1 200", all.find("HTTP/1.1 200") + 1) == std::string::npos; ++i)
        all += raw.read_some(500ms);
    CHECK(all.find("HTTP/1.1 200") != std::string::npos);
    CHECK(all.find("HTTP/1.1 200", all.find("HTTP/1.1 200") + 1) != std::string::npos);
    CHECK(px.server().stats().client_aborts.load() == 0);
}

TEST_CASE("a keep-alive connection idle for a second is parked (no session) and keeps its limits") {
    proxy_fixture px([](ifm::config::config& c) {
        c.limits.idle_timeout = 2500ms;
        c.limits.max_requests_per_connection = 2;
        c.limits.drain_timeout = 5s;
    });
    const std::string req = "GET /plain/p HTTP/1.1\r\nHost: a\r\nx-fake-status: 200\r\n\r\n";
    // Served after parking; the request count survives it (the second response says close).
    raw_connection a(px.port());
    a.send(req);
    CHECK(a.read_some(2s).starts_with("HTTP/1.1 200"));
    std::this_thread::sleep_for(1500ms);
    CHECK(open_clients(px) == 1);   // parked, still counted
    a.send(req);
    auto second = a.read_some(2s);
    CHECK(second.starts_with("HTTP/1.1 200"));
    CHECK(second.find("Connection: close") != std::string::npos);
    CHECK(a.closed_by_peer(2s));
    // Parked connections are closed at idle_timeout, counted out.
    raw_connection b(px.port());
    b.send(req);
    CHECK(b.read_some(2s).starts_with("HTTP/1.1 200"));
    auto idle_start = steady::now();
    CHECK(b.closed_by_peer(5s));
    auto idle = steady::now() - idle_start;
    CHECK(idle > 2s);
    CHECK(idle < 4s);
    CHECK(b.read_some(1ms).empty());
    CHECK(eventually([&] { return open_clients(px) == 0; }));
    // A drain closes parked connections at once (not after drain_timeout).
    raw_connection c(px.port());
    c.send(req);
    CHECK(c.read_some(2s).starts_with("HTTP/1.1 200"));
    std::this_thread::sleep_for(1500ms);
    auto drain_start = steady::now();
    px.drain_and_wait();
    CHECK(steady::now() - drain_start < 2s);
    CHECK(c.closed_by_peer(1s));
}

namespace {

// Reads one response whole from `c` (Content-Length or chunked); the body decoded.
struct read_response {
    std::string head, body;
    bool complete = false;
};
// `pause_every` > 0: a bursty reader, pausing 20 ms after each `pause_every` bytes.
read_response read_whole(raw_connection& c, std::chrono::milliseconds timeout, std::size_t pause_every = 0) {
    read_response r;
    std::size_t next_pause = pause_every;
    std::string data;
    auto deadline = steady::now() + timeout;
    std::size_t end = std::string::npos;
    while (steady::now() < deadline) {
        if (end == std::string::npos && (end = data.find("\r\n\r\n")) != std::string::npos) r.head = data.substr(0, end);
        if (end != std::string::npos) {
            auto rest = std::string_view(data).substr(end + 4);
            if (r.head.find("Transfer-Encoding: chunked") != std::string::npos) {
                if (!rest.ends_with("\r\n0\r\n\r\n")) {   // decoded once, when the last chunk is in
                    data += c.read_some(500ms);
                    continue;
                }
                std::string out;
                std::size_t at = 0;
                for (;;) {
                    auto eol = rest.find("\r\n", at);
                    if (eol == std::string_view::npos) break;
                    auto size = std::stoul(std::string(rest.substr(at, eol - at)), nullptr, 16);
                    if (rest.size() < eol + 2 + size + 2) break;
                    if (size == 0) {
                        r.body = std::move(out);
                        r.complete = true;
                        return r;
                    }
                    out.append(rest.substr(eol + 2, size));
                    at = eol + 2 + size + 2;
                }
            } else if (auto cl = r.head.find("Content-Length: "); cl != std::string::npos) {
                auto length = std::stoul(r.head.substr(cl + 16));
                if (rest.size() >= length) {
                    r.body = std::string(rest.substr(0, length));
                    r.complete = true;
                    return r;
                }
            }
        }
        auto got = c.read_some(500ms);
        data += got;
        if (pause_every > 0 && data.size() >= next_pause) {
            std::this_thread::sleep_for(20ms);
            next_pause = data.size() + pause_every;
        }
    }
    return r;
}

}  // namespace

// Issue 15: a streamed response (untracked, or over the buffering budget) whose client stops
// reading is read on into the spool (limits.max_spooled_bytes), so that its origin connection
// goes back to the pool when the origin is done. 24 MiB each: more than loopback's socket buffers
// take, so the proxy really has bytes the client does not read.
TEST_CASE("clients that stop reading a streamed response do not hold origin connections: the rest is spooled") {
    constexpr std::size_t size = 24 * 1024 * 1024;
    bool chunked = false;
    SUBCASE("Content-Length") {}
    SUBCASE("chunked") { chunked = true; }
    proxy_fixture px(two_origin_slots);
    auto stalled = stalled_readers(px.port(), [&](int i) {
        return "GET /plain/big/" + std::to_string(i) + " HTTP/1.1\r\nHost: a\r\nx-fake-body-size: " +
               std::to_string(size) + (chunked ? "\r\nx-fake-chunked: 1" : "") + "\r\n\r\n";
    });
    // All four reached the origin through two slots: each was given back once its body was read.
    CHECK(px.origin().wait_for_requests(4, 5s));
    CHECK(eventually([] { return ifm::proxy::spooled_budget().used() > size; }, 5s));
    http_client c(px.port());
    auto start = steady::now();
    CHECK(ok_status(c) == 200);
    CHECK(steady::now() - start < 1s);
    CHECK(px.origin().connections_accepted() <= 2);
    // Each client, reading at last, gets its whole body, in order.
    auto expected = fake_body(size);
    for (auto& s : stalled) {
        auto r = read_whole(*s, 20s);
        CHECK(r.head.starts_with("HTTP/1.1 200"));
        REQUIRE(r.complete);
        CHECK(r.body.size() == size);
        CHECK(r.body == expected);
    }
    CHECK(px.server().stats().spooled_responses.load() == 4);
    CHECK(eventually([] { return ifm::proxy::spooled_budget().used() == 0; }, 2s));
}

// The fast path: while the client keeps up, bytes go straight to its socket; when it falls
// behind, through the spool; when it has caught up, straight again. A client that reads in bursts
// makes the two take turns: it must still get every byte in order.
TEST_CASE("a client that reads in bursts gets the body whole and in order (direct sends and the spool take turns)") {
    constexpr std::size_t size = 24 * 1024 * 1024;
    proxy_fixture px(two_origin_slots);
    raw_connection c(px.port());
    c.send("GET /plain/bursty HTTP/1.1\r\nHost: a\r\nx-fake-body-size: " + std::to_string(size) + "\r\n\r\n");
    auto r = read_whole(c, 30s, 1024 * 1024);
    CHECK(r.head.starts_with("HTTP/1.1 200"));
    REQUIRE(r.complete);
    CHECK(r.body.size() == size);
    CHECK(r.body == fake_body(size));
    CHECK(px.server().stats().spooled_responses.load() == 1);   // the spool took part
    CHECK(eventually([] { return ifm::proxy::spooled_budget().used() == 0; }, 2s));
}

TEST_CASE("without room in the spool a stalled streamed response holds its origin connection (and says so)") {
    constexpr std::size_t size = 24 * 1024 * 1024;
    std::size_t spooled_bytes = 0, spooled_response = 256 * 1024 * 1024;
    SUBCASE("max_spooled_bytes: 0") { spooled_bytes = 0; }
    SUBCASE("max_spooled_response under the body") {
        spooled_bytes = 1 << 30;
        spooled_response = 1024 * 1024;
    }
    proxy_fixture px([&](ifm::config::config& c) {
        c.upstreams[0].max_connections = 1;
        c.upstreams[0].pool_wait = 300ms;
        c.limits.body_timeout = 30s;
        c.limits.drain_timeout = 500ms;
        c.limits.max_spooled_bytes = spooled_bytes;
        c.limits.max_spooled_response = spooled_response;
    });
    raw_connection stalled(px.port());
    stalled.send("GET /plain/big HTTP/1.1\r\nHost: a\r\nx-fake-body-size: " + std::to_string(size) + "\r\n\r\n");
    REQUIRE(px.origin().wait_for_requests(1, 5s));
    std::this_thread::sleep_for(300ms);
    http_client c(px.port());
    CHECK(ok_status(c) == 503);   // origin-busy: the only slot is held by the stalled response
    auto r = read_whole(stalled, 20s);   // the stalled client still gets everything
    REQUIRE(r.complete);
    CHECK(r.body == fake_body(size));
    CHECK(px.server().stats().spool_full.load() == 1);
    CHECK(ok_status(c) == 200);
}

TEST_CASE("a client that leaves in the middle of a spooled response: its spool is given back") {
    constexpr std::size_t size = 24 * 1024 * 1024;
    proxy_fixture px([](ifm::config::config& c) {
        c.limits.body_timeout = 30s;
        c.limits.drain_timeout = 500ms;
    });
    {
        raw_connection gone(px.port());
        gone.send("GET /plain/big HTTP/1.1\r\nHost: a\r\nx-fake-body-size: " + std::to_string(size) + "\r\n\r\n");
        REQUIRE(eventually([] { return ifm::proxy::spooled_budget().used() > size / 2; }, 5s));
        CHECK(gone.read_some(2s).starts_with("HTTP/1.1 200"));
    }
    CHECK(eventually([] { return ifm::proxy::spooled_budget().used() == 0; }, 3s));
    http_client c(px.port());
    CHECK(ok_status(c) == 200);
}

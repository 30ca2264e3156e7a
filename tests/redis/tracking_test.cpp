// Precondition enforcement end to end (issue 3): the proxy in front of a legacy origin with no
// conditional logic, a real redis-server (and the embedded memory store, the product default).
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"
#include "tests/support/redis_topology.hpp"

#include <doctest/doctest.h>

#include <functional>
#include <future>
#include <optional>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;
using ifm::config::store_kind;

namespace {

// Runs `body` with the memory store, with Redis, and with a Redis Cluster of three masters
// (keys spread over three nodes, routed by slot): the same decisions from all three.
template <class F>
void for_each_store(F body) {
    enum class topology { memory, redis, cluster };
    for (auto t : {topology::memory, topology::redis, topology::cluster}) {
        CAPTURE(static_cast<int>(t));
        std::unique_ptr<redis_server> redis;
        std::unique_ptr<redis_cluster> cluster;
        if (t == topology::redis) redis = std::make_unique<redis_server>();
        if (t == topology::cluster) cluster = std::make_unique<redis_cluster>(3);
        body([&](ifm::config::config& c) {
            c.store.kind = t == topology::memory ? store_kind::memory : store_kind::redis;
            if (redis) c.store.url = redis->url();
            if (cluster) c.store.url = cluster->url();
            c.store.timeout = 500ms;
        });
    }
}

// The RFC 9110 script: one sequence of writes and reads with the decision the proxy must make
// at each step, run against several origins. `script_origin` is what the script may ask of the
// origin behind the proxy.
struct script_origin {
    std::uint16_t proxy_port = 0;
    // What the origin holds now (nullopt: 404), read behind the proxy's back.
    std::function<std::optional<std::string>(const std::string&)> body;
    // PUTs that reached the origin; empty when the origin cannot tell (nginx): then the body
    // checks, which every step has as well, are what shows that nothing was forwarded.
    std::function<std::size_t()> puts;
    // Whether the last request the origin saw carried If-Match; empty when it cannot tell.
    std::function<bool()> last_had_if_match;
    // The origin implements PATCH as append (nginx WebDAV answers 405: a PUT of the appended
    // body stands in for it, with the same precondition).
    bool patch = true;
};

void rfc9110_script(const script_origin& o) {
    http_client c(o.proxy_port);
    auto puts_at_origin = [&] { return o.puts ? o.puts() : std::size_t{0}; };

    // Create-only write on a missing resource, then a duplicate create.
    CHECK(c.request("PUT", "/doc", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto dup = c.request("PUT", "/doc", {{"If-None-Match", "*"}}, "dup");
    CHECK(dup.status == 409);
    CHECK(dup.body.find("already-exists") != std::string::npos);
    CHECK(o.body("/doc") == "v1");

    // The validator the client sees is the proxy's hash of the representation.
    auto g1 = c.request("GET", "/doc");
    CHECK(g1.status == 200);
    auto e1 = g1.header("ETag");
    REQUIRE(e1.size() == 24);

    // Stale tag: 409 naming the current validator; nothing reaches the origin.
    auto before = puts_at_origin();
    auto stale = c.request("PUT", "/doc", {{"If-Match", "\"not-it\""}}, "x");
    CHECK(stale.status == 409);
    CHECK(stale.header("ETag") == e1);
    CHECK(stale.header("Content-Type") == "application/problem+json");
    CHECK(stale.body.find("\"current_etag\":\"\\\"" + e1.substr(1, 22) + "\\\"\"") != std::string::npos);
    CHECK(puts_at_origin() == before);
    CHECK(o.body("/doc") == "v1");

    // Fresh tag: accepted (I2), and the origin does not see our tags.
    CHECK(c.request("PUT", "/doc", {{"If-Match", e1}}, "v2").status == 204);
    CHECK(o.body("/doc") == "v2");
    if (o.last_had_if_match) {
        CHECK_FALSE(o.last_had_if_match());
    }

    // Replayed tag: rejected.
    CHECK(c.request("PUT", "/doc", {{"If-Match", e1}}, "v3").status == 409);
    CHECK(o.body("/doc") == "v2");

    // A list passes when one member matches strongly; a weak tag never does.
    auto e2 = c.request("GET", "/doc").header("ETag");
    CHECK(e2 != e1);
    CHECK(c.request("PUT", "/doc", {{"If-Match", "W/" + e2}}, "weak").status == 409);
    CHECK(o.body("/doc") == "v2");
    CHECK(c.request("PUT", "/doc", {{"If-Match", "\"a\", " + e2}}, "v3").status == 204);
    CHECK(o.body("/doc") == "v3");

    // If-Match: * on a missing resource fails; on an existing one passes.
    CHECK(c.request("PUT", "/missing", {{"If-Match", "*"}}, "m").status == 409);
    CHECK_FALSE(o.body("/missing"));
    if (o.patch) {
        CHECK(c.request("PATCH", "/doc", {{"If-Match", "*"}}, "+p").status == 204);
    } else {
        CHECK(c.request("PUT", "/doc", {{"If-Match", "*"}}, "v3+p").status == 204);
    }
    CHECK(o.body("/doc") == "v3+p");

    // DELETE stale, DELETE fresh, then a write with the old tag, then re-create.
    auto e3 = c.request("GET", "/doc").header("ETag");
    CHECK(c.request("DELETE", "/doc", {{"If-Match", e2}}).status == 409);
    CHECK(o.body("/doc") == "v3+p");
    CHECK(c.request("DELETE", "/doc", {{"If-Match", e3}}).status == 204);
    CHECK_FALSE(o.body("/doc"));
    CHECK(c.request("PUT", "/doc", {{"If-Match", e3}}, "ghost").status == 409);
    CHECK_FALSE(o.body("/doc"));
    CHECK(c.request("PUT", "/doc", {{"If-None-Match", "*"}}, "again").status == 201);
    CHECK(o.body("/doc") == "again");

    // If-None-Match on a GET is answered by the proxy with 304 for our own tag.
    auto e4 = c.request("GET", "/doc").header("ETag");
    auto nm = c.request("GET", "/doc", {{"If-None-Match", e4}});
    CHECK(nm.status == 304);
    CHECK(nm.header("ETag") == e4);
    CHECK(nm.body.empty());
    CHECK(c.request("GET", "/doc", {{"If-None-Match", "\"other\""}}).status == 200);

    // Malformed precondition: 400, never forwarded.
    before = puts_at_origin();
    auto bad = c.request("PUT", "/doc", {{"If-Match", "unquoted"}}, "bad");
    CHECK(bad.status == 400);
    CHECK(bad.body.find("If-Match") != std::string::npos);
    CHECK(puts_at_origin() == before);
    CHECK(o.body("/doc") == "again");
}

script_origin fake_script_origin(proxy_fixture& px) {
    script_origin o;
    o.proxy_port = px.port();
    o.body = [&px](const std::string& t) { return px.origin().get(t); };
    o.puts = [&px] { return px.origin().count("PUT"); };
    o.last_had_if_match = [&px] {
        auto r = px.origin().requests();
        return !r.empty() && r.back().has_header("if-match");
    };
    return o;
}

}  // namespace

// Proves the §3 decisions (create-only, stale, fresh, replay, lists, weak tags, *, DELETE,
// 304, 400) and that a rejected write never reaches the origin, with every store.
TEST_CASE("RFC 9110 script: accept/reject decisions through the proxy") {
    for_each_store([](auto use_store) {
        proxy_fixture px([&](ifm::config::config& c) { use_store(c); });
        rfc9110_script(fake_script_origin(px));
    });
}

// The same script in front of the real legacy backend (hash mode, real Redis): nginx's own
// "mtime-size" ETag must never leak through or be relied on, and its 201/204/404 answers to
// PUT/DELETE/GET must lead to the same decisions.
TEST_CASE("RFC 9110 script against nginx WebDAV (hash mode, Redis)") {
    nginx_webdav nginx;
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis_store(c, redis.url());
        c.upstreams[0].port = nginx.port();
        c.routes[1].etag = ifm::config::etag_mode::hash;
    });
    http_client direct(nginx.port());
    script_origin o;
    o.proxy_port = px.port();
    o.body = [&direct](const std::string& t) -> std::optional<std::string> {
        auto g = direct.request("GET", t);
        if (g.status == 404) return std::nullopt;
        REQUIRE(g.status == 200);
        return g.body;
    };
    o.patch = false;
    rfc9110_script(o);
    CHECK(px.origin().requests().empty());  // everything went to nginx
}

// The same script in front of an origin that sends only weak ETags (like Express), in `auto`
// mode: weak tags cannot serve If-Match (strong comparison), so auto must fall back to hashing;
// fails if the proxy hands out or trusts the origin's W/"n" tags.
TEST_CASE("RFC 9110 script against a weak-ETag origin (auto mode falls back to hash, Redis)") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis_store(c, redis.url());
        c.routes[1].etag = ifm::config::etag_mode::auto_;
    });
    px.origin().set_etag_style(etag_style::weak);
    rfc9110_script(fake_script_origin(px));
    // The origin did label its representations weakly all along.
    CHECK(px.origin().etag("/doc").starts_with("W/\""));
}

TEST_CASE("require_precondition answers 428; reject_status 412 is honoured") {
    for_each_store([](auto use_store) {
        proxy_fixture px([&](ifm::config::config& c) {
            use_store(c);
            c.routes[1].require_precondition = true;
            c.routes[1].reject_status = 412;
        });
        http_client c(px.port());
        auto r = c.request("PUT", "/a", {}, "x");
        CHECK(r.status == 428);
        CHECK(px.origin().count("PUT") == 0);
        CHECK(c.request("PUT", "/a", {{"If-Match", "\"x\""}}, "x").status == 412);
        CHECK(c.request("PUT", "/a", {{"If-None-Match", "*"}}, "x").status == 201);
    });
}

TEST_CASE("refresh_after_write returns the new validator so clients can chain writes") {
    for_each_store([](auto use_store) {
        proxy_fixture px([&](ifm::config::config& c) {
            use_store(c);
            c.routes[1].refresh_after_write = true;
        });
        http_client c(px.port());
        auto w1 = c.request("PUT", "/chain", {{"If-None-Match", "*"}}, "1");
        CHECK(w1.status == 201);
        auto tag = w1.header("ETag");
        REQUIRE(!tag.empty());
        for (int i = 2; i <= 5; ++i) {
            auto w = c.request("PUT", "/chain", {{"If-Match", tag}}, std::to_string(i));
            REQUIRE(w.status == 204);
            CHECK(w.header("ETag") != tag);
            tag = w.header("ETag");
        }
        CHECK(px.origin().get("/chain") == "5");
        CHECK(c.request("GET", "/chain").header("ETag") == tag);
    });
}

TEST_CASE("origin mode tracks the origin's strong ETag; weak origin ETags are not trusted in auto mode") {
    for_each_store([](auto use_store) {
        SUBCASE("origin mode") {
            proxy_fixture px([&](ifm::config::config& c) {
                use_store(c);
                c.routes[1].etag = ifm::config::etag_mode::origin;
            });
            px.origin().set_etag_style(etag_style::strong);
            http_client c(px.port());
            CHECK(c.request("PUT", "/o", {{"If-None-Match", "*"}}, "a").status == 201);
            auto tag = c.request("GET", "/o").header("ETag");
            CHECK(tag == px.origin().etag("/o"));
            CHECK(c.request("PUT", "/o", {{"If-Match", tag}}, "b").status == 204);
            CHECK(c.request("PUT", "/o", {{"If-Match", tag}}, "c").status == 409);
            // In origin mode the origin sees the conditional headers (it knows the tags).
            CHECK(px.origin().requests().back().method == "PUT");
        }
        SUBCASE("auto mode with weak ETags hashes instead") {
            proxy_fixture px([&](ifm::config::config& c) {
                use_store(c);
                c.routes[1].etag = ifm::config::etag_mode::auto_;
            });
            px.origin().set_etag_style(etag_style::weak);
            http_client c(px.port());
            CHECK(c.request("PUT", "/w", {{"If-None-Match", "*"}}, "a").status == 201);
            auto tag = c.request("GET", "/w").header("ETag");
            CHECK(tag.size() == 24);
            CHECK(!tag.starts_with("W/"));
            CHECK(c.request("PUT", "/w", {{"If-Match", px.origin().etag("/w")}}, "b").status == 409);
            CHECK(c.request("PUT", "/w", {{"If-Match", tag}}, "b").status == 204);
        }
    });
}

TEST_CASE("a slow GET never records a validator from before a write (generation check)") {
    for_each_store([](auto use_store) {
        proxy_fixture px([&](ifm::config::config& c) { use_store(c); });
        auto port = px.port();
        // The slow GET's representation (and so its hash) is fixed when the origin reads it.
        auto slow = std::async(std::launch::async, [port] {
            http_client c(port);
            return c.request("GET", "/g", {{"x-fake-body-size", "10"}, {"x-fake-delay-ms", "400"}});
        });
        REQUIRE(px.origin().wait_for_requests(1, 2s));
        http_client w(port);
        CHECK(w.request("PUT", "/g", {{"x-fake-status", "204"}}, "new").status == 204);
        auto old = slow.get();
        REQUIRE(old.status == 200);
        auto pre_write_tag = old.header("ETag");
        // The revalidation (steered to a 204 with an empty body) sees the post-write state, so the
        // pre-write tag must not be accepted.
        auto r = w.request("PUT", "/g", {{"If-Match", pre_write_tag}, {"x-fake-status", "204"}}, "late");
        CHECK(r.status == 409);
    });
}

// Issue 12: reads reuse their worker's recent snapshot (store.snapshot_reuse). A slow GET that
// reused one taken before a write, and saw another representation than the snapshot's, must not
// record it: the observe carries the old generation and the store refuses it. Fails if a reused
// snapshot's generation is not checked (the second PUT then passes with the slow GET's tag).
TEST_CASE("a slow GET that reuses a snapshot never records a validator from before a write") {
    for_each_store([](auto use_store) {
        proxy_fixture px([&](ifm::config::config& c) {
            use_store(c);
            c.store.snapshot_reuse = 10s;
        });
        auto port = px.port();
        http_client w(port);
        // The first GET takes the snapshot and records its tag; the next ones reuse it.
        auto first = w.request("GET", "/g", {{"x-fake-body-size", "10"}});
        REQUIRE(first.status == 200);
        CHECK(w.request("GET", "/g", {{"x-fake-body-size", "10"}}).header("ETag") == first.header("ETag"));
        CHECK(px.server().stats().snapshots_reused.load() == 1);
        // A slow GET of another representation (11 bytes), on the snapshot of before the write.
        auto slow = std::async(std::launch::async, [port] {
            http_client c(port);
            return c.request("GET", "/g", {{"x-fake-body-size", "11"}, {"x-fake-delay-ms", "400"}});
        });
        REQUIRE(px.origin().wait_for_requests(3, 2s));
        CHECK(w.request("PUT", "/g", {{"If-Match", first.header("ETag")}, {"x-fake-status", "204"}}, "new").status ==
              204);
        auto old = slow.get();
        REQUIRE(old.status == 200);
        CHECK(px.server().stats().snapshots_reused.load() == 2);
        auto pre_write_tag = old.header("ETag");
        REQUIRE(pre_write_tag != first.header("ETag"));
        auto r = w.request("PUT", "/g", {{"If-Match", pre_write_tag}, {"x-fake-status", "204"}}, "late");
        CHECK(r.status == 409);
    });
}

// With store.snapshot_reuse: 0 every read asks the store; with the default, repeated reads of a
// resource ask it once per second and per worker, and still learn a change made behind the
// proxy's back on the next read after the one that saw it.
TEST_CASE("store.snapshot_reuse: repeated reads reuse a snapshot; 0 turns it off") {
    for (auto reuse : {std::chrono::milliseconds(0), std::chrono::milliseconds(5000)}) {
        CAPTURE(reuse.count());
        redis_server redis;
        proxy_fixture px([&](ifm::config::config& c) {
            c.store.kind = store_kind::redis;
            c.store.url = redis.url();
            c.store.timeout = 500ms;
            c.store.snapshot_reuse = reuse;
        });
        http_client c(px.port());
        std::string tag;
        for (int i = 0; i < 20; ++i) {
            auto r = c.request("GET", "/h", {{"x-fake-body-size", "10"}});
            REQUIRE(r.status == 200);
            tag = r.header("ETag");
        }
        CHECK(px.server().stats().snapshots_reused.load() == (reuse.count() ? 19u : 0u));
        // Changed behind the proxy's back (12 bytes now): the read that sees it records it on the
        // reused snapshot's generation, which no write has moved, and a write with it passes.
        auto changed = c.request("GET", "/h", {{"x-fake-body-size", "12"}});
        REQUIRE(changed.status == 200);
        CHECK(changed.header("ETag") != tag);
        auto put = c.request("PUT", "/h", {{"If-Match", changed.header("ETag")}, {"x-fake-status", "204"}}, "x");
        CHECK(put.status == 204);
        CHECK(px.origin().count("GET", "/h") == 21u);   // no revalidation: the store knew the new tag
    }
}

TEST_CASE("a write in flight makes the resource busy: 409 with Retry-After, or wait") {
    for_each_store([](auto use_store) {
        SUBCASE("on_busy: reject") {
            proxy_fixture px([&](ifm::config::config& c) { use_store(c); });
            auto port = px.port();
            auto slow = std::async(std::launch::async, [port] {
                http_client c(port);
                return c.request("PUT", "/b", {{"x-fake-delay-ms", "500"}, {"x-fake-status", "204"}}, "slow").status;
            });
            REQUIRE(px.origin().wait_for_requests(1, 2s));
            http_client c(port);
            auto busy = c.request("PUT", "/b", {{"If-Match", "*"}}, "fast");
            CHECK(busy.status == 409);
            CHECK(busy.header("Retry-After") == "1");
            CHECK(busy.body.find("write-in-progress") != std::string::npos);
            CHECK(slow.get() == 204);
        }
        SUBCASE("on_busy: wait") {
            proxy_fixture px([&](ifm::config::config& c) {
                use_store(c);
                c.routes[1].on_busy = ifm::config::busy_policy::wait;
                c.routes[1].busy_wait = 2s;
            });
            auto port = px.port();
            auto slow = std::async(std::launch::async, [port] {
                http_client c(port);
                return c.request("PUT", "/b", {{"x-fake-delay-ms", "300"}, {"x-fake-status", "204"}}, "slow").status;
            });
            REQUIRE(px.origin().wait_for_requests(1, 2s));
            http_client c(port);
            CHECK(c.request("PUT", "/b", {{"x-fake-status", "204"}}, "after").status == 204);
            CHECK(slow.get() == 204);
        }
    });
}

TEST_CASE("I4: with the store down, conditional writes get 503 + Retry-After and reads flow") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis_store(c, redis.url(), 200ms);
    });
    http_client c(px.port());
    CHECK(c.request("PUT", "/s", {{"If-None-Match", "*"}}, "1").status == 201);
    redis.stop();
    auto before = px.origin().count("PUT");
    auto t0 = std::chrono::steady_clock::now();
    auto r = c.request("PUT", "/s", {{"If-Match", "\"x\""}}, "2");
    CHECK(r.status == 503);
    CHECK(r.header("Retry-After") == "1");
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(px.origin().count("PUT") == before);
    CHECK(c.request("GET", "/s").status == 200);
    CHECK(c.request("GET", "/plain/x", {{"x-fake-status", "200"}}).status == 200);
}

TEST_CASE("a slow upload cannot outlive its write lease (I1 with slow clients)") {
    for_each_store([](auto use_store) {
        proxy_fixture px([&](ifm::config::config& c) {
            use_store(c);
            c.routes[1].write_lease = 2s;
            c.upstreams[0].request_timeout = 500ms;
            c.limits.body_timeout = 10s;
            // A body streamed under the lease (larger than max_prebuffered_body, or chunked);
            // smaller ones are read before the lease is taken ("lease squatting" tests).
            c.limits.max_prebuffered_body = 0;
        });
        raw_connection slow(px.port());
        slow.send("PUT /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
        auto t0 = std::chrono::steady_clock::now();
        bool closed = false;
        while (!closed && std::chrono::steady_clock::now() - t0 < 4s) {
            slow.send("x");
            closed = slow.closed_by_peer(200ms);
        }
        auto elapsed = std::chrono::steady_clock::now() - t0;
        CHECK(closed);
        CHECK(elapsed < 2500ms);   // cut at lease end minus the safety margin
        CHECK_FALSE(px.origin().get("/slow"));
        // The resource is usable again, and the aborted write left it unknown (revalidated).
        http_client c(px.port());
        CHECK(c.request("PUT", "/slow", {{"If-None-Match", "*"}}, "ok").status == 201);
    });
}

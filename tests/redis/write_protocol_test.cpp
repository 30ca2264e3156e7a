// Write-protocol edge cases (SPEC §2 I1, §5) found by review: each case here let a stale write
// through, or handed a client a tag it must not chain on, before the fix it names.
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"

#include <doctest/doctest.h>

#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;
using ifm::config::store_kind;

TEST_CASE("I1: a representation larger than max_hash_body is judged as existing without a validator, "
          "never forwarded unjudged") {
    for (auto kind : {store_kind::memory, store_kind::redis}) {
        CAPTURE(static_cast<int>(kind));
        std::unique_ptr<redis_server> redis;
        if (kind == store_kind::redis) redis = std::make_unique<redis_server>();
        proxy_fixture px([&](ifm::config::config& c) {
            if (redis) use_redis_store(c, redis->url());
            c.limits.max_hash_body = 64;
        });
        http_client c(px.port());
        const std::string big(1000, 'b');
        px.origin().put("/big", big);

        // Passed through untracked: no validator is handed out.
        auto g = c.request("GET", "/big");
        CHECK(g.status == 200);
        CHECK(g.body == big);
        CHECK(g.header("ETag").empty());

        // No tag can be current; without the fix the revalidation gave up and forwarded these.
        auto puts = px.origin().count("PUT");
        CHECK(c.request("PUT", "/big", {{"If-Match", "\"guess\""}}, "x").status == 409);
        auto exists = c.request("PUT", "/big", {{"If-None-Match", "*"}}, "x");
        CHECK(exists.status == 409);
        CHECK(exists.body.find("already-exists") != std::string::npos);
        CHECK(px.origin().count("PUT") == puts);
        CHECK(px.origin().get("/big") == big);
        // What can pass still does: If-Match: * (it exists), an If-None-Match list (nothing matches).
        CHECK(c.request("PUT", "/big", {{"If-Match", "*"}}, big + "1").status == 204);
        CHECK(c.request("PUT", "/big", {{"If-None-Match", "\"guess\""}}, big + "2").status == 204);
        CHECK(px.origin().get("/big") == big + "2");

        // The lost update this closes: two clients read V0 of a small document; the first write
        // makes it large; the second, conditioned on V0 as well, must not be forwarded.
        px.origin().put("/doc", "small");
        auto v0 = c.request("GET", "/doc").header("ETag");
        REQUIRE_FALSE(v0.empty());
        CHECK(c.request("PUT", "/doc", {{"If-Match", v0}}, big).status == 204);
        auto second = c.request("PUT", "/doc", {{"If-Match", v0}}, "second");
        CHECK(second.status == 409);
        CHECK(px.origin().get("/doc") == big);
    }
}

TEST_CASE("refresh_after_write hands out the new validator only if the write still held its lease") {
    redis_server redis;
    // The write takes D at the origin and so does the refresh GET: the lease (4 s) runs out
    // during the refresh (2 × D > 4 s), while the write itself ended well within it (D < 3 s).
    constexpr auto D = 2200ms;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis_store(c, redis.url());
        c.upstreams[0].request_timeout = 2600ms;   // > D, and + 1 s margin < the lease
        c.routes[1].refresh_after_write = true;
        c.routes[1].write_lease = 4s;
    });
    http_client c(px.port());
    c.set_timeout(15s);
    px.origin().put("/doc", "v1");

    // Control: a quick origin, the refreshed tag comes back and is the one a GET sees.
    auto e1 = c.request("GET", "/doc").header("ETag");
    REQUIRE_FALSE(e1.empty());
    auto w = c.request("PUT", "/doc", {{"If-Match", e1}}, "v2");
    CHECK(w.status == 204);
    auto e2 = w.header("ETag");
    CHECK_FALSE(e2.empty());
    CHECK(e2 == c.request("GET", "/doc").header("ETag"));

    // Slow origin: the commit finds the lease gone. Another write could have been forwarded
    // meanwhile and the refresh could have read its result, so no tag is handed out (the state
    // is unknown; the next conditional write revalidates).
    px.origin().set_kv_delay(D);
    auto slow = c.request("PUT", "/doc", {{"If-Match", e2}}, "v3");
    CHECK(slow.status == 204);
    CHECK(slow.header("ETag").empty());
    px.origin().set_kv_delay(0ms);
    CHECK(px.origin().get("/doc") == "v3");
    CHECK(redis.command({"KEYS", "ifm:*:l"}).empty());
    // Unknown, not stale: the client's next write after a fresh read goes through.
    auto e3 = c.request("GET", "/doc").header("ETag");
    CHECK(c.request("PUT", "/doc", {{"If-Match", e3}}, "v4").status == 204);
}

TEST_CASE("I3: after a young (restarted) Redis, reads stay unrecorded for the longest route lease, "
          "not the 15 s default, even on a worker that never wrote") {
    // A route lease longer than the default: a write forwarded just before Redis lost its data
    // may be at the origin for that long, and a read meanwhile must not record the old state.
    redis_server redis;
    const auto started = std::chrono::steady_clock::now();
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis_store(c, redis.url());
        c.store.young_server_wait = true;   // a server younger than a lease counts as restarted
        c.routes[1].write_lease = 25s;
    });
    http_client c(px.port());
    px.origin().put("/doc", "v1");
    auto tracked = [&] { return redis.command({"KEYS", "ifm:{*"}); };   // resources, not the epoch
    // The first contact starts the store's epoch wait as well (a fresh store cannot be told from
    // one that lost its data): both waits end a route lease after the start.
    CHECK(c.request("GET", "/doc").status == 200);
    CHECK(tracked().empty());

    // Past the 15 s default (plus a second of Redis's uptime rounding), within the route's lease.
    std::this_thread::sleep_until(started + 17s);
    CHECK(c.request("GET", "/doc").status == 200);
    CHECK(tracked().empty());

    // Past the route's lease: the same read is recorded (the test can see a recording).
    std::this_thread::sleep_until(started + 27s);
    CHECK(c.request("GET", "/doc").status == 200);
    CHECK_FALSE(tracked().empty());
}

// RFC 9110 §13 rules that docs/conformance.md lists and no other test checked: what a hash-mode
// route does with conditional reads whose tags or dates only the proxy could judge (If-Range,
// If-Modified-Since, If-Match on GET), and the 428 of RFC 6585 §3 not being cacheable. Real
// redis-server, in-process proxy, fake origin (its request log shows what was forwarded).
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace ifm::test;
using namespace std::chrono_literals;

// RFC 9110 §13.1.5 / §14.2: a server may ignore Range. On a hash route the If-Range tag is the
// proxy's, which the origin cannot compare, so the proxy drops Range and the client gets the
// whole representation (200), never a range of a representation it did not validate. Without
// If-Range, Range reaches the origin unchanged. If-Modified-Since and If-Match on a GET are not
// evaluated on a hash route and do not reach the origin (docs/conformance.md, deviations).
// Fails if Range or any conditional is forwarded next to the proxy's tag.
TEST_CASE("hash route GET: If-Range drops Range; the proxy's conditionals never reach the origin") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis_store(c, redis.url()); });
    auto& origin = px.origin();
    origin.put("/r", "0123456789");
    http_client c(px.port());
    auto tag = c.request("GET", "/r").header("ETag");
    REQUIRE(!tag.empty());

    origin.clear();
    auto ranged = c.request("GET", "/r", {{"Range", "bytes=0-3"}, {"If-Range", tag}});
    CHECK(ranged.status == 200);
    CHECK(ranged.body == "0123456789");
    REQUIRE(origin.requests().size() == 1);
    CHECK_FALSE(origin.requests()[0].has_header("range"));
    CHECK_FALSE(origin.requests()[0].has_header("if-range"));

    origin.clear();
    c.request("GET", "/r", {{"Range", "bytes=0-3"}});
    REQUIRE(origin.requests().size() == 1);
    CHECK(origin.requests()[0].header("range") == "bytes=0-3");

    origin.clear();
    auto ims = c.request("GET", "/r", {{"If-Modified-Since", "Fri, 31 Dec 2100 23:59:59 GMT"}});
    CHECK(ims.status == 200);   // not evaluated: the full representation, with the proxy's tag
    CHECK(ims.header("ETag") == tag);
    auto im = c.request("GET", "/r", {{"If-Match", "\"not-it\""}});
    CHECK(im.status == 200);    // ignored on a read (deviation: RFC 9110 §13.1.1 says 412)
    REQUIRE(origin.requests().size() == 2);
    for (const auto& r : origin.requests()) {
        CHECK_FALSE(r.has_header("if-modified-since"));
        CHECK_FALSE(r.has_header("if-match"));
    }
}

// RFC 6585 §3: "Responses using this status code MUST NOT be stored by a cache", and they
// SHOULD explain how to resubmit. Fails if the 428 lacks Cache-Control: no-store or the detail.
TEST_CASE("428 Precondition Required is not cacheable and says what is missing") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis_store(c, redis.url());
        c.routes[1].require_precondition = true;
    });
    http_client c(px.port());
    auto r = c.request("PUT", "/a", {}, "x");
    CHECK(r.status == 428);
    CHECK(r.header("Cache-Control") == "no-store");
    CHECK(r.header("Content-Type") == "application/problem+json");
    CHECK(r.body.find("If-Match or If-None-Match") != std::string::npos);
    CHECK(px.origin().count("PUT") == 0);
}

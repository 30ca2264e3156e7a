// Write paths of the lease protocol (SPEC §3, §5) that no other test reaches, end to end against
// a real redis-server: the lease-too-short refusal, a failed revalidation, revalidate_on_mismatch,
// If-Unmodified-Since, and If-None-Match lists on writes. The origin is the in-process fake
// origin (its request log shows what was forwarded).
#include "proxy/hasher.hpp"
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <ctime>
#include <string>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

// Independent of the proxy's own date parser: this is the oracle for its If-Unmodified-Since rule.
std::time_t parse_http_date(const std::string& s) {
    std::tm tm{};
    const char* end = strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    REQUIRE_MESSAGE(end != nullptr, s);
    return timegm(&tm);
}

}  // namespace

// (i) The origin cannot check a fencing token, so a write is forwarded only while more than
// request_timeout + 1 s of its lease remain. With a legal configuration (write_lease 3.1 s >
// request_timeout 2 s + 1 s, checked by the real binary's loader) a revalidation GET that takes
// 1 s leaves about 2.1 s: the write must be refused with 503 lease-too-short and never reach
// the origin. Fails if the proxy forwards it anyway (a PUT at the origin, a 2xx).
TEST_CASE("lease-too-short: a slow revalidation eats the lease, the write is refused and never forwarded") {
    redis_server redis;
    fake_origin origin;
    origin.put("/lease", "v1");
    auto port = free_port();
    proxy_process px(
        "listen: 127.0.0.1:" + std::to_string(port) + "\n"
        "workers: 1\n"
        "store: { kind: redis, url: \"" + redis.url() + "\", timeout: 500ms, young_server_wait: false }\n"
        "upstreams:\n"
        "  origin: { address: 127.0.0.1:" + std::to_string(origin.port()) + ", connect_timeout: 500ms, request_timeout: 2s }\n"
        "routes:\n"
        "  - match: { path_prefix: / }\n"
        "    upstream: origin\n"
        "    etag: hash\n"
        "    write_lease: 3100ms\n"
        "log: { level: warn, access_log: false }\n",
        port);
    http_client c(port);
    // The process accepts before its store connection is up.
    REQUIRE(eventually([&] { return c.request("PUT", "/warm-up", {{"If-None-Match", "*"}}, "w").status == 201; }, 5s));
    origin.clear();

    origin.set_kv_delay(1000ms);   // every store answer of the origin, the revalidation GET included
    auto r = c.request("PUT", "/lease", {{"If-Match", "*"}}, "v2");
    origin.set_kv_delay(0ms);
    CHECK(r.status == 503);
    CHECK(r.header("Content-Type") == "application/problem+json");
    CHECK(problem_type(r).ends_with("lease-too-short"));
    CHECK(r.has_header("Retry-After"));
    CHECK(origin.count("GET", "/lease") == 1);   // it did revalidate
    CHECK(origin.count("PUT", "/lease") == 0);   // and never forwarded the write
    CHECK(origin.get("/lease") == "v1");

    // Control: the same write with a quick origin passes, so the refusal came from the eaten
    // lease, and the refused write released it (no 409 write-in-progress).
    auto ok = c.request("PUT", "/lease", {{"If-Match", "*"}}, "v2");
    CHECK(ok.status == 204);
    CHECK(origin.get("/lease") == "v2");
}

// (ii) A revalidation the origin answers with 500 cannot say whether the precondition holds: 502
// revalidation-failed, nothing forwarded, and the lease is released at once (a following write is
// not refused as busy although the lease would still run for 5 s).
TEST_CASE("revalidation-failed: the origin answers the revalidation with 500 -> 502, not forwarded, lease released") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis_store(c, redis.url()); });
    px.origin().put("/rv", "v1");
    http_client c(px.port());

    // The proxy's revalidation GET carries the client's other headers: x-fake-status steers it.
    auto r = c.request("PUT", "/rv", {{"If-Match", "*"}, {"x-fake-status", "500"}}, "v2");
    CHECK(r.status == 502);
    CHECK(r.header("Content-Type") == "application/problem+json");
    CHECK(problem_type(r).ends_with("revalidation-failed"));
    CHECK(px.origin().count("GET", "/rv") == 1);
    CHECK(px.origin().count("PUT", "/rv") == 0);
    CHECK(px.origin().get("/rv") == "v1");

    auto next = c.request("PUT", "/rv", {{"If-Match", "*"}}, "v3");
    CHECK(next.status == 204);
    CHECK(next.body.find("write-in-progress") == std::string::npos);
    CHECK(px.origin().get("/rv") == "v3");
    // Counted as judged and refused for want of an answer, not as passed (the first request's
    // counters are final once the session has read the second one).
    const auto& outcomes = px.server().stats().precondition_outcomes;
    CHECK(outcomes[static_cast<std::size_t>(ifm::proxy::outcome::aborted)].load() == 1);
}

// (iii) A write straight to the origin (behind the proxy's back) leaves the tracked validator
// stale. A client that read the new version straight from the origin writes with its current
// validator: with revalidate_on_mismatch the proxy asks the origin before rejecting and lets the
// write through; without, the tracked validator wins (409 naming it). In both, a tag that is
// current nowhere is rejected: revalidation is not a way around the precondition.
TEST_CASE("revalidate_on_mismatch: a client's tag that is current at the origin passes only with revalidation") {
    using ifm::config::etag_mode;
    for (auto mode : {etag_mode::origin, etag_mode::hash}) {
        for (bool revalidate : {true, false}) {
            CAPTURE(static_cast<int>(mode));
            CAPTURE(revalidate);
            redis_server redis;
            proxy_fixture px([&](ifm::config::config& c) {
                use_redis_store(c, redis.url());
                c.routes[1].etag = mode;
                c.routes[1].revalidate_on_mismatch = revalidate;
            });
            auto& origin = px.origin();
            if (mode == etag_mode::origin) origin.set_etag_style(etag_style::strong);
            origin.put("/m", "v1");
            http_client c(px.port()), direct(origin.port());

            auto tracked = c.request("GET", "/m").header("ETag");
            REQUIRE(!tracked.empty());
            origin.put("/m", "v2-out-of-band");
            // The client reads straight from the origin: in origin mode it gets the origin's
            // ETag; in hash mode it computes the tag the proxy would give that representation
            // (as a client of another deployment of the proxy would see it).
            auto g = direct.request("GET", "/m");
            REQUIRE(g.body == "v2-out-of-band");
            auto current = mode == etag_mode::origin ? g.header("ETag") : ifm::proxy::hash_etag(g.body);
            REQUIRE(!current.empty());
            REQUIRE(current != tracked);

            origin.clear();
            auto w = c.request("PUT", "/m", {{"If-Match", current}}, "v3");
            if (revalidate) {
                CHECK(w.status == 204);
                CHECK(origin.get("/m") == "v3");
                // It asked the origin first (HEAD in origin mode, GET in hash mode).
                CHECK(origin.count("HEAD", "/m") + origin.count("GET", "/m") >= 1);
                CHECK(origin.count("PUT", "/m") == 1);
            } else {
                CHECK(w.status == 409);
                CHECK(problem_type(w).ends_with("stale-precondition"));
                CHECK(w.header("ETag") == tracked);
                CHECK(origin.get("/m") == "v2-out-of-band");
                CHECK(origin.requests().empty());   // judged on the tracked validator alone
            }

            // A tag current nowhere: rejected either way, naming what the proxy knows (with
            // revalidation, what the origin says now).
            auto now = mode == etag_mode::origin ? origin.etag("/m") : ifm::proxy::hash_etag(*origin.get("/m"));
            auto nowhere = c.request("PUT", "/m", {{"If-Match", "\"current-nowhere\""}}, "x");
            CHECK(nowhere.status == 409);
            CHECK(problem_type(nowhere).ends_with("stale-precondition"));
            CHECK(nowhere.header("ETag") == (revalidate ? now : tracked));
            CHECK(origin.get("/m") == (revalidate ? "v3" : "v2-out-of-band"));
        }
    }
}

// (iv) If-Unmodified-Since with no If-Match, judged by the proxy against the Last-Modified it
// tracks (the fake origin ignores the header): a date one second before Last-Modified -> 409 and
// not forwarded; the same date, or a later one -> forwarded. Once via the validator a GET
// recorded, once via the revalidation after a write made it unknown. With If-Match present the
// date is ignored (§13.2.2).
TEST_CASE("If-Unmodified-Since end to end: older -> 409, equal or newer -> forwarded") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis_store(c, redis.url()); });
    auto& origin = px.origin();
    origin.set_last_modified(true);
    origin.put("/ius", "v1");
    http_client c(px.port()), direct(origin.port());

    auto g = c.request("GET", "/ius");
    REQUIRE(g.status == 200);
    auto lm = g.header("Last-Modified");
    REQUIRE(!lm.empty());
    auto t = parse_http_date(lm);

    auto older = c.request("PUT", "/ius", {{"If-Unmodified-Since", http_date(t - 1)}}, "stale");
    CHECK(older.status == 409);
    CHECK(problem_type(older).ends_with("stale-precondition"));
    CHECK(origin.get("/ius") == "v1");
    CHECK(origin.count("PUT", "/ius") == 0);

    CHECK(c.request("PUT", "/ius", {{"If-Unmodified-Since", lm}}, "v2").status == 204);
    CHECK(origin.get("/ius") == "v2");
    CHECK_FALSE(origin.requests().back().has_header("if-unmodified-since"));  // hash mode: ours

    // The write made the state unknown: these are judged after a revalidation.
    auto t2 = parse_http_date(direct.request("GET", "/ius").header("Last-Modified"));
    CHECK(t2 >= t);
    auto puts = origin.count("PUT", "/ius");
    auto older2 = c.request("PUT", "/ius", {{"If-Unmodified-Since", http_date(t2 - 1)}}, "stale");
    CHECK(older2.status == 409);
    CHECK(origin.get("/ius") == "v2");
    CHECK(origin.count("PUT", "/ius") == puts);
    CHECK(c.request("PUT", "/ius", {{"If-Unmodified-Since", http_date(t2 + 1)}}, "v3").status == 204);
    CHECK(origin.get("/ius") == "v3");

    // If-Match present: If-Unmodified-Since is not evaluated, even a date long past.
    auto tag = c.request("GET", "/ius").header("ETag");
    CHECK(c.request("PUT", "/ius", {{"If-Match", tag}, {"If-Unmodified-Since", http_date(86400)}}, "v4").status == 204);
    CHECK(origin.get("/ius") == "v4");
}

// (v) If-None-Match with a list of tags on a write fails when a member matches the current
// validator weakly (W/ ignored), whether the validator was recorded by a GET or learnt by a
// revalidation; a list with no matching member is forwarded (without our tags).
TEST_CASE("If-None-Match list on a write: a weakly matching tag -> 409, none matching -> forwarded") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis_store(c, redis.url()); });
    auto& origin = px.origin();
    origin.put("/n", "v1");
    http_client c(px.port());

    auto tag = c.request("GET", "/n").header("ETag");
    REQUIRE(tag.size() == 24);

    auto weak = c.request("PUT", "/n", {{"If-None-Match", "\"a\", W/" + tag}}, "x");
    CHECK(weak.status == 409);
    CHECK(weak.header("Content-Type") == "application/problem+json");
    CHECK(weak.header("ETag") == tag);
    auto strong = c.request("PUT", "/n", {{"If-None-Match", "\"a\", " + tag + ", \"b\""}}, "x");
    CHECK(strong.status == 409);
    CHECK(origin.get("/n") == "v1");
    CHECK(origin.count("PUT", "/n") == 0);

    CHECK(c.request("PUT", "/n", {{"If-None-Match", "\"a\", W/\"b\""}}, "v2").status == 204);
    CHECK(origin.get("/n") == "v2");
    CHECK_FALSE(origin.requests().back().has_header("if-none-match"));

    // Unknown after the write: the revalidation's hash of "v2" must be matched weakly too.
    auto v2 = ifm::proxy::hash_etag("v2");
    auto after = c.request("PUT", "/n", {{"If-None-Match", "W/" + v2 + ", \"c\""}}, "y");
    CHECK(after.status == 409);
    CHECK(after.header("ETag") == v2);
    CHECK(origin.get("/n") == "v2");
    CHECK(c.request("PUT", "/n", {{"If-None-Match", "W/" + tag}}, "v3").status == 204);   // v1's tag: not current
    CHECK(origin.get("/n") == "v3");
}

// Lease squatting (issue 15): a client sends the header and 1 byte of a 100-byte conditional PUT
// and stalls. Were the lease taken before the body is read, it would hold /sq for the whole
// write lease (5 s here) and a well-formed write would get 409 write-in-progress. The body is
// read first (limits.max_prebuffered_body), so the second write goes through at once; the
// squatter, once it finishes its body, is judged against the new state: 409.
TEST_CASE("lease squatting: a stalled 1-byte upload does not hold the resource's write lease") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis_store(c, redis.url()); });
    px.origin().put("/sq", "v1");
    http_client c(px.port());
    auto e1 = c.request("GET", "/sq").header("ETag");
    REQUIRE_FALSE(e1.empty());

    // The same Host as http_client's: the same resource key.
    raw_connection squatter(px.port());
    squatter.send("PUT /sq HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(px.port()) + "\r\nIf-Match: " + e1 + "\r\nContent-Length: 100\r\n\r\nx");
    std::this_thread::sleep_for(300ms);   // let the proxy act on its header (the old code: the lease)

    auto ok = c.request("PUT", "/sq", {{"If-Match", e1}}, std::string(100, 'b'));
    CHECK(ok.status / 100 == 2);
    CHECK(ok.body.find("write-in-progress") == std::string::npos);
    CHECK(px.origin().get("/sq") == std::string(100, 'b'));

    squatter.send(std::string(99, 'x'));
    auto late = squatter.read_some(5s);
    CHECK(late.starts_with("HTTP/1.1 409"));
    CHECK(px.origin().count("PUT", "/sq") == 1);
    CHECK(px.origin().get("/sq") == std::string(100, 'b'));
}

// Bodies read before the lease count in limits.max_buffered_bytes: stalled uploads cannot grow
// the process. With a 100 KB budget, one stalled 60 KB upload leaves no room for another: 503
// memory-budget-exhausted (problem+json, Retry-After), nothing forwarded; once the first is
// over, the budget is free again.
TEST_CASE("prebuffered write bodies over limits.max_buffered_bytes: 503 memory-budget-exhausted") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis_store(c, redis.url());
        c.limits.max_buffered_bytes = 100000;
    });
    px.origin().put("/b1", "v1");
    px.origin().put("/b2", "v1");
    raw_connection first(px.port());
    first.send("PUT /b1 HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(px.port()) + "\r\nIf-Match: *\r\nContent-Length: 60000\r\n\r\nx");
    std::this_thread::sleep_for(300ms);   // let the proxy reserve its body

    http_client c(px.port());
    auto refused = c.request("PUT", "/b2", {{"If-Match", "*"}}, std::string(60000, 'b'));
    CHECK(refused.status == 503);
    CHECK(refused.header("Content-Type") == "application/problem+json");
    CHECK(problem_type(refused).ends_with("memory-budget-exhausted"));
    CHECK_FALSE(refused.header("Retry-After").empty());
    CHECK(px.origin().count("PUT", "/b2") == 0);

    first.send(std::string(59999, 'x'));
    CHECK(first.read_some(5s).starts_with("HTTP/1.1 204"));
    http_client again(px.port());
    CHECK(again.request("PUT", "/b2", {{"If-Match", "*"}}, std::string(60000, 'b')).status == 204);
    CHECK(px.origin().get("/b2") == std::string(60000, 'b'));
}

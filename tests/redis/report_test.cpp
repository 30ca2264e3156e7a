// Report-only rollout (issue 14 part 2, SPEC §9, README "Report-only rollout"): on a route with
// `enforce: report` every write is judged as with `on`, what `on` would refuse is logged and
// counted as would_reject_*, and forwarded all the same; SIGHUP to `on` refuses from then on, and
// the validators the proxy tracked in report mode are right (a write with a tag that a reported
// write made stale is refused). Real redis-server, in-process fake origin, the real binary.
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <future>
#include <string>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

std::string config(std::uint16_t port, std::uint16_t admin, const redis_server& redis, const fake_origin& origin,
                   const std::string& enforce) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "admin_listen: 127.0.0.1:" + std::to_string(admin) + "\n"
           "workers: 1\n"
           "store: { kind: redis, url: \"" + redis.url() + "\", timeout: 500ms, young_server_wait: false }\n"
           "upstreams:\n"
           "  origin: { address: 127.0.0.1:" + std::to_string(origin.port()) + " }\n"
           "routes:\n"
           "  - name: docs\n"
           "    match: { path_prefix: / }\n"
           "    upstream: origin\n"
           "    etag: hash\n"
           "    require_precondition: true\n"
           "    enforce: " + enforce + "\n"
           "log: { level: info, json: true, access_log: true }\n";
}

}  // namespace

// Fails if report mode refuses (409/428), does not count or log would_reject_*, if the SIGHUP
// to `on` does not take, or if the reported write left the old tag recorded as current (then
// the last write with it would be accepted: a lost update once enforcement is on).
TEST_CASE("enforce: report forwards and counts stale and missing preconditions; SIGHUP to on refuses") {
    redis_server redis;
    fake_origin origin;
    origin.put("/doc", "v1");
    auto port = free_port(), admin = free_port();
    proxy_process px(config(port, admin, redis, origin, "report"), port);
    REQUIRE(wait_for_port(admin, 5s));
    http_client c(port);
    REQUIRE(eventually([&] { return c.request("PUT", "/warm-up", {{"If-None-Match", "*"}}, "w").status == 201; }, 5s));

    // No precondition on a require_precondition route: `on` answers 428; report forwards it.
    auto missing = c.request("PUT", "/doc", {}, "v2");
    CHECK(missing.status == 204);
    CHECK(origin.count("PUT", "/doc") == 1);
    CHECK(outcome_count(admin, "would_reject_missing") == 1);

    auto t1 = c.request("GET", "/doc").header("etag");
    REQUIRE(!t1.empty());
    // A stale write: `on` answers 409; report forwards it.
    auto stale = c.request("PUT", "/doc", {{"If-Match", "\"not-the-current-tag\""}}, "v3");
    CHECK(stale.status == 204);
    CHECK(origin.count("PUT", "/doc") == 2);
    CHECK(origin.get("/doc") == "v3");   // read behind the proxy's back: no GET re-records a tag
    CHECK(outcome_count(admin, "would_reject_stale") == 1);
    CHECK(outcome_count(admin, "rejected_stale") == 0);
    // The access log (JSON) reaches the process's output when spdlog flushes it.
    auto logged = [&](const std::string& o) {
        return eventually([&] { return px.log().find("\"ifmatch.outcome\":\"" + o + "\"") != std::string::npos; }, 5s);
    };
    CHECK(logged("would_reject_stale"));
    CHECK(logged("would_reject_missing"));

    // t1 was current before the reported stale write; v3 is current now. Switch enforcement on.
    std::ofstream(px.config_path(), std::ios::trunc) << config(port, admin, redis, origin, "on");
    REQUIRE(::kill(px.pid(), SIGHUP) == 0);
    REQUIRE(eventually([&] { return px.log().find("configuration reloaded") != std::string::npos; }, 5s));

    auto refused = c.request("PUT", "/doc", {{"If-Match", t1}}, "lost update");
    CHECK(refused.status == 409);
    CHECK(origin.count("PUT", "/doc") == 2);
    CHECK(c.request("PUT", "/doc", {}, "v4").status == 428);
    CHECK(outcome_count(admin, "rejected_stale") == 1);

    // And no false reject: the tag just read is accepted.
    auto t3 = c.request("GET", "/doc").header("etag");
    CHECK(c.request("PUT", "/doc", {{"If-Match", t3}}, "v4").status == 204);
    CHECK(c.request("GET", "/doc").body == "v4");
}

// A write arriving while another holds the resource's lease: `on` (on_busy: reject) answers 409
// write-in-progress; report waits for the lease, forwards it after the first, and counts
// would_reject_busy. Fails if it is refused, forwarded while the first still holds the lease
// (the origin would see it before the first one's answer), or not counted.
TEST_CASE("enforce: report forwards a write that arrives while another is in progress, after it") {
    redis_server redis;
    fake_origin origin;
    origin.put("/busy", "v1");
    auto port = free_port(), admin = free_port();
    proxy_process px(config(port, admin, redis, origin, "report"), port);
    REQUIRE(wait_for_port(admin, 5s));
    http_client c(port);
    REQUIRE(eventually([&] { return c.request("PUT", "/warm-up", {{"If-None-Match", "*"}}, "w").status == 201; }, 5s));
    auto t1 = c.request("GET", "/busy").header("etag");
    REQUIRE(!t1.empty());
    origin.clear();

    auto first = std::async(std::launch::async, [&] {
        http_client s(port);
        return s.request("PUT", "/busy", {{"If-Match", t1}, {"x-fake-delay-ms", "500"}, {"x-fake-status", "204"}}, "v2")
            .status;
    });
    REQUIRE(origin.wait_for_requests(1, 5s));   // the first write is at the origin, under its lease

    auto second = c.request("PUT", "/busy", {{"If-Match", t1}}, "v3");
    CHECK(second.status == 204);
    CHECK(first.get() == 204);
    auto seen = origin.requests();
    REQUIRE(seen.size() == 2);
    CHECK(seen[1].body == "v3");
    CHECK(outcome_count(admin, "would_reject_busy") == 1);
    CHECK(outcome_count(admin, "rejected_busy") == 0);
    CHECK(c.request("GET", "/busy").body == "v3");
}

// enforce: off judges nothing (no 409, no 428, no outcome counted) but still forwards every write
// under the resource's lease and makes its validators unknown (SPEC §5.5), so that switching to
// `on` starts from a right state. Fails if off refuses, counts a judgement, or leaves t1 current.
TEST_CASE("enforce: off forwards without judging, and tracking stays right for a switch to on") {
    redis_server redis;
    fake_origin origin;
    origin.put("/off", "v1");
    auto port = free_port(), admin = free_port();
    proxy_process px(config(port, admin, redis, origin, "off"), port);
    REQUIRE(wait_for_port(admin, 5s));
    http_client c(port);
    REQUIRE(judges_writes(port));
    REQUIRE(eventually([&] { return c.request("GET", "/off").status == 200; }, 5s));
    auto t1 = c.request("GET", "/off").header("etag");
    REQUIRE(!t1.empty());

    CHECK(c.request("PUT", "/off", {{"If-Match", "\"not-the-current-tag\""}}, "v2").status == 204);
    CHECK(c.request("PUT", "/off", {}, "v3").status == 204);
    CHECK(origin.count("PUT", "/off") == 2);
    CHECK(origin.get("/off") == "v3");
    for (auto o : {"passed", "rejected_stale", "missing", "would_reject_stale", "would_reject_missing"}) {
        CAPTURE(o);
        CHECK(outcome_count(admin, o) == 0);
    }

    std::ofstream(px.config_path(), std::ios::trunc) << config(port, admin, redis, origin, "on");
    REQUIRE(::kill(px.pid(), SIGHUP) == 0);
    REQUIRE(eventually([&] { return px.log().find("configuration reloaded") != std::string::npos; }, 5s));
    CHECK(c.request("PUT", "/off", {{"If-Match", t1}}, "lost update").status == 409);
    CHECK(origin.count("PUT", "/off") == 2);
}

// Two proxies in report mode on one Redis: a write judged stale on one because of a write
// through the other is forwarded and counted there; once both are switched to `on`, the tag
// both writes made stale is refused by either. Fails if report refuses, does not see the other
// proxy's write (no count), or if its forward left a tag recorded that `on` then accepts.
TEST_CASE("enforce: report across two proxies sharing Redis, then on by SIGHUP on both") {
    redis_server redis;
    fake_origin origin;
    origin.put("/shared", "v1");
    auto pa = free_port(), aa = free_port(), pb = free_port(), ab = free_port();
    proxy_process a(config(pa, aa, redis, origin, "report"), pa), b(config(pb, ab, redis, origin, "report"), pb);
    REQUIRE(judges_writes(pa));
    REQUIRE(judges_writes(pb));
    http_client ca(pa), cb(pb);
    auto t1 = ca.request("GET", "/shared").header("etag");
    REQUIRE(!t1.empty());
    auto judged_b = [&] { return outcome_count(ab, "passed") + outcome_count(ab, "revalidated"); };
    auto before = judged_b();   // the warm-up's
    CHECK(cb.request("PUT", "/shared", {{"If-Match", t1}}, "v2 by b").status == 204);
    CHECK(judged_b() == before + 1);
    // A's client still holds t1: stale since B's write. Report forwards it and counts it on A.
    CHECK(ca.request("PUT", "/shared", {{"If-Match", t1}}, "v3 by a").status == 204);
    CHECK(outcome_count(aa, "would_reject_stale") == 1);
    CHECK(origin.get("/shared") == "v3 by a");
    CHECK(origin.count("PUT", "/shared") == 2);

    for (auto* px : {&a, &b}) {
        auto port = px == &a ? pa : pb, admin = px == &a ? aa : ab;
        std::ofstream(px->config_path(), std::ios::trunc) << config(port, admin, redis, origin, "on");
        REQUIRE(::kill(px->pid(), SIGHUP) == 0);
        REQUIRE(eventually([&] { return px->log().find("configuration reloaded") != std::string::npos; }, 5s));
    }
    CHECK(cb.request("PUT", "/shared", {{"If-Match", t1}}, "lost update").status == 409);
    CHECK(ca.request("PUT", "/shared", {{"If-Match", t1}}, "lost update").status == 409);
    CHECK(origin.count("PUT", "/shared") == 2);
    auto t3 = cb.request("GET", "/shared").header("etag");
    CHECK(ca.request("PUT", "/shared", {{"If-Match", t3}}, "v4").status == 204);
}

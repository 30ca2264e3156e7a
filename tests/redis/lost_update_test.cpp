// I1 under real concurrency: read–modify–write increments of one counter by many clients through
// two proxy processes sharing one Redis, in front of nginx WebDAV (which ignores If-Match on PUT).
// The workload lives in tests/support/workload.hpp (the chaos test runs it too). Here every
// document is the zero-padded counter alone, so every write has the same size and nginx's
// "mtime-size" ETag stays the same for all the writes of one second: the origin's own validator
// cannot protect them, only the proxy's `hash` validator can. Then the deterministic version of
// the same trap: one stale same-size write in the same second, through `etag: origin` (a lost
// update) and through `etag: hash` (409).
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

constexpr int clients = 8;
constexpr int writes_per_client = 15;

workload_options fixed_size_workload() {
    workload_options o;
    o.clients = clients;
    o.writes_per_client = writes_per_client;
    o.fixed_size = true;
    return o;
}

void put_initial_counter(const nginx_webdav& nginx) {
    http_client direct(nginx.port());
    REQUIRE(direct.request("PUT", "/counter.txt", {}, format_counter_doc({})).status / 100 == 2);
}

// The final document as nginx serves it: the counter alone, 10 bytes, so nginx's ETag ends in
// "-a" (hex size) like that of every write before it.
void check_fixed_size_at_origin(const nginx_webdav& nginx) {
    http_client direct(nginx.port());
    auto g = direct.request("GET", "/counter.txt");
    REQUIRE(g.status == 200);
    CHECK(g.body.size() == 10);
    CHECK(g.header("ETag").ends_with("-a\""));
}

}  // namespace

// Proves I1 through two proxy instances when the origin's ETag does not change on a write:
// fails if any two accepted writes were based on the same read (they wrote the same value), if
// the final counter differs from the number of accepted writes, or if a client cannot finish.
// Three ways to run the judged writes: Lua scripts, the Redis module's commands
// (cache/redis_module), and one proxy of each on the same keys (a user without the module's
// commands falls back to the scripts), as while a fleet's Redis gets the module.
TEST_CASE("lost-update: two proxies, one Redis, nginx WebDAV, same-size writes: counter == accepted writes") {
    bool module = false, mixed = false;
    SUBCASE("Lua scripts") {}
    SUBCASE("the Redis module") { module = true; }
    SUBCASE("one proxy through the module, the other through the scripts") { module = mixed = true; }
    nginx_webdav nginx;
    redis_server redis(0, module ? redis_module_args() : std::vector<std::string>{});
    std::string url_b = redis.url();
    if (mixed) {
        REQUIRE(redis.command({"ACL", "SETUSER", "lua", "on", ">pw", "~*", "+@all", "-ifm.protocol"}) == "OK");
        url_b = "redis://lua:pw@127.0.0.1:" + std::to_string(redis.port()) + "/0";
    }
    put_initial_counter(nginx);

    auto p1 = free_port(), p2 = free_port();
    proxy_process a(workload_proxy_yaml({.port = p1, .origin_port = nginx.port(), .redis_url = redis.url()}), p1);
    proxy_process b(workload_proxy_yaml({.port = p2, .origin_port = nginx.port(), .redis_url = url_b}), p2);
    auto r = run_workload({p1, p2}, fixed_size_workload());
    r.final_doc = read_counter_doc(nginx.port());
    REQUIRE(r.final_doc);
    MESSAGE("accepted " << r.accepted << ", rejected " << r.rejected << ", final " << r.final_doc->value);
    for (const auto& e : r.errors) MESSAGE("client error: " << e);
    CHECK(r.all_finished);
    CHECK(r.accepted == clients * writes_per_client);
    CHECK(r.unknown == 0);
    CHECK(r.hung == 0);
    CHECK(r.final_doc->value == r.accepted);
    auto violations = fixed_size_violations(r);
    for (const auto& v : violations) MESSAGE(v);
    CHECK(violations.empty());
    check_fixed_size_at_origin(nginx);
    // The writes went the way the subcase says: every judged write through the module, some, or none.
    const long long module_acquires = redis.calls("ifm.acquire");
    MESSAGE("acquires through the module: " << module_acquires);
    if (!module) CHECK(module_acquires == 0);
    if (module && !mixed) CHECK(module_acquires >= r.accepted);
    if (mixed) CHECK((module_acquires > 0 && module_acquires < r.accepted + r.rejected));
}

// Proves the workload can detect a lost update: the same same-size traffic straight to nginx
// (every If-Match PUT accepted) ends with a counter below the number of accepted writes.
TEST_CASE("control: the same same-size workload straight to nginx loses updates (the test can fail)") {
    nginx_webdav nginx;
    put_initial_counter(nginx);
    auto r = run_workload({nginx.port()}, fixed_size_workload());
    r.final_doc = read_counter_doc(nginx.port());
    REQUIRE(r.final_doc);
    MESSAGE("accepted " << r.accepted << ", final " << r.final_doc->value);
    CHECK(r.all_finished);
    CHECK(r.accepted == clients * writes_per_client);  // nginx accepts every If-Match PUT
    CHECK(r.final_doc->value < r.accepted);             // ...and so loses updates
    CHECK_FALSE(fixed_size_violations(r).empty());       // which the checker names
    check_fixed_size_at_origin(nginx);
}

namespace {

// Sleeps until just after the next full second of the wall clock (the clock nginx's mtime
// follows), so that what comes next most likely happens within one second.
void sleep_to_second_start() {
    auto next = std::chrono::ceil<std::chrono::seconds>(std::chrono::system_clock::now()) + 20ms;
    std::this_thread::sleep_until(next);
}

struct race_outcome {
    bool same_second = false;   // A's write left nginx's ETag unchanged
    unsigned a_status = 0, b_status = 0;
    std::string final_body;
    std::string b_problem;      // B's response body when the proxy rejected it
};

// Clients A and B both read version "0000" through the proxy; A writes "AAAA" with If-Match;
// B then writes "BBBB" with the same, now stale, If-Match. Same size throughout.
race_outcome same_second_race(const nginx_webdav& nginx, std::uint16_t proxy_port, const std::string& target) {
    race_outcome out;
    http_client direct(nginx.port()), a(proxy_port), b(proxy_port);
    sleep_to_second_start();
    REQUIRE(direct.request("PUT", target, {}, "0000").status == 201);
    auto before = direct.request("GET", target);
    auto ga = a.request("GET", target);
    auto gb = b.request("GET", target);
    REQUIRE(ga.status == 200);
    REQUIRE(gb.status == 200);
    REQUIRE(ga.header("ETag") == gb.header("ETag"));
    REQUIRE(!ga.header("ETag").empty());
    out.a_status = a.request("PUT", target, {{"If-Match", ga.header("ETag")}}, "AAAA").status;
    auto after_a = direct.request("GET", target);
    REQUIRE(after_a.body == "AAAA");
    out.same_second = before.header("ETag") == after_a.header("ETag") &&
                      before.header("Last-Modified") == after_a.header("Last-Modified");
    auto wb = b.request("PUT", target, {{"If-Match", gb.header("ETag")}}, "BBBB");
    out.b_status = wb.status;
    if (wb.header("Content-Type") == "application/problem+json") out.b_problem = wb.body;
    out.final_body = direct.request("GET", target).body;
    return out;
}

}  // namespace

// Why `hash` mode exists, deterministically: nginx's ETag ("mtime-size") does not change on a
// same-size write within one second, so a proxy that trusts it (`etag: origin`) forwards B's
// stale write and A's update is lost; the proxy's own hash of the representation changes, so
// `etag: hash` answers 409. A second boundary between the create and A's write changes nginx's
// ETag and spoils the demonstration: then the attempt is repeated.
TEST_CASE("nginx same-second same-size writes: etag origin loses the update, etag hash rejects it") {
    nginx_webdav nginx;
    redis_server redis;
    auto po = free_port(), ph = free_port();
    proxy_process origin_proxy(
        workload_proxy_yaml({.port = po, .origin_port = nginx.port(), .redis_url = redis.url(), .etag = "origin"}), po);
    proxy_process hash_proxy(
        workload_proxy_yaml({.port = ph, .origin_port = nginx.port(), .redis_url = redis.url(), .etag = "hash"}), ph);

    SUBCASE("etag: origin forwards the stale write (lost update)") {
        bool seen = false;
        for (int attempt = 0; attempt < 5 && !seen; ++attempt) {
            CAPTURE(attempt);
            auto r = same_second_race(nginx, po, "/origin-race-" + std::to_string(attempt) + ".txt");
            CHECK(r.a_status == 204);
            if (!r.same_second) continue;
            seen = true;
            CHECK(r.b_status == 204);            // B's stale If-Match passed...
            CHECK(r.final_body == "BBBB");       // ...and A's update is gone
        }
        CHECK_MESSAGE(seen, "never managed to write twice within one second of nginx's clock");
    }
    SUBCASE("etag: hash rejects the stale write with 409") {
        bool seen = false;
        for (int attempt = 0; attempt < 5 && !seen; ++attempt) {
            CAPTURE(attempt);
            auto r = same_second_race(nginx, ph, "/hash-race-" + std::to_string(attempt) + ".txt");
            CHECK(r.a_status == 204);
            CHECK(r.b_status == 409);            // whether or not the second changed
            CHECK(r.b_problem.find("stale-precondition") != std::string::npos);
            CHECK(r.final_body == "AAAA");       // A's update survives
            seen = r.same_second;
        }
        CHECK_MESSAGE(seen, "never managed to write twice within one second of nginx's clock");
    }
}

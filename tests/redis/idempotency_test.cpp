// Idempotent retries (README "Idempotent retries", SPEC §9) end to end: two proxy processes share
// a real redis-server in front of one fake origin (its request log shows what was forwarded).
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <string>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

std::string config_for(const redis_server& redis, const fake_origin& origin, std::uint16_t port,
                       const std::string& ttl = "1h", std::uint16_t admin = 0) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n" +
           (admin ? "admin_listen: 127.0.0.1:" + std::to_string(admin) + "\n" : std::string()) +
           "workers: 1\n"
           "store: { kind: redis, url: \"" + redis.url() + "\", timeout: 500ms, young_server_wait: false }\n"
           "upstreams:\n"
           "  origin: { address: 127.0.0.1:" + std::to_string(origin.port()) + ", connect_timeout: 500ms, request_timeout: 3s }\n"
           "routes:\n"
           "  - match: { path_prefix: / }\n"
           "    upstream: origin\n"
           "    etag: hash\n"
           "    write_lease: 10s\n"   // a 1.5 s revalidation still leaves request_timeout + margin

           "    idempotency: { enabled: true, ttl: " + ttl + ", max_response_bytes: 1KiB }\n"
           "log: { level: info, json: true, access_log: true }\n";
}

// Two proxies on one Redis and one origin, both ready to judge writes.
struct fleet {
    redis_server redis;
    fake_origin origin;
    std::uint16_t port_a = free_port(), port_b = free_port(), admin_a = free_port(), admin_b = free_port();
    proxy_process a, b;
    explicit fleet(const std::string& ttl = "1h")
        : a(config_for(redis, origin, port_a, ttl, admin_a), port_a),
          b(config_for(redis, origin, port_b, ttl, admin_b), port_b) {
        for (auto port : {port_a, port_b}) REQUIRE(judges_writes(port));
        origin.clear();
    }
    // The proxy's validator of `target`, read through proxy A.
    std::string etag(const std::string& target) {
        http_client c(port_a);
        auto r = c.request("GET", target);
        REQUIRE(r.status == 200);
        return r.header("ETag");
    }
};

// Its Host names the resource http_client's requests name (the key holds the host, not the port).
std::string raw_put(const std::string& target, const std::string& etag, const std::string& key, const std::string& body) {
    return "PUT " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-Match: " + etag + "\r\nIdempotency-Key: " + key +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

// The motivating case: the write is applied, its response is lost (the client closes before
// reading), the retry through the other proxy would get a false 409 (its own write changed the
// validator). With the key it gets the first response replayed, and the origin saw one write.
TEST_CASE("idempotency: a retry after a lost response is replayed by the other proxy, the origin sees one write") {
    fleet f;
    f.origin.put("/doc", "v1");
    auto tag = f.etag("/doc");
    {
        raw_connection lost(f.port_a);
        lost.send(raw_put("/doc", tag, "\"key-1\"", "v2"));
    }   // closed before reading
    REQUIRE(eventually([&] { return f.origin.get("/doc") == std::optional<std::string>("v2"); }, 5s));

    http_client c(f.port_b);
    std::vector<std::pair<std::string, std::string>> retry{{"If-Match", tag}, {"Idempotency-Key", "\"key-1\""}};
    // The first proxy stores the response just after the origin answered: until then, in flight.
    response r;
    REQUIRE(eventually([&] { r = c.request("PUT", "/doc", retry, "v2"); return r.status != 409; }, 5s));
    CHECK(r.status == 204);
    CHECK(r.header("Idempotency-Replayed") == "true");
    CHECK(f.origin.count("PUT", "/doc") == 1);
    // Again, and through the first proxy: still the replay, still one write.
    http_client ca(f.port_a);
    auto again = ca.request("PUT", "/doc", retry, "v2");
    CHECK(again.status == 204);
    CHECK(again.header("Idempotency-Replayed") == "true");
    CHECK(f.origin.count("PUT", "/doc") == 1);
    // Control: without the key the same retry is the false conflict the key avoids.
    auto plain = c.request("PUT", "/doc", {{"If-Match", tag}}, "v2");
    CHECK(plain.status == 409);
    CHECK(problem_type(plain).ends_with("stale-precondition"));
    CHECK(!plain.has_header("Idempotency-Replayed"));
}

TEST_CASE("idempotency: the key reused with another body is refused with 422; a malformed key with 400") {
    fleet f;
    f.origin.put("/doc", "v1");
    auto tag = f.etag("/doc");
    http_client c(f.port_a);
    auto first = c.request("PUT", "/doc", {{"If-Match", tag}, {"Idempotency-Key", "\"key-2\""}}, "v2");
    CHECK(first.status == 204);
    CHECK(!first.has_header("Idempotency-Replayed"));

    http_client cb(f.port_b);
    auto other = cb.request("PUT", "/doc", {{"If-Match", tag}, {"Idempotency-Key", "\"key-2\""}}, "v3");
    CHECK(other.status == 422);
    CHECK(other.header("Content-Type") == "application/problem+json");
    CHECK(problem_type(other).ends_with("idempotency-key-reused"));
    auto other_pre = cb.request("PUT", "/doc", {{"If-Match", "*"}, {"Idempotency-Key", "\"key-2\""}}, "v2");
    CHECK(other_pre.status == 422);
    CHECK(f.origin.count("PUT", "/doc") == 1);
    CHECK(f.origin.get("/doc") == std::optional<std::string>("v2"));

    for (std::string bad : {"key-3", "\"\"", "\"a\"b\""}) {
        auto r = cb.request("PUT", "/doc", {{"If-Match", "*"}, {"Idempotency-Key", bad}}, "v4");
        CHECK_MESSAGE(r.status == 400, bad);
        CHECK(problem_type(r).ends_with("malformed-idempotency-key"));
    }
    CHECK(f.origin.count("PUT", "/doc") == 1);
}

// The first attempt is held at a slow origin; its duplicate through the other proxy is refused
// with 409 (a `type` of its own), neither forwarded nor leased; once the first completes, a
// retry is its replay.
TEST_CASE("idempotency: a duplicate while the first is in flight gets 409 idempotency-key-in-use") {
    fleet f;
    f.origin.put("/doc", "v1");
    std::vector<std::pair<std::string, std::string>> req{{"If-Match", "*"}, {"Idempotency-Key", "\"key-4\""}};
    f.origin.set_kv_delay(1500ms);
    response first;
    std::thread t([&] {
        http_client c(f.port_a);
        first = c.request("PUT", "/doc", req, "v2");
    });
    REQUIRE(f.origin.wait_for_requests(1));
    http_client cb(f.port_b);
    auto dup = cb.request("PUT", "/doc", req, "v2");
    t.join();
    f.origin.set_kv_delay(0ms);
    CHECK(dup.status == 409);
    CHECK(problem_type(dup).ends_with("idempotency-key-in-use"));
    CHECK(dup.has_header("Retry-After"));
    CHECK(first.status == 204);
    CHECK(f.origin.count("PUT", "/doc") == 1);
    auto replay = cb.request("PUT", "/doc", req, "v2");
    CHECK(replay.status == 204);
    CHECK(replay.header("Idempotency-Replayed") == "true");
    CHECK(f.origin.count("PUT", "/doc") == 1);
}

// After `ttl` the key is forgotten: the retry is judged like any write (a false 409 again).
// A first attempt the origin did not apply (4xx) is not stored either: its retry is forwarded.
TEST_CASE("idempotency: after ttl the retry is judged normally; a refused write is not replayed") {
    fleet f("1s");
    f.origin.put("/doc", "v1");
    auto tag = f.etag("/doc");
    http_client c(f.port_a);
    std::vector<std::pair<std::string, std::string>> req{{"If-Match", tag}, {"Idempotency-Key", "\"key-5\""}};
    CHECK(c.request("PUT", "/doc", req, "v2").status == 204);
    CHECK(c.request("PUT", "/doc", req, "v2").header("Idempotency-Replayed") == "true");
    response r;
    REQUIRE(eventually([&] { r = c.request("PUT", "/doc", req, "v2"); return r.status != 204; }, 5s));
    CHECK(r.status == 409);
    CHECK(problem_type(r).ends_with("stale-precondition"));
    CHECK(f.origin.count("PUT", "/doc") == 1);

    // The origin refuses the first attempt (403, not applied): not stored, the retry is forwarded.
    std::vector<std::pair<std::string, std::string>> failing{{"If-Match", "*"}, {"Idempotency-Key", "\"key-6\""},
                                                             {"x-fake-status", "403"}};
    auto refused = c.request("PUT", "/doc", failing, "v3");
    CHECK(refused.status == 403);
    auto retried = c.request("PUT", "/doc", failing, "v3");
    CHECK(retried.status == 403);
    CHECK(!retried.has_header("Idempotency-Replayed"));
    CHECK(f.origin.count("PUT", "/doc") == 3);
}

// The record lives in Redis, not in the proxy: a proxy killed (SIGKILL) and started again still
// replays a completed first attempt, and the origin still sees one write.
TEST_CASE("idempotency: a completed record survives a proxy restart") {
    fleet f;
    f.origin.put("/doc", "v1");
    auto tag = f.etag("/doc");
    std::vector<std::pair<std::string, std::string>> req{{"If-Match", tag}, {"Idempotency-Key", "\"key-7\""}};
    {
        http_client c(f.port_a);
        CHECK(c.request("PUT", "/doc", req, "v2").status == 204);
    }
    f.a.kill();
    f.b.kill();
    proxy_process again(config_for(f.redis, f.origin, f.port_a), f.port_a);
    REQUIRE(judges_writes(f.port_a));
    http_client c(f.port_a);
    auto r = c.request("PUT", "/doc", req, "v2");
    CHECK(r.status == 204);
    CHECK(r.header("Idempotency-Replayed") == "true");
    CHECK(f.origin.count("PUT", "/doc") == 1);
}

// A first attempt whose outcome is unknown (the origin applied it, then answered 502, or the
// connection dropped before any answer) must never be replayed as a success: the retry is not a
// replayed 2xx, whichever proxy it reaches.
TEST_CASE("idempotency: a first attempt whose outcome was unknown is not replayed as success") {
    for (std::string fault : {"x-fake-status", "x-fake-close"}) {
        CAPTURE(fault);
        fleet f;
        f.origin.put("/doc", "v1");
        auto tag = f.etag("/doc");   // known: the PUT goes straight to the origin, no revalidation
        std::string key = "\"key-" + fault + "\"";
        std::vector<std::pair<std::string, std::string>> first{{"If-Match", tag}, {"Idempotency-Key", key},
                                                               {"x-fake-apply", "now"}};
        if (fault == "x-fake-status") first.emplace_back("x-fake-status", "502");
        else first.emplace_back("x-fake-close", "before");
        http_client c(f.port_a);
        auto r1 = c.request("PUT", "/doc", first, "v2");
        CAPTURE(r1.body);
        CHECK(r1.status == 502);
        CHECK(f.origin.get("/doc") == std::optional<std::string>("v2"));   // it was applied
        // (A pooled connection the origin drops is retried once on a fresh one for an idempotent
        // request held whole, RFC 9110 §9.2.2: the reset case may reach the origin twice.)
        CHECK(f.origin.count("PUT", "/doc") >= 1);
        // The retry, through the other proxy: judged as a write (the outcome is unknown, so the
        // lease is still held or the validator unknown), never the replay of a success.
        http_client cb(f.port_b);
        auto r = cb.request("PUT", "/doc", {{"If-Match", tag}, {"Idempotency-Key", key}}, "v2");
        CAPTURE(r.status);
        CAPTURE(r.body);
        CHECK(!r.has_header("Idempotency-Replayed"));
        CHECK(r.status != 204);
    }
}

// Operators see what the key did: the outcomes are counted (ifmatch_precondition_outcomes_total
// and the per-route series) and named in the access log's ifmatch.outcome.
TEST_CASE("idempotency: replays and reused keys appear in the metrics and the access log") {
    fleet f;
    f.origin.put("/doc", "v1");
    auto tag = f.etag("/doc");
    std::vector<std::pair<std::string, std::string>> req{{"If-Match", tag}, {"Idempotency-Key", "\"key-8\""}};
    http_client ca(f.port_a), cb(f.port_b);
    CHECK(ca.request("PUT", "/doc", req, "v2").status == 204);
    CHECK(cb.request("PUT", "/doc", req, "v2").header("Idempotency-Replayed") == "true");
    CHECK(cb.request("PUT", "/doc", req, "v3").status == 422);
    CHECK(outcome_count(f.admin_b, "replayed") == 1);
    CHECK(outcome_count(f.admin_b, "idempotency_mismatch") == 1);
    CHECK(outcome_count(f.admin_a, "replayed") == 0);
    auto logged = [&](const std::string& o) {
        return eventually([&] { return f.b.log().find("\"ifmatch.outcome\":\"" + o + "\"") != std::string::npos; }, 5s);
    };
    CHECK(logged("replayed"));
    CHECK(logged("idempotency_mismatch"));
}

// Issue 11, "The guarantee, proven rather than argued": one end-to-end test per hole a review found
// in the write protocol, against a real redis-server and real origins (the in-process fake origin,
// nginx WebDAV). Each test fails on the code before the fix (77d6c1d): it shows a lost update
// (two writes conditioned on one validator both applied), a false reject, or a write that reached
// the origin unjudged. They speak HTTP only, so they run against any build.
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <future>
#include <string>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

void use_redis(ifm::config::config& c, redis_server& redis) {
    use_redis_store(c, redis.url());
}

// A proxy process in front of `origin_port` with one tracked route (and `extra` YAML for it).
std::string proxy_yaml(std::uint16_t port, std::uint16_t origin_port, const std::string& redis_url,
                       const std::string& routes) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "workers: 1\n"
           "store: { kind: redis, url: \"" + redis_url + "\", timeout: 500ms, young_server_wait: false }\n"
           "upstreams:\n"
           "  origin: { address: 127.0.0.1:" + std::to_string(origin_port) + ", connect_timeout: 500ms, request_timeout: 2s }\n"
           "routes:\n" + routes +
           "log: { level: warn, access_log: false }\n";
}

// One tracked `hash` route for every path (with `extra` YAML lines of its own).
std::string hash_route(const std::string& extra = {}) {
    return "  - match: { path_prefix: / }\n"
           "    upstream: origin\n"
           "    etag: hash\n"
           "    write_lease: 5s\n" + extra;
}

// Waits until a proxy process's store connection is up (it accepts before).
void warm_up(http_client& c) {
    unsigned last = 0;
    std::string body;
    bool up = eventually([&] {
        auto r = c.request("PUT", "/warm-up-" + std::to_string(std::rand()), {{"If-None-Match", "*"}}, "w");
        last = r.status;
        body = r.body;
        return last == 201 || last == 204;
    }, 5s);
    INFO("last warm-up status " << last << ": " << body);
    REQUIRE(up);
}

}  // namespace

// Item 1: two clients got the same bytes under different Accept headers; the route varies on
// Accept. Before, each variant had its own lease, so both stale writes were forwarded.
TEST_CASE("guarantee 1: vary does not split the lease: one of two writes on one tag is refused") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis(c, redis);
        c.routes[1].vary = {"accept"};
    });
    px.origin().put("/doc", "v1");
    http_client a(px.port()), b(px.port());
    auto ta = a.request("GET", "/doc", {{"Accept", "application/json"}}).header("ETag");
    auto tb = b.request("GET", "/doc", {{"Accept", "text/plain"}}).header("ETag");
    REQUIRE_FALSE(ta.empty());
    REQUIRE(ta == tb);   // the same bytes
    auto wa = a.request("PUT", "/doc", {{"Accept", "application/json"}, {"If-Match", ta}}, "from a");
    auto wb = b.request("PUT", "/doc", {{"Accept", "text/plain"}, {"If-Match", tb}}, "from b");
    CHECK(wa.status == 204);
    CHECK(wb.status == 409);
    CHECK(px.origin().count("PUT", "/doc") == 1);
    CHECK(px.origin().get("/doc") == "from a");
}

// Item 2: the shipped sidecar judges only PUT and DELETE, in front of nginx with COPY enabled.
// COPY /b -> /a changed /a behind the tracked validator, and a stale PUT /a overwrote the copy.
TEST_CASE("guarantee 2: a COPY the route does not judge invalidates its Destination") {
    redis_server redis;
    nginx_webdav nginx({.copy_move = true});
    auto port = free_port();
    proxy_process px(proxy_yaml(port, nginx.port(), redis.url(),
                                hash_route("    methods: [PUT, DELETE]\n")),
                     port);
    http_client c(port);
    warm_up(c);
    REQUIRE(c.request("PUT", "/a.txt", {{"If-None-Match", "*"}}, "original a").status == 201);
    REQUIRE(c.request("PUT", "/b.txt", {{"If-None-Match", "*"}}, "b's text").status == 201);
    auto ta = c.request("GET", "/a.txt").header("ETag");
    REQUIRE_FALSE(ta.empty());
    auto copy = c.request("COPY", "/b.txt",
                          {{"Destination", "http://127.0.0.1:" + std::to_string(port) + "/a.txt"}, {"Overwrite", "T"}});
    CHECK(copy.status / 100 == 2);
    auto stale = c.request("PUT", "/a.txt", {{"If-Match", ta}}, "stale overwrite");
    CHECK(stale.status == 409);
    http_client direct(nginx.port());
    CHECK(direct.request("GET", "/a.txt").body == "b's text");
}

// Item 3: a legacy form backend applies the write, then answers 303. Counted as "not applied",
// the old validator stayed current and a second write on it was forwarded.
TEST_CASE("guarantee 3: a 3xx after the write was applied makes the validator unknown") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    px.origin().put("/form", "v1");
    http_client c(px.port());
    auto tag = c.request("GET", "/form").header("ETag");
    auto first = c.request("PUT", "/form",
                           {{"If-Match", tag}, {"x-fake-apply", "now"}, {"x-fake-status", "303"},
                            {"x-fake-header", "Location: /form"}},
                           "first");
    CHECK(first.status == 303);
    REQUIRE(px.origin().get("/form") == "first");
    auto second = c.request("PUT", "/form", {{"If-Match", tag}}, "second");
    CHECK(second.status == 409);
    CHECK(px.origin().get("/form") == "first");
}

// Item 4: 202 Accepted: the backend queues the write and applies it later. Releasing the lease
// let a second write on the same tag revalidate against the old representation and pass.
TEST_CASE("guarantee 4: after a 202 the lease is kept: a second write cannot overtake the queued one") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    px.origin().put("/queued", "v1");
    http_client c(px.port());
    auto tag = c.request("GET", "/queued").header("ETag");
    auto queued = c.request("PUT", "/queued",
                            {{"If-Match", tag}, {"x-fake-apply", "700"}, {"x-fake-status", "202"}}, "queued");
    CHECK(queued.status == 202);
    auto second = c.request("PUT", "/queued", {{"If-Match", tag}}, "overtaking");
    CHECK(second.status == 409);
    CHECK(px.origin().count("PUT", "/queued") == 1);
    std::this_thread::sleep_for(900ms);
    CHECK(px.origin().get("/queued") == "queued");
}

// Item 5: a gateway in front of the app gives up (502) while the app still applies the write.
// Releasing the lease let a second write revalidate, pass, and then be overwritten.
TEST_CASE("guarantee 5: after a 5xx or a reset the lease is kept while the backend may still apply") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    http_client c(px.port());
    for (std::string how : {"502", "reset"}) {
        CAPTURE(how);
        const std::string target = "/slow-" + how;
        px.origin().put(target, "v1");
        auto tag = c.request("GET", target).header("ETag");
        std::vector<std::pair<std::string, std::string>> steer{{"If-Match", tag}, {"x-fake-apply", "600"}};
        if (how == "502") steer.emplace_back("x-fake-status", "502");
        else steer.emplace_back("x-fake-close", "before");
        auto failed = c.request("PUT", target, steer, "late");
        CHECK(failed.status / 100 == 5);
        auto second = c.request("PUT", target, {{"If-Match", tag}}, "overtaking");
        CHECK(second.status == 409);
        std::this_thread::sleep_for(800ms);
        CHECK(px.origin().get(target) == "late");
    }
}

// Item 6: in hash mode a write response carried the origin's own ETag; a client chaining on it
// got a false 409 (and learnt a tag the proxy never tracks).
TEST_CASE("guarantee 6: hash-mode write responses never carry the origin's ETag") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    px.origin().set_etag_style(etag_style::strong);
    px.origin().put("/doc", "v1");
    http_client c(px.port());
    auto tag = c.request("GET", "/doc").header("ETag");
    auto w = c.request("PUT", "/doc", {{"If-Match", tag}}, "v2");
    CHECK(w.status == 204);
    CHECK(w.header("ETag").empty());
}

// Item 7: the key held the route's name. Two config versions in a rolling deploy (or a renamed
// route) gave one resource two keys: a write through one proxy left the other's validator stale.
TEST_CASE("guarantee 7: a renamed route (two config versions in one fleet) shares the resource's key") {
    redis_server redis;
    fake_origin origin;
    origin.put("/doc", "v1");
    auto p1 = free_port(), p2 = free_port();
    auto route = [](const std::string& name) {
        return "  - name: " + name + "\n"
               "    match: { path_prefix: / }\n"
               "    upstream: origin\n"
               "    etag: hash\n"
               "    write_lease: 5s\n";
    };
    proxy_process old_version(proxy_yaml(p1, origin.port(), redis.url(), route("api")), p1);
    proxy_process new_version(proxy_yaml(p2, origin.port(), redis.url(), route("api-v2")), p2);
    http_client a(p1), b(p2);
    warm_up(a);
    warm_up(b);
    auto tag = a.request("GET", "/doc").header("ETag");
    CHECK(b.request("PUT", "/doc", {{"If-Match", tag}}, "through the new version").status == 204);
    CHECK(a.request("PUT", "/doc", {{"If-Match", tag}}, "stale, through the old").status == 409);
    CHECK(origin.get("/doc") == "through the new version");
}

// Item 7, second half: validators expire (bounded memory, bounded staleness).
TEST_CASE("guarantee 7: validators expire in Redis") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    px.origin().put("/doc", "v1");
    http_client c(px.port());
    REQUIRE(c.request("GET", "/doc").status == 200);
    auto keys = redis.command({"KEYS", "ifm:{*"});
    REQUIRE_FALSE(keys.empty());
    auto key = keys.substr(0, keys.find('\n'));
    while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
    auto ttl = std::stoll(redis.command({"PTTL", key}));
    CHECK(ttl > 0);
}

// Item 8: FLUSHALL (or FLUSHDB) keeps Redis's run_id, so the restart check missed it: a write in
// flight lost its lease, and a second write on the same tag revalidated against the pre-write
// representation and was forwarded.
TEST_CASE("guarantee 8: a store flushed under a write in flight forwards nothing until the fleet's leases ended") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis(c, redis);
        c.routes[1].write_lease = 3500ms;
    });
    px.origin().put("/f", "v1");
    http_client c(px.port());
    auto tag = c.request("GET", "/f").header("ETag");
    px.origin().set_kv_delay(1500ms);   // write A reaches a slow origin, which applies it late
    auto port = px.port();
    auto a = std::async(std::launch::async, [port, tag] {
        http_client w(port);
        return w.request("PUT", "/f", {{"If-Match", tag}}, "A").status;
    });
    REQUIRE(eventually([&] { return px.origin().count("PUT", "/f") == 1; }, 2s));
    px.origin().set_kv_delay(0ms);
    CHECK(redis.command({"FLUSHALL"}) == "OK");
    auto b = c.request("PUT", "/f", {{"If-Match", tag}}, "B");
    CHECK(b.status != 204);
    CHECK(px.origin().count("PUT", "/f") == 1);
    CHECK(a.get() == 204);
    CHECK(px.origin().get("/f") == "A");
}

// Item 9: "/x%21" and "/x!" are one file to nginx but were two keys: a write through one
// spelling left the other's validator current.
TEST_CASE("guarantee 9: percent-encoded reserved characters name one resource") {
    redis_server redis;
    nginx_webdav nginx;
    auto port = free_port();
    proxy_process px(proxy_yaml(port, nginx.port(), redis.url(),
                                hash_route()),
                     port);
    http_client c(port);
    warm_up(c);
    REQUIRE(c.request("PUT", "/x!", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto tag = c.request("GET", "/x!").header("ETag");
    CHECK(c.request("PUT", "/x%21", {{"If-Match", tag}}, "v2 via %21").status == 204);
    CHECK(c.request("PUT", "/x!", {{"If-Match", tag}}, "stale via !").status == 409);
    http_client direct(nginx.port());
    CHECK(direct.request("GET", "/x!").body == "v2 via %21");
}

// Item 11: with a tracked /api/ route and an untracked catch-all, "//api/doc.txt" and
// "/api%2Fdoc.txt" reached nginx (which resolves both to /api/doc.txt) without a precondition.
TEST_CASE("guarantee 11: a write cannot skip its route by spelling the path another way") {
    redis_server redis;
    nginx_webdav nginx;
    auto port = free_port();
    proxy_process px(proxy_yaml(port, nginx.port(), redis.url(),
                                "  - match: { path_prefix: /api/ }\n"
                                "    upstream: origin\n"
                                "    etag: hash\n"
                                "    require_precondition: true\n"
                                "    write_lease: 5s\n"
                                "  - match: { path_prefix: / }\n"
                                "    upstream: origin\n"
                                "    track: false\n"),
                     port);
    http_client c(port);
    warm_up(c);
    REQUIRE(c.request("PUT", "/api/doc.txt", {}, "x").status == 428);
    for (std::string target : {"//api/doc.txt", "/api%2Fdoc.txt", "/api/./doc.txt", "/x/../api/doc.txt"}) {
        CAPTURE(target);
        auto r = c.request("PUT", target, {}, "unjudged");
        CHECK(r.status == 400);
        CHECK(problem_type(r).ends_with("ambiguous-target"));
    }
    http_client direct(nginx.port());
    CHECK(direct.request("GET", "/api/doc.txt").status == 404);
}

// Item 12: two virtual hosts behind one origin shared a key: a read on one host re-recorded a
// validator that a stale write on the other host then matched.
TEST_CASE("guarantee 12: the Host is part of the resource") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    px.origin().set_host_aware(true);
    px.origin().put("a.example/doc", "same");
    px.origin().put("b.example/doc", "same");
    http_client c(px.port());
    const std::pair<std::string, std::string> host_a{"Host", "a.example"}, host_b{"Host", "b.example"};
    auto tag = c.request("GET", "/doc", {host_a}).header("ETag");
    CHECK(c.request("PUT", "/doc", {host_a, {"If-Match", tag}}, "new on a").status == 204);
    CHECK(c.request("GET", "/doc", {host_b}).header("ETag") == tag);   // b still serves the old bytes
    CHECK(c.request("PUT", "/doc", {host_a, {"If-Match", tag}}, "stale on a").status == 409);
    CHECK(px.origin().get("a.example/doc") == "new on a");
}

// Item 14: nginx compresses per Accept-Encoding; each coding hashes differently. The gzip and
// the identity client overwrote each other's recorded tag, so a tag just received got a 409.
TEST_CASE("guarantee 14: content codings are variants: a tag just received is accepted whatever the coding") {
    redis_server redis;
    nginx_webdav nginx({.gzip = true});
    auto port = free_port();
    proxy_process px(proxy_yaml(port, nginx.port(), redis.url(),
                                hash_route()),
                     port);
    http_client gz(port), plain(port);
    warm_up(gz);
    const std::string text(400, 'z');
    REQUIRE(gz.request("PUT", "/doc.txt", {{"If-None-Match", "*"}}, text).status == 201);
    auto g = gz.request("GET", "/doc.txt", {{"Accept-Encoding", "gzip"}});
    REQUIRE(g.header("Content-Encoding") == "gzip");
    auto i = plain.request("GET", "/doc.txt", {{"Accept-Encoding", "identity"}});
    REQUIRE(i.header("Content-Encoding").empty());
    REQUIRE(g.header("ETag") != i.header("ETag"));
    // Both tags are current; the first write on either passes, the second is refused.
    CHECK(gz.request("PUT", "/doc.txt", {{"If-Match", g.header("ETag")}}, text + "1").status == 204);
    CHECK(plain.request("PUT", "/doc.txt", {{"If-Match", i.header("ETag")}}, text + "2").status == 409);
}

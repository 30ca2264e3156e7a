// Issue 15's store bounds on a real redis-server, through the proxy and its Lua scripts (the unit
// suite checks them on the memory backend): strangers cannot fill the store. A 404 of a resource
// nobody tracks records nothing, a resource keeps at most max_variants validators, and every key
// the proxy writes expires (validator_ttl for resources, the lease for leases).
#include "cache/store.hpp"
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"
#include "tests/support/redis_topology.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

constexpr auto validator_ttl = 30s;   // at least twice the test routes' 5 s write lease

void use_redis(ifm::config::config& c, redis_server& redis) {
    use_redis_store(c, redis.url());
    c.store.validator_ttl = validator_ttl;
}

std::vector<std::string> keys(redis_server& redis, const std::string& pattern = "*") {
    std::vector<std::string> out;
    for (auto& k : split_lines(redis.command({"KEYS", pattern})))
        if (!k.empty()) out.push_back(k);
    return out;
}

// Resource hashes and leases ("ifm:{…}", "ifm:{…}:l"), not the epoch ("ifm:epoch").
std::vector<std::string> resource_keys(redis_server& redis) {
    return keys(redis, "ifm:{*");
}

long long pttl(redis_server& redis, const std::string& key) {
    return std::stoll(redis.command({"PTTL", key}));
}

std::size_t variant_fields(redis_server& redis, const std::string& hash) {
    auto fields = split_lines(redis.command({"HKEYS", hash}));
    return static_cast<std::size_t>(std::count_if(fields.begin(), fields.end(),
                                                  [](const std::string& f) { return f.starts_with("v:"); }));
}

}  // namespace

TEST_CASE("store fill on Redis: 404s of resources nobody tracks record nothing") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    http_client c(px.port());
    for (int i = 0; i < 200; ++i) {
        auto path = "/missing/" + std::to_string(i);
        REQUIRE(c.request(i % 4 == 3 ? "HEAD" : "GET", path, {}, {}, i % 4 == 3).status == 404);
    }
    CHECK(resource_keys(redis).empty());
    CHECK(keys(redis) == std::vector<std::string>{"ifm:epoch"});   // the data-loss marker, one per Redis

    // The same reads do record a resource that exists (the test can see a recording), and a 404
    // of a resource the store tracks is recorded (absent), not dropped.
    px.origin().put("/doc", "v1");
    REQUIRE(c.request("GET", "/doc").status == 200);
    REQUIRE(resource_keys(redis).size() == 1);
    auto hash = resource_keys(redis).front();
    CHECK(redis.command({"HGET", hash, "s"}) == "p");
    px.origin().erase("/doc");
    REQUIRE(c.request("GET", "/doc").status == 404);
    CHECK(redis.command({"HGET", hash, "s"}) == "a");
    CHECK(resource_keys(redis).size() == 1);
}

TEST_CASE("store fill on Redis: 50 Accept variants of one resource keep at most max_variants validators") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis(c, redis);
        c.routes[1].vary = {"accept"};
    });
    px.origin().put("/v", "v1");
    http_client c(px.port());
    auto first = c.request("GET", "/v");
    REQUIRE(first.status == 200);
    auto tag = first.header("ETag");
    // Each variant a representation of its own (another body, another hash), as an origin that
    // varies on Accept sends.
    for (int i = 0; i < 50; ++i) {
        auto r = c.request("GET", "/v", {{"Accept", "application/x-variant-" + std::to_string(i)},
                                         {"x-fake-body-size", std::to_string(100 + i)},
                                         {"x-fake-header", "Vary: Accept"}});
        REQUIRE(r.status == 200);
        CHECK_FALSE(r.header("ETag").empty());   // served with a validator, recorded or not
    }
    auto res = resource_keys(redis);
    REQUIRE(res.size() == 1);
    CHECK(keys(redis).size() == 2);   // the resource's hash and the epoch
    CHECK(variant_fields(redis, res.front()) == ifm::cache::max_variants);
    CHECK(redis.command({"HGET", res.front(), "o"}) == "1");   // the overflow is remembered
    CHECK(std::stoll(redis.command({"HLEN", res.front()})) <= static_cast<long long>(ifm::cache::max_variants) + 4);

    // The first variant's validator survived the flood: a conditional write on it goes through.
    CHECK(c.request("PUT", "/v", {{"If-Match", tag}}, "v2").status == 204);
    CHECK(px.origin().get("/v") == "v2");
    CHECK(variant_fields(redis, res.front()) <= 1);
}

TEST_CASE("store fill on Redis: every key expires, resources after validator_ttl, leases after the lease") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    const auto ttl_ms = std::chrono::milliseconds(validator_ttl).count();
    auto fresh = [&](long long t) { return t > ttl_ms - 5000 && t <= ttl_ms; };   // set in the last 5 s
    http_client c(px.port());
    px.origin().put("/doc", "v1");

    // A read records the validator with validator_ttl.
    auto tag = c.request("GET", "/doc").header("ETag");
    REQUIRE(resource_keys(redis).size() == 1);
    auto hash = resource_keys(redis).front();
    CHECK(fresh(pttl(redis, hash)));

    // A write (acquire, commit) leaves it at validator_ttl again, and no lease behind.
    CHECK(c.request("PUT", "/doc", {{"If-Match", tag}}, "v2").status == 204);
    CHECK(fresh(pttl(redis, hash)));
    CHECK(keys(redis, "ifm:*:l").empty());

    // A write whose outcome is unknown (5xx) keeps its lease for the settle time, at most the
    // route's write lease (5 s), and the lease key expires by itself.
    tag = c.request("GET", "/doc").header("ETag");
    CHECK(c.request("PUT", "/doc", {{"If-Match", tag}, {"x-fake-status", "503"}}, "v3").status == 503);
    auto leases = keys(redis, "ifm:*:l");
    REQUIRE(leases.size() == 1);
    auto lease_ttl = pttl(redis, leases.front());
    CHECK(lease_ttl > 0);
    CHECK(lease_ttl <= 5000);
    CHECK(fresh(pttl(redis, hash)));

    // Every key but the epoch (one per Redis: it marks data loss, SPEC §5.5) carries a TTL.
    for (const auto& k : keys(redis)) {
        CAPTURE(k);
        if (k == "ifm:epoch") continue;
        auto t = pttl(redis, k);
        CHECK(t > 0);
        CHECK(t <= ttl_ms);
    }
}

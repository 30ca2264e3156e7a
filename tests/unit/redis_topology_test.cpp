// Redis topologies without sockets: CRC16 and hash slots (Redis Cluster specification), the
// redis-sentinel:// and redis-cluster:// URLs in the store and in the config loader.
#include "cache/crc16.hpp"
#include "cache/redis_connection.hpp"
#include "cache/redis_store.hpp"
#include "cache/redis_topology.hpp"
#include "config/config.hpp"

#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

using namespace ifm::cache;

TEST_CASE("crc16: the XMODEM check value and the slots of the Redis documentation") {
    CHECK(crc16("123456789") == 0x31C3);   // the specification's reference value
    CHECK(crc16("") == 0);
    CHECK(hash_slot("somekey") == 11058);  // CLUSTER KEYSLOT examples
    CHECK(hash_slot("foo{hash_tag}") == 2515);
    CHECK(hash_slot("{hash_tag}") == 2515);
    CHECK(hash_slot("foo") == 12182);
    CHECK(hash_slot("bar") == 5061);
}

TEST_CASE("hash tags: the first {…} with something inside") {
    CHECK(hash_tag("{user1000}.following") == "user1000");
    CHECK(hash_slot("{user1000}.following") == hash_slot("{user1000}.followers"));
    CHECK(hash_tag("foo{}{bar}") == "foo{}{bar}");   // empty first tag: the whole key
    CHECK(hash_tag("foo{{bar}}zap") == "{bar");
    CHECK(hash_tag("foo{bar}{zap}") == "bar");
    CHECK(hash_tag("no tag") == "no tag");
    CHECK(hash_tag("open{only") == "open{only");
}

TEST_CASE("hash tags: both keys of a resource share a slot, whatever the resource key holds") {
    for (std::string key : {"route0 /counter.txt", "r /a{b}c", "r /}x{", "r /%7B{}%", "r /{"}) {
        CAPTURE(key);
        auto hash = redis_store::resource_key("ifm", key);
        CHECK(hash_slot(hash) == hash_slot(hash + ":l"));
        // The tag is the whole (escaped) resource key: "ifm:{" + tag + "}".
        CHECK(hash_tag(hash) == std::string_view(hash).substr(5, hash.size() - 6));
    }
    // The escaping is part of the key layout proxies of different versions share in one store.
    CHECK(redis_store::resource_key("ifm", "r /%7B{}%") == "ifm:{r /%257B%7B%7D%25}");
    CHECK(redis_store::resource_key("ifm", "plain /a") == "ifm:{plain /a}");
    CHECK(redis_store::resource_key("ifm", "") == "ifm:{}");
    // Different resources spread over the slots (not one tag for everything).
    CHECK(hash_slot(redis_store::resource_key("ifm", "a")) != hash_slot(redis_store::resource_key("ifm", "b")));
    // The prefix is outside the tag: deployments sharing a cluster put a resource in one slot.
    CHECK(hash_slot(redis_store::resource_key("one", "k")) == hash_slot(redis_store::resource_key("two", "k")));
}

TEST_CASE("store URL: sentinel and cluster lists") {
    auto t = parse_store_url("redis-sentinel://:pw@10.0.0.1,10.0.0.2:26380,[::1]/mymaster/3");
    REQUIRE(t.has_value());
    CHECK(t->mode == redis_mode::sentinel);
    CHECK(t->master_name == "mymaster");
    CHECK(t->endpoint.password == "pw");
    CHECK(t->endpoint.db == 3);
    REQUIRE(t->seeds.size() == 3);
    CHECK(t->seeds[0].host == "10.0.0.1");
    CHECK(t->seeds[0].port == 26379);
    CHECK(t->seeds[1].port == 26380);
    CHECK(t->seeds[2].host == "::1");
    CHECK(t->seeds[2].password.empty());   // sentinels are asked without AUTH
    CHECK(t->describe() == "redis-sentinel://10.0.0.1:26379,10.0.0.2:26380,[::1]:26379/mymaster/3");

    t = parse_store_url("redis-cluster://app:secret@n1:7000,n2");
    REQUIRE(t.has_value());
    CHECK(t->mode == redis_mode::cluster);
    CHECK(t->endpoint.user == "app");
    CHECK(t->endpoint.password == "secret");
    REQUIRE(t->seeds.size() == 2);
    CHECK(t->seeds[1].port == 6379);
    CHECK(t->describe() == "redis-cluster://n1:7000,n2:6379");

    t = parse_store_url("redis://127.0.0.1:6380/2");
    REQUIRE(t.has_value());
    CHECK(t->mode == redis_mode::single);
    CHECK(t->endpoint.port == 6380);

    for (auto bad : {"redis-sentinel://h1,h2", "redis-sentinel://h1/", "redis-sentinel://h1,,h2/m",
                     "redis-cluster://h1,", "redis-cluster://h1/0", "redis-cluster://", "redis-cluster://h:0",
                     "redis-sentinel://h1/m/x"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_store_url(bad).has_value());
    }
}

namespace {

std::string with_url(const std::string& url, const std::string& more = "") {
    return "upstreams:\n  o: { address: 127.0.0.1:3000 }\nroutes:\n  - upstream: o\nstore:\n  kind: redis\n  url: \"" +
           url + "\"\n" + more;
}

std::string first_error(const ifm::config::load_result& r) {
    return r ? std::string() : r.error().at(0).path + ": " + r.error().at(0).message;
}

}  // namespace

TEST_CASE("config: store.url takes the sentinel and cluster schemes; the password moves out") {
    using ifm::config::load_string;
    auto c = load_string(with_url("redis-sentinel://:s3cret@10.0.0.1:26379,10.0.0.2/mymaster"));
    REQUIRE(c.has_value());
    CHECK(c->store.url == "redis-sentinel://10.0.0.1:26379,10.0.0.2/mymaster");
    CHECK(c->store.password == "s3cret");
    CHECK_FALSE(c->store.wait_replicas.has_value());

    c = load_string(with_url("redis-cluster://u:p@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002"));
    REQUIRE(c.has_value());
    CHECK(c->store.url == "redis-cluster://u:@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002");
    // Whatever the loader accepts, the store can parse.
    CHECK(parse_store_url(c->store.url).has_value());

    CHECK(first_error(load_string(with_url("redis-sentinel://h1,h2"))).find("name the master") != std::string::npos);
    CHECK(first_error(load_string(with_url("redis-cluster://h1/1"))).find("database 0 only") != std::string::npos);
    CHECK(first_error(load_string(with_url("redis://h1,h2"))).find("store.url") == 0);
    CHECK(first_error(load_string(with_url("redis-cluster://h1,"))).find("store.url") == 0);
}

TEST_CASE("config: store.wait_replicas and store.wait_timeout") {
    using ifm::config::load_string;
    auto c = load_string(with_url("redis://h", "  wait_replicas: 2\n  wait_timeout: 250ms\n"));
    REQUIRE(c.has_value());
    CHECK(c->store.wait_replicas == 2u);
    CHECK(c->store.wait_timeout == std::chrono::milliseconds(250));
    CHECK(first_error(load_string(with_url("redis://h", "  wait_replicas: 17\n"))).find("store.wait_replicas") == 0);
    CHECK(first_error(load_string(with_url("redis://h", "  wait_timeout: 1s\n"))) ==
          "store.wait_timeout: must be shorter than store.connect_timeout (1s)");
    CHECK(first_error(load_string(with_url("redis://h", "  wait_timeout: 1s\n  connect_timeout: 2s\n"))).empty());
}

TEST_CASE("format_command: the same RESP as hiredis' redisFormatCommandArgv") {
    std::vector<std::string> keys{"ifm:{/a}", "ifm:{/a}:l", ""};
    std::vector<std::string> args{"5000", std::string("bin\0\r\nary", 9), std::string(300, 'x')};
    auto ours = format_command({&keys, &args}, {"EVALSHA", "0123456789abcdef0123456789abcdef01234567", "3"});
    std::vector<std::string> all{"EVALSHA", "0123456789abcdef0123456789abcdef01234567", "3"};
    all.insert(all.end(), keys.begin(), keys.end());
    all.insert(all.end(), args.begin(), args.end());
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    for (const auto& a : all) {
        ptrs.push_back(a.data());
        lens.push_back(a.size());
    }
    char* theirs = nullptr;
    auto n = redisFormatCommandArgv(&theirs, static_cast<int>(all.size()), ptrs.data(), lens.data());
    REQUIRE(n > 0);
    CHECK(ours == std::string(theirs, static_cast<std::size_t>(n)));
    redisFreeCommand(theirs);
    CHECK(format_command({}, {"PING"}) == "*1\r\n$4\r\nPING\r\n");
}

TEST_CASE("resource_key: braces and percent signs escaped wherever they stand, everything else copied") {
    // The escaping as it was written first, one character at a time: the reference.
    auto reference = [](std::string_view prefix, std::string_view key) {
        std::string out(prefix);
        out += ":{";
        for (char c : key) {
            if (c == '{') out += "%7B";
            else if (c == '}') out += "%7D";
            else if (c == '%') out += "%25";
            else out += c;
        }
        return out + "}";
    };
    const std::string_view fixed[] = {"", "{", "}", "%", "/a", "a{b}%", "{{}}%%", "/x%7D:l", "}:l", std::string_view("a\0{b", 4)};
    for (auto k : fixed)
        CHECK(redis_store::resource_key("ifm", k) == reference("ifm", k));
    std::uint32_t seed = 12345;
    const char alphabet[] = "ab/{}%:?=&\0";
    for (int i = 0; i < 2000; ++i) {
        std::string k;
        seed = seed * 1103515245 + 12345;
        auto n = seed % 40;
        for (std::uint32_t j = 0; j < n; ++j) {
            seed = seed * 1103515245 + 12345;
            k += alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        INFO("key: " << k);
        CHECK(redis_store::resource_key("p", k) == reference("p", k));
    }
}

// Least privilege (README, "Redis ACL"): the proxy runs as the documented single-server ACL user
// (the default user switched off) through its write paths; a user without +info still works and
// says so once; a user without script permission gets a clear reason in the log and the 503.
// The Sentinel and Cluster lines, taken from the README as written, run the same write paths
// through a real Sentinel group and a real Cluster (default user off everywhere), and without
// +role, +sentinel|get-master-addr-by-name or +cluster|slots nothing is judged.
// Sentinel authentication: a sentinel with requirepass refuses a proxy without
// store.sentinel_password (503, "refused auth" in the log) and serves one with it.
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/redis_topology.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

// The README's single-server line, verbatim (a test below checks that the README holds it).
const std::string acl_line =
    "ACL SETUSER ifm-proxy on >CHANGE-ME resetkeys ~ifm:* resetchannels -@all +ping +info "
    "+client|setname +select +script|load +evalsha +wait +get +set +del +exists +pexpire +pttl "
    "+time +hget +hmget +hgetall +hset +hdel +hexists +hkeys";

std::vector<std::string> words(const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

// `acl_line` without the given rule words (" +info", …).
std::string without(std::string line, const std::vector<std::string>& rules) {
    for (const auto& r : rules) {
        auto at = line.find(" " + r);
        REQUIRE(at != std::string::npos);
        line.erase(at, r.size() + 1);
    }
    return line;
}

// Creates the user and switches the default user off: the harness then has to AUTH too.
void create_user(redis_server& redis, const std::string& line) {
    REQUIRE(redis.command(words(line)) == "OK");
    REQUIRE(redis.command({"ACL", "SETUSER", "default", "off"}) == "OK");
    REQUIRE(redis.command({"PING"}).starts_with("ERR:"));
}

std::string as_user(redis_server& redis, std::vector<std::string> args) {
    return redis.commands({{"AUTH", "ifm-proxy", "CHANGE-ME"}, std::move(args)});
}

std::string proxy_yaml(std::uint16_t port, std::uint16_t admin, const std::string& url,
                       std::uint16_t origin, const std::string& store_extra = {}) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "admin_listen: 127.0.0.1:" + std::to_string(admin) + "\n"
           "workers: 2\n"
           "store: { kind: redis, url: \"" + url + "\", timeout: 500ms, young_server_wait: false" +
           store_extra + " }\n"
           "upstreams:\n"
           "  origin: { address: 127.0.0.1:" + std::to_string(origin) + " }\n"
           "routes:\n"
           "  - match: { path_prefix: /strict/ }\n"
           "    upstream: origin\n"
           "    etag: hash\n"
           "    require_precondition: true\n"
           "log: { level: info, access_log: false }\n";
}

std::size_t occurrences(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

std::string user_url(const redis_server& redis) {
    return "redis://ifm-proxy:CHANGE-ME@127.0.0.1:" + std::to_string(redis.port()) + "/0";
}

// The write paths every documented user must run, through the proxy on `port` in front of
// `origin` (which holds /strict/doc): conditional PUT with the current validator, a stale one
// (409), none (428), a conditional DELETE, If-None-Match: * create and its repeat.
void check_write_paths(std::uint16_t port, fake_origin& origin) {
    http_client c(port);
    // The process accepts before its store connections are up: wait until it judges writes.
    REQUIRE(eventually([&] { return c.request("PUT", "/strict/warm-up", {{"If-None-Match", "*"}}, "w").status == 201; }, 5s));
    // GET records the tag.
    std::string tag;
    REQUIRE(eventually([&] {
        auto r = c.request("GET", "/strict/doc");
        tag = r.header("ETag");
        return r.status == 200 && !tag.empty();
    }, 5s));
    auto put = c.request("PUT", "/strict/doc", {{"If-Match", tag}}, "v2");
    CHECK(put.status / 100 == 2);
    CHECK(origin.get("/strict/doc") == "v2");
    auto stale = c.request("PUT", "/strict/doc", {{"If-Match", tag}}, "v3");
    CHECK(stale.status == 409);
    auto bare = c.request("PUT", "/strict/doc", {}, "v4");
    CHECK(bare.status == 428);
    CHECK(origin.get("/strict/doc") == "v2");

    auto now = c.request("GET", "/strict/doc");
    REQUIRE(now.status == 200);
    auto del = c.request("DELETE", "/strict/doc", {{"If-Match", now.header("ETag")}});
    CHECK(del.status == 204);
    auto created = c.request("PUT", "/strict/new", {{"If-None-Match", "*"}}, "n1");
    CHECK(created.status == 201);
    CHECK(origin.get("/strict/new") == "n1");
    auto again = c.request("PUT", "/strict/new", {{"If-None-Match", "*"}}, "n2");
    CHECK((again.status == 409 || again.status == 412));
}

// The first line of the code block that follows `marker` in README.md ("" if there is none):
// the Sentinel and Cluster tests run the documented lines themselves, so a line that lacks a
// permission fails them.
std::string readme_line_after(const std::string& marker) {
    const auto readme = read_text_file(std::string(IFM_SOURCE_DIR) + "/README.md");
    auto at = readme.find(marker);
    if (at == std::string::npos) return {};
    at = readme.find("\n```\n", at);
    if (at == std::string::npos) return {};
    at += 5;
    return readme.substr(at, readme.find('\n', at) - at);
}

// A user that sees everything, for the harness (and for Sentinel and replication) once the
// default user is off.
const std::vector<std::string> admin_user{"ACL", "SETUSER", "ifm-admin", "on", ">admin-pw", "~*", "&*", "+@all"};

std::string as_admin(redis_server& redis, std::vector<std::string> args) {
    return redis.commands({{"AUTH", "ifm-admin", "admin-pw"}, std::move(args)});
}

// redis-cli as ifm-admin (the sentinels).
std::string cli_as_admin(std::uint16_t port, std::vector<std::string> args) {
    args.insert(args.begin(), {"--no-auth-warning", "--user", "ifm-admin", "--pass", "admin-pw"});
    return redis_cli(port, args);
}

// The proxy's log must not show a refused command or login.
void check_no_permission_errors(const std::string& log) {
    for (const char* bad : {"NOPERM", "lacks a permission", "may not run scripts", "refused auth", "WRONGPASS",
                            "NOAUTH", "did not answer INFO"})
        CHECK_MESSAGE(log.find(bad) == std::string::npos, bad);
}

// A proxy started now on `url` judges no write: 503 with nothing forwarded, the log says NOPERM.
void check_writes_refused(const std::string& url, const std::string& store_extra, fake_origin& origin) {
    auto port = free_port(), admin = free_port();
    proxy_process px(proxy_yaml(port, admin, url, origin.port(), store_extra), port);
    INFO("proxy log:\n" << tail_lines(px.log()));
    http_client c(port);
    const auto puts = origin.count("PUT");
    CHECK(eventually([&] { return px.log().find("NOPERM") != std::string::npos; }, 5s));
    CHECK(c.request("PUT", "/strict/refused", {{"If-None-Match", "*"}}, "r").status == 503);
    CHECK(origin.count("PUT") == puts);
}

}  // namespace

TEST_CASE("acl: the README documents the single-server ACL line the tests use") {
    auto readme = read_text_file(std::string(IFM_SOURCE_DIR) + "/README.md");
    REQUIRE_FALSE(readme.empty());
    CHECK(readme.find("### Redis ACL") != std::string::npos);
    CHECK(readme.find("\n" + acl_line + "\n") != std::string::npos);
}

TEST_CASE("acl: the documented single-server user runs every write path") {
    redis_server redis;
    create_user(redis, acl_line);
    fake_origin origin;
    origin.put("/strict/doc", "v1");
    auto port = free_port(), admin = free_port();
    proxy_process px(proxy_yaml(port, admin, user_url(redis), origin.port()), port);
    INFO("proxy log:\n" << tail_lines(px.log()));
    check_write_paths(port, origin);
    CHECK(as_user(redis, {"EXISTS", "ifm:epoch"}) == "1");   // the scripts ran as the user
    auto log = px.log();
    CHECK(log.find("NOPERM") == std::string::npos);
    CHECK(log.find("did not answer INFO") == std::string::npos);
    http_client a(admin);
    CHECK(a.request("GET", "/readyz").body.find("\"restart_detection\":true") != std::string::npos);
}

TEST_CASE("acl: a user without +info still works; the warning is logged once and exposed") {
    redis_server redis;
    create_user(redis, without(acl_line, {"+info"}));
    fake_origin origin;
    auto port = free_port(), admin = free_port();
    proxy_process px(proxy_yaml(port, admin, user_url(redis), origin.port()), port);
    http_client c(port);
    INFO("proxy log:\n" << tail_lines(px.log()));

    REQUIRE(eventually([&] { return c.request("PUT", "/strict/a", {{"If-None-Match", "*"}}, "a").status == 201; }, 5s));
    auto r = c.request("GET", "/strict/a");
    REQUIRE(r.status == 200);
    CHECK(c.request("PUT", "/strict/a", {{"If-Match", r.header("ETag")}}, "b").status / 100 == 2);
    CHECK(c.request("PUT", "/strict/a", {{"If-Match", r.header("ETag")}}, "c").status == 409);

    // Two workers and the admin listener, one server: one warning.
    http_client a(admin);
    REQUIRE(eventually([&] { return occurrences(px.log(), "redis: connected to") >= 3; }, 5s));
    auto log = px.log();
    CHECK(occurrences(log, "did not answer INFO server with a run_id") == 1);
    CHECK(log.find("grant +info to the proxy's ACL user") != std::string::npos);
    CHECK(log.find("[warning]") != std::string::npos);
    CHECK(a.request("GET", "/readyz").body.find("\"restart_detection\":false") != std::string::npos);
    CHECK(a.request("GET", "/metrics").body.find("\nifmatch_store_restart_detection_off 1\n") != std::string::npos);
}

TEST_CASE("acl: a user that may not run scripts gets a clear reason in the log and the 503") {
    const std::string reason = "the Redis user may not run scripts: see README \"Redis ACL\"";
    SUBCASE("no SCRIPT LOAD") {
        redis_server redis;
        create_user(redis, without(acl_line, {"+script|load", "+evalsha"}));
        fake_origin origin;
        auto port = free_port(), admin = free_port();
        proxy_process px(proxy_yaml(port, admin, user_url(redis), origin.port()), port);
        http_client c(port);
        INFO("proxy log:\n" << tail_lines(px.log()));
    INFO("proxy log:\n" << tail_lines(px.log()));
        response r;
        REQUIRE(eventually([&] {
            r = c.request("PUT", "/strict/x", {{"If-None-Match", "*"}}, "x");
            return r.body.find("may not run scripts") != std::string::npos;
        }, 5s));
        CHECK(r.status == 503);
        CHECK(r.body.find("see README \\\"Redis ACL\\\"") != std::string::npos);
        CHECK(origin.count("PUT") == 0);
        CHECK(eventually([&] { return px.log().find(reason) != std::string::npos; }, 5s));
    }
    SUBCASE("SCRIPT LOAD but no EVALSHA") {
        redis_server redis;
        create_user(redis, without(acl_line, {"+evalsha"}));
        fake_origin origin;
        auto port = free_port(), admin = free_port();
        proxy_process px(proxy_yaml(port, admin, user_url(redis), origin.port()), port);
        http_client c(port);
        INFO("proxy log:\n" << tail_lines(px.log()));
    INFO("proxy log:\n" << tail_lines(px.log()));
        REQUIRE(eventually([&] { return occurrences(px.log(), "redis: connected to") >= 3; }, 5s));
        auto r = c.request("PUT", "/strict/x", {{"If-None-Match", "*"}}, "x");
        CHECK(r.status == 503);
        CHECK(r.body.find("may not run scripts") != std::string::npos);
        CHECK(origin.count("PUT") == 0);
        CHECK(eventually([&] { return px.log().find(reason) != std::string::npos; }, 5s));
    }
}

TEST_CASE("acl: store.sentinel_password is refused without a redis-sentinel:// URL") {
    auto out = proxy_process::run_once(
        "listen: 127.0.0.1:1\n"
        "store:\n"
        "  kind: redis\n"
        "  url: redis://127.0.0.1:6379/0\n"
        "  sentinel_password: x\n"
        "upstreams: { origin: { address: 127.0.0.1:2 } }\n"
        "routes: [ { match: { path_prefix: / }, upstream: origin } ]\n",
        {"--check-config"});
    CHECK(out.status != 0);
    CHECK(out.log.find(":5: store.sentinel_password: only for a redis-sentinel:// store.url") != std::string::npos);
}

// One master, one sentinel with requirepass.
TEST_CASE("sentinel auth: without store.sentinel_password 503 and 'refused auth'; with it, writes pass") {
    redis_server master;
    temp_dir dir;
    auto sport = free_port();
    auto conf = dir.path() + "/sentinel.conf";
    std::ofstream(conf) << "port " << sport << "\n"
                        << "bind 127.0.0.1\n"
                        << "daemonize no\n"
                        << "dir " << dir.path() << "\n"
                        << "requirepass s3ntinel-pw\n"
                        << "sentinel monitor ifm 127.0.0.1 " << master.port() << " 1\n";
    child_process sentinel({"redis-server", conf, "--sentinel"}, dir.path() + "/sentinel.log");
    REQUIRE(wait_for_port(sport, 5s));
    const auto url = "redis-sentinel://127.0.0.1:" + std::to_string(sport) + "/ifm";
    fake_origin origin;

    {
        auto port = free_port(), admin = free_port();
        proxy_process px(proxy_yaml(port, admin, url, origin.port(), ", wait_replicas: 0"), port);
        http_client c(port);
        INFO("proxy log:\n" << tail_lines(px.log()));
    INFO("proxy log:\n" << tail_lines(px.log()));
        REQUIRE(eventually([&] { return px.log().find("refused auth") != std::string::npos; }, 5s));
        auto r = c.request("PUT", "/strict/s", {{"If-None-Match", "*"}}, "s");
        CHECK(r.status == 503);
        CHECK(origin.count("PUT") == 0);
        auto log = px.log();
        CHECK(log.find("the sentinel refused auth (NOAUTH") != std::string::npos);
        CHECK(log.find("store.sentinel_password") != std::string::npos);
    }
    {
        auto port = free_port(), admin = free_port();
        proxy_process px(proxy_yaml(port, admin, url, origin.port(),
                                    ", wait_replicas: 0, sentinel_password: s3ntinel-pw"), port);
        http_client c(port);
        INFO("proxy log:\n" << tail_lines(px.log()));
    INFO("proxy log:\n" << tail_lines(px.log()));
        CHECK(eventually([&] { return c.request("PUT", "/strict/s", {{"If-None-Match", "*"}}, "s").status == 201; }, 10s));
        auto log = px.log();
        CHECK(log.find("refused auth") == std::string::npos);
        CHECK(log.find("s3ntinel-pw") == std::string::npos);   // never logged
    }
}

// Sentinel (README, "Redis ACL"): the data nodes' user with +role, the sentinels' ifm-sentinel
// user, both as the README writes them, the default user off everywhere. One replica (WAIT runs:
// wait_replicas is 1 with Sentinel) and one sentinel.
TEST_CASE("acl: the documented Sentinel users (data nodes and sentinels) run every write path") {
    const auto data_line = readme_line_after("Sentinel, on the master and every replica");
    const auto sentinel_line = readme_line_after("such a sentinel user");
    REQUIRE(data_line.starts_with("ACL SETUSER ifm-proxy on >CHANGE-ME "));
    REQUIRE(data_line.find(" +role ") != std::string::npos);
    REQUIRE(sentinel_line.starts_with("ACL SETUSER ifm-sentinel on >CHANGE-ME "));

    redis_sentinel_group group(1, 1);
    const auto sport = group.sentinel_port(0);
    // Sentinel and the replica log in as ifm-admin before the default user goes.
    REQUIRE(redis_cli(sport, {"SENTINEL", "SET", group.name(), "auth-user", "ifm-admin"}) == "OK");
    REQUIRE(redis_cli(sport, {"SENTINEL", "SET", group.name(), "auth-pass", "admin-pw"}) == "OK");
    for (std::size_t i = 0; i < group.nodes(); ++i) {
        auto& node = group.node(i);
        REQUIRE(node.command(admin_user) == "OK");
        REQUIRE(node.command(words(data_line)) == "OK");
        if (i > 0) REQUIRE(node.command({"CONFIG", "SET", "masteruser", "ifm-admin", "masterauth", "admin-pw"}) == "OK");
    }
    for (std::size_t i = 0; i < group.nodes(); ++i) {
        REQUIRE(group.node(i).command({"ACL", "SETUSER", "default", "off"}) == "OK");
        REQUIRE(group.node(i).command({"PING"}).starts_with("ERR:"));
    }
    REQUIRE(redis_cli(sport, admin_user) == "OK");
    REQUIRE(redis_cli(sport, words(sentinel_line)) == "OK");
    REQUIRE(redis_cli(sport, {"ACL", "SETUSER", "default", "off"}) == "OK");
    REQUIRE(redis_cli(sport, {"PING"}) != "PONG");
    // Still a master with a replica in sync, as the sentinel sees it.
    REQUIRE(eventually([&] {
        return cli_as_admin(sport, {"SENTINEL", "get-master-addr-by-name", group.name()}) ==
                   "127.0.0.1\n" + std::to_string(group.node(0).port()) &&
               as_admin(group.node(1), {"INFO", "replication"}).find("master_link_status:up") != std::string::npos;
    }, 10s));

    const auto url = "redis-sentinel://ifm-proxy:CHANGE-ME@127.0.0.1:" + std::to_string(sport) + "/" + group.name();
    const std::string store_extra = ", sentinel_username: ifm-sentinel, sentinel_password: CHANGE-ME";
    fake_origin origin;
    origin.put("/strict/doc", "v1");
    {
        auto port = free_port(), admin = free_port();
        proxy_process px(proxy_yaml(port, admin, url, origin.port(), store_extra), port);
        INFO("proxy log:\n" << tail_lines(px.log()));
        check_write_paths(port, origin);
        // The scripts ran on the master as the user, and WAIT brought their keys to the replica.
        CHECK(group.node(0).commands({{"AUTH", "ifm-proxy", "CHANGE-ME"}, {"EXISTS", "ifm:epoch"}}) == "1");
        CHECK(eventually([&] { return as_admin(group.node(1), {"EXISTS", "ifm:epoch"}) == "1"; }, 5s));
        CHECK(as_admin(group.node(0), {"CLIENT", "LIST"}).find(" user=ifm-proxy ") != std::string::npos);
        check_no_permission_errors(px.log());
    }
    // Each documented permission is needed: without +role on the data nodes, or without
    // SENTINEL GET-MASTER-ADDR-BY-NAME on the sentinel, nothing is judged.
    for (std::size_t i = 0; i < group.nodes(); ++i)
        REQUIRE(as_admin(group.node(i), {"ACL", "SETUSER", "ifm-proxy", "-role"}) == "OK");
    {
        INFO("data nodes without +role");
        check_writes_refused(url, store_extra, origin);
    }
    for (std::size_t i = 0; i < group.nodes(); ++i)
        REQUIRE(as_admin(group.node(i), {"ACL", "SETUSER", "ifm-proxy", "+role"}) == "OK");
    REQUIRE(cli_as_admin(sport, {"ACL", "SETUSER", "ifm-sentinel", "-sentinel|get-master-addr-by-name"}) == "OK");
    {
        INFO("sentinel without +sentinel|get-master-addr-by-name");
        check_writes_refused(url, store_extra, origin);
    }
}

// Cluster (README, "Redis ACL"): the README's Cluster user on every node, the default user off.
TEST_CASE("acl: the documented Cluster user runs every write path on every master") {
    const auto line = readme_line_after("Cluster, on every node");
    REQUIRE(line.starts_with("ACL SETUSER ifm-proxy on >CHANGE-ME "));
    REQUIRE(line.find(" +cluster|slots ") != std::string::npos);

    redis_cluster cluster(3, 0);
    for (std::size_t i = 0; i < cluster.nodes(); ++i) {
        auto& node = cluster.node(i);
        REQUIRE(node.command(admin_user) == "OK");
        REQUIRE(node.command(words(line)) == "OK");
        REQUIRE(node.command({"ACL", "SETUSER", "default", "off"}) == "OK");
        REQUIRE(node.command({"PING"}).starts_with("ERR:"));
    }
    const auto url = "redis-cluster://ifm-proxy:CHANGE-ME@127.0.0.1:" + std::to_string(cluster.node(0).port()) +
                     ",127.0.0.1:" + std::to_string(cluster.node(1).port());
    fake_origin origin;
    origin.put("/strict/doc", "v1");
    {
        auto port = free_port(), admin = free_port();
        proxy_process px(proxy_yaml(port, admin, url, origin.port()), port);
        INFO("proxy log:\n" << tail_lines(px.log()));
        check_write_paths(port, origin);
        // More resources, so that every master judges some (their keys spread over the slots).
        // A worker connects to a node when it first needs it and answers 503 until then.
        http_client c(port);
        for (int i = 0; i < 24; ++i) {
            const auto target = "/strict/spread-" + std::to_string(i);
            CHECK(eventually([&] { return c.request("PUT", target, {{"If-None-Match", "*"}}, "s").status == 201; }, 5s));
        }
        for (std::size_t i = 0; i < cluster.nodes(); ++i) {
            INFO("node " << i);
            CHECK(as_admin(cluster.node(i), {"DBSIZE"}) != "0");
            CHECK(as_admin(cluster.node(i), {"CLIENT", "LIST"}).find(" user=ifm-proxy ") != std::string::npos);
        }
        check_no_permission_errors(px.log());
    }
    // Without CLUSTER SLOTS the proxy cannot learn which node serves a key: nothing is judged.
    for (std::size_t i = 0; i < cluster.nodes(); ++i)
        REQUIRE(as_admin(cluster.node(i), {"ACL", "SETUSER", "ifm-proxy", "-cluster|slots"}) == "OK");
    check_writes_refused(url, "", origin);
}

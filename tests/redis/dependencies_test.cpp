// Resource dependencies (issue 14, SPEC §9): a record's representation embeds its fields, which are
// resources of their own. In `hash` mode a write to a field leaves the record's tracked validator
// stale, so a stale conditional write to the record is accepted: a lost update. With
// routes[].dependencies the field's write makes the record's validator unknown (and a write to
// the record, its fields'): the stale write revalidates and is refused. Real redis-server, two
// proxy processes, the in-process origin with a composite resource.
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* record_rules =
    "    dependencies:\n"
    "      - { path: \"/users/{id}/{field}\", invalidates: [\"/users/{id}\"] }\n"
    "      - { path: \"/users/{id}\", invalidates: [\"/users/{id}/count\", \"/users/{id}/note\"] }\n";

std::string proxy_yaml(std::uint16_t port, std::uint16_t admin, std::uint16_t origin_port, const std::string& redis_url,
                       bool rules) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "admin_listen: 127.0.0.1:" + std::to_string(admin) + "\n"
           "workers: 1\n"
           "store: { kind: redis, url: \"" + redis_url + "\", timeout: 500ms, young_server_wait: false }\n"
           "upstreams:\n"
           "  origin: { address: 127.0.0.1:" + std::to_string(origin_port) + ", connect_timeout: 500ms, request_timeout: 2s }\n"
           "routes:\n"
           "  - match: { path_prefix: / }\n"
           "    upstream: origin\n"
           "    etag: hash\n"
           "    write_lease: 5s\n"
           "    require_precondition: true\n" +
           std::string(rules ? record_rules : "") +
           "log: { level: info, json: true, access_log: true }\n";
}

struct two_proxies {
    redis_server redis;
    fake_origin origin;
    std::uint16_t p1 = free_port(), p2 = free_port(), admin1 = free_port(), admin2 = free_port();
    proxy_process a, b;
    explicit two_proxies(bool rules)
        : a(proxy_yaml(p1, admin1, origin.port(), redis.url(), rules), p1),
          b(proxy_yaml(p2, admin2, origin.port(), redis.url(), rules), p2) {
        REQUIRE(judges_writes(p1));
        REQUIRE(judges_writes(p2));
        origin.set_composite("/users/7", {"/users/7/count", "/users/7/note"});
        origin.put("/users/7/count", format_counter_doc({}));
        origin.put("/users/7/note", "hello");
    }
};

// Reads the record through proxy A, writes its field through proxy B, then writes the record back
// through A conditioned on the tag of the first read: the status of that last write.
unsigned stale_record_write(two_proxies& t) {
    http_client x(t.p1), y(t.p2);
    auto record = x.request("GET", "/users/7");
    REQUIRE(record.status == 200);
    auto tag = record.header("ETag");
    REQUIRE_FALSE(tag.empty());
    auto field = y.request("GET", "/users/7/note");
    REQUIRE(field.status == 200);
    auto w = y.request("PUT", "/users/7/note", {{"If-Match", field.header("ETag")}}, "changed by y");
    INFO(w.body);
    REQUIRE(w.status == 204);
    auto back = record.body.substr(0, record.body.find('\n')) + "\nhello, edited by x";
    return x.request("PUT", "/users/7", {{"If-Match", tag}}, back).status;
}

}  // namespace

TEST_CASE("dependencies: without a rule, a write to a field leaves the record's validator stale (the loss)") {
    two_proxies t(false);
    CHECK(stale_record_write(t) == 204);
    CHECK(t.origin.get("/users/7/note") == "hello, edited by x");   // y's write is gone
}

TEST_CASE("dependencies: with the rule, the field's write makes the record unknown: the stale write is refused") {
    two_proxies t(true);
    CHECK(stale_record_write(t) == 409);
    CHECK(t.origin.get("/users/7/note") == "changed by y");
    // And the other way: a write to the record makes its fields unknown.
    http_client x(t.p1), y(t.p2);
    auto note = y.request("GET", "/users/7/note");
    auto record = x.request("GET", "/users/7");
    REQUIRE(x.request("PUT", "/users/7", {{"If-Match", record.header("ETag")}},
                      record.body.substr(0, record.body.find('\n')) + "\nfrom the record").status == 204);
    CHECK(y.request("PUT", "/users/7/note", {{"If-Match", note.header("ETag")}}, "stale").status == 409);
    CHECK(t.origin.get("/users/7/note") == "from the record");
    // Counted by the route of the write: on proxy B, y's field write made the record unknown.
    http_client admin(t.admin2);
    auto metrics = admin.request("GET", "/metrics").body;
    CHECK(metrics.find("ifmatch_route_dependent_invalidations_total{route=\"route0\",upstream=\"origin\"} 1\n") !=
          std::string::npos);
    // And in the access log of that write (the record's write on proxy A made two fields unknown).
    CHECK(eventually([&] { return t.b.log().find("\"ifmatch.invalidated\":1") != std::string::npos; }, 5s));
    CHECK(eventually([&] { return t.a.log().find("\"ifmatch.invalidated\":2") != std::string::npos; }, 5s));
}

// The lost-update workload over two representations: clients increment the counter either through
// the field (/users/7/count) or through the record (/users/7, first line), through two proxies,
// each write conditioned on the tag its read returned. Every accepted write must survive.
TEST_CASE("dependencies: lost-update workload over a record and its field through two proxies: no loss") {
    two_proxies t(true);
    constexpr int clients = 6, writes_each = 12;
    std::mutex mu;
    std::set<std::string> accepted;
    std::vector<std::string> errors, others;   // exceptions; answers neither 204 nor 409
    std::atomic<int> refused{0}, other{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < clients; ++i) {
        threads.emplace_back([&, i] {
            http_client c(i % 2 ? t.p1 : t.p2);
            c.set_timeout(10s);
            const bool via_record = (i / 2) % 2 == 0;   // both kinds through both proxies
            const std::string target = via_record ? "/users/7" : "/users/7/count";
            int done = 0;
            for (int attempt = 0; done < writes_each && attempt < 2000; ++attempt) {
                try {
                    auto g = c.request("GET", target);
                    if (g.status != 200) {
                        ++other;
                        std::lock_guard lock(mu);
                        others.push_back("GET: " + std::to_string(g.status) + " " + g.body.substr(0, 120));
                        continue;
                    }
                    auto line = via_record ? g.body.substr(0, g.body.find('\n')) : g.body;
                    auto doc = parse_counter_doc(line);
                    if (!doc) {
                        ++other;
                        std::lock_guard lock(mu);
                        others.push_back("GET: unparsable " + line.substr(0, 120));
                        continue;
                    }
                    auto id = "c" + std::to_string(i) + "." + std::to_string(done);
                    ++doc->value;
                    doc->history.push_back(id);
                    auto body = format_counter_doc(*doc);
                    if (via_record) body += g.body.substr(g.body.find('\n'));
                    auto w = c.request("PUT", target, {{"If-Match", g.header("ETag")}}, body);
                    if (w.status == 204) {
                        std::lock_guard lock(mu);
                        accepted.insert(id);
                        ++done;
                    } else if (w.status == 409) {
                        ++refused;
                    } else {
                        ++other;
                        std::lock_guard lock(mu);
                        others.push_back(std::to_string(w.status) + " " + w.body.substr(0, 120));
                    }
                } catch (const std::exception& e) {
                    std::lock_guard lock(mu);
                    errors.push_back(e.what());
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    for (const auto& e : errors) MESSAGE("client error: " << e);
    for (const auto& o : others) MESSAGE("not 204/409: " << o);
    auto final_doc = parse_counter_doc(t.origin.get("/users/7/count").value_or(""));
    REQUIRE(final_doc);
    MESSAGE(accepted.size() << " accepted, " << refused.load() << " refused, " << other.load() << " other; counter "
                            << final_doc->value);
    CHECK(errors.empty());
    CHECK(other == 0);
    CHECK(accepted.size() == clients * writes_each);
    std::set<std::string> in_doc(final_doc->history.begin(), final_doc->history.end());
    std::size_t lost = 0;
    for (const auto& id : accepted) lost += !in_doc.contains(id);
    CHECK(lost == 0);
    CHECK(final_doc->value == static_cast<long>(accepted.size()));
}

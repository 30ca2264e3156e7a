// I1 under real concurrency: read–modify–write increments of one counter by many clients through
// two proxy processes sharing one Redis, in front of nginx WebDAV (whose "mtime-size" ETag does
// not change for same-size writes within a second, and which ignores If-Match on PUT).
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

constexpr int clients = 8;
constexpr int increments_per_client = 15;

std::string padded(long v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%010ld", v);   // same size for every write
    return buf;
}

std::string proxy_yaml(std::uint16_t port, std::uint16_t origin, const std::string& redis_url) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "workers: 2\n"
           "store: { kind: redis, url: \"" + redis_url + "\", timeout: 500ms }\n"
           "upstreams:\n"
           "  dav: { address: 127.0.0.1:" + std::to_string(origin) + ", request_timeout: 5s }\n"
           "routes:\n"
           "  - match: { path_prefix: / }\n"
           "    upstream: dav\n"
           "    etag: hash\n"
           "    methods: [PUT, DELETE]\n"
           "    require_precondition: true\n"
           "    write_lease: 10s\n"
           "log: { level: warn, access_log: false }\n";
}

struct workload_result {
    long accepted = 0;
    long final_value = 0;
    bool all_finished = true;
};

// Each client reads the counter, writes value+1 conditioned on the tag it read, and retries a
// rejected write after re-reading, until it has `increments_per_client` accepted writes.
workload_result run_workload(const std::vector<std::uint16_t>& ports, std::uint16_t origin_port,
                             std::chrono::seconds budget) {
    std::atomic<long> accepted{0};
    std::atomic<bool> unfinished{false};
    auto deadline = std::chrono::steady_clock::now() + budget;
    std::vector<std::thread> threads;
    for (int i = 0; i < clients; ++i) {
        threads.emplace_back([&, i] {
            std::mt19937 rng(i);
            std::vector<std::unique_ptr<http_client>> conns;
            for (auto p : ports) conns.push_back(std::make_unique<http_client>(p));
            int mine = 0;
            while (mine < increments_per_client) {
                if (std::chrono::steady_clock::now() > deadline) {
                    unfinished = true;
                    return;
                }
                auto& c = *conns[rng() % conns.size()];
                auto g = c.request("GET", "/counter.txt");
                if (g.status != 200) continue;
                long value = std::stol(g.body);
                auto w = c.request("PUT", "/counter.txt", {{"If-Match", g.header("ETag")}}, padded(value + 1));
                if (w.status >= 200 && w.status < 300) {
                    ++mine;
                    ++accepted;
                } else {
                    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 5));
                }
            }
        });
    }
    for (auto& t : threads) t.join();
    http_client direct(origin_port);
    workload_result r;
    r.accepted = accepted;
    r.final_value = std::stol(direct.request("GET", "/counter.txt").body);
    r.all_finished = !unfinished;
    return r;
}

}  // namespace

TEST_CASE("lost-update: two proxies, one Redis, nginx WebDAV: counter == accepted writes") {
    nginx_webdav nginx;
    redis_server redis;
    http_client direct(nginx.port());
    REQUIRE(direct.request("PUT", "/counter.txt", {}, padded(0)).status / 100 == 2);

    auto p1 = free_port(), p2 = free_port();
    proxy_process a(proxy_yaml(p1, nginx.port(), redis.url()), p1);
    proxy_process b(proxy_yaml(p2, nginx.port(), redis.url()), p2);
    auto r = run_workload({p1, p2}, nginx.port(), 60s);
    MESSAGE("accepted " << r.accepted << ", final " << r.final_value);
    CHECK(r.all_finished);
    CHECK(r.accepted == clients * increments_per_client);
    CHECK(r.final_value == r.accepted);
}

TEST_CASE("control: the same workload straight to nginx loses updates (the test can fail)") {
    nginx_webdav nginx;
    http_client direct(nginx.port());
    REQUIRE(direct.request("PUT", "/counter.txt", {}, padded(0)).status / 100 == 2);
    auto r = run_workload({nginx.port()}, nginx.port(), 60s);
    MESSAGE("accepted " << r.accepted << ", final " << r.final_value);
    CHECK(r.accepted == clients * increments_per_client);   // nginx accepts every If-Match PUT
    CHECK(r.final_value < r.accepted);                        // ...and so loses updates
}

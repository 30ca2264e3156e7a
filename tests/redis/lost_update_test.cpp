// I1 under real concurrency: read–modify–write increments of one counter by many clients through
// two proxy processes sharing one Redis, in front of nginx WebDAV (which ignores If-Match on PUT).
// The workload lives in tests/support/workload.hpp (the chaos test runs it too): each write
// appends its id to the document, so the final document names every write that survived.
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

void put_initial_counter(const nginx_webdav& nginx) {
    http_client direct(nginx.port());
    REQUIRE(direct.request("PUT", "/counter.txt", {}, format_counter_doc({})).status / 100 == 2);
}

}  // namespace

TEST_CASE("lost-update: two proxies, one Redis, nginx WebDAV: counter == accepted writes") {
    nginx_webdav nginx;
    redis_server redis;
    put_initial_counter(nginx);

    auto p1 = free_port(), p2 = free_port();
    proxy_process a(workload_proxy_yaml({.port = p1, .origin_port = nginx.port(), .redis_url = redis.url()}), p1);
    proxy_process b(workload_proxy_yaml({.port = p2, .origin_port = nginx.port(), .redis_url = redis.url()}), p2);
    auto r = run_workload({p1, p2}, {});
    r.final_doc = read_counter_doc(nginx.port());
    REQUIRE(r.final_doc);
    MESSAGE("accepted " << r.accepted << ", final " << r.final_doc->value);
    CHECK(r.all_finished);
    CHECK(r.accepted == 8 * 15);
    CHECK(r.unknown == 0);
    CHECK(r.final_doc->value == r.accepted);
    CHECK(lost_update_violations(r).empty());
}

TEST_CASE("control: the same workload straight to nginx loses updates (the test can fail)") {
    nginx_webdav nginx;
    put_initial_counter(nginx);
    auto r = run_workload({nginx.port()}, {});
    r.final_doc = read_counter_doc(nginx.port());
    REQUIRE(r.final_doc);
    MESSAGE("accepted " << r.accepted << ", final " << r.final_doc->value);
    CHECK(r.accepted == 8 * 15);                    // nginx accepts every If-Match PUT
    CHECK(r.final_doc->value < r.accepted);         // ...and so loses updates
    CHECK_FALSE(lost_update_violations(r).empty());  // which the checker names
}

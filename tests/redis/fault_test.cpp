// Faults (issue 4): SPEC I3 (crash safety) and I4 (fail closed) under real faults — a real
// redis-server killed, hung and restarted empty; the origin refusing, resetting, timing out and
// failing (the fake origin steered by headers, and a real nginx stopped and killed mid-write);
// a real proxy process killed with SIGKILL while it holds a lease, and one drained with SIGTERM.
//
// A write whose outcome is unknown is modelled by changing the origin's representation behind
// the proxy's back right after the failure (as if the origin had applied the write before it
// failed): a proxy that kept the pre-write validator would then accept a stale write.
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <future>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

constexpr auto store_timeout = 200ms;
constexpr auto lease = 2000ms;
constexpr auto origin_timeout = 500ms;

// Redis store, a short lease and origin timeout, an admin listener for /readyz.
void use_redis(ifm::config::config& c, const redis_server& redis) {
    use_redis_store(c, redis.url(), store_timeout);
    c.admin_listen = ifm::config::endpoint{"127.0.0.1", 0};
    c.routes[1].write_lease = lease;
    c.upstreams[0].request_timeout = origin_timeout;
}

// The same for a proxy process (tests/support/workload.hpp's route: "/" tracked, hash mode).
workload_proxy_config process_config(std::uint16_t port, std::uint16_t origin, const redis_server& redis) {
    return {.port = port, .origin_port = origin, .redis_url = redis.url(), .write_lease = "2s",
            .request_timeout = "500ms", .store_timeout = "200ms"};
}

// A proxy process accepts connections before its store connection is up (/readyz does not wait
// for the store, by design): wait until it judges writes.
void wait_until_judging(std::uint16_t port) {
    REQUIRE(judges_writes(port));
}

unsigned readyz(proxy_fixture& px) {
    http_client admin(px.server().admin_port());
    return admin.request("GET", "/readyz").status;
}

std::string readyz_body(proxy_fixture& px) {
    http_client admin(px.server().admin_port());
    return admin.request("GET", "/readyz").body;
}

bool says(const response& r, std::string_view slug) { return r.body.find(slug) != std::string::npos; }

// After a write the origin applied although the proxy could not know: the pre-write tag was
// refused (`r`, the answer to a write conditioned on it), and the tag read now is accepted.
void check_revalidated(http_client& c, const std::string& target, const std::string& pre_write, const response& r) {
    CHECK(r.status == 409);
    CHECK(says(r, "stale-precondition"));
    auto fresh = c.request("GET", target).header("ETag");
    CHECK(fresh != pre_write);
    CHECK(c.request("PUT", target, {{"If-Match", fresh}}, "after").status == 204);
}

void check_revalidated(http_client& c, const std::string& target, const std::string& pre_write) {
    auto r = c.request("PUT", target, {{"If-Match", pre_write}}, "stale");
    check_revalidated(c, target, pre_write, r);
}

// Reads and untracked writes in a loop on their own connection, counting what failed.
class background_traffic {
public:
    explicit background_traffic(std::uint16_t port) : thread_([this, port] { run(port); }) {}
    ~background_traffic() { stop(); }
    void stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    int ok() const { return ok_; }
    int failed() const { return failed_; }

private:
    void run(std::uint16_t port) {
        http_client c(port);
        while (!stop_) {
            try {
                bool good = c.request("GET", "/s").status == 200 &&
                            c.request("PUT", "/plain/p", {}, "untracked").status / 100 == 2;
                ++(good ? ok_ : failed_);
            } catch (const std::exception&) {
                ++failed_;
            }
            std::this_thread::sleep_for(5ms);
        }
    }
    std::atomic<bool> stop_{false};
    std::atomic<int> ok_{0}, failed_{0};
    std::thread thread_;
};

}  // namespace

// Issue 13: /readyz stays 200 through a store outage (it used to fail): reads still flow, and
// the store's state is in its body instead.
TEST_CASE("I4 store outage: writes get 503 + Retry-After within the store timeout, reads flow, "
          "/readyz stays ready and reports the store; the proxy reconnects by itself") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    http_client c(px.port());
    REQUIRE(c.request("PUT", "/s", {{"If-None-Match", "*"}}, "v1").status == 201);
    REQUIRE(c.request("PUT", "/h", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto tag = c.request("GET", "/s").header("ETag");
    auto hung_tag = c.request("GET", "/h").header("ETag");
    REQUIRE(readyz(px) == 200);
    background_traffic traffic(px.port());

    // A hung Redis (SIGSTOP): each store command gives up after store.timeout.
    redis.process().signal(SIGSTOP);
    auto t0 = std::chrono::steady_clock::now();
    auto hung = c.request("PUT", "/h", {{"If-Match", hung_tag}}, "v2");
    auto hung_took = std::chrono::steady_clock::now() - t0;
    CHECK(hung.status == 503);
    CHECK(hung.header("Retry-After") == "1");
    CHECK(hung_took < store_timeout + 800ms);   // the store timeout, plus slack for loaded machines
    CHECK(px.origin().count("PUT", "/h") == 1);
    redis.process().signal(SIGCONT);

    // Redis killed: refused at once, conditional or not; nothing forwarded unchecked.
    redis.stop();
    t0 = std::chrono::steady_clock::now();
    auto down = c.request("PUT", "/s", {{"If-Match", tag}}, "v2");
    CHECK(std::chrono::steady_clock::now() - t0 < store_timeout + 800ms);
    CHECK(down.status == 503);
    CHECK(down.header("Retry-After") == "1");
    CHECK(says(down, "store-unavailable"));
    CHECK(c.request("PUT", "/s", {}, "unconditional").status == 503);
    CHECK(c.request("DELETE", "/s", {{"If-Match", tag}}).status == 503);
    CHECK(px.origin().count("PUT", "/s") == 1);
    CHECK(px.origin().get("/s") == "v1");
    CHECK(c.request("GET", "/s").status == 200);
    CHECK(readyz(px) == 200);
    CHECK(eventually([&] { return readyz_body(px).find("\"reachable\":false") != std::string::npos; }, 3s));

    // Redis is back (empty): the proxy reconnects on its own and judges writes again.
    redis.start();
    response stale;
    CHECK(eventually([&] { return (stale = c.request("PUT", "/s", {{"If-Match", "\"stale\""}}, "x")).status != 503; },
                     lease + 5s));
    CHECK(stale.status == 409);
    CHECK(says(stale, "stale-precondition"));
    CHECK(eventually([&] { return readyz_body(px).find("\"reachable\":true") != std::string::npos; }, 5s));
    CHECK(readyz(px) == 200);
    // The tracked validator went with Redis's data: revalidated, the client's tag is still good.
    CHECK(c.request("PUT", "/s", {{"If-Match", tag}}, "v2").status == 204);
    CHECK(px.origin().get("/s") == "v2");

    traffic.stop();
    CHECK(traffic.ok() > 0);
    CHECK(traffic.failed() == 0);
}

TEST_CASE("I4 opt-out: on_store_error: fail_open forwards writes unchecked while the store is down, "
          "and logs it loudly") {
    redis_server redis;
    fake_origin origin;
    auto port = free_port();
    auto cfg = process_config(port, origin.port(), redis);
    cfg.extra = "on_store_error: fail_open\n";
    proxy_process px(workload_proxy_yaml(cfg), port);
    wait_until_judging(port);
    http_client c(port);
    REQUIRE(c.request("PUT", "/o", {{"If-None-Match", "*"}}, "v1").status == 201);
    redis.stop();
    auto r = c.request("PUT", "/o", {{"If-Match", "\"not-the-current-tag\""}}, "v2");
    CHECK(r.status == 204);
    CHECK(origin.get("/o") == "v2");
    CHECK_FALSE(origin.requests().back().has_header("if-match"));   // our tags mean nothing there
    CHECK(eventually([&] { return px.log().find("UNCHECKED") != std::string::npos; }, 2s));
}

TEST_CASE("Redis restarted empty: every validator is unknown and revalidated; no stale write is accepted") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    http_client c(px.port());
    for (auto target : {"/before", "/after"}) {
        REQUIRE(c.request("PUT", target, {{"If-None-Match", "*"}}, "v1").status == 201);
        REQUIRE(c.request("GET", target).status == 200);   // tracked
    }
    auto tag = c.request("GET", "/after").header("ETag");   // both hold "v1": one tag for both
    // Changed behind the proxy's back: while Redis keeps its data the proxy trusts its tracked
    // validator (README, "Writes that bypass the proxy"), so the check below can fail.
    px.origin().put("/before", "changed");
    CHECK(c.request("PUT", "/before", {{"If-Match", tag}}, "stale").status == 204);

    px.origin().put("/after", "changed");
    redis.stop();
    redis.start();
    // Writes are judged again (after the restart wait): probed on a resource of its own.
    REQUIRE(eventually([&] { return c.request("PUT", "/probe", {{"If-None-Match", "*"}}, "p").status != 503; },
                       lease + 5s));
    check_revalidated(c, "/after", tag);   // revalidated against the origin, which has moved on
}

TEST_CASE("a write in flight while Redis restarts empty: no other write is forwarded until its lease "
          "could have ended (I1 across a store restart)") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis(c, redis);
        c.routes[1].write_lease = 3500ms;
        c.upstreams[0].request_timeout = 2s;
    });
    http_client c(px.port());
    REQUIRE(c.request("PUT", "/f", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto tag = c.request("GET", "/f").header("ETag");

    // Write A reaches a slow origin, which applies it 1.5 s later.
    px.origin().set_kv_delay(1500ms);
    auto port = px.port();
    auto a = std::async(std::launch::async, [port, tag] {
        http_client w(port);
        return w.request("PUT", "/f", {{"If-Match", tag}}, "A").status;
    });
    REQUIRE(eventually([&] { return px.origin().count("PUT", "/f") == 2; }, 2s));
    px.origin().set_kv_delay(0ms);
    // Redis loses A's lease. Write B, conditioned on the same tag, must not reach the origin
    // while A may still be there: a revalidation now would see the pre-A representation.
    redis.stop();
    redis.start();
    int b_accepted = 0;
    response r;
    auto judged = eventually([&] {
        r = c.request("PUT", "/f", {{"If-Match", tag}}, "B");
        b_accepted += r.status / 100 == 2;
        return r.status != 503;
    }, 3500ms + 5s);
    CHECK(a.get() == 204);
    CHECK(judged);
    CHECK(b_accepted == 0);
    CHECK(r.status == 409);
    CHECK(px.origin().get("/f") == "A");
}

TEST_CASE("origin faults: a write whose outcome is unknown makes the validator unknown; the lease is "
          "kept for the settle time (the backend may still apply it); the client gets 502 (or the origin's 5xx)") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis(c, redis);
        c.routes[1].settle_time = std::chrono::milliseconds(300);
    });
    http_client c(px.port());
    struct fault {
        const char* name;
        std::vector<std::pair<std::string, std::string>> steer;
        unsigned status;   // 0: the client's response is cut short
    };
    const fault faults[] = {
        {"reset before the response", {{"x-fake-close", "before"}}, 502},
        {"reset mid-response", {{"x-fake-status", "200"}, {"x-fake-body-size", "100000"}, {"x-fake-close", "mid"}}, 0},
        {"5xx", {{"x-fake-status", "500"}}, 500},
        {"503", {{"x-fake-status", "503"}}, 503},
    };
    int i = 0;
    for (const auto& f : faults) {
        CAPTURE(f.name);
        auto target = "/e" + std::to_string(i++);
        REQUIRE(c.request("PUT", target, {{"If-None-Match", "*"}}, "v1").status == 201);
        auto tag = c.request("GET", target).header("ETag");
        auto headers = f.steer;
        headers.emplace_back("If-Match", tag);
        unsigned status = 0;
        try {
            status = c.request("PUT", target, headers, "lost?").status;
        } catch (const std::exception&) {
            status = 0;
        }
        CHECK(status == f.status);
        px.origin().put(target, "applied by the origin before it failed");
        // Busy while it settles (SPEC §5.4: a gateway may give up while the app applies it)...
        // A 200 whose body broke off was committed on its header (applied): not held.
        if (f.status != 0) {
            auto busy = c.request("PUT", target, {{"If-Match", tag}}, "too soon");
            CHECK(busy.status == 409);
            CHECK(says(busy, "write-in-progress"));
        }
        // ...then the pre-write tag is refused after revalidation.
        std::this_thread::sleep_for(std::chrono::milliseconds(400));
        check_revalidated(c, target, tag);
    }

}

TEST_CASE("origin timeout: the origin may still apply the write, so its lease is held to the end "
          "and no other write is forwarded meanwhile (I1)") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) { use_redis(c, redis); });
    http_client c(px.port());
    REQUIRE(c.request("PUT", "/late", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto tag = c.request("GET", "/late").header("ETag");
    // The origin applies the write 400 ms after the proxy gave up on it.
    px.origin().set_kv_delay(origin_timeout + 400ms);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(c.request("PUT", "/late", {{"If-Match", tag}}, "late").status == 504);
    px.origin().set_kv_delay(0ms);
    // A second write on the same tag: a revalidation now would still see "v1".
    auto busy = c.request("PUT", "/late", {{"If-Match", tag}}, "second");
    CHECK(busy.status == 409);
    CHECK(says(busy, "write-in-progress"));
    response r;
    CHECK(eventually([&] { return !says(r = c.request("PUT", "/late", {{"If-Match", tag}}, "second"), "write-in-progress"); },
                     lease + 2s));
    CHECK(std::chrono::steady_clock::now() - t0 < lease + 500ms);   // not locked past the lease
    CHECK(px.origin().get("/late") == "late");
    check_revalidated(c, "/late", tag, r);
}

TEST_CASE("a real nginx origin stopped, and killed mid-write: 502, nothing locked, the unknown write "
          "revalidated") {
    nginx_webdav nginx;
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis(c, redis);
        c.upstreams[0].port = nginx.port();
        c.routes[1].settle_time = std::chrono::milliseconds(300);   // a reset keeps the lease that long
    });
    http_client c(px.port());
    REQUIRE(c.request("PUT", "/n.txt", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto tag = c.request("GET", "/n.txt").header("ETag");

    nginx.stop();
    CHECK(c.request("PUT", "/n.txt", {{"If-Match", tag}}, "v2").status == 502);
    CHECK(c.request("GET", "/n.txt").status == 502);
    nginx.start();
    // Nothing was applied: the tag still holds, and nothing is locked.
    CHECK(c.request("PUT", "/n.txt", {{"If-Match", tag}}, "v2").status == 204);

    // Killed while it holds the write: SIGSTOP so the request waits inside nginx, then SIGKILL.
    tag = c.request("GET", "/n.txt").header("ETag");
    auto pid = nginx_pid(nginx);
    REQUIRE(pid > 0);
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    auto port = px.port();
    auto w = std::async(std::launch::async, [port, tag] {
        http_client x(port);
        return x.request("PUT", "/n.txt", {{"If-Match", tag}}, "v3").status;
    });
    // Once the lease is taken the request goes straight out: into nginx's socket buffer.
    REQUIRE(eventually([&] { return !redis.command({"KEYS", "ifm:*:l"}).empty(); }, 2s));
    std::this_thread::sleep_for(200ms);
    ::kill(pid, SIGKILL);
    CHECK(w.get() == 502);
    std::ofstream(nginx.root() + "/n.txt", std::ios::trunc) << "v3 applied before the crash";
    nginx.start();
    std::this_thread::sleep_for(400ms);   // past the settle time
    check_revalidated(c, "/n.txt", tag);
}

TEST_CASE("I3: a proxy killed (SIGKILL) while it holds a lease: the other instance serves meanwhile; "
          "writable again after the lease; the pre-write validator is refused") {
    redis_server redis;
    fake_origin origin;
    auto p1 = free_port(), p2 = free_port();
    proxy_process a(workload_proxy_yaml(process_config(p1, origin.port(), redis)), p1);
    proxy_process b(workload_proxy_yaml(process_config(p2, origin.port(), redis)), p2);
    wait_until_judging(p1);
    wait_until_judging(p2);
    http_client cb(p2);
    REQUIRE(cb.request("PUT", "/c", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto tag = cb.request("GET", "/c").header("ETag");

    // The write is held 1.2 s by the origin (which then applies it); its proxy dies meanwhile.
    origin.set_kv_delay(1200ms);
    auto doomed = std::async(std::launch::async, [p1, tag] {
        http_client ca(p1);
        try {
            return ca.request("PUT", "/c", {{"If-Match", tag}}, "written by the dead proxy").status;
        } catch (const std::exception&) {
            return 0u;
        }
    });
    REQUIRE(eventually([&] { return origin.count("PUT", "/c") == 2; }, 2s));
    origin.set_kv_delay(0ms);
    a.kill();
    auto killed = std::chrono::steady_clock::now();
    CHECK(doomed.get() == 0);

    auto busy = cb.request("PUT", "/c", {{"If-Match", tag}}, "x");
    CHECK(busy.status == 409);
    CHECK(says(busy, "write-in-progress"));
    CHECK(busy.header("Retry-After") == "1");
    CHECK(cb.request("PUT", "/other", {{"If-None-Match", "*"}}, "o").status == 201);
    CHECK(cb.request("GET", "/c").status == 200);

    response r;
    REQUIRE(eventually([&] { return !says(r = cb.request("PUT", "/c", {{"If-Match", tag}}, "stale"), "write-in-progress"); },
                       lease + 2s));
    CHECK(std::chrono::steady_clock::now() - killed < lease + 500ms);
    CHECK(origin.get("/c") == "written by the dead proxy");
    check_revalidated(cb, "/c", tag, r);
}

TEST_CASE("graceful drain: SIGTERM with conditional writes in flight answers them all and leaves no "
          "lease held") {
    redis_server redis;
    fake_origin origin;
    auto port = free_port();
    // No drain delay: this test is about what follows it (the delay has a test in ops_test).
    auto cfg = process_config(port, origin.port(), redis);
    cfg.extra = "limits: { drain_delay: 0ms }\n";
    proxy_process px(workload_proxy_yaml(cfg), port);
    wait_until_judging(port);
    auto before = origin.requests().size();
    origin.set_kv_delay(400ms);
    std::vector<std::future<unsigned>> writes;
    for (int i = 0; i < 4; ++i)
        writes.push_back(std::async(std::launch::async, [port, i] {
            http_client c(port);
            try {
                return c.request("PUT", "/d" + std::to_string(i), {{"If-None-Match", "*"}}, "v").status;
            } catch (const std::exception&) {
                return 0u;
            }
        }));
    REQUIRE(origin.wait_for_requests(before + 4, 2s));
    px.terminate();
    for (auto& w : writes) CHECK(w.get() == 201);
    CHECK(px.wait(5s) == 0);
    for (int i = 0; i < 4; ++i) CHECK(origin.get("/d" + std::to_string(i)) == "v");
    // No lease and no write-in-flight marker left behind.
    CHECK(redis.command({"KEYS", "ifm:*:l"}).empty());
    CHECK(redis.command({"EVAL",
                         "local n = 0 "
                         "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                         "  if redis.call('TYPE', k).ok == 'hash' and redis.call('HEXISTS', k, 'w') == 1 then n = n + 1 end "
                         "end return n",
                         "0", "ifm:*"}) == "0");
}

// Issue 15, slow Redis: a write whose acquire timed out was answered 503 and never forwarded, but
// Redis ran the acquire once it woke up and held the lease for nobody: every later write to the
// resource got 409 write-in-progress until the lease expired (bench/hostile --only slowredis saw
// 15 s of them after a few DEBUG SLEEPs).
TEST_CASE("a write refused 503 because Redis was slow leaves no lease behind: the next write goes through") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis(c, redis);
        c.routes[1].write_lease = 10s;   // how long an orphaned lease would block the resource
    });
    http_client c(px.port());
    REQUIRE(c.request("PUT", "/p", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto tag = c.request("GET", "/p").header("ETag");

    // Stopped, not dead: the acquire waits in Redis's socket buffer while the proxy gives up.
    redis.process().signal(SIGSTOP);
    auto slow = c.request("PUT", "/p", {{"If-Match", tag}}, "v2");
    CHECK(slow.status == 503);
    CHECK(says(slow, "store-unavailable"));
    std::this_thread::sleep_for(100ms);
    redis.process().signal(SIGCONT);

    // Redis runs the late acquire now; the lease it takes must not outlive the 503.
    CHECK(eventually([&] { return redis.command({"KEYS", "ifm:*:l"}).empty(); }, 2s));
    auto next = c.request("PUT", "/p", {{"If-Match", tag}}, "v2");
    CHECK(next.status == 204);
    CHECK(px.origin().get("/p") == "v2");
    CHECK(px.origin().count("PUT", "/p") == 2);   // the create and this one: the 503 forwarded nothing
}

// The same when the connection is dropped meanwhile (no reply for store.connect_timeout): the
// acquires still in flight then fail with `unavailable`, not a timeout, yet Redis has them and
// runs them when it wakes up. One resource per write, so that each of them takes a lease.
TEST_CASE("a slow Redis whose connection is dropped: the acquires in flight leave no lease behind either") {
    redis_server redis;
    proxy_fixture px([&](ifm::config::config& c) {
        use_redis(c, redis);
        c.routes[1].write_lease = 10s;
        c.store.connect_timeout = 500ms;
    });
    auto port = px.port();
    http_client warm(port);
    REQUIRE(warm.request("PUT", "/warm", {{"If-None-Match", "*"}}, "v1").status == 201);

    redis.process().signal(SIGSTOP);
    std::atomic<int> refused{0}, other{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < 3; ++w)
        writers.emplace_back([&, w] {
            http_client c(port);
            const auto until = std::chrono::steady_clock::now() + 1500ms;
            for (int i = 0; std::chrono::steady_clock::now() < until; ++i) {
                auto path = "/w" + std::to_string(w) + "-" + std::to_string(i);
                ++(c.request("PUT", path, {}, "v").status == 503 ? refused : other);
                std::this_thread::sleep_for(20ms);
            }
        });
    for (auto& t : writers) t.join();
    redis.process().signal(SIGCONT);
    CHECK(refused > 3);
    CHECK(other == 0);

    // Every lease the late acquires took is released (after the reconnect for those whose reply
    // was lost with the connection), long before the 10 s lease would have expired.
    INFO("leases left: " << redis.command({"KEYS", "ifm:*:l"}));
    CHECK(eventually([&] { return redis.command({"KEYS", "ifm:*:l"}).empty(); }, 4s));
    CHECK(px.origin().count("PUT") == 1);   // the warm-up: nothing else was forwarded
}

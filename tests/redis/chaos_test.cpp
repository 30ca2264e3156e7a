// Chaos (issue 4): the lost-update workload (tests/support/workload.hpp) runs through two proxy
// processes for a bounded time while three scripts, each on its own random schedule, kill and
// restart Redis (which comes back empty), SIGKILL and restart one proxy instance, and make the
// origin slow or fail: nginx paused (SIGSTOP, up to 900 ms) or stopped and started again, and a
// relay in front of it that delays requests (up to 700 ms a chunk, so they overtake one another
// and some outlive the 1 s origin timeout) or cuts every connection mid-exchange. The faults
// overlap freely. Every write lands within its 3 s lease, so nothing here is unfenced.
//
// Checked at the end (I1, I3, I4): no accepted write was lost and none applied twice; every write
// in the document was accepted or of unknown outcome (so the counter equals the accepted writes
// plus the unknown ones that landed); every state a client read survives in the final document;
// no request outlived its timeout; no resource stays locked. IFM_CHAOS_SEED=N replays a schedule
// (as far as thread timing allows).
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

constexpr auto run_for = 30s;
constexpr auto write_lease = 3s;

// Sleeps `d` in short slices; false as soon as `stop` is raised.
bool nap(const std::atomic<bool>& stop, std::chrono::milliseconds d) {
    auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
        if (stop) return false;
        std::this_thread::sleep_for(10ms);
    }
    return !stop;
}

std::chrono::milliseconds between(std::mt19937& rng, int lo_ms, int hi_ms) {
    return std::chrono::milliseconds(std::uniform_int_distribution<int>(lo_ms, hi_ms)(rng));
}

// Between the proxies and nginx: delays what the proxies send, chunk by chunk, by up to
// `max_delay` (each connection keeps its order while connections overtake one another, as at an
// origin that serves requests concurrently; nginx alone answers in arrival order), and can cut
// every connection at once.
class jitter_relay {
public:
    jitter_relay(std::uint16_t target, unsigned seed) : target_(target), seed_(seed) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr = loopback(0);
        socklen_t len = sizeof addr;
        if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
            ::listen(listen_fd_, 128) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
            throw std::runtime_error("jitter_relay: cannot listen");
        port_ = ntohs(addr.sin_port);
        acceptor_ = std::thread([this] { run_accept(); });
    }
    ~jitter_relay() {
        stop_ = true;
        acceptor_.join();
        ::close(listen_fd_);
        cut_all();
        for (auto& t : pumps_) t.join();
    }
    std::uint16_t port() const { return port_; }
    void set_max_delay(std::chrono::milliseconds d) { max_delay_ms_ = d.count(); }
    // Both directions of every open connection end now (mid-request or mid-response).
    void cut_all() {
        std::lock_guard lock(mu_);
        for (auto& w : links_)
            if (auto l = w.lock()) {
                ::shutdown(l->client, SHUT_RDWR);
                ::shutdown(l->origin, SHUT_RDWR);
            }
    }

private:
    struct link {
        int client = -1, origin = -1;
        ~link() {
            ::close(client);
            ::close(origin);
        }
    };

    static sockaddr_in loopback(std::uint16_t port) {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return addr;
    }

    void run_accept() {
        for (unsigned n = 0; !stop_;) {
            pollfd p{listen_fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            auto l = std::make_shared<link>();
            l->client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (l->client < 0) continue;
            l->origin = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            auto addr = loopback(target_);
            if (::connect(l->origin, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) continue;  // closes both
            int one = 1;
            ::setsockopt(l->client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            ::setsockopt(l->origin, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            std::lock_guard lock(mu_);
            std::erase_if(links_, [](auto& w) { return w.expired(); });
            links_.push_back(l);
            pumps_.emplace_back([this, l, s = seed_ + ++n] { pump(l, true, s); });
            pumps_.emplace_back([this, l] { pump(l, false, 0); });
        }
    }

    void pump(std::shared_ptr<link> l, bool to_origin, unsigned seed) {
        std::mt19937 rng(seed);
        int from = to_origin ? l->client : l->origin, to = to_origin ? l->origin : l->client;
        char buf[16 * 1024];
        while (!stop_) {
            pollfd p{from, POLLIN, 0};
            if (::poll(&p, 1, 50) == 0) continue;
            auto n = ::recv(from, buf, sizeof buf, 0);
            if (n <= 0) break;
            if (auto max = max_delay_ms_.load(); to_origin && max > 0)
                std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<long>(0, max)(rng)));
            for (ssize_t sent = 0; sent < n;) {
                auto k = ::send(to, buf + sent, static_cast<std::size_t>(n - sent), MSG_NOSIGNAL);
                if (k <= 0) {
                    ::shutdown(from, SHUT_RDWR);
                    break;
                }
                sent += k;
            }
        }
        ::shutdown(to, SHUT_WR);   // pass the end on
    }

    std::uint16_t target_, port_ = 0;
    unsigned seed_;
    int listen_fd_ = -1;
    std::atomic<bool> stop_{false};
    std::atomic<long> max_delay_ms_{0};
    std::mutex mu_;
    std::vector<std::weak_ptr<link>> links_;
    std::vector<std::thread> pumps_;
    std::thread acceptor_;
};

// Retries `start` (a port may take a moment to come free) and says whether it worked.
template <class F>
bool start_again(F start) {
    for (int i = 0; i < 5; ++i) {
        try {
            start();
            return true;
        } catch (const std::exception&) {
            std::this_thread::sleep_for(200ms);
        }
    }
    return false;
}

}  // namespace

TEST_CASE("chaos: lost-update workload through two proxies while Redis, one proxy and the origin fail") {
    unsigned seed = std::random_device{}();
    if (const char* s = std::getenv("IFM_CHAOS_SEED")) seed = static_cast<unsigned>(std::strtoul(s, nullptr, 10));
    MESSAGE("IFM_CHAOS_SEED=" << seed);

    nginx_webdav nginx;
    redis_server redis;
    {
        http_client direct(nginx.port());
        REQUIRE(direct.request("PUT", "/counter.txt", {}, format_counter_doc({})).status / 100 == 2);
    }
    jitter_relay relay(nginx.port(), seed + 3);
    auto p1 = free_port(), p2 = free_port();
    auto yaml = [&](std::uint16_t port) {
        return workload_proxy_yaml({.port = port, .origin_port = relay.port(), .redis_url = redis.url(),
                                    .write_lease = "3s", .request_timeout = "1s", .store_timeout = "200ms",
                                    .young_server_wait = true});
    };
    proxy_process a(yaml(p1), p1);
    auto b = std::make_unique<proxy_process>(yaml(p2), p2);

    std::atomic<bool> stop{false};
    std::atomic<int> redis_restarts{0}, proxy_kills{0}, origin_pauses{0}, origin_outages{0}, slow_phases{0}, cuts{0};
    std::atomic<bool> restart_failed{false};

    // A Redis that comes back empty refuses writes until the fleet's longest lease (3 s) and its
    // margin have passed (young_server_wait), so restarts are spaced for writes to get through.
    std::thread redis_chaos([&] {
        std::mt19937 rng(seed);
        while (nap(stop, between(rng, 4000, 7000))) {
            redis.stop();
            ++redis_restarts;
            nap(stop, between(rng, 50, 500));
            if (!start_again([&] { redis.start(); })) restart_failed = true;
        }
    });
    std::thread proxy_chaos([&] {
        std::mt19937 rng(seed + 1);
        while (nap(stop, between(rng, 2000, 5000))) {
            b->kill();
            ++proxy_kills;
            nap(stop, between(rng, 100, 800));
            if (!start_again([&] { b = std::make_unique<proxy_process>(yaml(p2), p2); })) restart_failed = true;
        }
    });
    std::thread origin_chaos([&] {
        std::mt19937 rng(seed + 2);
        while (nap(stop, between(rng, 500, 2000))) {
            switch (rng() % 4) {
            case 0: {
                auto pid = nginx_pid(nginx);
                if (pid <= 0 || ::kill(pid, SIGSTOP) != 0) break;
                ++origin_pauses;
                nap(stop, between(rng, 200, 900));
                ::kill(pid, SIGCONT);
                break;
            }
            case 1:
                nginx.stop();
                ++origin_outages;
                nap(stop, between(rng, 100, 500));
                if (!start_again([&] { nginx.start(); })) restart_failed = true;
                break;
            case 2:
                relay.set_max_delay(between(rng, 200, 700));
                ++slow_phases;
                nap(stop, between(rng, 1000, 3000));
                relay.set_max_delay(0ms);
                break;
            default:
                relay.cut_all();
                ++cuts;
                break;
            }
        }
    });

    workload_options opts;
    opts.writes_per_client = 0;   // write until run_for has passed
    opts.run_for = run_for;
    opts.request_timeout = 5s;    // above the proxy's worst case (store and origin timeouts, twice)
    auto r = run_workload({p1, p2}, opts);
    stop = true;
    redis_chaos.join();
    proxy_chaos.join();
    origin_chaos.join();
    REQUIRE_FALSE(restart_failed);

    // Everything is up again. Once the dead instance's leases and the proxies' restart grace
    // have run out, a write conditioned on the current tag goes through each proxy: nothing
    // stays locked. These writes join the accounting.
    for (auto port : {p1, p2}) {
        CAPTURE(port);
        http_client c(port);
        auto id = "final." + std::to_string(port);
        CHECK(eventually([&] {
            try {
                auto g = c.request("GET", "/counter.txt");
                auto doc = g.status == 200 ? parse_counter_doc(g.body) : std::nullopt;
                if (!doc) return false;
                ++doc->value;
                doc->history.push_back(id);
                if (c.request("PUT", "/counter.txt", {{"If-Match", g.header("ETag")}}, format_counter_doc(*doc)).status / 100 != 2)
                    return false;
                ++r.accepted;
                r.accepted_ids.insert(id);
                return true;
            } catch (const std::exception&) {
                return false;
            }
        }, write_lease + 5s));
    }
    CHECK(redis.command({"KEYS", "ifm:*:l"}).empty());

    r.final_doc = read_counter_doc(nginx.port());
    REQUIRE(r.final_doc);
    auto landed = applied_unknown(r);
    std::string statuses;
    for (auto [status, n] : r.write_statuses) statuses += " " + std::to_string(status) + ":" + std::to_string(n);
    MESSAGE("faults: " << redis_restarts.load() << " Redis restarts, " << proxy_kills.load() << " proxy kills, "
                       << origin_pauses.load() << " origin pauses, " << origin_outages.load() << " origin outages, "
                       << slow_phases.load() << " slow phases, " << cuts.load() << " cuts");
    MESSAGE("writes: " << r.accepted << " accepted, " << r.rejected << " refused, " << r.unknown
                       << " unknown (" << landed << " landed); statuses" << statuses << "; " << r.read_failures
                       << " failed reads; counter " << r.final_doc->value);
    for (const auto& e : r.errors) MESSAGE("client error: " << e);
    auto violations = lost_update_violations(r);
    CHECK(violations.empty());
    for (std::size_t i = 0; i < std::min<std::size_t>(violations.size(), 10); ++i) MESSAGE(violations[i]);
    CHECK(r.final_doc->value == r.accepted + landed);
    CHECK(r.hung == 0);
    // The run exercised something: writes went through, and every kind of fault happened.
    CHECK(r.accepted >= 20);
    CHECK(redis_restarts > 0);
    CHECK(proxy_kills > 0);
    CHECK(origin_pauses + origin_outages + slow_phases + cuts > 0);
}

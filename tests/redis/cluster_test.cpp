// Redis Cluster (issue 8): real redis-server processes on loopback joined by
// `redis-cli --cluster create`. The store routes each resource to its slot's master with CRC16,
// loads its scripts on every node, follows MOVED and ASK, fails closed during a slot migration
// and after a master is lost, and follows a replica's promotion.
#include "cache/crc16.hpp"
#include "cache/redis_connection.hpp"
#include "cache/redis_store.hpp"
#include "tests/support/redis_topology.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <thread>

namespace ifm::cache::lua {
extern const std::string_view acquire;
extern const std::string_view store_under_lease;
extern const std::string_view commit;
extern const std::string_view snapshot;
extern const std::string_view observe;
}  // namespace ifm::cache::lua

using namespace ifm;
using namespace ifm::cache;
using namespace ifm::test;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

// The slot of the workload's counter document: its hash key exists once a read recorded it.
int counter_slot(redis_cluster& cluster, const std::atomic<bool>& stop) {
    while (!stop) {
        for (std::size_t n = 0; n < cluster.nodes(); ++n) {
            for (const auto& line : split_lines(cluster.node(n).command({"KEYS", "ifm:*counter*"}))) {
                if (!line.empty() && !line.starts_with("ERR:") && !line.ends_with(":l")) return cluster.keyslot(line);
            }
        }
        std::this_thread::sleep_for(20ms);
    }
    return -1;
}

void report(const workload_result& r) {
    std::string statuses;
    for (auto [status, n] : r.write_statuses) statuses += " " + std::to_string(status) + ":" + std::to_string(n);
    MESSAGE("writes: " << r.accepted << " accepted, " << r.rejected << " refused, " << r.unknown << " unknown ("
                       << applied_unknown(r) << " landed); statuses" << statuses << "; counter "
                       << (r.final_doc ? r.final_doc->value : -1));
    for (const auto& e : r.errors) MESSAGE("client error: " << e);
}

std::string tag(int i) {
    return "\"v" + std::to_string(i) + "\"";
}

// A resource key (other than `key`) whose store keys land in the same slot.
std::string same_slot_as(const std::string& key) {
    const auto slot = hash_slot(redis_store::resource_key("t", key));
    for (int i = 0;; ++i) {
        auto other = "other" + std::to_string(i);
        if (hash_slot(redis_store::resource_key("t", other)) == slot) return other;
    }
}

}  // namespace

TEST_CASE("cluster: hash_slot() agrees with CLUSTER KEYSLOT on resource and lease keys") {
    redis_cluster cluster(3);
    std::mt19937 rng(7);
    const std::string alphabet = "ab{}%:/ ?=&xyz0123456789";
    for (int i = 0; i < 200; ++i) {
        std::string key = "route0 /";
        for (int n = rng() % 24; n > 0; --n) key.push_back(alphabet[rng() % alphabet.size()]);
        auto hash = redis_store::resource_key("ifm", key);
        CAPTURE(hash);
        CHECK(hash_slot(hash) == cluster.keyslot(hash));
        CHECK(hash_slot(hash + ":l") == cluster.keyslot(hash + ":l"));
    }
    CHECK(hash_slot("somekey") == cluster.keyslot("somekey"));
    CHECK(hash_slot("foo{}{bar}") == cluster.keyslot("foo{}{bar}"));
}

TEST_CASE("cluster: resources spread over three masters; scripts loaded on every node") {
    redis_cluster cluster(3);
    store_client s(redis_store_config(cluster.url()));   // two seeds: the third master is learnt
    REQUIRE(s.wait_ready(5s));
    CHECK(s.store->connected());
    // Loaded when each connection was made, before any script ran (wait_ready only pings): a
    // NOSCRIPT reload later would hide a node that was never loaded. SHA1s as the store makes them.
    {
        const auto& scripts = redis_store::scripts();
        std::vector<std::string> exists{"SCRIPT", "EXISTS"};
        std::string all_loaded;
        for (const auto& script : scripts) {
            exists.push_back(script.sha1);
            all_loaded += all_loaded.empty() ? "1" : "\n1";
        }
        for (std::size_t n = 0; n < cluster.nodes(); ++n) {   // three masters, no replicas
            CAPTURE(n);
            CHECK(cluster.node(n).command({"ROLE"}).starts_with("master"));
            CHECK(cluster.node(n).command(exists) == all_loaded);
        }
    }

    for (int i = 0; i < 60; ++i) s.put_state("doc" + std::to_string(i), resource_state::present(tag(i)));
    for (int i = 0; i < 60; ++i) {
        auto key = "doc" + std::to_string(i);
        auto snap = s.run(s.store->async_snapshot(key));
        REQUIRE(snap.has_value());
        CHECK(snap->state == resource_state::present(tag(i)));
        CHECK(snap->generation > 0);
        CHECK_FALSE(snap->leased);
        // Where the resource lives is where CLUSTER KEYSLOT puts it.
        auto owner = cluster.owner_of(hash_slot(redis_store::resource_key("t", key)));
        REQUIRE(owner >= 0);
        CHECK(cluster.node(owner).command({"HGET", "t:{" + key + "}", "v:"}) == tag(i));   // default variant
    }
    for (std::size_t n = 0; n < cluster.nodes(); ++n) {
        CAPTURE(n);
        CHECK(std::stoi(cluster.node(n).command({"DBSIZE"})) > 0);
        CHECK(cluster.node(n).command({"SCRIPT", "EXISTS", redis_store::scripts()[0].sha1,
                                       redis_store::scripts()[2].sha1}) == "1\n1");   // acquire, commit
    }
    // One connection per master for this worker.
    for (std::size_t n = 0; n < cluster.nodes(); ++n) {
        auto clients = cluster.node(n).command({"CLIENT", "LIST"});
        std::size_t ours = 0;
        for (auto at = clients.find("name=ifmatch-proxy "); at != std::string::npos;
             at = clients.find("name=ifmatch-proxy ", at + 1))
            ++ours;
        CHECK(ours == 1);
    }
}

TEST_CASE("cluster: a slot moved under a held lease: ASK while it migrates, MOVED after; TRYAGAIN fails closed") {
    bool module = false;
    SUBCASE("Lua scripts") {}
    SUBCASE("the Redis module on every node (acquire and commit redirected as its commands)") { module = true; }
    redis_cluster cluster(3, 0, 1000ms, module ? redis_module_args() : std::vector<std::string>{});
    store_client s(redis_store_config(cluster.url()));
    REQUIRE(s.wait_ready(5s));
    const std::string key = "moving";
    const std::string neighbour = same_slot_as(key);
    s.put_state(neighbour, resource_state::present(tag(0)));
    auto lease = s.run(s.store->async_acquire(key, condition{}, 30s));   // both keys of `key` exist
    REQUIRE(lease.has_value());
    REQUIRE(!lease->token.empty());

    const int slot = hash_slot(redis_store::resource_key("t", key));
    const int from = cluster.owner_of(slot);
    REQUIRE(from >= 0);
    const std::size_t to = (static_cast<std::size_t>(from) + 1) % 3;
    cluster.move_slot(slot, to, [&] {
        // Every key is on the target, the slot still belongs to the source: the source answers
        // ASK, the target serves the ASKING script because both keys of the lease are there.
        auto stored = s.run(s.store->async_store_under_lease(key, lease->token, resource_state::present(tag(1))));
        REQUIRE(stored.has_value());
        CHECK(*stored);
        // `neighbour` has a hash but no lease key: while the slot is split Redis can run a
        // two-key script nowhere (TRYAGAIN); after a few retries the store fails closed.
        auto snap = s.run(s.store->async_snapshot(neighbour));
        REQUIRE_FALSE(snap.has_value());
        CHECK(fails_closed(snap.error()));
    });
    REQUIRE(cluster.owner_of(slot) == static_cast<int>(to));
    CHECK(cluster.node(to).command({"GET", "t:{" + key + "}:l"}) == lease->token);

    // The slot map still names the source: MOVED, then the map is refreshed.
    auto committed = s.run(s.store->async_commit(key, lease->token, commit_outcome::set, resource_state::present(tag(2))));
    REQUIRE(committed.has_value());
    CHECK(*committed);
    auto snap = s.run(s.store->async_snapshot(key));
    REQUIRE(snap.has_value());
    CHECK(snap->state == resource_state::present(tag(2)));
    CHECK_FALSE(snap->leased);
    snap = s.run(s.store->async_snapshot(neighbour));
    REQUIRE(snap.has_value());
    CHECK(snap->state == resource_state::present(tag(0)));
    CHECK(cluster.node(static_cast<std::size_t>(from)).command({"EXISTS", "t:{" + key + "}"}).starts_with("ERR:MOVED "));
    // The commit that followed MOVED ran on the new owner, as the module's command or a script.
    CHECK(cluster.node(to).calls("ifm.commit") == (module ? 1 : 0));
}

TEST_CASE("cluster: a killed master's slots fail closed until its replica takes over, with the WAIT-confirmed lease") {
    redis_cluster cluster(3, 1);   // three masters, one replica each
    auto cfg = redis_store_config(cluster.url());
    cfg.wait_replicas = 1;   // a lease must be on the replica that a failover promotes
    cfg.wait_timeout = 3s;   // the set-up's 30 writes each wait for the replica (slow under ASan)
    store_client s(cfg);
    REQUIRE(s.wait_ready(5s));
    for (int i = 0; i < 30; ++i) s.put_state("doc" + std::to_string(i), resource_state::present(tag(i)));
    auto inflight = s.run(s.store->async_acquire("doc0", condition{}, 60s));
    REQUIRE(inflight.has_value());
    REQUIRE(!inflight->token.empty());

    const int slot = hash_slot(redis_store::resource_key("t", "doc0"));
    const int victim = cluster.owner_of(slot);
    REQUIRE(victim >= 0);
    const auto killed_at = clock_type::now();
    cluster.node(static_cast<std::size_t>(victim)).stop();

    // Until the replica takes over, doc0 fails closed; then it is served from the replica,
    // with the lease of the write in flight (confirmed by WAIT before the kill).
    const auto deadline = clock_type::now() + 30s;
    int failures = 0;
    result<snapshot> snap = boost::system::error_code(store_errc::unavailable);
    while (clock_type::now() < deadline) {
        snap = s.run(s.store->async_snapshot("doc0"));
        if (snap) break;
        CHECK(fails_closed(snap.error()));
        ++failures;
        s.idle(50ms);
    }
    REQUIRE(snap.has_value());
    MESSAGE("doc0 served again " << std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - killed_at).count()
                                 << " ms after its master was killed (" << failures << " failed attempts)");
    CHECK(snap->leased);
    CHECK(failures > 0);
    const int promoted = cluster.owner_of(slot);
    CHECK(promoted >= 0);
    CHECK(promoted != victim);
    auto busy = s.run(s.store->async_acquire("doc0", condition{}, 10s));
    REQUIRE(busy.has_value());
    CHECK(busy->status == acquire_status::busy);
    // Every resource is readable again once the cluster is whole.
    REQUIRE(cluster.wait_ok(20s));
    for (int i = 1; i < 30; ++i) {
        CAPTURE(i);
        auto r = s.run(s.store->async_snapshot("doc" + std::to_string(i)));
        REQUIRE(r.has_value());
        CHECK(r->state == resource_state::present(tag(i)));
    }
}

TEST_CASE("cluster: lost-update workload (3 masters) while the counter's slot is resharded back and forth") {
    redis_cluster cluster(3);
    int moves = 0;
    workload_options opts;
    opts.writes_per_client = 60;   // 8 clients: 480 writes, long enough for several moves
    opts.run_for = 45s;
    opts.request_timeout = 5s;
    auto r = run_workload_with_fault(cluster.url(), opts, [&](const std::atomic<bool>& stop) {
        const int slot = counter_slot(cluster, stop);
        while (!stop && moves < 8) {
            auto to = (static_cast<std::size_t>(cluster.owner_of(slot)) + 1) % 3;
            // Hold the slot split for a moment: requests meet ASK and TRYAGAIN, then MOVED.
            cluster.move_slot(slot, to, [] { std::this_thread::sleep_for(50ms); });
            ++moves;
            std::this_thread::sleep_for(100ms);
        }
    });
    REQUIRE(r.final_doc);
    report(r);
    MESSAGE(moves << " moves of the counter's slot");
    for (const auto& v : lost_update_violations(r)) FAIL_CHECK(v);
    CHECK(moves >= 2);
    CHECK(r.all_finished);
    CHECK(r.accepted == 8 * 60);
    CHECK(r.final_doc->value == r.accepted + applied_unknown(r));
    CHECK(r.hung == 0);
}

TEST_CASE("cluster: lost-update workload, the counter's master killed mid-run: no lost update; writes resume after its replica takes over") {
    redis_cluster cluster(3, 1);
    std::atomic<bool> killed_mid_run{false}, failed_over{false};
    workload_options opts;
    opts.writes_per_client = 60;
    opts.run_for = 45s;
    opts.request_timeout = 5s;
    auto r = run_workload_with_fault(cluster.url(), opts, [&](const std::atomic<bool>& stop) {
        const int slot = counter_slot(cluster, stop);
        std::this_thread::sleep_for(200ms);
        const int victim = cluster.owner_of(slot);
        if (victim < 0) return;
        killed_mid_run = !stop;
        cluster.node(static_cast<std::size_t>(victim)).stop();
        failed_over = eventually([&] {
            auto owner = cluster.owner_of(slot);
            return owner >= 0 && owner != victim;
        }, 20s);
        // The promoted replica has no replica of its own to confirm leases until the old master
        // is back: restarted with its nodes.conf, it rejoins as the new master's replica.
        cluster.node(static_cast<std::size_t>(victim)).start();
    }, "wait_replicas: 1, wait_timeout: 300ms");
    REQUIRE(r.final_doc);
    report(r);
    for (const auto& v : lost_update_violations(r)) FAIL_CHECK(v);
    CHECK(killed_mid_run);
    CHECK(failed_over);
    CHECK(r.all_finished);   // writes resumed after the failover
    CHECK(r.accepted == 8 * 60);
    CHECK(r.final_doc->value == r.accepted + applied_unknown(r));
    CHECK(r.hung == 0);
}

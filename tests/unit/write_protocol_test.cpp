// The write protocol's state machine (proxy/write_protocol.hpp), sans io: each test feeds results
// and asserts the next action, as Boost.MySQL tests its algorithms. The commit table of SPEC §5.4
// is checked row by row; the simulator (tests/sim) checks the machine under interleavings.
#include "cache/memory_store.hpp"
#include "proxy/write_protocol.hpp"

#include <doctest/doctest.h>

using namespace ifm;
using namespace ifm::proxy;
using namespace std::chrono_literals;
using cache::acquire_status;
using cache::commit_outcome;
using cache::resource_state;
using kind = write_action::kind;
using reply_kind = write_action::reply_kind;

namespace {

const auto t0 = protocol_clock::time_point{} + 1000s;

cache::condition if_match(std::string tag) {
    cache::condition c;
    c.if_match = cache::condition::match::list;
    c.if_match_tags.push_back(std::move(tag));
    return c;
}

cache::result<cache::acquire_result> acquired(acquire_status s, resource_state current = {}) {
    cache::acquire_result r;
    r.status = s;
    r.current = std::move(current);
    if (s == acquire_status::ok || s == acquire_status::unknown) r.token = "tok";
    return r;
}

origin_answer answer(unsigned status) {
    origin_answer a;
    a.k = origin_answer::kind::response;
    a.status = status;
    return a;
}

write_params params(config::etag_mode mode = config::etag_mode::hash) {
    write_params p;
    p.cond = if_match("\"v1\"");
    p.etag = mode;
    p.lease = 15s;
    p.origin_deadline = 10s;
    p.safety_margin = 1s;
    return p;
}

// Runs acquire(ok) -> forward -> answer; returns the commit action.
write_action commit_for(write_params p, const origin_answer& a) {
    write_machine m(p);
    auto x = m.start(t0);
    REQUIRE(x.what == kind::acquire);
    x = m.on_acquired(acquired(acquire_status::ok, resource_state::present("\"v1\"")), t0);
    REQUIRE(x.what == kind::forward);
    return m.on_forwarded(a, t0 + 1s);
}

}  // namespace

TEST_CASE("write machine: the commit table of SPEC §5.4, row by row") {
    SUBCASE("2xx in hash mode: unknown, released") {
        auto c = commit_for(params(), answer(204));
        CHECK(c.what == kind::commit);
        CHECK(c.outcome == commit_outcome::set);
        CHECK(c.state == resource_state::unknown());
        CHECK(c.hold == 0ms);
    }
    SUBCASE("2xx in origin mode: the origin's strong ETag") {
        auto a = answer(200);
        a.validator = resource_state::present("\"o2\"");
        auto c = commit_for(params(config::etag_mode::origin), a);
        CHECK(c.outcome == commit_outcome::set);
        CHECK(c.state == resource_state::present("\"o2\""));
        CHECK(c.hold == 0ms);
    }
    SUBCASE("2xx DELETE: absent") {
        auto p = params();
        p.is_delete = true;
        auto c = commit_for(p, answer(204));
        CHECK(c.state == resource_state::absent());
    }
    SUBCASE("202: unknown, and the lease is kept (a queued write must not be overtaken)") {
        auto c = commit_for(params(), answer(202));
        CHECK(c.outcome == commit_outcome::unknown);
        CHECK(c.hold == 15s);
    }
    SUBCASE("3xx: unknown (legacy apps apply, then redirect)") {
        for (unsigned s : {301u, 302u, 303u, 307u}) {
            auto c = commit_for(params(), answer(s));
            CHECK(c.outcome == commit_outcome::unknown);
            CHECK(c.hold == 0ms);
        }
    }
    SUBCASE("4xx: the old validator stays") {
        auto c = commit_for(params(), answer(409));
        CHECK(c.outcome == commit_outcome::keep);
        CHECK(c.hold == 0ms);
    }
    SUBCASE("4xx after a retry on a fresh connection: unknown, held") {
        auto a = answer(404);
        a.retried = true;
        auto c = commit_for(params(), a);
        CHECK(c.outcome == commit_outcome::unknown);
        CHECK(c.hold == 15s);
    }
    SUBCASE("5xx: unknown, held for the settle time") {
        auto p = params();
        p.settle = 4s;
        auto c = commit_for(p, answer(502));
        CHECK(c.outcome == commit_outcome::unknown);
        CHECK(c.hold == 4s);
    }
    SUBCASE("timeout, reset, truncated: unknown, held") {
        origin_answer a;
        a.k = origin_answer::kind::lost;
        auto c = commit_for(params(), a);
        CHECK(c.outcome == commit_outcome::unknown);
        CHECK(c.hold == 15s);
    }
    SUBCASE("nothing sent: kept, released") {
        origin_answer a;
        a.k = origin_answer::kind::not_sent;
        auto c = commit_for(params(), a);
        CHECK(c.outcome == commit_outcome::keep);
        CHECK(c.hold == 0ms);
    }
    SUBCASE("a write the proxy does not judge: 2xx makes it unknown") {
        auto p = params();
        p.invalidate_only = true;
        auto c = commit_for(p, answer(201));
        CHECK(c.outcome == commit_outcome::unknown);
    }
}

TEST_CASE("write machine: after the commit, relay or the origin's failure") {
    write_machine m(params());
    m.start(t0);
    m.on_acquired(acquired(acquire_status::ok), t0);
    auto c = m.on_forwarded(answer(204), t0);
    auto r = m.on_committed(true, t0);
    CHECK(r.what == kind::respond);
    CHECK(r.reply == reply_kind::relay);
    CHECK(r.etag.empty());
    CHECK(m.precondition() == outcome::passed);

    write_machine lost(params());
    lost.start(t0);
    lost.on_acquired(acquired(acquire_status::ok), t0);
    origin_answer a;
    a.k = origin_answer::kind::lost;
    lost.on_forwarded(a, t0);
    CHECK(lost.on_committed(true, t0).reply == reply_kind::origin_failed);
}

TEST_CASE("write machine: busy rejects, or waits with backoff within busy_wait") {
    write_machine reject(params());
    reject.start(t0);
    auto r = reject.on_acquired(acquired(acquire_status::busy), t0);
    CHECK(r.reply == reply_kind::busy);
    CHECK(reject.precondition() == outcome::rejected_busy);

    auto p = params();
    p.wait_on_busy = true;
    p.busy_wait = 20ms;
    write_machine wait(p);
    wait.start(t0);
    auto now = t0;
    int sleeps = 0;
    auto x = wait.on_acquired(acquired(acquire_status::busy), now);
    while (x.what == kind::sleep) {
        ++sleeps;
        now += x.delay;
        CHECK(wait.on_slept(now).what == kind::acquire);
        x = wait.on_acquired(acquired(acquire_status::busy), now);
    }
    CHECK(sleeps >= 2);
    CHECK(now - t0 < 20ms);
    CHECK(x.reply == reply_kind::busy);
}

TEST_CASE("write machine: a mismatch is rejected with the current state, or revalidated") {
    write_machine m(params());
    m.start(t0);
    auto r = m.on_acquired(acquired(acquire_status::mismatch, resource_state::present("\"v2\"")), t0);
    CHECK(r.reply == reply_kind::reject);
    CHECK(r.verdict == cache::verdict::stale);
    CHECK(r.current.etag == "\"v2\"");

    auto p = params();
    p.revalidate_on_mismatch = true;
    write_machine rv(p);
    rv.start(t0);
    auto x = rv.on_acquired(acquired(acquire_status::mismatch, resource_state::present("\"v2\"")), t0);
    CHECK(x.what == kind::acquire);
    CHECK(x.unconditional);
    x = rv.on_acquired(acquired(acquire_status::ok), t0);
    CHECK(x.what == kind::fetch);
    fetch_outcome f;
    f.status = 200;
    f.state = resource_state::present("\"v1\"");   // the origin says the client's tag is current
    x = rv.on_fetched(f, t0);
    CHECK(x.what == kind::store);
    x = rv.on_stored(true, t0);
    CHECK(x.what == kind::forward);
    CHECK(rv.precondition() == outcome::revalidated);
}

TEST_CASE("write machine: unknown state is revalidated under the lease, a stale tag then rejected with keep") {
    write_machine m(params());
    m.start(t0);
    auto x = m.on_acquired(acquired(acquire_status::unknown), t0);
    CHECK(x.what == kind::fetch);
    CHECK_FALSE(x.head);
    fetch_outcome f;
    f.status = 200;
    f.state = resource_state::present("\"v9\"");
    x = m.on_fetched(f, t0);
    REQUIRE(x.what == kind::store);
    x = m.on_stored(true, t0);
    CHECK(x.what == kind::commit);
    CHECK(x.outcome == commit_outcome::keep);
    x = m.on_committed(true, t0);
    CHECK(x.reply == reply_kind::reject);
    CHECK(m.precondition() == outcome::rejected_stale);

    write_machine failed(params());
    failed.start(t0);
    failed.on_acquired(acquired(acquire_status::unknown), t0);
    fetch_outcome bad;
    bad.status = 503;
    x = failed.on_fetched(bad, t0);
    CHECK(x.what == kind::commit);
    CHECK(x.outcome == commit_outcome::keep);
    CHECK(failed.on_committed(true, t0).reply == reply_kind::revalidation_failed);
    CHECK(failed.precondition() == outcome::aborted);

    write_machine lost(params());
    lost.start(t0);
    lost.on_acquired(acquired(acquire_status::unknown), t0);
    f.state = resource_state::present("\"v1\"");
    lost.on_fetched(f, t0);
    CHECK(lost.on_stored(false, t0).reply == reply_kind::lease_lost);

    // The store failed to record what was fetched (a slow Redis): nothing was forwarded, so the
    // lease goes back before the 503.
    write_machine slow(params());
    slow.start(t0);
    slow.on_acquired(acquired(acquire_status::unknown), t0);
    slow.on_fetched(f, t0);
    x = slow.on_stored(cache::result<bool>(boost::system::in_place_error, make_error_code(cache::store_errc::timeout)), t0);
    CHECK(x.what == kind::commit);
    CHECK(x.outcome == commit_outcome::keep);
    x = slow.on_committed(true, t0);
    CHECK(x.reply == reply_kind::store_unavailable);
    CHECK(x.store_error == make_error_code(cache::store_errc::timeout));
    CHECK(slow.precondition() == outcome::store_error);
    CHECK_FALSE(slow.forwarded());
}

TEST_CASE("write machine: never forwards with less than the origin's deadline plus the margin left") {
    write_machine m(params());
    m.start(t0);
    auto x = m.on_acquired(acquired(acquire_status::unknown), t0);
    fetch_outcome f;
    f.status = 200;
    f.state = resource_state::present("\"v1\"");
    m.on_fetched(f, t0 + 3s);
    x = m.on_stored(true, t0 + 4001ms);   // 10.999 s left < 10 s + 1 s
    CHECK(x.what == kind::commit);
    CHECK(x.outcome == commit_outcome::keep);
    CHECK(m.on_committed(true, t0).reply == reply_kind::lease_too_short);
    CHECK_FALSE(m.forwarded());

    write_machine ok(params());
    ok.start(t0);
    ok.on_acquired(acquired(acquire_status::unknown), t0);
    ok.on_fetched(f, t0);
    CHECK(ok.on_stored(true, t0 + 3999ms).what == kind::forward);
    CHECK(ok.write_deadline() == t0 + 14s);
}

TEST_CASE("write machine: store errors fail closed, or forward unchecked under fail_open") {
    write_machine m(params());
    m.start(t0);
    auto x = m.on_acquired(cache::result<cache::acquire_result>(boost::system::in_place_error,
                                                                 make_error_code(cache::store_errc::timeout)), t0);
    CHECK(x.reply == reply_kind::store_unavailable);
    CHECK(m.precondition() == outcome::store_error);

    auto p = params();
    p.fail_open = true;
    write_machine open(p);
    open.start(t0);
    x = open.on_acquired(cache::result<cache::acquire_result>(boost::system::in_place_error,
                                                               make_error_code(cache::store_errc::timeout)), t0);
    CHECK(x.what == kind::forward);
    CHECK(open.on_forwarded(answer(204), t0).reply == reply_kind::relay_unchecked);
}

TEST_CASE("write machine: refresh_after_write hands out the tag only if the commit held the lease") {
    auto p = params();
    p.refresh_after_write = true;
    for (bool held : {true, false}) {
        write_machine m(p);
        m.start(t0);
        m.on_acquired(acquired(acquire_status::ok), t0);
        auto x = m.on_forwarded(answer(204), t0);
        CHECK(x.what == kind::refresh);
        fetch_outcome f;
        f.status = 200;
        f.state = resource_state::present("\"v2\"");
        x = m.on_refreshed(f, t0);
        CHECK(x.what == kind::commit);
        CHECK(x.state.etag == "\"v2\"");
        x = m.on_committed(held, t0);
        CHECK(x.reply == reply_kind::relay);
        CHECK(x.etag == (held ? "\"v2\"" : ""));
    }
}

// ---- the memory backend, the store model the simulator and the embedded store share --------

namespace {

struct fake_clock {
    protocol_clock::time_point now = t0;
    cache::memory_backend::clock_fn fn() {
        return [this] { return now; };
    }
};

}  // namespace

TEST_CASE("store: variants share the lease and generation; a tag current for any variant passes") {
    fake_clock clk;
    cache::memory_backend b(clk.fn());
    auto snap = b.read({"r", "gz"});
    CHECK(b.observe({"r", "gz"}, snap.generation, resource_state::present("\"g1\"")));
    CHECK(b.observe({"r", ""}, snap.generation, resource_state::present("\"i1\"")));
    // Both tags are current: a write conditioned on either passes (issue 11 item 14).
    auto a = b.acquire({"r", ""}, if_match("\"g1\""), 15s, "t1");
    REQUIRE(a.has_value());
    CHECK(a->status == acquire_status::ok);
    // The lease belongs to the resource: the other variant's writer is busy (item 1).
    auto busy = b.acquire({"r", "gz"}, if_match("\"i1\""), 15s, "t2");
    CHECK(busy->status == acquire_status::busy);
    CHECK(b.commit({"r", ""}, "t1", commit_outcome::set, resource_state::unknown()));
    // The commit forgot every variant: the second client's tag is no longer trusted.
    auto after = b.acquire({"r", "gz"}, if_match("\"i1\""), 15s, "t3");
    CHECK(after->status == acquire_status::unknown);
}

TEST_CASE("store: a held lease outlives the commit (202, 5xx), then the state is unknown") {
    fake_clock clk;
    cache::memory_backend b(clk.fn());
    b.observe({"r"}, 0, resource_state::present("\"v1\""));
    auto a = b.acquire({"r"}, if_match("\"v1\""), 15s, "t1");
    REQUIRE(a->status == acquire_status::ok);
    clk.now += 2s;
    CHECK(b.commit({"r"}, "t1", commit_outcome::unknown, {}, 5s));
    clk.now += 4s;
    CHECK(b.acquire({"r"}, if_match("\"v1\""), 15s, "t2")->status == acquire_status::busy);
    clk.now += 2s;
    CHECK(b.acquire({"r"}, if_match("\"v1\""), 15s, "t3")->status == acquire_status::unknown);
}

TEST_CASE("store: a 404 of an untracked resource is not recorded; validators expire") {
    fake_clock clk;
    cache::memory_backend b(clk.fn(), 1h);
    CHECK_FALSE(b.observe({"missing"}, 0, resource_state::absent()));
    CHECK(b.size() == 0);
    CHECK(b.observe({"r"}, 0, resource_state::present("\"v1\"")));
    CHECK(b.read({"r"}).state.etag == "\"v1\"");
    clk.now += 1h + 1s;
    CHECK(b.read({"r"}).state == resource_state::unknown());
    CHECK(b.acquire({"r"}, if_match("\"v1\""), 15s, "t")->status == acquire_status::unknown);
}

TEST_CASE("store: at most max_variants validators; an unrecorded variant's tag is revalidated, not refused") {
    fake_clock clk;
    cache::memory_backend b(clk.fn());
    for (std::size_t i = 0; i < cache::max_variants; ++i)
        CHECK(b.observe({"r", "v" + std::to_string(i)}, 0, resource_state::present("\"t" + std::to_string(i) + "\"")));
    CHECK_FALSE(b.observe({"r", "extra"}, 0, resource_state::present("\"x\"")));
    auto a = b.acquire({"r", "extra"}, if_match("\"x\""), 15s, "t");
    CHECK(a->status == acquire_status::unknown);
}

TEST_CASE("store: after losing its data the store refuses writes for the fleet's longest lease") {
    fake_clock clk;
    cache::memory_backend b(clk.fn());
    CHECK(b.acquire({"r"}, {}, 15s, "t1")->status == acquire_status::unknown);
    b.lose_data();
    clk.now += 1s;
    auto r = b.acquire({"r"}, {}, 5s, "t2", 30s);   // this route's lease is 5 s, the fleet's 30 s
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == make_error_code(cache::store_errc::recovering));
    CHECK(b.read({"r"}, 30s).leased);               // reads record nothing meanwhile
    clk.now += 29s;
    CHECK_FALSE(b.acquire({"r"}, {}, 5s, "t3", 30s).has_value());
    clk.now += 2s;
    CHECK(b.acquire({"r"}, {}, 5s, "t4", 30s)->status == acquire_status::unknown);
}

// Issue 12: reads reuse their worker's recent snapshot of a resource (snapshot_cache).
TEST_CASE("snapshot_cache: unleased snapshots are reused for ttl, per variant, until a write, a refusal or a reconnect") {
    snapshot_cache c(1000ms);
    const cache::resource_ref ref{"/a", ""}, gz{"/a", "gzip"}, other{"/b", ""};
    const cache::snapshot s{resource_state::present("\"1\""), 7, false};
    CHECK_FALSE(c.reuse(ref, t0, 0));
    c.taken(ref, s, t0, 0);
    REQUIRE(c.reuse(ref, t0 + 999ms, 0));
    CHECK(c.reuse(ref, t0 + 999ms, 0)->generation == 7);
    CHECK(c.reuse(ref, t0 + 999ms, 0)->state == s.state);
    CHECK_FALSE(c.reuse(ref, t0 + 1000ms, 0));   // expired, and dropped
    CHECK_FALSE(c.reuse(ref, t0, 0));
    CHECK_FALSE(c.reuse(gz, t0, 0));
    CHECK_FALSE(c.reuse(other, t0, 0));

    SUBCASE("a leased snapshot is not kept, and drops the one before") {
        c.taken(ref, s, t0, 0);
        c.taken(ref, cache::snapshot{s.state, 7, true}, t0 + 1ms, 0);
        CHECK_FALSE(c.reuse(ref, t0 + 2ms, 0));
    }
    SUBCASE("a recorded observe refreshes the entry with what it recorded, at the same generation") {
        c.taken(ref, s, t0, 0);
        c.observed(ref, 7, resource_state::present("\"2\""), true, t0 + 900ms, 0);
        auto r = c.reuse(ref, t0 + 1800ms, 0);
        REQUIRE(r);
        CHECK(r->state.etag == "\"2\"");
        CHECK(r->generation == 7);
        CHECK_FALSE(r->leased);
    }
    SUBCASE("a refused observe forgets the resource") {
        c.taken(ref, s, t0, 0);
        c.observed(ref, 7, resource_state::present("\"2\""), false, t0 + 1ms, 0);
        CHECK_FALSE(c.reuse(ref, t0 + 2ms, 0));
    }
    SUBCASE("a write of this worker forgets every variant of the resource") {
        c.taken(ref, s, t0, 0);
        c.taken(gz, s, t0, 0);
        c.taken(other, s, t0, 0);
        c.forget("/a");
        CHECK_FALSE(c.reuse(ref, t0, 0));
        CHECK_FALSE(c.reuse(gz, t0, 0));
        CHECK(c.reuse(other, t0, 0));
    }
    SUBCASE("a store reconnect forgets everything (a Redis that lost its data reads generation 0 again)") {
        c.taken(ref, s, t0, 0);
        CHECK_FALSE(c.reuse(ref, t0, 1));
        c.taken(ref, s, t0, 1);
        CHECK(c.reuse(ref, t0, 1));
    }
    SUBCASE("ttl 0 keeps nothing") {
        c.set_ttl(0ms);
        c.taken(ref, s, t0, 0);
        CHECK_FALSE(c.reuse(ref, t0, 0));
        CHECK(c.size() == 0);
    }
    SUBCASE("bounded: past capacity the entries are dropped, not grown") {
        snapshot_cache small(1000ms, 4);
        for (int i = 0; i < 10; ++i) small.taken(cache::resource_ref{"/r" + std::to_string(i)}, s, t0, 0);
        CHECK(small.size() <= 4);
        CHECK(small.reuse(cache::resource_ref{"/r9"}, t0, 0));
    }
}

// The argument of snapshot_cache, on the real memory store: an observe that carries a reused
// snapshot's generation is refused after any commit or lease since the snapshot, however old.
TEST_CASE("snapshot_cache: an observe with a reused snapshot's generation is refused once a write came in between") {
    auto now = t0;
    cache::memory_backend store([&] { return now; }, std::chrono::hours(1));
    const cache::resource_ref ref{"/a"};
    const auto v1 = resource_state::present("\"1\""), v2 = resource_state::present("\"2\"");
    REQUIRE(store.observe(ref, 0, v1));
    snapshot_cache c(10s);
    c.taken(ref, store.read(ref), now, 0);
    // A write takes the lease and commits v2 after the snapshot.
    auto a = store.acquire(ref, if_match("\"1\""), 5000ms, "tok");
    REQUIRE(a.has_value());
    REQUIRE(a->status == acquire_status::ok);
    REQUIRE(store.commit(ref, "tok", commit_outcome::set, v2, 0ms));
    now += 5s;
    // A read that reuses the old snapshot and saw v1 (it raced the write) must not record it.
    auto reused = c.reuse(ref, now, 0);
    REQUIRE(reused);
    REQUIRE(read_may_record(*reused, v1, false) == false);   // equal to the reused state: nothing to record
    auto r = store.read(ref);
    CHECK(r.state == v2);
    // A read that saw something else records only through the generation check: refused.
    const auto v3 = resource_state::present("\"3\"");
    REQUIRE(read_may_record(*reused, v3, false));
    CHECK_FALSE(store.observe(ref, reused->generation, v3));
    CHECK(store.read(ref).state == v2);
}

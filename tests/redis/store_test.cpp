// The validator store contract (cache/store.hpp), run against both stores: the memory store and
// the Redis store talking to a real redis-server started on a free port (never a mock).
#include "cache/condition.hpp"
#include "cache/memory_store.hpp"
#include "cache/redis_connection.hpp"
#include "cache/redis_store.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_topology.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <limits>
#include <random>
#include <thread>
#include <utility>

namespace ifm::cache::lua {
extern const std::string_view acquire;
extern const std::string_view prelude;
}

namespace {

using namespace ifm;
using namespace ifm::cache;
using namespace std::chrono_literals;
namespace net = boost::asio;
using clock_type = std::chrono::steady_clock;

// A killed redis-server turns hiredis' next write into SIGPIPE; the proxy's main ignores it too.
const bool sigpipe_ignored = [] {
    std::signal(SIGPIPE, SIG_IGN);
    return true;
}();

constexpr auto command_timeout = 100ms;
constexpr auto connect_timeout = 500ms;

config::store_config redis_config(const std::string& url) {
    config::store_config cfg;
    cfg.kind = config::store_kind::redis;
    cfg.url = url;
    cfg.key_prefix = "t";
    cfg.timeout = command_timeout;
    cfg.connect_timeout = connect_timeout;
    cfg.young_server_wait = false;   // brand-new servers (one test turns it on)
    return cfg;
}

// Pings until the store answers (the Redis store fails at once while still connecting).
bool wait_ready(net::io_context& ioc, validator_store& store, std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    for (;;) {
        if (test::run_sync(ioc, store.async_ping())) return true;
        if (clock_type::now() >= deadline) return false;
        ioc.run_for(20ms);
    }
}

// One store (and, for Redis, its server) per test case.
struct store_env {
    explicit store_env(bool use_redis, bool module = false) : redis(use_redis) {
        if (redis) {
            server.emplace(0, module ? test::redis_module_args() : std::vector<std::string>{});
            factory = make_store_factory(redis_config(server->url()));
        } else {
            factory = make_store_factory(config::store_config{});
        }
        store = factory->make(ioc.get_executor());
        REQUIRE(wait_ready(ioc, *store, 5s));
    }
    ~store_env() { store.reset(); }

    template <class T>
    T run(net::awaitable<T> op) {
        return test::run_sync(ioc, std::move(op));
    }

    redis_store& redis_impl() { return dynamic_cast<redis_store&>(*store); }

    bool redis;
    std::optional<test::redis_server> server;
    net::io_context ioc;
    std::unique_ptr<store_factory> factory;
    std::unique_ptr<validator_store> store;
};

struct memory_kind {
    static constexpr bool redis = false;
    static constexpr bool module = false;
};
struct redis_kind {
    static constexpr bool redis = true;
    static constexpr bool module = false;
};
// Redis with ifmatch_redis.so loaded: acquire and commit run as its commands.
struct redis_module_kind {
    static constexpr bool redis = true;
    static constexpr bool module = true;
};

condition unconditional() { return {}; }
condition if_match(std::vector<std::string> tags) {
    condition c;
    c.if_match = condition::match::list;
    c.if_match_tags = std::move(tags);
    return c;
}
condition if_match_any() {
    condition c;
    c.if_match = condition::match::any;
    return c;
}
condition if_none_match(std::vector<std::string> tags) {
    condition c;
    c.if_none_match = condition::match::list;
    c.if_none_match_tags = std::move(tags);
    return c;
}
condition if_none_match_any() {
    condition c;
    c.if_none_match = condition::match::any;
    return c;
}
condition if_unmodified_since(std::int64_t t) {
    condition c;
    c.if_unmodified_since = t;
    return c;
}

bool took_lease(const acquire_result& r) {
    return r.status == acquire_status::ok || r.status == acquire_status::unknown;
}

// Puts `key` into `state` through a full write (acquire + commit set).
void put_state(store_env& env, const std::string& key, const resource_state& state,
               std::chrono::milliseconds lease = 10s) {
    auto a = env.run(env.store->async_acquire(key, unconditional(), lease));
    REQUIRE(a.has_value());
    REQUIRE(took_lease(*a));
    auto c = env.run(env.store->async_commit(key, a->token, commit_outcome::set, state));
    REQUIRE(c.has_value());
    REQUIRE(*c);
}

acquire_status acquire_status_of(store_env& env, const std::string& key, condition cond,
                                 std::chrono::milliseconds lease = 10s) {
    auto r = env.run(env.store->async_acquire(key, std::move(cond), lease));
    REQUIRE(r.has_value());
    return r->status;
}

// A writer takes `key` (state v1) with a 200 ms lease and never commits; once the lease has run
// out a second writer takes it for `second_lease`, and must revalidate. Returns both acquires.
std::pair<acquire_result, acquire_result> lease_taken_over(store_env& env, const std::string& key,
                                                           std::chrono::milliseconds second_lease) {
    put_state(env, key, resource_state::present("\"v1\""));
    auto first = env.run(env.store->async_acquire(key, if_match({"\"v1\""}), 200ms));
    REQUIRE(first.has_value());
    REQUIRE(first->status == acquire_status::ok);
    std::this_thread::sleep_for(300ms);
    // The first writer never committed: its outcome is unknown, so the second must revalidate.
    auto second = env.run(env.store->async_acquire(key, if_match({"\"v1\""}), second_lease));
    REQUIRE(second.has_value());
    REQUIRE(second->status == acquire_status::unknown);
    return {*first, *second};
}

// Releases whatever lease an acquire took, keeping the state.
void release(store_env& env, const std::string& key, const acquire_result& r) {
    if (!took_lease(r)) return;
    auto c = env.run(env.store->async_commit(key, r.token, commit_outcome::keep, {}));
    REQUIRE(c.has_value());
    REQUIRE(*c);
}

const char* status_name(acquire_status s) {
    switch (s) {
    case acquire_status::ok: return "ok";
    case acquire_status::unknown: return "unknown";
    case acquire_status::mismatch: return "mismatch";
    case acquire_status::busy: return "busy";
    }
    return "?";
}

// Runs `ioc` until `done()` or the deadline (an io_context without work stops: restart it).
template <class Pred>
bool drive(net::io_context& ioc, Pred done, std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    while (!done() && clock_type::now() < deadline) {
        if (ioc.stopped()) ioc.restart();
        ioc.run_one_for(50ms);
    }
    return done();
}

net::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    net::steady_timer t(co_await net::this_coro::executor, d);
    co_await t.async_wait(net::as_tuple(net::use_awaitable));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("store: acquire on an unknown resource takes the lease; the next is busy", K,
                   memory_kind, redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    auto a = env.run(env.store->async_acquire("r/unknown", if_match({"\"x\""}), 10s));
    REQUIRE(a.has_value());
    CHECK(a->status == acquire_status::unknown);
    CHECK(a->current == resource_state::unknown());
    CHECK(a->token.size() == 32);

    auto b = env.run(env.store->async_acquire("r/unknown", unconditional(), 10s));
    REQUIRE(b.has_value());
    CHECK(b->status == acquire_status::busy);
    CHECK(b->token.empty());
    CHECK(b->current == resource_state::unknown());

    // After commit(set) the state is known; busy reports the state it saw.
    auto c = env.run(env.store->async_commit("r/unknown", a->token, commit_outcome::set,
                                             resource_state::present("\"v1\"", 1000)));
    REQUIRE(c.has_value());
    CHECK(*c);
    auto d = env.run(env.store->async_acquire("r/unknown", if_match({"\"v1\""}), 10s));
    REQUIRE(d.has_value());
    CHECK(d->status == acquire_status::ok);
    CHECK(d->current == resource_state::present("\"v1\"", 1000));
    CHECK(d->token.size() == 32);
    CHECK(d->token != a->token);
    auto e = env.run(env.store->async_acquire("r/unknown", if_match({"\"v1\""}), 10s));
    REQUIRE(e.has_value());
    CHECK(e->status == acquire_status::busy);
    CHECK(e->current == resource_state::present("\"v1\"", 1000));
}

TEST_CASE_TEMPLATE("store: acquire evaluates every condition kind", K, memory_kind, redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    const auto present = resource_state::present("\"v1\"", 1000);
    const auto absent = resource_state::absent();
    put_state(env, "p", present);
    put_state(env, "a", absent);
    put_state(env, "p-nolm", resource_state::present("\"v2\""));

    struct row {
        const char* key;
        condition cond;
        acquire_status expected;
    };
    const row rows[] = {
        {"p", unconditional(), acquire_status::ok},
        {"a", unconditional(), acquire_status::ok},
        {"p", if_match({"\"v1\""}), acquire_status::ok},
        {"p", if_match({"\"v0\"", "\"v1\""}), acquire_status::ok},
        {"p", if_match({"\"v0\""}), acquire_status::mismatch},
        {"p", if_match({"W/\"v1\"x"}), acquire_status::mismatch},
        {"a", if_match({"\"v1\""}), acquire_status::mismatch},
        {"p", if_match_any(), acquire_status::ok},
        {"a", if_match_any(), acquire_status::mismatch},
        {"p", if_unmodified_since(1000), acquire_status::ok},
        {"p", if_unmodified_since(2000), acquire_status::ok},
        {"p", if_unmodified_since(999), acquire_status::mismatch},
        {"p-nolm", if_unmodified_since(1), acquire_status::ok},  // no Last-Modified: ignored
        {"a", if_unmodified_since(1), acquire_status::ok},
        {"p", if_none_match_any(), acquire_status::mismatch},
        {"a", if_none_match_any(), acquire_status::ok},
        {"p", if_none_match({"\"v1\""}), acquire_status::mismatch},
        {"p", if_none_match({"\"v0\""}), acquire_status::ok},
        {"a", if_none_match({"\"v1\""}), acquire_status::ok},
    };
    for (const auto& r : rows) {
        CAPTURE(r.key);
        auto res = env.run(env.store->async_acquire(r.key, r.cond, 10s));
        REQUIRE(res.has_value());
        CHECK(status_name(res->status) == std::string(status_name(r.expected)));
        if (res->status == acquire_status::mismatch) CHECK(res->token.empty());
        CHECK(res->current == (std::string(r.key) == "a"   ? absent
                               : std::string(r.key) == "p" ? present
                                                           : resource_state::present("\"v2\"")));
        release(env, r.key, *res);
    }
}

TEST_CASE_TEMPLATE("store: a lease expires after its TTL; the uncommitted write leaves the state unknown", K,
                   memory_kind, redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    put_state(env, "k", resource_state::present("\"v1\""));
    CHECK(acquire_status_of(env, "k", if_match({"\"v1\""}), 300ms) == acquire_status::ok);
    std::this_thread::sleep_for(100ms);
    CHECK(acquire_status_of(env, "k", if_match({"\"v1\""}), 300ms) == acquire_status::busy);
    auto snap = env.run(env.store->async_snapshot("k"));
    REQUIRE(snap.has_value());
    CHECK(snap->leased);
    std::this_thread::sleep_for(350ms);
    // The writer never committed (crashed): its write may have reached the origin, so the
    // pre-write validator must not be trusted any more (I3).
    snap = env.run(env.store->async_snapshot("k"));
    REQUIRE(snap.has_value());
    CHECK_FALSE(snap->leased);
    CHECK(snap->state == resource_state::unknown());
    auto observed = env.run(env.store->async_observe("k", snap->generation, resource_state::present("\"v1\"")));
    REQUIRE(observed.has_value());
    CHECK_FALSE(*observed);
    auto a = env.run(env.store->async_acquire("k", if_match({"\"v1\""}), 300ms));
    REQUIRE(a.has_value());
    CHECK(a->status == acquire_status::unknown);
    // A read whose snapshot predates the crashed write can no longer record either: clearing the
    // crashed write moved the generation.
    auto after = env.run(env.store->async_snapshot("k"));
    REQUIRE(after.has_value());
    CHECK(after->generation > snap->generation);
    // Once a later write commits, the state is trusted again.
    auto c = env.run(env.store->async_commit("k", a->token, commit_outcome::set, resource_state::present("\"v2\"")));
    REQUIRE(c.has_value());
    CHECK(acquire_status_of(env, "k", if_match({"\"v2\""}), 300ms) == acquire_status::ok);
}

TEST_CASE_TEMPLATE("store: commit applies set / keep / unknown and bumps the generation", K,
                   memory_kind, redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    auto s0 = env.run(env.store->async_snapshot("c"));
    REQUIRE(s0.has_value());
    CHECK(s0->generation == 0);
    CHECK(s0->state == resource_state::unknown());
    CHECK_FALSE(s0->leased);

    // set
    auto a = env.run(env.store->async_acquire("c", unconditional(), 10s));
    REQUIRE(a.has_value());
    auto ok = env.run(env.store->async_commit("c", a->token, commit_outcome::set,
                                              resource_state::present("\"v1\"", 42)));
    REQUIRE(ok.has_value());
    CHECK(*ok);
    auto s1 = env.run(env.store->async_snapshot("c"));
    REQUIRE(s1.has_value());
    CHECK(s1->state == resource_state::present("\"v1\"", 42));
    CHECK(s1->generation > 0);
    CHECK(s1->generation < (std::uint64_t{1} << 53));
    CHECK_FALSE(s1->leased);

    // keep: state unchanged, generation still moves, lease released
    a = env.run(env.store->async_acquire("c", if_match({"\"v1\""}), 10s));
    REQUIRE(a.has_value());
    REQUIRE(a->status == acquire_status::ok);
    ok = env.run(env.store->async_commit("c", a->token, commit_outcome::keep,
                                         resource_state::present("\"ignored\"")));
    REQUIRE(ok.has_value());
    CHECK(*ok);
    auto s2 = env.run(env.store->async_snapshot("c"));
    REQUIRE(s2.has_value());
    CHECK(s2->state == resource_state::present("\"v1\"", 42));
    CHECK(s2->generation > s1->generation);
    CHECK_FALSE(s2->leased);

    // set to absent (a DELETE succeeded)
    a = env.run(env.store->async_acquire("c", if_match({"\"v1\""}), 10s));
    REQUIRE(a.has_value());
    REQUIRE(a->status == acquire_status::ok);
    ok = env.run(env.store->async_commit("c", a->token, commit_outcome::set, resource_state::absent()));
    REQUIRE(ok.has_value());
    auto s3 = env.run(env.store->async_snapshot("c"));
    REQUIRE(s3.has_value());
    CHECK(s3->state == resource_state::absent());
    CHECK(s3->generation > s2->generation);

    // unknown: the state is forgotten, the next acquire revalidates
    a = env.run(env.store->async_acquire("c", if_none_match_any(), 10s));
    REQUIRE(a.has_value());
    REQUIRE(a->status == acquire_status::ok);
    ok = env.run(env.store->async_commit("c", a->token, commit_outcome::unknown,
                                         resource_state::present("\"ignored\"")));
    REQUIRE(ok.has_value());
    CHECK(*ok);
    auto s4 = env.run(env.store->async_snapshot("c"));
    REQUIRE(s4.has_value());
    CHECK(s4->state == resource_state::unknown());
    CHECK(s4->generation > s3->generation);
    CHECK_FALSE(s4->leased);
    CHECK(acquire_status_of(env, "c", if_match({"\"v1\""})) == acquire_status::unknown);

    // a commit with a token that never held the lease: unknown, generation bumped, returns false
    auto s5 = env.run(env.store->async_snapshot("c"));
    REQUIRE(s5.has_value());
    CHECK(s5->leased);
    ok = env.run(env.store->async_commit("c", "not-a-token", commit_outcome::set,
                                         resource_state::present("\"evil\"")));
    REQUIRE(ok.has_value());
    CHECK_FALSE(*ok);
    auto s6 = env.run(env.store->async_snapshot("c"));
    REQUIRE(s6.has_value());
    CHECK(s6->state == resource_state::unknown());
    CHECK(s6->leased);  // the holder's lease is untouched
    CHECK(s6->generation > s5->generation);
}

TEST_CASE_TEMPLATE("store: commit after the lease expired and another writer took it", K,
                   memory_kind, redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    auto [first, second] = lease_taken_over(env, "x", 10s);
    auto before = env.run(env.store->async_snapshot("x"));
    REQUIRE(before.has_value());

    // The first writer's commit comes too late: never trusted, the second's lease stays.
    auto late = env.run(env.store->async_commit("x", first.token, commit_outcome::set,
                                                resource_state::present("\"v2\"")));
    REQUIRE(late.has_value());
    CHECK_FALSE(*late);
    auto after = env.run(env.store->async_snapshot("x"));
    REQUIRE(after.has_value());
    CHECK(after->state == resource_state::unknown());
    CHECK(after->leased);
    CHECK(after->generation > before->generation);
    CHECK(acquire_status_of(env, "x", unconditional()) == acquire_status::busy);

    auto on_time = env.run(env.store->async_commit("x", second.token, commit_outcome::set,
                                                   resource_state::present("\"v3\"")));
    REQUIRE(on_time.has_value());
    CHECK(*on_time);
    auto last = env.run(env.store->async_snapshot("x"));
    REQUIRE(last.has_value());
    CHECK(last->state == resource_state::present("\"v3\""));
    CHECK_FALSE(last->leased);
}

TEST_CASE_TEMPLATE("store: a late commit keeps the current writer's uncommitted-write marker", K,
                   memory_kind, redis_kind, redis_module_kind) {
    // The second writer's marker must survive the first one's late commit: if the second then
    // crashes, its write may still reach the origin, and no read may record a validator (I3).
    store_env env(K::redis, K::module);
    auto [first, second] = lease_taken_over(env, "y", 300ms);
    auto late = env.run(env.store->async_commit("y", first.token, commit_outcome::set,
                                                resource_state::present("\"v2\"")));
    REQUIRE(late.has_value());
    CHECK_FALSE(*late);
    std::this_thread::sleep_for(400ms);   // the second writer's lease runs out: it crashed
    auto snap = env.run(env.store->async_snapshot("y"));
    REQUIRE(snap.has_value());
    CHECK_FALSE(snap->leased);
    CHECK(snap->state == resource_state::unknown());
    auto observed = env.run(env.store->async_observe("y", snap->generation, resource_state::present("\"v1\"")));
    REQUIRE(observed.has_value());
    CHECK_FALSE(*observed);
    CHECK(acquire_status_of(env, "y", if_match({"\"v1\""})) == acquire_status::unknown);
}

TEST_CASE_TEMPLATE("store: store_under_lease checks the token", K, memory_kind, redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    auto a = env.run(env.store->async_acquire("u", if_match({"\"v1\""}), 10s));
    REQUIRE(a.has_value());
    REQUIRE(a->status == acquire_status::unknown);

    auto stale = env.run(env.store->async_store_under_lease("u", "0123456789abcdef0123456789abcdef",
                                                            resource_state::present("\"evil\"")));
    REQUIRE(stale.has_value());
    CHECK_FALSE(*stale);
    auto snap = env.run(env.store->async_snapshot("u"));
    REQUIRE(snap.has_value());
    CHECK(snap->state == resource_state::unknown());

    auto stored = env.run(env.store->async_store_under_lease(
        "u", a->token, resource_state::present("\"v1\"", 7)));
    REQUIRE(stored.has_value());
    CHECK(*stored);
    snap = env.run(env.store->async_snapshot("u"));
    REQUIRE(snap.has_value());
    CHECK(snap->state == resource_state::present("\"v1\"", 7));
    CHECK(snap->leased);          // still held: the write goes on
    CHECK(snap->generation == 0);  // only commits move the generation

    // After the lease expired, the token no longer counts.
    auto b = env.run(env.store->async_commit("u", a->token, commit_outcome::keep, {}));
    REQUIRE(b.has_value());
    CHECK(*b);
    auto c = env.run(env.store->async_acquire("u", if_match({"\"v1\""}), 150ms));
    REQUIRE(c.has_value());
    REQUIRE(c->status == acquire_status::ok);
    std::this_thread::sleep_for(250ms);
    auto expired = env.run(env.store->async_store_under_lease("u", c->token, resource_state::absent()));
    REQUIRE(expired.has_value());
    CHECK_FALSE(*expired);
    snap = env.run(env.store->async_snapshot("u"));
    REQUIRE(snap.has_value());
    // Not the absent state the expired token tried to store; and since that write never
    // committed, not the pre-write state either (I3).
    CHECK(snap->state == resource_state::unknown());
}

TEST_CASE_TEMPLATE("store: observe records only with an unchanged generation and no lease", K,
                   memory_kind, redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    auto s0 = env.run(env.store->async_snapshot("o"));
    REQUIRE(s0.has_value());
    CHECK(s0->generation == 0);
    auto rec = env.run(env.store->async_observe("o", s0->generation, resource_state::present("\"g1\"", 5)));
    REQUIRE(rec.has_value());
    CHECK(*rec);
    auto s1 = env.run(env.store->async_snapshot("o"));
    REQUIRE(s1.has_value());
    CHECK(s1->state == resource_state::present("\"g1\"", 5));
    CHECK(s1->generation == 0);

    // A write starts: observing is refused while the lease is held.
    auto w = env.run(env.store->async_acquire("o", if_match({"\"g1\""}), 10s));
    REQUIRE(w.has_value());
    REQUIRE(w->status == acquire_status::ok);
    rec = env.run(env.store->async_observe("o", s1->generation, resource_state::present("\"stale\"")));
    REQUIRE(rec.has_value());
    CHECK_FALSE(*rec);
    auto during = env.run(env.store->async_snapshot("o"));
    REQUIRE(during.has_value());
    CHECK(during->leased);

    // The write commits: a read that started before it (old generation) must not record.
    auto c = env.run(env.store->async_commit("o", w->token, commit_outcome::set,
                                             resource_state::present("\"g2\"")));
    REQUIRE(c.has_value());
    REQUIRE(*c);
    rec = env.run(env.store->async_observe("o", s1->generation, resource_state::present("\"g1\"", 5)));
    REQUIRE(rec.has_value());
    CHECK_FALSE(*rec);
    auto s2 = env.run(env.store->async_snapshot("o"));
    REQUIRE(s2.has_value());
    CHECK(s2->state == resource_state::present("\"g2\""));
    CHECK(s2->generation != s1->generation);

    // A read that started after it records.
    rec = env.run(env.store->async_observe("o", s2->generation, resource_state::absent()));
    REQUIRE(rec.has_value());
    CHECK(*rec);
    auto s3 = env.run(env.store->async_snapshot("o"));
    REQUIRE(s3.has_value());
    CHECK(s3->state == resource_state::absent());
    CHECK(s3->generation == s2->generation);
}

TEST_CASE_TEMPLATE("store: acquire agrees with evaluate() on generated cases", K, memory_kind,
                   redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    std::mt19937 rng(20240611);
    const std::vector<std::string> tags = {"\"a\"", "\"b\"", "\"c\"", "W/\"a\"", "W/\"b\"", "\"\"", "\"a b\""};
    const std::vector<std::int64_t> dates = {
        0, 99, 100, 101, -5, -6, (std::int64_t{1} << 53) + 1, (std::int64_t{1} << 53),
        (std::int64_t{1} << 62) + 1, std::int64_t{1} << 62,
        std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min()};
    auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
    auto pick_tags = [&] {
        std::vector<std::string> out(pick(4));
        for (auto& t : out) t = tags[pick(tags.size())];
        return out;
    };
    auto pick_match = [&] { return static_cast<condition::match>(pick(3)); };

    int counts[4] = {};
    for (int i = 0; i < 1500; ++i) {
        resource_state state;
        switch (pick(8)) {
        case 0: state = resource_state::unknown(); break;
        case 1:
        case 2: state = resource_state::absent(); break;
        default: {
            std::string etag = pick(6) == 0 ? std::string() : tags[pick(tags.size())];
            std::optional<std::int64_t> lm;
            if (pick(3) != 0) lm = dates[pick(dates.size())];
            state = resource_state::present(etag, lm);
        }
        }
        condition cond;
        cond.if_match = pick_match();
        if (cond.if_match == condition::match::list || pick(4) == 0) cond.if_match_tags = pick_tags();
        if (pick(2) == 0) cond.if_unmodified_since = dates[pick(dates.size())];
        cond.if_none_match = pick_match();
        if (cond.if_none_match == condition::match::list || pick(4) == 0)
            cond.if_none_match_tags = pick_tags();

        const auto key = "eq/" + std::to_string(i);
        // Committed rather than observed: a 404 of a resource nobody tracks is not recorded.
        if (state.known()) put_state(env, key, state);
        auto r = env.run(env.store->async_acquire(key, cond, 10s));
        REQUIRE(r.has_value());
        // A tag list that fails against a present resource whose (default) variant has no
        // recorded tag is revalidated, not refused: the tag may be an unrecorded variant's (I2).
        const bool tag_list = cond.if_match == condition::match::list || cond.if_none_match == condition::match::list;
        const bool unrecorded = state.state == resource_state::kind::present && state.etag.empty() && tag_list;
        const auto expected = !state.known()                              ? acquire_status::unknown
                              : evaluate(cond, state) == verdict::pass ? acquire_status::ok
                              : unrecorded                             ? acquire_status::unknown
                                                                          : acquire_status::mismatch;
        if (r->status != expected || !(r->current == state)) {
            INFO("case " << i << ": state kind " << int(state.state) << " etag [" << state.etag
                         << "] lm " << (state.last_modified ? std::to_string(*state.last_modified) : "-")
                         << "; if_match " << int(cond.if_match) << " ius "
                         << (cond.if_unmodified_since ? std::to_string(*cond.if_unmodified_since) : "-")
                         << " if_none_match " << int(cond.if_none_match));
            CHECK(status_name(r->status) == std::string(status_name(expected)));
            CHECK(r->current == state);
        }
        ++counts[static_cast<int>(r->status)];
    }
    // The generator must reach every branch, or the comparison proves little.
    CHECK(counts[static_cast<int>(acquire_status::ok)] > 100);
    CHECK(counts[static_cast<int>(acquire_status::mismatch)] > 100);
    CHECK(counts[static_cast<int>(acquire_status::unknown)] > 50);
}

namespace {

struct race_stats {
    int holders = 0;
    int max_holders = 0;
    int leases = 0;
    int busy = 0;
    int errors = 0;
    int done = 0;
};

net::awaitable<void> race_writer(validator_store* store, std::string key, race_stats* stats,
                                 int rounds) {
    for (int i = 0; i < rounds; ++i) {
        auto r = co_await store->async_acquire(key, unconditional(), 10s);
        if (!r) {
            ++stats->errors;
        } else if (took_lease(*r)) {
            ++stats->leases;
            stats->max_holders = std::max(stats->max_holders, ++stats->holders);
            co_await sleep_for(1ms);  // let the others try while we hold it
            --stats->holders;
            const auto written = resource_state::present("\"w\"");
            auto c = co_await store->async_commit(key, r->token, commit_outcome::set, written);
            if (!c || !*c) ++stats->errors;
        } else {
            ++stats->busy;
            co_await sleep_for(1ms);
        }
    }
    ++stats->done;
}

net::awaitable<acquire_status> one_acquire(validator_store* store, std::string key) {
    auto r = co_await store->async_acquire(key, unconditional(), 10s);
    co_return r ? r->status : acquire_status::busy;
}

}  // namespace

TEST_CASE_TEMPLATE("store: concurrent acquires on one key get one lease at a time", K, memory_kind,
                   redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    SUBCASE("a burst: exactly one lease") {
        constexpr int n = 16;
        std::vector<acquire_status> results;
        int done = 0;
        for (int i = 0; i < n; ++i)
            net::co_spawn(env.ioc, one_acquire(env.store.get(), "burst"),
                          [&](std::exception_ptr e, acquire_status s) {
                              REQUIRE_FALSE(e != nullptr);
                              results.push_back(s);
                              ++done;
                          });
        REQUIRE(drive(env.ioc, [&] { return done == n; }, 5s));
        int leases = 0;
        for (auto s : results) leases += s == acquire_status::unknown || s == acquire_status::ok;
        CHECK(leases == 1);
        CHECK(std::count(results.begin(), results.end(), acquire_status::busy) == n - 1);
    }
    SUBCASE("rounds of writers on one store") {
        constexpr int n = 8;
        race_stats stats;
        for (int i = 0; i < n; ++i)
            net::co_spawn(env.ioc, race_writer(env.store.get(), "rounds", &stats, 30),
                          [](std::exception_ptr e) { REQUIRE_FALSE(e != nullptr); });
        REQUIRE(drive(env.ioc, [&] { return stats.done == n; }, 8s));
        CHECK(stats.errors == 0);
        CHECK(stats.max_holders == 1);
        CHECK(stats.leases > 5);
        CHECK(stats.busy > 0);
    }
}

namespace {

struct shared_race {
    std::atomic<int> holders{0};
    std::atomic<int> overlaps{0};
    std::atomic<int> leases{0};
    std::atomic<int> errors{0};
};

net::awaitable<void> thread_writer(validator_store* store, shared_race* race,
                                   clock_type::time_point until) {
    while (clock_type::now() < until) {
        auto r = co_await store->async_acquire("threads", unconditional(), 10s);
        if (!r) {
            ++race->errors;
            continue;
        }
        if (!took_lease(*r)) continue;
        ++race->leases;
        if (race->holders.fetch_add(1) != 0) ++race->overlaps;
        co_await sleep_for(std::chrono::milliseconds(1));
        race->holders.fetch_sub(1);
        // A named argument: g++ 12 miscompiles a braced `{}` temporary passed by value to a
        // coroutine from inside another coroutine (the callee's copy points into our frame).
        const resource_state unchanged;
        auto c = co_await store->async_commit("threads", r->token, commit_outcome::keep, unchanged);
        if (!c || !*c) ++race->errors;
    }
}

}  // namespace

TEST_CASE_TEMPLATE("store: two store objects on two threads never both hold the lease", K,
                   memory_kind, redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    shared_race race;
    const auto until = clock_type::now() + 1500ms;
    auto worker = [&](int) {
        net::io_context ioc;
        auto store = env.factory->make(ioc.get_executor());
        if (!wait_ready(ioc, *store, 5s)) {
            ++race.errors;
            return;
        }
        test::run_sync(ioc, thread_writer(store.get(), &race, until));
        store.reset();
    };
    std::thread t1(worker, 1);
    std::thread t2(worker, 2);
    t1.join();
    t2.join();
    CHECK(race.errors == 0);
    CHECK(race.overlaps == 0);
    CHECK(race.leases > 10);
}

TEST_CASE_TEMPLATE("store: a key cannot reach another resource's lease key", K, memory_kind,
                   redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    CHECK(acquire_status_of(env, "x", unconditional()) == acquire_status::unknown);
    // With the raw key, "<p>:{x}:l}" ... "x}:l" would name the lease key of "x".
    auto r = env.run(env.store->async_acquire("x}:l", unconditional(), 10s));
    REQUIRE(r.has_value());
    CHECK(r->status == acquire_status::unknown);
    auto o = env.run(env.store->async_observe("x%7D:l", 0, resource_state::present("\"v\"")));
    REQUIRE(o.has_value());
    CHECK(*o);
    auto s = env.run(env.store->async_snapshot("x}:l"));
    REQUIRE(s.has_value());
    CHECK(s->state == resource_state::unknown());  // "x}:l" and "x%7D:l" stay distinct
    CHECK(redis_store::resource_key("ifm", "a{b}%") == "ifm:{a%7Bb%7D%25}");
}

TEST_CASE_TEMPLATE("store: close() fails later operations with unavailable", K, memory_kind,
                   redis_kind, redis_module_kind) {
    store_env env(K::redis, K::module);
    env.store->close();
    auto r = env.run(env.store->async_acquire("k", unconditional(), 10s));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == store_errc::unavailable);
    CHECK(r.error().category().name() == std::string("ifm.store"));
    auto p = env.run(env.store->async_ping());
    CHECK_FALSE(p.has_value());
}

// ---------------------------------------------------------------------------------------------
// Redis only: scripts, outages, connection options.

TEST_CASE("redis store: recovers from SCRIPT FLUSH (NOSCRIPT)") {
    store_env env(true);
    put_state(env, "n", resource_state::present("\"v1\""));
    CHECK(env.server->command({"SCRIPT", "FLUSH"}) == "OK");
    const auto acquire_sha = sha1_hex(std::string(ifm::cache::lua::prelude) + std::string(ifm::cache::lua::acquire));
    CHECK(env.server->command({"SCRIPT", "EXISTS", acquire_sha}) == "0");
    CHECK(acquire_status_of(env, "n", if_match({"\"v1\""})) == acquire_status::ok);
    auto snap = env.run(env.store->async_snapshot("n"));
    REQUIRE(snap.has_value());
    CHECK(snap->leased);
    CHECK(env.server->command({"SCRIPT", "EXISTS", acquire_sha}) == "1");
}

TEST_CASE("redis store: keys live in one hash slot under the prefix") {
    store_env env(true);
    put_state(env, "/api/doc", resource_state::present("\"v1\"", 9));
    CHECK(acquire_status_of(env, "/api/doc", unconditional()) == acquire_status::ok);
    auto keys = env.server->command({"KEYS", "*"});
    CHECK(keys.find("t:{/api/doc}") != std::string::npos);
    CHECK(keys.find("t:{/api/doc}:l") != std::string::npos);
    CHECK(env.server->command({"HGET", "t:{/api/doc}", "v:"}) == "\"v1\"");   // the default variant's tag
    CHECK(env.server->command({"HGET", "t:{/api/doc}", "m"}) == "9");
    CHECK(env.server->command({"CLUSTER", "KEYSLOT", "t:{/api/doc}"}) ==
          env.server->command({"CLUSTER", "KEYSLOT", "t:{/api/doc}:l"}));
}

TEST_CASE("redis store: Redis killed -> fast failures; reconnects by itself after restart") {
    store_env env(true);
    // 1 s leases throughout: after the restart the store waits out the longest lease it saw.
    put_state(env, "k", resource_state::present("\"v1\""), 1s);
    auto before = env.run(env.store->async_snapshot("k"));
    REQUIRE(before.has_value());
    REQUIRE(before->generation > 0);
    CHECK(env.redis_impl().connection().connected());
    CHECK(env.redis_impl().connection().reconnects() == 0);

    env.server->stop();
    // Each operation fails within the command timeout (the first may still find the socket open).
    const auto outage_end = clock_type::now() + 400ms;
    int failures = 0;
    while (clock_type::now() < outage_end) {
        const auto t0 = clock_type::now();
        auto r = env.run(env.store->async_acquire("k", unconditional(), 1s));
        const auto took = clock_type::now() - t0;
        REQUIRE_FALSE(r.has_value());
        CHECK((r.error() == store_errc::unavailable || r.error() == store_errc::timeout));
        CHECK(took < command_timeout + 100ms);
        ++failures;
        env.ioc.run_for(10ms);
    }
    CHECK(failures > 5);
    CHECK_FALSE(env.redis_impl().connection().connected());

    env.server->start();
    REQUIRE(wait_ready(env.ioc, *env.store, 5s));
    CHECK(env.redis_impl().connection().connected());
    CHECK(env.redis_impl().connection().reconnects() >= 1);

    // Redis lost everything: the state is unknown, and a new generation can never equal the old.
    auto after = env.run(env.store->async_snapshot("k"));
    REQUIRE(after.has_value());
    CHECK(after->state == resource_state::unknown());
    CHECK(after->generation == 0);
    // It lost the leases too: a write from before may still be in flight, so none is handed out
    // until the new server has been up for the lease asked for, and reads record nothing.
    CHECK(after->leased);
    auto early = env.run(env.store->async_acquire("k", unconditional(), 1s));
    REQUIRE_FALSE(early.has_value());
    CHECK(early.error() == store_errc::recovering);
    env.ioc.run_for(2100ms);   // uptime in whole seconds (young-server rule) and the epoch's wait
    auto a = env.run(env.store->async_acquire("k", unconditional(), 1s));
    REQUIRE(a.has_value());
    CHECK(a->status == acquire_status::unknown);
    // A writer from before the outage commits late: refused, and the generation still moves on
    // past every generation handed out before Redis lost its data.
    auto late = env.run(env.store->async_commit("k", "pre-outage-token", commit_outcome::keep, {}));
    REQUIRE(late.has_value());
    CHECK_FALSE(*late);
    auto bumped = env.run(env.store->async_snapshot("k"));
    REQUIRE(bumped.has_value());
    CHECK(bumped->generation > before->generation);
    CHECK(bumped->leased);
    auto c = env.run(env.store->async_commit("k", a->token, commit_outcome::set, resource_state::absent()));
    REQUIRE(c.has_value());
    CHECK(*c);
}

// A proxy that first reaches Redis just after it restarted empty cannot tell it from a new one:
// writes of other proxies may still be at the origin under leases it lost. young_server_wait
// treats any server younger than the lease as such a replacement.
TEST_CASE("redis store: young_server_wait refuses leases until a newly seen server is a lease old") {
    using test::eventually;
    using test::redis_server;
    using test::store_client;
    redis_server server;   // just started: uptime 0 s
    auto cfg = redis_config(server.url());
    cfg.young_server_wait = true;
    store_client wary(cfg);
    REQUIRE(wary.wait_ready(5s));
    auto early = wary.run(wary.store->async_acquire("y", unconditional(), 1s));
    REQUIRE_FALSE(early.has_value());
    CHECK(early.error() == store_errc::recovering);
    // Off: a young server is trusted at once (the control). Another server: on the first one the
    // wary proxy already started the fleet's wait (its epoch key), which every proxy honours.
    redis_server other;
    auto trusting_cfg = redis_config(other.url());
    trusting_cfg.young_server_wait = false;
    store_client trusting(trusting_cfg);
    REQUIRE(trusting.wait_ready(5s));
    auto at_once = trusting.run(trusting.store->async_acquire("z", unconditional(), 1s));
    REQUIRE(at_once.has_value());
    CHECK(at_once->status == acquire_status::unknown);
    // Once the server has been up for the lease asked for (uptime counts whole seconds: up to
    // two), leases are granted.
    bool granted = eventually([&] {
        auto a = wary.run(wary.store->async_acquire("y", unconditional(), 1s));
        if (a) return true;
        CHECK(a.error() == store_errc::recovering);
        wary.idle(100ms);
        return false;
    }, 4s);
    CHECK(granted);
}

TEST_CASE("redis store: a hung Redis (SIGSTOP) times out, is dropped, and recovers on SIGCONT") {
    store_env env(true);
    env.server->process().signal(SIGSTOP);
    const auto t_end = clock_type::now() + connect_timeout + 400ms;
    int timeouts = 0;
    while (clock_type::now() < t_end) {
        const auto t0 = clock_type::now();
        auto r = env.run(env.store->async_snapshot("h"));
        const auto took = clock_type::now() - t0;
        REQUIRE_FALSE(r.has_value());
        timeouts += r.error() == store_errc::timeout;
        CHECK(took < command_timeout + 100ms);
        env.ioc.run_for(5ms);
    }
    CHECK(timeouts > 0);
    // Nothing answered for longer than connect_timeout: the connection was given up.
    CHECK_FALSE(env.redis_impl().connection().connected());
    env.server->process().signal(SIGCONT);
    REQUIRE(wait_ready(env.ioc, *env.store, 6s));
    CHECK(acquire_status_of(env, "h", unconditional()) == acquire_status::unknown);
}

TEST_CASE("redis store: close() answers a command in flight at once") {
    store_env env(true);
    env.server->process().signal(SIGSTOP);  // the command is sent but never answered
    std::optional<result<acquire_result>> got;
    net::co_spawn(env.ioc, env.store->async_acquire("k", unconditional(), 10s),
                  [&](std::exception_ptr e, result<acquire_result> r) {
                      REQUIRE_FALSE(e != nullptr);
                      got = std::move(r);
                  });
    env.ioc.run_for(20ms);
    REQUIRE_FALSE(got.has_value());
    const auto t0 = clock_type::now();
    env.store->close();
    REQUIRE(drive(env.ioc, [&] { return got.has_value(); }, 1s));
    CHECK(clock_type::now() - t0 < 50ms);
    REQUIRE_FALSE(got->has_value());
    CHECK(got->error() == store_errc::unavailable);
    env.server->process().signal(SIGCONT);
}

TEST_CASE("redis store: destroyed while its io_context is stopped") {
    test::redis_server server;
    auto factory = make_store_factory(redis_config(server.url()));
    SUBCASE("the io_context is destroyed afterwards") {
        net::io_context ioc;
        auto store = factory->make(ioc.get_executor());
        REQUIRE(wait_ready(ioc, *store, 5s));
        for (int i = 0; i < 4; ++i)
            net::co_spawn(ioc, store->async_acquire("d" + std::to_string(i), unconditional(), 10s),
                          [](std::exception_ptr, result<acquire_result>) {});
        ioc.poll();  // sent, not answered yet
        ioc.stop();
        store.reset();
        // ~io_context destroys the parked coroutine frames: nothing may leak (LeakSanitizer).
    }
    SUBCASE("the io_context runs again afterwards") {
        net::io_context ioc;
        auto store = factory->make(ioc.get_executor());
        REQUIRE(wait_ready(ioc, *store, 5s));
        int unavailable = 0, done = 0;
        for (int i = 0; i < 4; ++i)
            net::co_spawn(ioc, store->async_acquire("d" + std::to_string(i), unconditional(), 10s),
                          [&](std::exception_ptr e, result<acquire_result> r) {
                              REQUIRE_FALSE(e != nullptr);
                              ++done;
                              unavailable += !r && r.error() == store_errc::unavailable;
                          });
        ioc.poll();
        ioc.stop();
        store.reset();
        ioc.restart();
        ioc.run_for(200ms);
        CHECK(done == 4);  // every parked operation completed (unavailable, or answered before)
        CHECK(unavailable <= 4);
    }
}

TEST_CASE("redis store: unix socket, AUTH and SELECT") {
    test::redis_server server(0, {"--requirepass", "s3cret"});
    net::io_context ioc;

    auto unix_cfg = redis_config("unix://" + server.unix_path() + "?db=3");
    unix_cfg.password = "s3cret";  // as IFM_REDIS_PASSWORD would set it
    auto unix_factory = make_store_factory(unix_cfg);
    auto db3 = unix_factory->make(ioc.get_executor());
    REQUIRE(wait_ready(ioc, *db3, 5s));

    auto tcp_factory = make_store_factory(
        redis_config("redis://:s3cret@127.0.0.1:" + std::to_string(server.port()) + "/0"));
    auto db0 = tcp_factory->make(ioc.get_executor());
    REQUIRE(wait_ready(ioc, *db0, 5s));

    auto rec = test::run_sync(ioc, db3->async_observe("k", 0, resource_state::present("\"v\"")));
    REQUIRE(rec.has_value());
    CHECK(*rec);
    auto in3 = test::run_sync(ioc, db3->async_snapshot("k"));
    REQUIRE(in3.has_value());
    CHECK(in3->state == resource_state::present("\"v\""));
    auto in0 = test::run_sync(ioc, db0->async_snapshot("k"));
    REQUIRE(in0.has_value());
    CHECK(in0->state == resource_state::unknown());

    // A wrong password never gets connected: operations fail at once.
    auto bad_factory = make_store_factory(
        redis_config("redis://:wrong@127.0.0.1:" + std::to_string(server.port()) + "/0"));
    auto bad = bad_factory->make(ioc.get_executor());
    CHECK_FALSE(wait_ready(ioc, *bad, 500ms));
    const auto t0 = clock_type::now();
    auto r = test::run_sync(ioc, bad->async_snapshot("k"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == store_errc::unavailable);
    CHECK(clock_type::now() - t0 < 20ms);
}

TEST_CASE("redis store: URL parsing") {
    auto ep = parse_redis_url("redis://127.0.0.1:6380/2");
    REQUIRE(ep.has_value());
    CHECK_FALSE(ep->unix_socket);
    CHECK(ep->host == "127.0.0.1");
    CHECK(ep->port == 6380);
    CHECK(ep->db == 2);
    CHECK(ep->password.empty());

    ep = parse_redis_url("redis://redis.internal");
    REQUIRE(ep.has_value());
    CHECK(ep->host == "redis.internal");
    CHECK(ep->port == 6379);
    CHECK(ep->db == 0);

    ep = parse_redis_url("redis://:p%40ss@[::1]:7000/0");
    REQUIRE(ep.has_value());
    CHECK(ep->host == "::1");
    CHECK(ep->port == 7000);
    CHECK(ep->user.empty());
    CHECK(ep->password == "p@ss");
    CHECK(ep->describe() == "redis://[::1]:7000/0");  // never the password

    ep = parse_redis_url("redis://proxy:pw@h:1/15");
    REQUIRE(ep.has_value());
    CHECK(ep->user == "proxy");
    CHECK(ep->password == "pw");
    CHECK(ep->db == 15);

    ep = parse_redis_url("unix:///var/run/redis.sock?db=4");
    REQUIRE(ep.has_value());
    CHECK(ep->unix_socket);
    CHECK(ep->path == "/var/run/redis.sock");
    CHECK(ep->db == 4);

    for (const char* bad : {"http://h:1/0", "redis://", "redis://h:0/0", "redis://h:70000/0",
                            "redis://h:x/0", "redis://h:1/db", "unix://relative.sock",
                            "unix:///s.sock?database=1", "redis://[::1/0", "rediss://h:1/0",
                            "redis://:%zz@h/0"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_redis_url(bad).has_value());
    }
    CHECK_THROWS_AS(make_store_factory(redis_config("redis//nope")), std::invalid_argument);
}

TEST_CASE("process support: child_process and temp_dir") {
    std::string dir;
    {
        test::temp_dir tmp;
        dir = tmp.path();
        CHECK(std::filesystem::is_directory(dir));
        test::child_process sh({"sh", "-c", "echo hello; exit 3"}, tmp.path() + "/log");
        CHECK(sh.wait(5s) == 3);
        CHECK_FALSE(sh.running());
        test::child_process sleeper({"sleep", "30"});
        CHECK(sleeper.running());
        CHECK(sleeper.wait(50ms) == -1);
        sleeper.signal(SIGTERM);
        CHECK(sleeper.wait(5s) == 128 + SIGTERM);
    }
    CHECK_FALSE(std::filesystem::exists(dir));
    auto port = test::free_port();
    CHECK(port > 0);
    CHECK_FALSE(test::wait_for_port(port, 50ms));
}

namespace {

// A redis_connection to `server`, connected.
std::shared_ptr<redis_connection> connected(test::redis_server& server, net::io_context& ioc,
                                            std::chrono::milliseconds command_timeout) {
    redis_options opts;
    auto endpoint = parse_redis_url(server.url());
    REQUIRE(endpoint.has_value());
    opts.endpoint = *endpoint;
    opts.command_timeout = command_timeout;
    auto conn = redis_connection::create(ioc.get_executor(), opts);
    conn->start();
    REQUIRE(test::run_sync(ioc, conn->async_wait_ready(5000ms)));
    return conn;
}

}  // namespace

TEST_CASE("redis_connection: every reply shape arrives whole") {
    test::redis_server server;
    net::io_context ioc;
    auto conn = connected(server, ioc, 2000ms);
    using T = redis_reply::type;
    auto exec = [&](std::vector<std::string> argv) {
        auto r = test::run_sync(ioc, conn->async_exec(std::move(argv)));
        REQUIRE(r.has_value());
        return *r;
    };
    // Nested arrays three deep, with an integer, strings (one empty, one binary and long) and a
    // nil inside; Lua's false is RESP's nil.
    std::string big(70000, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
    auto r = exec({"EVAL", "return {1, 'two', {3, {'four', ''}}, false, ARGV[1], {}}", "0", big});
    REQUIRE(r.kind == T::array);
    REQUIRE(r.elements.size() == 6);
    CHECK((r.elements[0].kind == T::integer && r.elements[0].integer == 1));
    CHECK((r.elements[1].kind == T::string && r.elements[1].str == "two"));
    const auto& inner = r.elements[2];
    REQUIRE((inner.kind == T::array && inner.elements.size() == 2));
    CHECK(inner.elements[0].integer == 3);
    REQUIRE((inner.elements[1].kind == T::array && inner.elements[1].elements.size() == 2));
    CHECK(inner.elements[1].elements[0].str == "four");
    CHECK((inner.elements[1].elements[1].kind == T::string && inner.elements[1].elements[1].str.empty()));
    CHECK(r.elements[3].kind == T::nil);
    CHECK((r.elements[4].kind == T::string && r.elements[4].str == big));
    CHECK((r.elements[5].kind == T::array && r.elements[5].elements.empty()));
    // Top-level replies of every kind.
    auto ok = exec({"SET", "k", "v"});
    CHECK((ok.kind == T::status && ok.str == "OK"));
    auto n = exec({"INCRBY", "n", "-42"});
    CHECK((n.kind == T::integer && n.integer == -42));
    auto s = exec({"GET", "k"});
    CHECK((s.kind == T::string && s.str == "v"));
    auto nil = exec({"GET", "missing"});
    CHECK(nil.kind == T::nil);
    auto err = exec({"INCR", "k"});
    CHECK((err.kind == T::error && err.str.starts_with("ERR")));
    auto empty = exec({"EVAL", "return {}", "0"});
    CHECK((empty.kind == T::array && empty.elements.empty()));
    // A status inside an array, and an error inside one (as EXEC returns them).
    auto mixed = exec({"EVAL", "return {redis.status_reply('FINE'), redis.error_reply('BAD thing')}", "0"});
    REQUIRE(mixed.elements.size() == 2);
    CHECK((mixed.elements[0].kind == T::status && mixed.elements[0].str == "FINE"));
    CHECK((mixed.elements[1].kind == T::error && mixed.elements[1].str == "BAD thing"));
    conn->close();
    ioc.run_for(100ms);
}

TEST_CASE("redis_connection: commands queued together are all answered, and a write the socket cannot take whole "
          "completes") {
    // Commands made while connected are written at the end of the loop's turn without waiting
    // for writability (flush_soon); a command larger than the socket takes at once waits for
    // room for the rest.
    test::redis_server server;
    net::io_context ioc;
    auto conn = connected(server, ioc, 10000ms);
    using T = redis_reply::type;
    // 16 MiB: more than a loopback socket's send buffer grows to (tcp_wmem's 4 MiB).
    std::string big(16 << 20, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 13 + (i >> 12));
    int answered = 0, right = 0;
    for (int i = 0; i < 200; ++i) {
        net::co_spawn(ioc, [&, i]() -> net::awaitable<void> {
            // GCC 12: no temporaries inside a co_await expression.
            std::string value = i == 100 ? big : std::to_string(i);
            std::vector<std::string> set_argv{"SET", "k" + std::to_string(i), value};
            std::vector<std::string> get_argv{"GET", "k" + std::to_string(i)};
            auto set = co_await conn->async_exec(std::move(set_argv));
            auto get = co_await conn->async_exec(std::move(get_argv));
            ++answered;
            if (set && set->kind == T::status && get && get->kind == T::string && get->str == value) ++right;
        }, net::detached);
    }
    for (auto until = clock_type::now() + 30s; answered < 200 && clock_type::now() < until;) ioc.run_for(50ms);
    CHECK(answered == 200);
    CHECK(right == 200);
    conn->close();
    ioc.run_for(100ms);
}

TEST_CASE("redis_connection: one deadline per connection times out each command on time, and a late reply "
          "goes to nobody") {
    // Commands wait on no timer of their own: the connection's one timer is armed for the
    // earliest deadline, which need not be the first command's (WAIT and the handshake take
    // their own timeouts). A command that timed out keeps its place for its reply, which is
    // dropped: the next command gets its own.
    test::redis_server server;
    net::io_context ioc;
    auto conn = connected(server, ioc, 50ms);
    using T = redis_reply::type;
    // Busy for 300 ms inside Redis: everything behind it waits.
    const std::string busy = "local t = redis.call('TIME'); local s = t[1] * 1000000 + t[2]; "
                             "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - s > 300000; return 'slow'";
    std::optional<result<redis_reply>> slow, quick;
    clock_type::duration quick_took{}, slow_took{};
    const auto t0 = clock_type::now();
    net::co_spawn(ioc, [&]() -> net::awaitable<void> {
        std::vector<std::string> argv{"EVAL", busy, "0"};
        auto r = co_await conn->async_exec_in_session(conn->session(), std::move(argv), 2000ms);
        slow_took = clock_type::now() - t0;
        slow = std::move(r);
    }, net::detached);
    net::co_spawn(ioc, [&]() -> net::awaitable<void> {
        std::vector<std::string> argv{"ECHO", "quick"};
        auto r = co_await conn->async_exec(std::move(argv));
        quick_took = clock_type::now() - t0;
        quick = std::move(r);
    }, net::detached);
    REQUIRE(drive(ioc, [&] { return slow.has_value() && quick.has_value(); }, 5s));
    REQUIRE_FALSE(quick->has_value());
    CHECK(quick->error() == store_errc::timeout);
    CHECK(quick_took >= 45ms);
    CHECK(quick_took < 250ms);     // not held until the slow one's deadline or reply
    REQUIRE(slow->has_value());
    CHECK(((*slow)->kind == T::string && (*slow)->str == "slow"));
    CHECK(slow_took >= 290ms);
    // "quick"'s reply came after "slow"'s and was dropped; the next command gets its own.
    auto next = test::run_sync(ioc, conn->async_exec({"ECHO", "next"}));
    REQUIRE(next.has_value());
    CHECK((next->kind == T::string && next->str == "next"));
    CHECK(conn->connected());
    // With ASKING before a command (its reply read and dropped), the pairing holds too.
    auto asked = test::run_sync(ioc, conn->async_exec({"ECHO", "asked"}, true));
    REQUIRE(asked.has_value());
    CHECK(asked->str == "asked");
    conn->close();
    ioc.run_for(100ms);
}

TEST_CASE("redis_connection: a connection the server closes (CLIENT KILL) is seen as lost and made again") {
    test::redis_server server;
    net::io_context ioc;
    auto conn = connected(server, ioc, 1000ms);
    const auto session = conn->session();
    auto id = test::run_sync(ioc, conn->async_exec({"CLIENT", "ID"}));
    REQUIRE(id.has_value());
    auto killed = test::run_sync(ioc, conn->async_exec({"CLIENT", "KILL", "ID", std::to_string(id->integer), "SKIPME", "no"}));
    (void)killed;   // answered or not: the server closes the connection right after
    REQUIRE(drive(ioc, [&] { return conn->connected() && conn->session() != session; }, 5s));
    auto ok = test::run_sync(ioc, conn->async_exec({"ECHO", "again"}));
    REQUIRE(ok.has_value());
    CHECK(ok->str == "again");
    conn->close();
    ioc.run_for(100ms);
}

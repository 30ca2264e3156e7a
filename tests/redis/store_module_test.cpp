// The optional Redis module (cache/redis_module/ifm_module.cpp) against the Lua scripts it
// mirrors: the same random operations through both, on two real redis-servers, give the same
// replies and leave the same keys; the proxy's store uses the module only where it is loaded and
// built from the proxy's scripts, and goes back to the scripts when it disappears; a replica
// without the module receives its writes; out of memory it refuses what the scripts refuse. The
// whole store contract also runs against it (store_test.cpp, redis_module_kind).
#include "cache/redis_store.hpp"
#include "tests/support/process.hpp"
#include "tests/support/redis_topology.hpp"

#include <hiredis/hiredis.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>

namespace {

using namespace ifm;
using namespace ifm::cache;
using namespace std::chrono_literals;

// One synchronous hiredis connection; replies as text: nil "(nil)", errors "ERR:<text>", arrays
// as "[a,b,...]".
class sync_client {
public:
    explicit sync_client(std::uint16_t port) : c_(redisConnect("127.0.0.1", port)) {
        REQUIRE(c_);
        REQUIRE(c_->err == 0);
    }
    ~sync_client() { redisFree(c_); }
    sync_client(const sync_client&) = delete;
    sync_client& operator=(const sync_client&) = delete;

    std::string operator()(const std::vector<std::string>& args) {
        std::vector<const char*> argv;
        std::vector<std::size_t> lens;
        for (auto& a : args) argv.push_back(a.data()), lens.push_back(a.size());
        auto* r = static_cast<redisReply*>(redisCommandArgv(c_, static_cast<int>(args.size()), argv.data(), lens.data()));
        REQUIRE(r);
        auto out = text(r);
        freeReplyObject(r);
        return out;
    }

private:
    static std::string text(const redisReply* r) {
        switch (r->type) {
        case REDIS_REPLY_NIL: return "(nil)";
        case REDIS_REPLY_INTEGER: return std::to_string(r->integer);
        case REDIS_REPLY_ERROR: return "ERR:" + std::string(r->str, r->len);
        case REDIS_REPLY_ARRAY: {
            std::string out = "[";
            for (std::size_t i = 0; i < r->elements; ++i) out += (i ? "," : "") + text(r->element[i]);
            return out + "]";
        }
        default: return std::string(r->str, r->len);
        }
    }
    redisContext* c_;
};

// The elements of a flat array reply as sync_client writes it (no element holds a comma here).
std::vector<std::string> items(const std::string& array) {
    std::vector<std::string> out;
    if (array.size() < 2 || array.front() != '[' || array == "[]") return out;
    std::size_t start = 1;
    for (;;) {
        auto end = array.find_first_of(",]", start);
        out.push_back(array.substr(start, end - start));
        if (end == std::string::npos || array[end] == ']') break;
        start = end + 1;
    }
    return out;
}

std::string field(const std::string& array, std::size_t i) {
    auto v = items(array);
    return i < v.size() ? v[i] : "(none: " + array + ")";
}

std::size_t script_index(std::string_view name) {
    const auto& s = redis_store::scripts();
    for (std::size_t i = 0; i < s.size(); ++i)
        if (s[i].name == name) return i;
    FAIL("no script " << name);
    return 0;
}

std::string pttl_bucket(const std::string& v) {
    long long ms = std::stoll(v);
    return ms < 0 ? v : "ttl";   // -2 none, -1 no expiry; the values are compared apart
}

// Two servers, `lua` without the module and `mod` with it, fed the same commands.
struct twin {
    test::redis_server lua_server{0};
    test::redis_server mod_server{0, test::redis_module_args()};
    sync_client lua{lua_server.port()};
    sync_client mod{mod_server.port()};
    std::map<std::string, std::string> last_g[2];   // per key: the g seen last time, per server

    twin() {
        for (auto& s : redis_store::scripts()) {
            REQUIRE(lua({"SCRIPT", "LOAD", s.source}) == s.sha1);
            REQUIRE(mod({"SCRIPT", "LOAD", s.source}) == s.sha1);
        }
    }

    // The script `name` on the Lua server and the module's command (or the same script) on the
    // other, each with its arguments.
    std::pair<std::string, std::string> run(std::string_view name, const std::vector<std::string>& keys,
                                            const std::vector<std::string>& args_lua,
                                            const std::vector<std::string>& args_mod) {
        const auto& s = redis_store::scripts()[script_index(name)];
        std::vector<std::string> evalsha{"EVALSHA", s.sha1, std::to_string(keys.size())};
        evalsha.insert(evalsha.end(), keys.begin(), keys.end());
        std::vector<std::string> native = s.module_command.empty() ? evalsha : std::vector<std::string>{s.module_command};
        if (!s.module_command.empty()) native.insert(native.end(), keys.begin(), keys.end());
        evalsha.insert(evalsha.end(), args_lua.begin(), args_lua.end());
        native.insert(native.end(), args_mod.begin(), args_mod.end());
        return {lua(evalsha), mod(native)};
    }
    std::pair<std::string, std::string> run(std::string_view name, const std::vector<std::string>& keys,
                                            const std::vector<std::string>& args) {
        return run(name, keys, args, args);
    }
    void both(const std::vector<std::string>& args) {
        lua(args);
        mod(args);
    }

    // What a key holds, with the time-made values (g, the epoch's r) as whether they moved, and
    // TTLs as buckets (compare_ttl checks them).
    std::string dump(int side, const std::string& key) {
        auto& c = side == 0 ? lua : mod;
        const auto type = c({"TYPE", key});
        std::string out = type + ":";
        if (type == "hash") {
            auto all = items(c({"HGETALL", key}));
            std::vector<std::pair<std::string, std::string>> f;
            for (std::size_t i = 0; i + 1 < all.size(); i += 2) {
                auto value = all[i + 1];
                if (all[i] == "g") {
                    value = last_g[side][key] == all[i + 1] ? "same" : "moved";
                    last_g[side][key] = all[i + 1];
                }
                if (all[i] == "r") value = "time";
                f.emplace_back(all[i], value);
            }
            std::sort(f.begin(), f.end());
            for (auto& [n, v] : f) out += n + "=" + v + ";";
        } else if (type == "string") {
            out += c({"GET", key});
        }
        return out + " " + pttl_bucket(c({"PTTL", key}));
    }
    void compare_ttl(const std::string& key) {
        const long long a = std::stoll(lua({"PTTL", key})), b = std::stoll(mod({"PTTL", key}));
        if (a > 0 && b > 0) CHECK_MESSAGE(std::llabs(a - b) < 1000, key << ": PTTL " << a << " against " << b);
    }
};

const std::vector<std::string> tag_pool = {"\"a\"", "\"b\"", "\"c\"", "W/\"a\"", "W/\"b\"", "\"d\""};
// Mostly the one variant; sometimes enough of them to pass the scripts' limit of 8.
const std::vector<std::string> variant_pool = {"", "", "", "", "", "", "", "", "", "", "", "", "", "",
                                               "gz", "gz", "br", "v3", "v4", "v5", "v6", "v7", "v8", "v9"};

}  // namespace

TEST_CASE("store module: the module mirrors the current scripts") {
    test::redis_server server(0, test::redis_module_args());
    sync_client c(server.port());
    const auto listed = c({"IFM.PROTOCOL"});
    for (auto name : {"acquire", "commit", "store_under_lease", "snapshot", "observe", "release"}) {
        const auto& s = redis_store::scripts()[script_index(name)];
        CHECK_MESSAGE(listed.find(s.sha1) != std::string::npos,
                      "cache/redis_module/ifm_module.cpp mirrors another " << name << " script than "
                      "cache/lua/" << name << ".lua (with prelude.lua): port the change and update `mirrors` ("
                      << s.sha1 << ")");
        CHECK_FALSE(s.module_command.empty());
    }
}

TEST_CASE("store module: random operations give the same replies and keys as the scripts") {
    twin t;
    const char* env_steps = std::getenv("IFM_MODULE_DIFF_STEPS");
    const int steps = env_steps ? std::atoi(env_steps) : 2500;
    // IFM_MODULE_DIFF_SEED replays a failed run (scripts/module-diff runs it longer).
    const char* env_seed = std::getenv("IFM_MODULE_DIFF_SEED");
    const auto seed = env_seed ? static_cast<unsigned>(std::strtoul(env_seed, nullptr, 10)) : std::random_device{}();
    INFO("seed " << seed << " (replay: IFM_MODULE_DIFF_SEED=" << seed << " IFM_MODULE_DIFF_STEPS=" << steps << ")");
    std::mt19937 rng(seed);
    auto pick = [&](const auto& v) { return v[std::uniform_int_distribution<std::size_t>(0, v.size() - 1)(rng)]; };
    auto chance = [&](int percent) { return std::uniform_int_distribution<int>(0, 99)(rng) < percent; };

    const std::vector<std::string> resources = {"t:{/a}", "t:{/b}", "t:{/c}"};
    const std::string epoch = "t:epoch";
    std::vector<std::pair<std::string, std::string>> held;   // (resource, token) that took a lease
    std::vector<std::string> statuses_seen;
    int weak_stored = 0;
    int variants_overflowed = 0;   // steps that left the `o` flag up
    int token = 0;
    std::string fleet = "0";   // ARGV[1]

    auto keys_of = [&](const std::string& r) { return std::vector<std::string>{r, r + ":l", epoch}; };
    // A state (s, e, m) to record for resource `r` and the variant in a[2]: often the one the
    // store holds (what an origin that did not change answers), else anything.
    auto random_state = [&](std::vector<std::string>& a, const std::string& r) {
        static const std::vector<std::string> s_pool = {"", "a", "p", "p", "p"};
        static const std::vector<std::string> m_pool = {"", "1000", "2000"};
        if (chance(40)) {
            const auto s = t.lua({"HGET", r, "s"}), e = t.lua({"HGET", r, "v:" + a[2]}), m = t.lua({"HGET", r, "m"});
            a.push_back(s == "(nil)" ? "p" : s);
            a.push_back(e == "(nil)" ? "\"a\"" : e);
            a.push_back(m == "(nil)" ? "" : m);
            return;
        }
        a.push_back(pick(s_pool));
        // W/"a": the proxy stores only strong tags, the scripts take what they are given
        a.push_back(pick(std::vector<std::string>{"\"a\"", "\"b\"", "\"c\"", "\"d\"", "", "W/\"a\""}));
        a.push_back(pick(m_pool));
    };

    // Mostly the latest lease taken (it may still hold), else an older one or a made-up token.
    auto some_lease = [&](const std::string& r) -> std::pair<std::string, std::string> {
        if (held.empty() || chance(15)) return {r, "tok-stale"};
        return chance(70) ? held.back() : pick(held);
    };
    auto commit_with = [&](const std::string& res, const std::string& tok, std::vector<std::string> a) {
        a.push_back(tok);
        a.push_back(pick(std::vector<std::string>{"set", "set", "keep", "unknown"}));
        random_state(a, res);
        a.push_back(chance(5) ? "5000" : "0");
        return t.run("commit", keys_of(res), a);
    };

    for (int step = 0; step < steps; ++step) {
        CAPTURE(step);
        const int op = std::uniform_int_distribution<int>(0, 99)(rng);
        const auto& r = pick(resources);
        std::pair<std::string, std::string> replies;
        std::string what;
        // ARGV[1..3]; a validator TTL under twice the lease sometimes, so that touch() chooses
        std::vector<std::string> head{fleet, chance(70) ? "3600000" : "20000", pick(variant_pool)};
        if (op < 35) {
            auto a = head;
            const auto tok = "tok" + std::to_string(++token);
            a.push_back(tok);
            a.push_back(chance(80) ? "15000" : "20000");
            const std::string kinds = std::string(1, "nnal"[rng() % 4]) + "nnal"[rng() % 4];
            a.push_back(kinds);
            a.push_back(chance(20) ? pick(std::vector<std::string>{"999", "1000", "1500", "2000", "-1"}) : "");
            std::vector<std::string> im, inm;
            if (kinds[0] == 'l') {
                for (int i = 0, n = 1 + static_cast<int>(rng() % 3); i < n; ++i) im.push_back(pick(tag_pool));
                // Often the tag the store holds, as a client that read the resource sends.
                const auto current = t.lua({"HGET", r, "v:" + head[2]});
                if (current != "(nil)" && chance(60)) im.insert(im.begin() + (rng() % (im.size() + 1)), current);
            }
            if (kinds[1] == 'l')
                for (int i = 0, n = 1 + static_cast<int>(rng() % 3); i < n; ++i) inm.push_back(pick(tag_pool));
            a.push_back(std::to_string(im.size()));
            a.insert(a.end(), im.begin(), im.end());
            a.insert(a.end(), inm.begin(), inm.end());
            what = "acquire";
            replies = t.run("acquire", keys_of(r), a);
            const auto status = field(replies.first, 0);
            statuses_seen.push_back(status);
            if (status == "ok" || status == "unknown") {
                held.emplace_back(r, tok);
                if (chance(70)) {
                    // The write went to the origin and ends now, as most do.
                    CHECK(replies.first == replies.second);
                    what = "acquire+commit";
                    replies = commit_with(r, tok, head);
                }
            }
        } else if (op < 65) {
            auto a = head;
            const auto [res, tok] = some_lease(r);
            what = "commit";
            replies = commit_with(res, tok, head);
        } else if (op < 75) {
            auto a = head;
            const auto [res, tok] = some_lease(r);
            a.push_back(tok);
            random_state(a, res);
            what = "store_under_lease";
            replies = t.run("store_under_lease", keys_of(res), a);
        } else if (op < 85) {
            what = "snapshot+observe";
            auto snap = t.run("snapshot", keys_of(r), head);
            for (std::size_t i : {0, 1, 2, 4}) CHECK(field(snap.first, i) == field(snap.second, i));
            auto a_lua = head, a_mod = head;
            // Each side's own generation, or now and then a made-up one.
            a_lua.push_back(chance(10) ? "12345" : field(snap.first, 3));
            a_mod.push_back(a_lua.back() == "12345" ? "12345" : field(snap.second, 3));
            std::vector<std::string> state{"", "", head[2]};
            random_state(state, r);
            state.erase(state.begin(), state.begin() + 3);
            a_lua.insert(a_lua.end(), state.begin(), state.end());
            a_mod.insert(a_mod.end(), state.begin(), state.end());
            replies = t.run("observe", keys_of(r), a_lua, a_mod);
        } else if (op < 88) {
            // Reads of many variants in a row, each recording its own tag while nothing else
            // changes the resource: past the scripts' limit of 8 the `o` flag goes up instead.
            what = "many variants";
            const std::string state_tag = pick(std::vector<std::string>{"\"a\"", "\"b\""});
            for (const char* v : {"", "gz", "br", "v3", "v4", "v5", "v6", "v7", "v8", "v9"}) {
                auto h = head;
                h[2] = v;
                auto snap = t.run("snapshot", keys_of(r), h);
                auto a_lua = h, a_mod = h;
                a_lua.push_back(field(snap.first, 3));
                a_mod.push_back(field(snap.second, 3));
                const std::string tag = chance(80) ? state_tag : "\"c\"";
                for (auto* a : {&a_lua, &a_mod}) a->insert(a->end(), {"p", tag, ""});
                auto rec = t.run("observe", keys_of(r), a_lua, a_mod);
                CHECK(rec.first == rec.second);
            }
            if (t.lua({"HGET", r, "o"}) == "1") ++variants_overflowed;
        } else if (op < 90) {
            auto a = head;
            const auto [res, tok] = some_lease(r);
            a.push_back(tok);
            what = "release";
            replies = t.run("release", keys_of(res), a);
        } else if (op < 96) {
            what = "lease lost";   // as if it expired: the writer's marker stays
            t.both({"DEL", r + ":l"});
        } else if (op < 98) {
            what = "resource lost";
            t.both({"DEL", r});
        } else {
            // The store lost its data: the epoch goes, and the next script makes it again, ready
            // at once (ARGV[1] 0) or after a long wait (every script then says recovering).
            what = "epoch lost";
            t.both({"DEL", epoch});
            fleet = chance(50) ? "0" : "100000";
        }
        if (what == "epoch lost" && fleet != "0") {
            // Seen once, then made ready again, so that the run goes on.
            auto a = head;
            a[0] = fleet;
            a.insert(a.end(), {"tok-recover", "15000", "nn", "", "0"});
            auto rec = t.run("acquire", keys_of(r), a);
            CHECK(rec.first == rec.second);
            CHECK(field(rec.first, 0) == "recovering");
            t.both({"DEL", epoch});
            fleet = "0";
        }
        CAPTURE(what);
        CHECK(replies.first == replies.second);
        for (const auto& k : resources) {
            CHECK(t.dump(0, k) == t.dump(1, k));
            CHECK(t.dump(0, k + ":l") == t.dump(1, k + ":l"));
            t.compare_ttl(k);
            t.compare_ttl(k + ":l");
        }
        CHECK(t.dump(0, epoch) == t.dump(1, epoch));
        for (const auto& k : resources)
            if (t.lua({"HGETALL", k}).find("W/") != std::string::npos) ++weak_stored;
    }
    // The run reached every outcome of an acquire, and weak tags in the store.
    for (auto s : {"ok", "unknown", "mismatch", "busy"}) {
        const auto n = std::count(statuses_seen.begin(), statuses_seen.end(), s);
        MESSAGE(std::string(s) << ": " << n);
        CHECK_MESSAGE(n > 0, s << " never seen");
    }
    MESSAGE("steps with a weak tag stored: " << weak_stored << "; with more variants than recorded: "
                                                 << variants_overflowed);
    CHECK(weak_stored > 0);
    CHECK(variants_overflowed > 0);
}

namespace {

// A worker's store (tests/support/redis_topology.hpp) that makes judged writes.
struct proxy_store : test::store_client {
    explicit proxy_store(const std::string& url) : test::store_client(test::redis_store_config(url)) {
        REQUIRE(wait_ready(5s));
    }

    // A judged write: acquire (If-Match: `tag` when given), then commit `next`.
    std::string write(const std::string& key, const std::string& tag, const std::string& next) {
        condition cond;
        if (!tag.empty()) {
            cond.if_match = condition::match::list;
            cond.if_match_tags = {tag};
        }
        auto a = run(store->async_acquire(key, cond, 10s));
        if (!a) return "acquire failed: " + a.error().message();
        if (a->status != acquire_status::ok && a->status != acquire_status::unknown)
            return a->status == acquire_status::mismatch ? "mismatch" : "busy";
        auto c = run(store->async_commit(key, a->token, commit_outcome::set, resource_state::present(next)));
        if (!c) return "commit failed: " + c.error().message();
        return *c ? "written" : "not held";
    }
};

}  // namespace

TEST_CASE("store module: the store runs judged writes as module commands where the module is loaded") {
    SUBCASE("loaded: the module's commands, not EVALSHA") {
        auto args = test::redis_module_args();
        args.insert(args.end(), {"--enable-module-command", "local"});   // for MODULE UNLOAD
        test::redis_server server(0, args);
        const auto module_servers = cache::module_servers();
        proxy_store p(server.url());
        CHECK(cache::module_servers() == module_servers + 1);   // the metric's gauge
        CHECK(p.write("/m", "", "\"1\"") == "written");
        CHECK(p.write("/m", "\"1\"", "\"2\"") == "written");
        CHECK(p.write("/m", "\"1\"", "\"3\"") == "mismatch");
        CHECK(server.calls("ifm.acquire") == 3);
        CHECK(server.calls("ifm.commit") == 2);
        CHECK(server.calls("evalsha") == 0);

        // MODULE UNLOAD while connected: the next command is refused as unknown, and the write
        // runs as scripts instead, without an error.
        CHECK(server.command({"MODULE", "UNLOAD", "ifmatch"}) == "OK");
        CHECK(p.write("/m", "\"2\"", "\"4\"") == "written");
        CHECK(p.write("/m", "\"2\"", "\"5\"") == "mismatch");
        CHECK(server.calls("evalsha") == 3);
        CHECK(cache::module_servers() == module_servers);
    }
    SUBCASE("not loaded: EVALSHA") {
        test::redis_server server(0);
        proxy_store p(server.url());
        CHECK(p.write("/m", "", "\"1\"") == "written");
        CHECK(server.calls("evalsha") == 2);
    }
    SUBCASE("an ACL user that may not run the module's acquire: the scripts, for every command after") {
        test::redis_server server(0, test::redis_module_args());
        REQUIRE(server.command({"ACL", "SETUSER", "narrow", "on", ">pw", "~*", "+@all", "-ifm.acquire"}) == "OK");
        proxy_store p("redis://narrow:pw@127.0.0.1:" + std::to_string(server.port()) + "/0");
        CHECK(p.write("/m", "", "\"1\"") == "written");
        CHECK(p.write("/m", "\"1\"", "\"2\"") == "written");
        // The first acquire was refused as a module command; from then on the connection sends
        // scripts only: two acquires and two commits.
        CHECK(server.calls("evalsha") == 4);
        CHECK(server.calls("ifm.commit") == 0);
    }
}

TEST_CASE("store module: a replica without the module receives the module's writes") {
    test::redis_server master(0, test::redis_module_args());
    test::redis_server replica(0, {"--replicaof", "127.0.0.1", std::to_string(master.port())});
    sync_client m(master.port()), r(replica.port());
    for (int i = 0; i < 250 && r({"INFO", "replication"}).find("master_link_status:up") == std::string::npos; ++i)
        std::this_thread::sleep_for(20ms);
    REQUIRE(r({"INFO", "replication"}).find("master_link_status:up") != std::string::npos);

    proxy_store p(master.url());
    CHECK(p.write("/rep", "", "\"1\"") == "written");
    CHECK(p.write("/rep", "\"1\"", "\"2\"") == "written");
    // A lease left held: SET ... PX on the master, SET ... PXAT on the replica.
    condition unconditional;
    auto held = p.run(p.store->async_acquire("/rep2", unconditional, 30s));
    REQUIRE(held.has_value());
    REQUIRE(held->status == acquire_status::unknown);
    CHECK(m({"WAIT", "1", "2000"}) == "1");
    CHECK(master.calls("ifm.acquire") == 3);

    for (std::string key : {"t:{/rep}", "t:{/rep2}", "t:{/rep2}:l", "t:epoch"}) {
        CAPTURE(key);
        const auto type = m({"TYPE", key});
        CHECK(r({"TYPE", key}) == type);
        if (type == "hash") CHECK(r({"HGETALL", key}) == m({"HGETALL", key}));
        if (type == "string") CHECK(r({"GET", key}) == m({"GET", key}));
        const long long a = std::stoll(m({"PTTL", key})), b = std::stoll(r({"PTTL", key}));
        CHECK((a == -1 ? b == -1 : std::llabs(a - b) < 1000));
    }
    CHECK(r({"GET", "t:{/rep2}:l"}) == held->token);
    CHECK(r({"HGET", "t:{/rep}", "v:"}) == "\"2\"");
}

TEST_CASE("store module: out of memory, it refuses what the scripts refuse and answers the rest") {
    twin t;
    const std::vector<std::string> head{"0", "3600000", ""};
    auto acquire = [&](const std::string& key, const std::string& tok, const std::string& tag) {
        auto a = head;
        a.insert(a.end(), {tok, "15000", tag.empty() ? "nn" : "ln", "", tag.empty() ? "0" : "1"});
        if (!tag.empty()) a.push_back(tag);
        return t.run("acquire", {key, key + ":l", "t:epoch"}, a);
    };
    auto commit = [&](const std::string& key, const std::string& tok, const std::string& tag) {
        auto a = head;
        a.insert(a.end(), {tok, "set", "p", tag, "", "0"});
        return t.run("commit", {key, key + ":l", "t:epoch"}, a);
    };
    auto first_word = [](const std::string& reply) { return reply.substr(0, reply.find(' ')); };

    // Set up before the limit: /oom known as "1".
    REQUIRE(acquire("t:{/oom}", "tok1", "").first == "[unknown,,,,15000]");
    REQUIRE(commit("t:{/oom}", "tok1", "\"1\"").first == "1");
    REQUIRE(acquire("t:{/held}", "tok2", "").first == "[unknown,,,,15000]");
    t.both({"CONFIG", "SET", "maxmemory-policy", "noeviction"});
    t.both({"CONFIG", "SET", "maxmemory", "1"});

    // A stale write writes nothing: answered.
    auto stale = acquire("t:{/oom}", "tok3", "\"0\"");
    CHECK(stale.first == "[mismatch,p,\"1\",,15000]");
    CHECK(stale.second == stale.first);
    // A good one would take the lease: refused with OOM by both (nothing written by either).
    auto good = acquire("t:{/oom}", "tok4", "\"1\"");
    CHECK(first_word(good.first) == "ERR:OOM");
    CHECK(first_word(good.second) == "ERR:OOM");
    CHECK(t.dump(0, "t:{/oom}") == t.dump(1, "t:{/oom}"));
    CHECK(t.lua({"EXISTS", "t:{/oom}:l"}) == "0");
    CHECK(t.mod({"EXISTS", "t:{/oom}:l"}) == "0");
    // A commit whose first write deletes fields (HDEL is allowed out of memory) runs whole.
    auto c = commit("t:{/held}", "tok2", "\"2\"");
    CHECK(c.first == c.second);
    CHECK(t.dump(0, "t:{/held}") == t.dump(1, "t:{/held}"));
    t.both({"CONFIG", "SET", "maxmemory", "0"});
}

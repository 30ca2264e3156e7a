// ifmatch_redis.so: an optional Redis module with the validator store's scripts (cache/lua/, each
// after prelude.lua; all but idempotency.lua) as native commands: IFM.ACQUIRE, IFM.COMMIT,
// IFM.STORE_UNDER_LEASE, IFM.SNAPSHOT, IFM.OBSERVE, IFM.RELEASE. Same keys, arguments, effects and
// replies; `IFM.ACQUIRE k1 k2 k3 ARGV...` is `EVALSHA <acquire> 3 k1 k2 k3 ARGV...`. Loaded with
// `redis-server --loadmodule <path>`; the proxy sends a script as its command when IFM.PROTOCOL
// names that script's SHA1, and the script otherwise (README, "Redis module").
//
// Why: a judged write costs Redis 36-39 µs of CPU inside EVALSHA on this project's machines
// (bench/lua_cost), mostly the interpreter and the conversions of each redis.call; through
// RedisModule_Call the same calls cost about 15 µs, through the key API used here 8-11.
//
// How it mirrors the scripts:
// - Reads and writes use the key API (RedisModule_OpenKey, HashGet/HashSet, ScanKey...), each key
//   opened once per command, so that a handle never outlives a deletion made through another.
//   A key of the wrong type fails the command with WRONGTYPE, as redis.call fails a script.
// - Every write is replicated as the command the script would have sent (RedisModule_Replicate;
//   Redis wraps them in MULTI/EXEC, as it does a script's effects, and a replica needs no
//   module). Relative expiries go out as absolute ones (SET ... PXAT, PEXPIREAT), as Redis 7
//   propagates SET PX and PEXPIRE itself.
// - Out of memory: the scripts run without flags, so Redis refuses a write (SET, HSET) with OOM
//   only while the script has written nothing yet; reads still run, so a stale write still gets
//   its 409. The commands do the same (`before_write`).
// - HGETALL's order is the hash's; ScanKey gives the same order for the small hashes these are
//   (listpack). A hash stored as a table (a field over 64 bytes: a long ETag) may list its
//   variants in another order, and the "other variant's tag" an acquire returns for a 409 body
//   may then be another current one. A scan of a table may also repeat a field: kept once.
// - Keyspace notifications are not sent (the scripts' commands would send them when enabled).
//
// Mirrored line by line: a change to those scripts must change this file and `mirrors` below
// (the test "store module: the module mirrors the current scripts" fails until it does), and
// tests/redis/store_module_test.cpp runs random operations through both and compares replies and
// the keys they leave (scripts/module-diff for longer; scripts/module-memcheck under valgrind).
#include "cache/redis_module/module_api.hpp"

#include <sys/time.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ifm::redis_module {
namespace {

// SHA1 of prelude.lua + each script, as redis_store::scripts() loads them, that this file
// mirrors: acquire, commit, store_under_lease, snapshot, observe, release.
constexpr std::string_view mirrors[] = {
    "decdaf5259b5fb174d7e82e2a6c8449cff2bd770", "a70ac47fdf2abf983674288a43004185feed088d",
    "199d55fc7623b87cb45b9dfa79796e9c8208c2c5", "f81296a561af8670bc70d0a4c41d09242662a548",
    "44465f41b63ce3934189e87d0922d2f8909bc62d", "e8df7c596e2e0417227afe387c985fd96df68c0d"};

constexpr int max_variants = 8;   // prelude.lua's MAX_VARIANTS

struct failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Lua's tonumber() for the decimal strings these keys and arguments hold; nullopt where Lua
// gives nil.
std::optional<double> number(std::optional<std::string_view> s) {
    if (!s || s->empty()) return std::nullopt;
    // The usual case, a decimal integer below 2^53 (generations are 16 digits), exactly as
    // strtod reads it.
    if (s->size() <= 16 && std::all_of(s->begin(), s->end(), [](char c) { return c >= '0' && c <= '9'; })) {
        long long v = 0;
        for (char c : *s) v = v * 10 + (c - '0');
        if (v <= (1LL << 53)) return static_cast<double>(v);
    }
    std::string text(*s);
    char* end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    while (end && *end == ' ') ++end;
    if (end == text.c_str() || *end != '\0') return std::nullopt;
    return v;
}

// An integral double below 2^53 in decimal, as "%.0f" writes it (without printf).
std::optional<std::string> integral_text(double v) {
    if (!(std::fabs(v) < 9007199254740992.0) || v != std::floor(v)) return std::nullopt;
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(v));
    return std::string(buf, end);
}

// A Lua number as redis.call and tostring() write it: integral values without a fraction.
std::string text_of(double v) {
    if (auto t = integral_text(v)) return *t;
    char buf[64];
    std::snprintf(buf, sizeof buf, std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e17 ? "%.0f" : "%.17g", v);
    return buf;
}

// string.format('%.0f', v)
std::string format_0f(double v) {
    if (auto t = integral_text(v)) return *t;
    char buf[400];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
}

double now_us() {   // redis.call('TIME') as the prelude reads it
    timeval tv{};
    gettimeofday(&tv, nullptr);
    return static_cast<double>(tv.tv_sec) * 1000000.0 + static_cast<double>(tv.tv_usec);
}

const char* const wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";

// A hash's fields as (name, value); the text lives in the command's RedisModuleStrings (freed
// when it returns) or in script::arena_.
using fields = std::vector<std::pair<std::string_view, std::string_view>>;

const std::string_view* find(const fields& h, std::string_view name) {
    for (auto& [f, v] : h)
        if (f == name) return &v;
    return nullptr;
}

std::string_view view(const RedisModuleString* s) {
    std::size_t n = 0;
    const char* p = api::StringPtrLen(s, &n);
    return {p, n};
}

// One invocation: KEYS and ARGV as the scripts see them, and the commands they call.
class script {
public:
    script(RedisModuleCtx* ctx, RedisModuleString** argv, int argc) : ctx_(ctx), argv_(argv), argc_(argc) {}

    // ARGV[i], 1-based; nullopt past the end (Lua: nil).
    std::optional<std::string_view> arg(int i) const {
        if (i < 1 || 3 + i >= argc_) return std::nullopt;
        std::size_t n = 0;
        const char* p = api::StringPtrLen(argv_[3 + i], &n);
        return std::string_view(p, n);
    }
    std::string_view arg_or_empty(int i) const { return arg(i).value_or(std::string_view{}); }
    int args() const { return argc_ - 4; }   // #ARGV

    // ---- the commands the scripts call, on KEYS[i] ------------------------------------------

    // The key's handle, opened on first use for the whole command (AutoMemory closes it).
    RedisModuleKey* key(int i) {
        if (!keys_[i]) keys_[i] = api::OpenKey(ctx_, argv_[i], api::read | api::write);
        return keys_[i];
    }
    bool exists(int i) { return api::KeyType(key(i)) != api::keytype_empty; }
    // Empty or of `type`, else WRONGTYPE; true if it exists.
    bool typed(int i, int type) {
        const int t = api::KeyType(key(i));
        if (t != api::keytype_empty && t != type) throw failure(wrongtype);
        return t != api::keytype_empty;
    }

    // HGETALL of KEYS[i], in the hash's order (tags[1] is the first variant's). A scan of the
    // key (RedisModule_ScanKey: one pass over these small hashes) costs less than asking for the
    // fields a script reads by name (HashGet makes an object of every name and value).
    fields hgetall(int i) {
        fields out;
        if (!typed(i, api::keytype_hash)) return out;
        struct sink {
            std::string text;                                   // names and values, back to back
            std::vector<std::pair<std::size_t, std::size_t>> at;   // (offset, length) of each
        } got;
        got.text.reserve(256);
        auto add = [](RedisModuleKey*, RedisModuleString* f, RedisModuleString* val, void* p) {
            auto& got = *static_cast<sink*>(p);
            for (auto part : {view(f), view(val)}) {
                got.at.emplace_back(got.text.size(), part.size());
                got.text.append(part);
            }
        };
        RedisModuleScanCursor* cursor = api::ScanCursorCreate();
        while (api::ScanKey(key(i), cursor, add, &got)) {
        }
        api::ScanCursorDestroy(cursor);
        std::string_view text = arena_.emplace_back(std::move(got.text));
        for (std::size_t k = 0; k + 1 < got.at.size(); k += 2) {
            auto name = text.substr(got.at[k].first, got.at[k].second);
            if (!find(out, name))   // a scan of a hash table may repeat a field
                out.emplace_back(name, text.substr(got.at[k + 1].first, got.at[k + 1].second));
        }
        return out;
    }
    // GET
    std::optional<std::string_view> get(int i) {
        if (!typed(i, api::keytype_string)) return std::nullopt;
        std::size_t n = 0;
        const char* p = api::StringDMA(key(i), &n, api::read);
        return std::string_view(p ? p : "", p ? n : 0);
    }
    // PTTL (of a key that exists)
    long long pttl(int i) { return api::GetExpire(key(i)); }

    RedisModuleString* str(std::string_view s) { return api::CreateString(ctx_, s.data(), s.size()); }

    // HSET key f v [f v ...]
    void hset(int i, const std::vector<std::pair<std::string_view, std::string_view>>& set) {
        before_write(true);
        typed(i, api::keytype_hash);
        std::vector<RedisModuleString*> v{argv_[i]};
        for (auto& [f, val] : set) {
            v.push_back(str(f));
            v.push_back(str(val));
            api::HashSet(key(i), api::hash_none, v[v.size() - 2], v.back(), nullptr);
        }
        replicate("HSET", v);
    }
    // HDEL key f [f ...]: deleting the last field deletes the key, as HDEL does. Like a script's
    // HDEL, it counts as a write (and is replicated) only if it deleted something.
    void hdel(int i, const std::vector<std::string_view>& names) {
        if (!typed(i, api::keytype_hash)) return;
        std::vector<RedisModuleString*> v{argv_[i]};
        int deleted = 0;
        for (auto f : names) {
            v.push_back(str(f));
            if (exists(i)) deleted += api::HashSet(key(i), api::hash_none, v.back(), api::hash_delete, nullptr);
        }
        if (deleted > 0) replicate("HDEL", v);
    }
    // SET key value PX ttl
    void set_px(int i, RedisModuleString* value, long long ttl) {
        before_write(true);
        if (ttl <= 0) throw failure("ERR invalid expire time in 'set' command");
        api::StringSet(key(i), value);
        api::SetExpire(key(i), ttl);
        const long long at = api::Milliseconds() + ttl;
        if (api::Replicate(ctx_, "SET", "sscl", argv_[i], value, "PXAT", at) != api::ok)
            throw failure("ERR ifm: replicating SET failed");
        wrote_ = true;
    }
    // PEXPIRE key ttl (nothing on a missing key)
    void pexpire(int i, long long ttl) {
        if (!exists(i)) return;
        if (ttl <= 0) return del(i);
        api::SetExpire(key(i), ttl);
        const long long at = api::Milliseconds() + ttl;
        if (api::Replicate(ctx_, "PEXPIREAT", "sl", argv_[i], at) != api::ok)
            throw failure("ERR ifm: replicating PEXPIREAT failed");
        wrote_ = true;
    }
    // DEL key (nothing on a missing key)
    void del(int i) {
        if (!exists(i)) return;
        api::DeleteKey(key(i));
        if (api::Replicate(ctx_, "DEL", "s", argv_[i]) != api::ok) throw failure("ERR ifm: replicating DEL failed");
        wrote_ = true;
    }
    // HGET key field
    std::optional<std::string_view> hget(int i, std::string_view field) {
        if (!typed(i, api::keytype_hash)) return std::nullopt;
        RedisModuleString* v = nullptr;
        api::HashGet(key(i), api::hash_none, str(field), &v, nullptr);
        if (!v) return std::nullopt;
        return view(v);
    }

    void reply_strings(std::initializer_list<std::string_view> items) {
        api::ReplyWithArray(ctx_, static_cast<long>(items.size()));
        for (auto s : items) api::ReplyWithStringBuffer(ctx_, s.data(), s.size());
    }

    // ---- prelude.lua ------------------------------------------------------------------------

    // recovering(lease)
    bool recovering(std::optional<std::string_view> lease) {
        const fields ep = hgetall(3);   // HMGET epoch r l
        const std::string_view* r = find(ep, "r");
        const std::string_view* l_field = find(ep, "l");
        const double now = now_us();
        const double wait = number(arg(1)).value_or(0);
        const double l = std::max(wait, number(lease).value_or(0));
        if (!r) {
            hset(3, {{"r", format_0f(now + wait * 1000)}, {"l", text_of(l)}});
            epoch_lease_ = text_of(l);
            return wait > 0;
        }
        if (l > number(l_field ? std::optional(*l_field) : std::nullopt).value_or(0)) {
            hset(3, {{"l", text_of(l)}});
            epoch_lease_ = text_of(l);
        } else {
            epoch_lease_ = l_field ? *l_field : "0";
        }
        auto ready = number(*r);
        if (!ready) throw failure("ERR ifm: the epoch's ready time is not a number");
        return now < *ready;
    }

    // fleet_lease(): set by recovering(), which acquire runs first.
    const std::string& fleet_lease() const { return epoch_lease_; }

    static std::string next_generation(const std::string_view* current) {
        const double g = number(current ? std::string_view(*current) : std::string_view("0")).value_or(0);
        return format_0f(std::max(g + 1, now_us()));
    }

    // wipe(): every field but g and w goes (one HDEL; the script sends one per field).
    void wipe() {
        std::vector<std::string_view> gone;
        for (auto& [f, v] : hgetall(1))
            if (f != "g" && f != "w") gone.push_back(f);
        if (!gone.empty()) hdel(1, gone);
    }

    // record(s, e, m) for ARGV[3]'s variant; false when its tag was not recorded (8 variants).
    bool record(std::string_view s, std::string_view e, std::string_view m) {
        const std::string field = "v:" + std::string(arg_or_empty(3));
        const std::string cur_s(hget(1, "s").value_or(""));
        std::optional<std::string> cur_e;
        if (s == "p" && !e.empty())
            if (auto v = hget(1, field)) cur_e.emplace(*v);
        if (s != cur_s || (cur_e && *cur_e != e)) {
            wipe();
            cur_e.reset();
        }
        if (s.empty()) return true;
        hset(1, {{"s", s}});
        if (m.empty())
            hdel(1, {"m"});
        else
            hset(1, {{"m", m}});
        if (s != "p" || e.empty() || cur_e == e) return true;
        int n = 0;
        for (auto& [f, v] : hgetall(1))
            if (f.starts_with("v:")) ++n;
        if (n >= max_variants) {
            hset(1, {{"o", "1"}});
            return false;
        }
        hset(1, {{field, e}});
        return true;
    }

    void touch(std::optional<double> ttl) {
        auto v = number(arg(2));
        if (!v) throw failure("ERR ifm: the validator TTL is not a number");
        pexpire(1, static_cast<long long>(std::max(*v, ttl.value_or(0))));
    }

    // ---- acquire.lua ------------------------------------------------------------------------
    int acquire() {
        if (recovering(arg(5))) {
            reply_strings({"recovering", "", "", "", fleet_lease()});
            return api::ok;
        }
        const fields h = hgetall(1);
        const std::string variant_field = "v:" + std::string(arg_or_empty(3));
        std::vector<std::string_view> tags;
        for (auto& [f, v] : h)
            if (f.starts_with("v:")) tags.push_back(v);
        std::string_view s = find(h, "s") ? std::string_view(*find(h, "s")) : "";
        std::string_view m = find(h, "m") ? std::string_view(*find(h, "m")) : "";
        if (s != "a" && s != "p") s = m = "";
        std::string_view e = find(h, variant_field) ? std::string_view(*find(h, variant_field))
                             : !tags.empty()        ? tags[0]
                                                    : "";

        auto take = [&](std::string_view status) {
            auto lease = number(arg(5));
            if (!lease) throw failure("ERR value is not an integer or out of range");
            set_px(2, argv_[3 + 4], static_cast<long long>(*lease));
            hset(1, {{"w", arg_or_empty(4)}});
            touch(2 * *lease);
            reply_strings({status, s, e, m, fleet_lease()});
            return api::ok;
        };

        if (exists(2)) {
            reply_strings({"busy", s, e, m, fleet_lease()});
            return api::ok;
        }
        // w: a write took the lease and never committed (acquire.lua says why).
        if (find(h, "w")) {
            std::vector<std::string_view> gone;
            for (auto& [f, v] : h)
                if (f != "g" && f != "w") gone.push_back(f);
            gone.push_back("w");
            hdel(1, gone);
            hset(1, {{"g", next_generation(find(h, "g"))}});
            s = e = m = "";
            tags.clear();
        }
        if (s.empty()) return take("unknown");

        const bool present = s == "p";
        const std::string_view kinds = arg_or_empty(6);
        const char im = kinds.size() > 0 ? kinds[0] : '\0';
        const char inm = kinds.size() > 1 ? kinds[1] : '\0';
        const auto n_opt = number(arg(8));
        if ((im == 'l' || inm == 'l') && !n_opt) throw failure("ERR ifm: the If-Match count is not a number");
        const int n = n_opt ? static_cast<int>(*n_opt) : 0;
        bool pass = true;

        if (im == 'a') {
            pass = present;
        } else if (im == 'l') {
            // strong comparison against every variant's tag (stored tags are never weak)
            pass = false;
            if (present)
                for (auto t : tags)
                    for (int i = 9; i <= 8 + n; ++i)
                        if (arg(i) == t && !t.starts_with("W/")) pass = true;
        } else if (!arg_or_empty(7).empty() && present && !m.empty()) {
            pass = int_le(m, arg_or_empty(7));
        }

        if (pass) {
            if (inm == 'a') {
                pass = !present;
            } else if (inm == 'l' && present) {
                // weak comparison: opaque parts only
                for (auto t : tags)
                    for (int i = 9 + n; i <= args(); ++i)
                        if (opaque(*arg(i)) == opaque(t)) pass = false;
            }
        }

        if (pass) return take("ok");
        if (present && (im == 'l' || inm == 'l') && (find(h, "o") || !find(h, variant_field))) return take("unknown");
        reply_strings({"mismatch", s, e, m, fleet_lease()});
        return api::ok;
    }

    // ---- commit.lua -------------------------------------------------------------------------
    int commit() {
        const fields cur = hgetall(1);
        const std::string variant_field = "v:" + std::string(arg_or_empty(3));
        const std::string g = next_generation(find(cur, "g"));
        const bool held = get(2) == arg(4) && arg(4);

        std::vector<std::pair<std::string_view, std::string_view>> next{{"g", g}};
        const std::string_view outcome = arg_or_empty(5);
        if (held && outcome == "keep") {
            for (auto& [f, v] : cur)
                if (f != "w" && f != "g") next.emplace_back(f, v);
        } else if (held && outcome == "set") {
            // record(s, e, m) on a wiped hash: only this variant's tag survives.
            const std::string_view s = arg_or_empty(6), e = arg_or_empty(7), m = arg_or_empty(8);
            if (!s.empty()) {
                next.emplace_back("s", s);
                if (!m.empty()) next.emplace_back("m", m);
                if (s == "p" && !e.empty()) next.emplace_back(variant_field, e);
            }
        } else if (!held) {
            if (const std::string_view* w = find(cur, "w")) next.emplace_back("w", *w);
        }

        auto in_next = [&](std::string_view name) {
            return std::any_of(next.begin(), next.end(), [&](auto& fv) { return fv.first == name; });
        };
        std::vector<std::string_view> del_fields;
        std::vector<std::pair<std::string_view, std::string_view>> set_fields;
        for (auto& [f, v] : cur)
            if (!in_next(f)) del_fields.push_back(f);
        for (auto& [f, v] : next) {
            const std::string_view* was = find(cur, f);
            if (!was || *was != v) set_fields.emplace_back(f, v);
        }
        if (!del_fields.empty()) hdel(1, del_fields);
        if (!set_fields.empty()) hset(1, set_fields);

        if (held) {
            const double hold = number(arg(9)).value_or(0);
            if (hold > 0) {
                if (static_cast<double>(pttl(2)) > hold) pexpire(2, static_cast<long long>(hold));
            } else {
                del(2);
            }
        }
        touch(0.0);
        return api::ReplyWithLongLong(ctx_, held ? 1 : 0);
    }

    // ---- store_under_lease.lua ---------------------------------------------------------------
    int store_under_lease() {
        if (get(2) != arg(4) || !arg(4)) return api::ReplyWithLongLong(ctx_, 0);
        wipe();
        record(arg_or_empty(5), arg_or_empty(6), arg_or_empty(7));
        touch(0.0);
        return api::ReplyWithLongLong(ctx_, 1);
    }

    // ---- snapshot.lua -----------------------------------------------------------------------
    int snapshot() {
        const bool rec = recovering(std::nullopt);
        const fields h = hgetall(1);
        const std::string variant_field = "v:" + std::string(arg_or_empty(3));
        long long leased = exists(2) ? 1 : 0;
        if (rec) leased = 1;
        const std::string_view* g = find(h, "g");
        const std::string_view g_text = g ? *g : std::string_view("0");
        api::ReplyWithArray(ctx_, 5);
        if (find(h, "w") && leased == 0) {
            for (int k = 0; k < 3; ++k) api::ReplyWithStringBuffer(ctx_, "", 0);
        } else {
            for (auto name : {std::string_view("s"), std::string_view(variant_field), std::string_view("m")}) {
                const std::string_view* v = find(h, name);
                api::ReplyWithStringBuffer(ctx_, v ? v->data() : "", v ? v->size() : 0);
            }
        }
        api::ReplyWithStringBuffer(ctx_, g_text.data(), g_text.size());
        return api::ReplyWithLongLong(ctx_, leased);
    }

    // ---- observe.lua ------------------------------------------------------------------------
    int observe() {
        if (recovering(std::nullopt)) return api::ReplyWithLongLong(ctx_, 0);
        if (exists(2) || hget(1, "w")) return api::ReplyWithLongLong(ctx_, 0);
        if (hget(1, "g").value_or("0") != arg_or_empty(4) || !arg(4)) return api::ReplyWithLongLong(ctx_, 0);
        // A 404 of a resource nobody tracks is not recorded: strangers could fill the store.
        if (arg_or_empty(5) == "a" && !exists(1)) return api::ReplyWithLongLong(ctx_, 0);
        const bool recorded = record(arg_or_empty(5), arg_or_empty(6), arg_or_empty(7));
        touch(0.0);
        return api::ReplyWithLongLong(ctx_, recorded ? 1 : 0);
    }

    // ---- release.lua ------------------------------------------------------------------------
    int release() {
        if (get(2) == arg(4) && arg(4)) {
            del(2);
            return api::ReplyWithLongLong(ctx_, 1);
        }
        return api::ReplyWithLongLong(ctx_, 0);
    }

private:
    // Out of memory, a script's first write is refused if it is one that Redis refuses then
    // (SET, HSET); once it has written, the rest of it runs.
    void before_write(bool deny_oom) {
        if (deny_oom && !wrote_ && api::GetUsedMemoryRatio() > 1)
            throw failure("OOM command not allowed when used memory > 'maxmemory'.");
    }
    void replicate(const char* cmd, std::vector<RedisModuleString*>& v) {
        if (api::Replicate(ctx_, cmd, "v", v.data(), v.size()) != api::ok)
            throw failure(std::string("ERR ifm: replicating ") + cmd + " failed");
        wrote_ = true;
    }

    // a <= b for canonical decimal integers (acquire.lua's int_le)
    static bool int_le(std::string_view a, std::string_view b) {
        const bool na = a.starts_with('-'), nb = b.starts_with('-');
        if (na != nb) return na;
        if (na) std::swap(a, b), a.remove_prefix(1), b.remove_prefix(1);
        if (a.size() != b.size()) return a.size() < b.size();
        return a <= b;
    }
    static std::string_view opaque(std::string_view t) { return t.starts_with("W/") ? t.substr(2) : t; }

    RedisModuleCtx* ctx_;
    RedisModuleString** argv_;
    int argc_;
    RedisModuleKey* keys_[4] = {};
    std::deque<std::string> arena_;   // text of the hashes read (fields point into it)
    std::string epoch_lease_ = "0";
    bool wrote_ = false;
};

template <int (script::*run)(), int min_argc>
int command(RedisModuleCtx* ctx, RedisModuleString** argv, int argc) {
    if (argc < min_argc) return api::WrongArity(ctx);
    api::AutoMemory(ctx);
    try {
        script s(ctx, argv, argc);
        return (s.*run)();
    } catch (const failure& f) {
        std::string msg = f.what();
        // An error reply must be one line; a server error keeps its code (OOM, WRONGTYPE, ...).
        std::replace(msg.begin(), msg.end(), '\r', ' ');
        std::replace(msg.begin(), msg.end(), '\n', ' ');
        return api::ReplyWithError(ctx, msg.c_str());
    } catch (const std::exception& e) {
        return api::ReplyWithError(ctx, (std::string("ERR ifm: ") + e.what()).c_str());
    }
}

// IFM.PROTOCOL: the SHA1s of the scripts the commands mirror (acquire, commit).
int protocol(RedisModuleCtx* ctx, RedisModuleString**, int) {
    api::ReplyWithArray(ctx, static_cast<long>(std::size(mirrors)));
    for (auto s : mirrors) api::ReplyWithStringBuffer(ctx, s.data(), s.size());
    return api::ok;
}

}  // namespace
}  // namespace ifm::redis_module

extern "C" __attribute__((visibility("default"))) int RedisModule_OnLoad(RedisModuleCtx* ctx, RedisModuleString**,
                                                                         int) {
    namespace m = ifm::redis_module;
    namespace api = ifm::redis_module::api;
    // RedisModule_Init's first steps: bind the API, then name the module (before any command).
    if (!api::bind(ctx)) return api::err;
    api::SetModuleAttribs(ctx, "ifmatch", 1, api::apiver_1);
    // KEYS[1..3] are the command's first three arguments (Cluster routes on them). Not
    // deny-oom: a script may run when Redis is out of memory, only its writes are refused.
    if (api::CreateCommand(ctx, "ifm.acquire", m::command<&m::script::acquire, 12>, "write", 1, 3, 1) != api::ok)
        return api::err;
    if (api::CreateCommand(ctx, "ifm.commit", m::command<&m::script::commit, 13>, "write", 1, 3, 1) != api::ok)
        return api::err;
    if (api::CreateCommand(ctx, "ifm.store_under_lease", m::command<&m::script::store_under_lease, 11>, "write", 1, 3,
                           1) != api::ok)
        return api::err;
    if (api::CreateCommand(ctx, "ifm.snapshot", m::command<&m::script::snapshot, 7>, "write", 1, 3, 1) != api::ok)
        return api::err;
    if (api::CreateCommand(ctx, "ifm.observe", m::command<&m::script::observe, 11>, "write", 1, 3, 1) != api::ok)
        return api::err;
    if (api::CreateCommand(ctx, "ifm.release", m::command<&m::script::release, 8>, "write", 1, 3, 1) != api::ok)
        return api::err;
    if (api::CreateCommand(ctx, "ifm.protocol", m::protocol, "readonly fast", 0, 0, 0) != api::ok)
        return api::err;
    return api::ok;
}

// The simulated world of tests/sim: see sim.hpp and tests/sim/README.md.
#include "tests/sim/sim.hpp"

#include "cache/memory_store.hpp"
#include "proxy/write_protocol.hpp"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace ifm::sim {

namespace {

using cache::acquire_result;
using cache::acquire_status;
using cache::commit_outcome;
using cache::condition;
using cache::memory_backend;
using cache::resource_ref;
using cache::resource_state;
using cache::snapshot;
using cache::store_errc;
using cache::verdict;
using proxy::fetch_outcome;
using proxy::origin_answer;
using proxy::write_action;
using proxy::write_machine;
using proxy::write_params;
using akind = write_action::kind;
using reply = write_action::reply_kind;
using config::etag_mode;

using usec = std::int64_t;   // simulated time, microseconds since the start
constexpr usec ms = 1000;
constexpr usec store_timeout = 50 * ms;

const char* name(reply r) {
    switch (r) {
    case reply::relay: return "relay";
    case reply::relay_unchecked: return "relay_unchecked";
    case reply::reject: return "reject";
    case reply::also_failed: return "also_failed";   // the WebDAV If header: not simulated
    case reply::busy: return "busy";
    case reply::store_unavailable: return "store_unavailable";
    case reply::lease_lost: return "lease_lost";
    case reply::lease_too_short: return "lease_too_short";
    case reply::revalidation_failed: return "revalidation_failed";
    case reply::origin_failed: return "origin_failed";
    }
    return "?";
}
[[maybe_unused]] const char* name(akind k) {
    switch (k) {
    case akind::acquire: return "acquire";
    case akind::sleep: return "sleep";
    case akind::fetch: return "fetch";
    case akind::store: return "store";
    case akind::forward: return "forward";
    case akind::refresh: return "refresh";
    case akind::commit: return "commit";
    case akind::respond: return "respond";
    }
    return "?";
}
const char* name(commit_outcome o) {
    switch (o) {
    case commit_outcome::set: return "set";
    case commit_outcome::keep: return "keep";
    case commit_outcome::unknown: return "unknown";
    }
    return "?";
}
const char* name(acquire_status s) {
    switch (s) {
    case acquire_status::ok: return "ok";
    case acquire_status::unknown: return "unknown";
    case acquire_status::mismatch: return "mismatch";
    case acquire_status::busy: return "busy";
    }
    return "?";
}
std::string str(const resource_state& s) {
    switch (s.state) {
    case resource_state::kind::unknown: return "unknown";
    case resource_state::kind::absent: return "absent";
    case resource_state::kind::present: return "present(" + s.etag + ")";
    }
    return "?";
}

// How the origin treats one forwarded write (the answer classes of SPEC §5.4).
enum class origin_class : std::uint8_t {
    ok,             // 200/204, applied
    accepted,       // 202, applied later (before the write's lease ends)
    redirect,       // 303 after applying
    client_error,   // 4xx, not applied
    error_applied,  // 500 after applying
    error_late,     // 502 from a gateway while the app applies it afterwards
    error_not,      // 503, not applied
    reset_before,   // connection reset, not applied
    reset_after,    // connection reset after applying
    slow,           // past the proxy's deadline; applied (or not) after it, within the lease
    unfenced,       // excluded: applied after the lease ended (README: not fenced)
    count_
};
const char* name(origin_class c) {
    static const char* n[] = {"ok", "accepted", "redirect", "client_error", "error_applied", "error_late",
                              "error_not", "reset_before", "reset_after", "slow", "unfenced"};
    return n[static_cast<int>(c)];
}

enum class origin_tags : std::uint8_t { changing, sticky, none };
const char* name(origin_tags t) {
    switch (t) {
    case origin_tags::changing: return "changing";
    case origin_tags::sticky: return "sticky";
    case origin_tags::none: return "none";
    }
    return "?";
}

enum class cond_kind : std::uint8_t { if_match, create, none };

// ---------------------------------------------------------------------------------------------
// The world's parameters, all drawn from the seed.

struct world_params {
    int proxies = 1, clients = 2, resources = 1, ops_per_client = 3;
    int variants = 1;              // representations per resource (vary: Accept-Encoding)
    etag_mode mode = etag_mode::hash;
    origin_tags tags = origin_tags::changing;
    bool revalidate = false, refresh = false, wait_busy = false, allow_unconditional = false;
    usec busy_wait = 200 * ms;
    int lease_ms = 1000;
    usec deadline = 300 * ms, margin = 50 * ms;
    std::optional<int> settle_ms;
    usec late_window = 0;          // how long after its answer the origin may still apply a write
    usec validator_ttl = 3600'000 * ms;
    double p_store_error = 0, p_crash = 0;
    std::vector<double> origin_weights;   // per origin_class
    // Store faults: times (µs), one each at most.
    usec restart_at = -1, flush_at = -1, failover_at = -1, stale_failover_at = -1, stale_image_at = -1;
    usec store_down = 0;
    bool unfenced = false, sticky_origin_mode = false;
    double p_not_sent = 0, p_retried = 0;   // connect failures; a DELETE resent on a fresh connection
    usec snapshot_reuse = 0;       // store.snapshot_reuse: reads reuse their proxy's recent snapshot

    std::string line() const {
        std::ostringstream o;
        o << "proxies=" << proxies << " clients=" << clients << " resources=" << resources
          << " ops_per_client=" << ops_per_client << " variants=" << variants << " etag=" << (mode == etag_mode::hash ? "hash" : "origin")
          << " origin_etag=" << name(tags) << " revalidate_on_mismatch=" << revalidate
          << " refresh_after_write=" << refresh << " on_busy=" << (wait_busy ? "wait" : "reject")
          << " busy_wait=" << busy_wait / ms << "ms lease=" << lease_ms << "ms origin_deadline=" << deadline / ms
          << "ms margin=" << margin / ms << "ms settle=" << (settle_ms ? std::to_string(*settle_ms) + "ms" : "rest")
          << " late_window=" << late_window / ms << "ms validator_ttl=" << validator_ttl / ms
          << "ms unconditional=" << allow_unconditional << " p_store_error=" << p_store_error
          << " p_crash=" << p_crash << " restart_at=" << restart_at << " flush_at=" << flush_at
          << " failover_at=" << failover_at << " stale_failover_at=" << stale_failover_at << "(image "
          << stale_image_at << ") unfenced=" << unfenced << " p_not_sent=" << p_not_sent
          << " p_retried=" << p_retried << " snapshot_reuse=" << snapshot_reuse / ms << "ms origin weights=[";
        for (std::size_t i = 0; i < origin_weights.size(); ++i)
            o << (i ? "," : "") << name(static_cast<origin_class>(i)) << ":" << origin_weights[i];
        o << "]";
        return o.str();
    }
};

// ---------------------------------------------------------------------------------------------
// The recorded history: what the checker judges.

struct write_record {
    int id = 0, client = 0, proxy = 0, res = 0, variant = 0;
    cond_kind ck = cond_kind::if_match;
    bool is_delete = false;
    bool unjudged = false;         // invalidate_only (SPEC §5.5)
    std::string tag;
    std::int64_t base = -1;        // the version the If-Match tag was derived from
    int tag_source = 0;            // 0: none / deliberately old, 1: a read just now, 2: a write response
    int tag_from_write = -1;
    usec tag_since = 0;            // I2: no other write may start after this
    usec invoked = 0, completed = -1;
    bool crashed = false;          // its proxy died: the client saw a reset
    reply rep = reply::relay;
    unsigned status = 0;
    verdict ver = verdict::pass;
    bool forwarded = false;
    usec arrive = -1, resolved = -1;   // at the origin: received, and applied / dropped
    bool applied = false;
    std::string applied_etag;      // the origin's ETag of what it made
    origin_class oc = origin_class::ok;
};

struct apply_record {
    usec t = 0;
    int write = 0, res = 0;
    bool before_exists = false;
    std::int64_t before_version = 0;
    std::int64_t version = 0;
    bool beyond_contract = false;  // applied later than forward + deadline + margin (unfenced)
};

struct fault_record {
    usec t = 0;
    std::string kind;
};

// ---------------------------------------------------------------------------------------------

using protocol_tp = proxy::protocol_clock::time_point;

class world {
public:
    world(std::uint64_t seed, const options& opt) : rng_(seed), aux_(seed ^ 0x9e3779b97f4a7c15ULL), opt_(opt) {}

    seed_result run(std::uint64_t seed);

private:
    struct event {
        usec t;
        std::uint64_t tie;
        std::uint64_t seq;
        std::function<void()> fn;
        bool operator>(const event& o) const {
            if (t != o.t) return t > o.t;
            if (tie != o.tie) return tie > o.tie;
            return seq > o.seq;
        }
    };

    struct origin_resource {
        bool exists = true;
        std::int64_t version = 0;
        int writes = 0;             // applied writes (sticky ETags change every fourth)
        std::int64_t sticky = 0;
    };
    struct proxy_state {
        bool up = true;
        std::uint64_t incarnation = 0;
        std::uint64_t reconnects = 0;
        proxy::snapshot_cache snapshots{std::chrono::milliseconds(0)};   // lost in a crash
    };
    struct client_state {
        int id = 0, ops_left = 0, variant = 0;
        int res = 0;
        bool have = false;          // knows a tag for res
        bool exists = false;        // what it last saw
        std::string tag, old_tag;
        std::int64_t version = -1, old_version = -1;
        int tag_source = 0, tag_from_write = -1;
        usec tag_since = 0;
        bool done = false;
    };
    struct op {
        int proxy = 0;
        std::uint64_t incarnation = 0;
        int client = 0;
        bool finished = false;
        int write = -1;             // index in writes_
        std::function<void()> on_crash;
    };
    using op_ptr = std::shared_ptr<op>;
    struct write_op : op {
        std::optional<write_machine> m;
        write_params p;
        int res = 0;
        origin_answer last_answer;
    };
    struct lease_mirror {
        std::string holder;
        usec end = 0;
    };

    // -- scheduling
    void at(usec t, std::function<void()> fn) {
        q_.push(event{std::max(t, now_), rng_(), seq_++, std::move(fn)});
    }
    usec uniform(usec lo, usec hi) {
        if (hi <= lo) return lo;
        return std::uniform_int_distribution<usec>(lo, hi)(rng_);
    }
    // One way to or from the origin for a GET: usually quick, sometimes slow (a busy origin).
    usec origin_latency() { return chance(0.06) ? uniform(1 * ms, wp_.deadline) : uniform(200, 3 * ms); }
    double unit() { return std::uniform_real_distribution<double>(0, 1)(rng_); }
    bool chance(double p) { return unit() < p; }
    protocol_tp tp(usec t) const { return base_ + std::chrono::microseconds(t); }
    usec from_tp(protocol_tp t) const {
        if (t == protocol_tp::max()) return std::numeric_limits<usec>::max() / 4;
        return std::chrono::duration_cast<std::chrono::microseconds>(t - base_).count();
    }
    bool alive(const op& o) const {
        return !o.finished && proxies_[o.proxy].up && proxies_[o.proxy].incarnation == o.incarnation;
    }

    // Generations are seeded from the wall clock (like Redis TIME): traces show them as g0, g1...
    // in order of appearance, so that a replay prints the same text.
    std::string gen_id(std::uint64_t g) {
        if (!opt_.trace) return {};
        if (g == 0) return "0";
        auto [it, fresh] = gen_ids_.emplace(g, gen_ids_.size() + 1);
        return "g" + std::to_string(it->second);
    }
    template <class... A>
    void log(const A&... a) {
        if (!opt_.trace) return;
        std::ostringstream o;
        char buf[32];
        std::snprintf(buf, sizeof buf, "%10.3fms ", static_cast<double>(now_) / ms);
        o << buf;
        (o << ... << a);
        trace_ += o.str();
        trace_ += '\n';
    }

    // -- the world
    void draw_params();
    void start();
    void client_next(int c);
    void client_read(int c);
    void client_write(int c);
    int pick_proxy();
    std::string tag_for(int res, std::int64_t version, int variant) const;
    std::string origin_etag(int res, int variant) const;
    static std::string variant_name(int v) { return v == 0 ? std::string() : v == 1 ? "gzip" : "br"; }
    static resource_ref ref_of(int res, int variant) {
        return resource_ref("r" + std::to_string(res), variant_name(variant));
    }
    std::int64_t version_of(int res, const std::string& tag) const;

    // Store calls: latency, transient errors, an acquire that timed out may still have happened.
    template <class R, class Exec, class Cont>
    void store_call(op_ptr o, const char* what, Exec exec, Cont cont);
    template <class R>
    static R store_error(store_errc e) {
        return R(boost::system::in_place_error, cache::make_error_code(e));
    }

    // Writes
    void execute(std::shared_ptr<write_op> w, write_action a, int from);
    void do_forward(std::shared_ptr<write_op> w);
    void do_fetch(std::shared_ptr<write_op> w, bool head, bool refresh);
    void origin_apply(int write, usec t_send);
    void origin_drop(int write);
    void finish_write(std::shared_ptr<write_op> w, const write_action& a);
    void crash_proxy(int p);
    void save_image();
    void lose_store(const char* kind, bool reconnect, usec down);

    // Checker
    void check();
    void violation(std::string what) { violations_.push_back(std::move(what)); }

    std::mt19937_64 rng_;
    // Draws added later (connect failures, retried DELETEs) come from their own stream, so that
    // seeds that never take them replay as before.
    std::mt19937_64 aux_;
    options opt_;
    world_params wp_;
    usec now_ = 0;
    std::uint64_t seq_ = 0;
    std::priority_queue<event, std::vector<event>, std::greater<>> q_;
    const protocol_tp base_ = protocol_tp(std::chrono::hours(1));

    std::unique_ptr<memory_backend> store_;
    usec store_down_until_ = -1;
    std::vector<lease_mirror> mirror_;
    memory_backend::image last_image_;              // wait_replicas: the replica has every lease
    std::vector<lease_mirror> last_image_mirror_;
    std::optional<memory_backend::image> stale_image_;
    std::vector<lease_mirror> stale_image_mirror_;

    std::vector<origin_resource> origin_;
    std::int64_t next_version_ = 1;
    std::vector<proxy_state> proxies_;
    std::vector<client_state> clients_;
    std::vector<std::vector<op_ptr>> active_;       // per proxy
    std::uint64_t next_token_ = 1;

    std::vector<write_record> writes_;
    std::vector<apply_record> applies_;
    std::vector<fault_record> faults_;
    std::vector<std::string> violations_;
    std::vector<std::string> excluded_;
    std::string trace_;
    std::map<std::uint64_t, std::size_t> gen_ids_;
    std::uint64_t events_ = 0;
};

// ---------------------------------------------------------------------------------------------

void world::draw_params() {
    auto& p = wp_;
    p.proxies = static_cast<int>(uniform(1, 3));
    p.clients = static_cast<int>(uniform(2, 6));
    p.resources = static_cast<int>(uniform(1, 3));
    p.ops_per_client = static_cast<int>(uniform(2, 5));
    p.variants = chance(0.7) ? 1 : static_cast<int>(uniform(2, 3));
    p.tags = chance(0.5) ? origin_tags::changing : (chance(0.5) ? origin_tags::sticky : origin_tags::none);
    p.mode = p.tags == origin_tags::changing && chance(0.5) ? etag_mode::origin : etag_mode::hash;
    if (opt_.excluded_faults && p.tags == origin_tags::sticky && chance(0.05)) {
        p.mode = etag_mode::origin;   // README: `origin` mode is only as good as the origin's ETag
        p.sticky_origin_mode = true;
    }
    p.revalidate = chance(0.5);
    p.refresh = chance(0.5);
    p.wait_busy = chance(0.5);
    p.busy_wait = uniform(0, 300) * ms;
    p.allow_unconditional = chance(0.3);
    p.deadline = uniform(20, 300) * ms;
    p.margin = uniform(5, 60) * ms;
    // Leases from barely enough (so that revalidation can eat the margin) to generous.
    const usec slack = chance(0.4) ? uniform(0, 40) * ms : uniform(40, 1500) * ms;
    p.lease_ms = static_cast<int>((p.deadline + p.margin + slack) / ms) + 1;
    if (chance(0.4)) p.settle_ms = static_cast<int>(uniform(1, p.lease_ms));
    // The origin never applies later than the operator's settle says (the settle time is the
    // operator's statement of that), nor after deadline + margin from the forward (its contract).
    p.late_window = p.settle_ms ? *p.settle_ms * ms : p.deadline + p.margin;
    p.validator_ttl = chance(0.8) ? 3600'000 * ms : uniform(200, 3000) * ms;
    p.p_store_error = chance(0.5) ? 0.0 : unit() * 0.15;
    p.p_crash = chance(0.7) ? 0.0 : unit() * 0.5;
    p.origin_weights.assign(static_cast<int>(origin_class::count_), 0.0);
    for (int i = 0; i < static_cast<int>(origin_class::unfenced); ++i)
        p.origin_weights[i] = chance(0.3) ? 0.0 : unit();
    p.origin_weights[0] += 2.0;   // mostly plain successes
    if (opt_.excluded_faults && chance(0.05)) {
        p.unfenced = true;
        p.origin_weights[static_cast<int>(origin_class::unfenced)] = 0.3;
    }
    const usec horizon = static_cast<usec>(p.ops_per_client) * 40 * ms;
    if (chance(0.12)) p.restart_at = uniform(0, horizon);
    if (chance(0.12)) p.flush_at = uniform(0, horizon);
    if (chance(0.12)) p.failover_at = uniform(0, horizon);
    if (opt_.excluded_faults && chance(0.05)) {
        p.stale_failover_at = uniform(0, horizon);
        p.stale_image_at = uniform(0, p.stale_failover_at);
    }
    p.store_down = uniform(0, 30) * ms;
}

std::string world::tag_for(int res, std::int64_t version, int variant) const {
    // hash mode: the proxy's hash of the variant's bytes, unique per version (the write id is
    // part of every body); origin mode: the origin's ETag of that variant.
    if (wp_.mode == etag_mode::hash)
        return "\"h" + std::to_string(version) + (variant ? "." + variant_name(variant) : std::string()) + "\"";
    return origin_etag(res, variant);
}

std::string world::origin_etag(int res, int variant) const {
    const auto& o = origin_[res];
    const std::string v = variant ? "." + variant_name(variant) : std::string();
    switch (wp_.tags) {
    case origin_tags::changing: return "\"o" + std::to_string(o.version) + v + "\"";
    case origin_tags::sticky: return "\"s" + std::to_string(o.sticky) + v + "\"";
    case origin_tags::none: return "";
    }
    return "";
}

std::int64_t world::version_of(int res, const std::string& tag) const {
    if (tag.size() < 3 || (tag[1] != 'h' && tag[1] != 'o')) return -1;
    std::size_t end = 2;
    while (end < tag.size() && tag[end] >= '0' && tag[end] <= '9') ++end;
    return end > 2 ? std::stoll(tag.substr(2, end - 2)) : -1;
}

int world::pick_proxy() {
    std::vector<int> up;
    for (int i = 0; i < wp_.proxies; ++i)
        if (proxies_[i].up) up.push_back(i);
    if (up.empty()) return -1;
    return up[static_cast<std::size_t>(uniform(0, static_cast<usec>(up.size()) - 1))];
}

void world::start() {
    store_ = std::make_unique<memory_backend>([this] { return tp(now_); },
                                              std::chrono::milliseconds(wp_.validator_ttl / ms));
    mirror_.assign(wp_.resources, {});
    origin_.resize(wp_.resources);
    for (auto& o : origin_) {
        o.exists = chance(0.7);
        o.version = next_version_++;
    }
    proxies_.assign(wp_.proxies, {});
    for (auto& px : proxies_) px.snapshots.set_ttl(std::chrono::milliseconds(wp_.snapshot_reuse / ms));
    active_.assign(wp_.proxies, {});
    clients_.resize(wp_.clients);
    last_image_ = store_->save();
    last_image_mirror_ = mirror_;
    for (int c = 0; c < wp_.clients; ++c) {
        clients_[c].id = c;
        clients_[c].ops_left = wp_.ops_per_client;
        at(uniform(0, 5 * ms), [this, c] { client_next(c); });
    }
    if (wp_.restart_at >= 0) at(wp_.restart_at, [this] { lose_store("restart", true, wp_.store_down); });
    if (wp_.flush_at >= 0) at(wp_.flush_at, [this] { lose_store("flushall", false, 0); });
    if (wp_.failover_at >= 0)
        at(wp_.failover_at, [this] {
            // wait_replicas: the replica has every lease the old master confirmed, not the commits,
            // revalidations and observations after it (README, "The residual risk of a failover").
            log("STORE failover to a replica with every confirmed lease");
            faults_.push_back({now_, "failover"});
            store_->restore(last_image_);
            mirror_ = last_image_mirror_;
            for (auto& p : proxies_) ++p.reconnects;
            store_down_until_ = now_ + wp_.store_down / 4;
        });
    if (wp_.stale_failover_at >= 0) {
        at(wp_.stale_image_at, [this] {
            stale_image_ = store_->save();
            stale_image_mirror_ = mirror_;
        });
        at(wp_.stale_failover_at, [this] {
            log("STORE failover to a STALE replica (excluded: no wait_replicas)");
            faults_.push_back({now_, "stale_failover"});
            excluded_.push_back("stale_failover");
            store_->restore(*stale_image_);
            mirror_ = stale_image_mirror_;
            for (auto& p : proxies_) ++p.reconnects;
        });
    }
    if (wp_.p_crash > 0) {
        for (int p = 0; p < wp_.proxies; ++p) {
            if (!chance(wp_.p_crash)) continue;
            at(uniform(0, static_cast<usec>(wp_.ops_per_client) * 40 * ms), [this, p] { crash_proxy(p); });
        }
    }
}

void world::lose_store(const char* kind, bool reconnect, usec down) {
    log("STORE ", kind, ": data lost", reconnect ? ", connections dropped" : "");
    faults_.push_back({now_, kind});
    store_->lose_data();
    for (auto& m : mirror_) m = {};
    last_image_ = store_->save();
    last_image_mirror_ = mirror_;
    if (reconnect)
        for (auto& p : proxies_) ++p.reconnects;
    store_down_until_ = now_ + down;
}

void world::save_image() {
    if (wp_.failover_at < 0) return;
    last_image_ = store_->save();
    last_image_mirror_ = mirror_;
}

void world::crash_proxy(int p) {
    if (!proxies_[p].up) return;
    log("PROXY ", p, " crashes (", active_[p].size(), " requests in flight)");
    proxies_[p].up = false;
    ++proxies_[p].incarnation;
    proxies_[p].snapshots = proxy::snapshot_cache(std::chrono::milliseconds(wp_.snapshot_reuse / ms));
    auto ops = std::move(active_[p]);
    active_[p].clear();
    for (auto& o : ops) {
        if (o->finished) continue;
        o->finished = true;
        if (o->on_crash) o->on_crash();
    }
    at(now_ + uniform(5, 100) * ms, [this, p] {
        log("PROXY ", p, " restarted");
        proxies_[p].up = true;
    });
}

template <class R, class Exec, class Cont>
void world::store_call(op_ptr o, const char* what, Exec exec, Cont cont) {
    const usec d1 = chance(0.03) ? uniform(1 * ms, 40 * ms) : uniform(50, 1500);
    const usec d2 = uniform(50, 1500);
    auto deliver = [this, o, cont](usec t, R r) {
        at(t, [this, o, cont, r = std::move(r)]() mutable {
            if (!alive(*o)) return;
            cont(std::move(r));
        });
    };
    if (now_ < store_down_until_) {
        log("  store ", what, ": unavailable (store down)");
        deliver(now_ + uniform(50, 500), store_error<R>(store_errc::unavailable));
        return;
    }
    if (chance(wp_.p_store_error)) {
        const double r = unit();
        if (r < 0.4) {
            log("  store ", what, ": unavailable");
            deliver(now_ + uniform(50, 1000), store_error<R>(store_errc::unavailable));
        } else if (r < 0.7) {
            log("  store ", what, ": timeout, not executed");
            deliver(now_ + store_timeout, store_error<R>(store_errc::timeout));
        } else {
            log("  store ", what, ": timeout, executed at the server");
            at(now_ + d1, [this, exec]() mutable {
                if (now_ < store_down_until_) return;
                exec();
            });
            deliver(now_ + store_timeout, store_error<R>(store_errc::timeout));
        }
        return;
    }
    at(now_ + d1, [this, o, exec, deliver, d2, what]() mutable {
        if (now_ < store_down_until_) {
            log("  store ", what, ": unavailable (store went down)");
            deliver(now_ + d2, store_error<R>(store_errc::unavailable));
            return;
        }
        R r = exec();
        deliver(now_ + d2, std::move(r));
    });
}

// ---------------------------------------------------------------------------------------------
// Clients

void world::client_next(int c) {
    auto& cl = clients_[c];
    if (cl.ops_left <= 0) {
        cl.done = true;
        return;
    }
    if (pick_proxy() < 0) {
        at(now_ + 10 * ms, [this, c] { client_next(c); });
        return;
    }
    // Chain on a write response's ETag, or read first.
    if (cl.have && cl.tag_source == 2 && chance(0.6)) {
        client_write(c);
        return;
    }
    if (chance(0.3)) cl.res = static_cast<int>(uniform(0, wp_.resources - 1));
    client_read(c);
}

void world::client_read(int c) {
    const int p = pick_proxy();
    const int res = clients_[c].res;
    if (wp_.variants > 1 && chance(0.3)) clients_[c].variant = static_cast<int>(uniform(0, wp_.variants - 1));
    const int variant = clients_[c].variant;
    auto o = std::make_shared<op>();
    o->proxy = p;
    o->incarnation = proxies_[p].incarnation;
    o->client = c;
    active_[p].push_back(o);
    const usec invoked = now_;
    const auto reconnects = proxies_[p].reconnects;
    const resource_ref ref = ref_of(res, variant);
    log("C", c, " GET r", res, variant ? " (" + variant_name(variant) + ")" : std::string(), " via P", p);
    o->on_crash = [this, c] {
        clients_[c].have = false;
        at(now_ + uniform(1, 20) * ms, [this, c] { client_next(c); });
    };
    auto done = [this, o, c](bool ok) {
        o->finished = true;
        auto& cl = clients_[c];
        if (!ok) cl.have = false;
        at(now_ + uniform(0, 10) * ms, [this, c] { client_write(c); });
    };
    // 1. snapshot (or the proxy's recent one, reused), 2. origin GET, 3. observe (SPEC §5.6).
    auto after_snapshot = [this, o, c, p, res, variant, ref, invoked, reconnects, done](cache::result<snapshot> snap,
                                                                                      bool reused) {
        const usec arrive = now_ + origin_latency();
        at(arrive, [this, o, c, p, res, variant, ref, invoked, reconnects, done, snap, reused] {
            // The origin serves the GET now.
            const auto& org = origin_[res];
            const bool fails = chance(0.03);
            const bool exists = org.exists;
            const std::int64_t version = org.version;
            std::optional<resource_state> seen;
            std::string tag;
            if (!fails) {
                if (exists) {
                    tag = tag_for(res, version, variant);
                    if (!tag.empty()) seen = resource_state::present(tag);
                } else {
                    seen = resource_state::absent();
                }
            }
            log("  origin GET r", res, fails ? " -> 500" : (exists ? " -> 200 v" : " -> 404 v"), version,
                " ", tag);
            at(now_ + origin_latency(), [this, o, c, p, res, ref, invoked, reconnects, done, snap, seen,
                                             exists, version, tag, fails, reused]() mutable {
                if (!alive(*o)) return;
                auto& cl = clients_[c];
                if (fails || !seen) {
                    log("C", c, " GET r", res, " failed");
                    done(false);
                    return;
                }
                // What the client now holds.
                if (cl.have && cl.res == res) {
                    cl.old_tag = cl.tag;
                    cl.old_version = cl.version;
                }
                cl.have = true;
                cl.exists = exists;
                cl.tag = tag;
                cl.version = version;
                cl.tag_source = 1;
                cl.tag_from_write = -1;
                cl.tag_since = invoked;
                if (reused && opt_.mut == mutation::snapshot_after_read) {
                    // The unsafe variant: the generation read after the origin answered.
                    snap = cache::result<snapshot>(store_->read(ref));
                    log("  P", p, " snapshot (after the read) r", res, ": ", str(snap->state), " gen ",
                        gen_id(snap->generation));
                }
                bool record = false;
                if (snap) {
                    snapshot s = *snap;
                    if (opt_.mut == mutation::record_leased) s.leased = false;
                    record = proxy::read_may_record(s, *seen, proxies_[p].reconnects != reconnects);
                }
                if (!record) {
                    log("C", c, " GET r", res, " done: v", version, " ", tag, " (not recorded)");
                    done(true);
                    return;
                }
                const auto gen = snap->generation;
                const auto state = *seen;
                store_call<cache::result<bool>>(
                    o, "observe",
                    [this, ref, gen, state] {
                        bool r = store_->observe(ref, gen, state);
                        log("  store observe ", ref.key, " ", str(state), " gen ", gen_id(gen), r ? ": recorded" : ": refused");
                        return cache::result<bool>(r);
                    },
                    [this, c, p, res, ref, gen, state, reconnects, version, tag, done](cache::result<bool> r) {
                        proxies_[p].snapshots.observed(ref, gen, state, r && *r, tp(now_), reconnects);
                        log("C", c, " GET r", res, " done: v", version, " ", tag);
                        done(true);
                    });
            });
        });
    };
    if (auto reused = proxies_[p].snapshots.reuse(ref, tp(now_), reconnects)) {
        log("  P", p, " reuses its snapshot of r", res, ": ", str(reused->state), " gen ", gen_id(reused->generation));
        after_snapshot(cache::result<snapshot>(*reused), true);
        return;
    }
    const usec asked = now_;
    store_call<cache::result<snapshot>>(
        o, "snapshot", [this, ref] { return cache::result<snapshot>(store_->read(ref)); },
        [this, p, res, ref, asked, reconnects, after_snapshot](cache::result<snapshot> snap) {
            if (snap) {
                log("  P", p, " snapshot r", res, ": ", str(snap->state), " gen ", gen_id(snap->generation),
                    snap->leased ? " leased" : "");
                proxies_[p].snapshots.taken(ref, *snap, tp(asked), reconnects);
            }
            after_snapshot(snap, false);
        });
}

void world::client_write(int c) {
    auto& cl = clients_[c];
    const int p = pick_proxy();
    if (p < 0) {
        at(now_ + 10 * ms, [this, c] { client_write(c); });
        return;
    }
    --cl.ops_left;
    const int res = cl.res;
    write_record rec;
    rec.id = static_cast<int>(writes_.size());
    rec.client = c;
    rec.proxy = p;
    rec.res = res;
    rec.variant = cl.variant;
    rec.invoked = now_;

    condition cond;
    const double r = unit();
    if (!cl.have) {
        if (wp_.allow_unconditional && r < 0.5) {
            rec.ck = cond_kind::none;
        } else {
            rec.ck = cond_kind::if_match;
            rec.tag = "\"never\"";   // a tag that was never current
        }
    } else if (!cl.exists) {
        if (r < 0.85) {
            rec.ck = cond_kind::create;
            rec.tag_source = cl.tag_source;
            rec.tag_since = cl.tag_since;
        } else {
            rec.ck = cond_kind::if_match;
            rec.tag = cl.old_tag.empty() ? std::string("\"never\"") : cl.old_tag;
            rec.base = cl.old_version;
        }
    } else if (r < 0.08 && !cl.old_tag.empty()) {
        rec.ck = cond_kind::if_match;   // deliberately stale
        rec.tag = cl.old_tag;
        rec.base = cl.old_version;
    } else if (r < 0.12) {
        rec.ck = cond_kind::create;     // If-None-Match: * on an existing resource
    } else if (wp_.allow_unconditional && r < 0.17) {
        rec.ck = cond_kind::none;
        rec.unjudged = chance(0.3);   // SPEC §5.5: a method the route does not judge (PROPPATCH...)
    } else {
        rec.ck = cond_kind::if_match;
        rec.tag = cl.tag;
        rec.base = cl.version;
        rec.tag_source = cl.tag_source;
        rec.tag_from_write = cl.tag_from_write;
        rec.tag_since = cl.tag_since;
        rec.is_delete = chance(0.15);
    }
    if (rec.ck == cond_kind::if_match && rec.tag.empty()) rec.tag = "\"none\"";
    if (rec.ck == cond_kind::if_match) {
        cond.if_match = condition::match::list;
        cond.if_match_tags = {rec.tag};
    } else if (rec.ck == cond_kind::create) {
        cond.if_none_match = condition::match::any;
    }
    cl.have = false;   // read again next time unless the write hands back an ETag

    auto w = std::make_shared<write_op>();
    w->proxy = p;
    w->incarnation = proxies_[p].incarnation;
    w->client = c;
    w->write = rec.id;
    w->res = res;
    auto& wp = w->p;
    wp.cond = cond;
    wp.etag = wp_.mode;
    wp.is_delete = rec.is_delete;
    wp.invalidate_only = rec.unjudged;
    wp.revalidate_on_mismatch = wp_.revalidate;
    wp.refresh_after_write = wp_.refresh;
    wp.wait_on_busy = wp_.wait_busy;
    wp.busy_wait = std::chrono::microseconds(wp_.busy_wait);
    wp.lease = std::chrono::milliseconds(wp_.lease_ms);
    wp.origin_deadline = std::chrono::microseconds(wp_.deadline);
    wp.safety_margin = std::chrono::microseconds(wp_.margin);
    if (wp_.settle_ms) wp.settle = std::chrono::milliseconds(*wp_.settle_ms);
    w->m.emplace(wp);
    log("C", c, " W", rec.id, " ", rec.is_delete ? "DELETE" : "PUT", " r", res,
        rec.variant ? " (" + variant_name(rec.variant) + ")" : std::string(), " via P", p, " ",
        rec.ck == cond_kind::if_match ? "If-Match: " + rec.tag + " (v" + std::to_string(rec.base) + ")"
                                      : (rec.ck == cond_kind::create ? std::string("If-None-Match: *")
                                                                     : std::string(rec.unjudged ? "unjudged method" : "unconditional")));
    writes_.push_back(rec);
    active_[p].push_back(w);
    // Captures the write's id, not `w`: the op must not own itself.
    w->on_crash = [this, id = rec.id, c] {
        auto& wr = writes_[id];
        wr.crashed = true;
        wr.completed = now_;
        log("C", c, " W", id, ": connection reset (proxy crashed)");
        at(now_ + uniform(1, 20) * ms, [this, c] { client_next(c); });
    };
    execute(w, w->m->start(tp(now_)), 0);
}

// ---------------------------------------------------------------------------------------------
// Executing the machine's actions

enum from : int { from_start = 0, from_acquired, from_slept, from_fetched, from_stored, from_forwarded, from_refreshed, from_committed };

void world::execute(std::shared_ptr<write_op> w, write_action a, int from) {
    auto& rec = writes_[w->write];
    // The mutations, applied around the real machine.
    if (a.what == akind::commit && from == from_forwarded) {
        const auto& ans = w->last_answer;
        const bool response = ans.k == origin_answer::kind::response;
        if (opt_.mut == mutation::redirect_keep && response && ans.status >= 300 && ans.status < 400)
            a.outcome = commit_outcome::keep;
        if (opt_.mut == mutation::accepted_release && response && ans.status == 202) a.hold = {};
        if (opt_.mut == mutation::unknown_release && (!response || ans.status >= 500)) a.hold = {};
    }
    if (opt_.mut == mutation::retried_ignored && a.what == akind::commit && from == from_forwarded &&
        w->last_answer.retried && w->last_answer.k == origin_answer::kind::response) {
        auto ans = w->last_answer;
        ans.retried = false;
        const auto d = proxy::decide_commit(w->p, ans);
        if (!d.refresh) {
            a.outcome = d.outcome;
            a.state = d.state;
            a.hold = d.hold ? (w->p.settle ? *w->p.settle : w->p.lease) : std::chrono::milliseconds(0);
        }
    }
    if (opt_.mut == mutation::commit_wrong_validator && a.what == akind::commit && a.outcome == commit_outcome::set &&
        a.state.state == resource_state::kind::present)
        a.state.etag = "\"bogus\"";
    if (opt_.mut == mutation::no_lease_margin && a.what == akind::commit &&
        (from == from_acquired || from == from_stored) && a.outcome == commit_outcome::keep && !a.state.known()) {
        a = write_action{};
        a.what = akind::forward;   // lease_too_short ignored
    }
    const resource_ref ref = ref_of(w->res, rec.variant);
    switch (a.what) {
    case akind::acquire: {
        const std::string token = "t" + std::to_string(next_token_++);
        condition cond = a.unconditional ? condition{} : w->p.cond;
        log("  P", w->proxy, " W", w->write, " acquire", a.unconditional ? " (unconditional)" : "", " token ", token);
        const int res = w->res;
        const int id = w->write;
        store_call<cache::result<acquire_result>>(
            w, "acquire",
            [this, ref, cond, token, res, id] {
                auto r = store_->acquire(ref, cond, std::chrono::milliseconds(wp_.lease_ms), token,
                                         std::chrono::milliseconds(wp_.lease_ms));
                if (!r) {
                    log("  store acquire W", id, ": ", r.error().message());
                    return r;
                }
                log("  store acquire W", id, ": ", name(r->status), " current ", str(r->current));
                auto& mi = mirror_[res];
                const bool live = !mi.holder.empty() && now_ < mi.end;
                if (r->status == acquire_status::busy && !live)
                    violation("W" + std::to_string(id) + " acquire answered busy at " + std::to_string(now_) +
                              "us while no lease was held");
                if (r->status == acquire_status::ok || r->status == acquire_status::unknown) {
                    if (live)
                        violation("W" + std::to_string(id) + " took the lease of r" + std::to_string(res) + " at " +
                                  std::to_string(now_) + "us while " + mi.holder + " held it");
                    mi.holder = token;
                    mi.end = now_ + static_cast<usec>(wp_.lease_ms) * ms;
                    save_image();
                }
                return r;
            },
            [this, w](cache::result<acquire_result> r) {
                execute(w, w->m->on_acquired(r, tp(now_)), from_acquired);
            });
        return;
    }
    case akind::sleep: {
        const usec d = std::chrono::duration_cast<std::chrono::microseconds>(a.delay).count();
        log("  P", w->proxy, " W", w->write, " busy: sleep ", d, "us");
        at(now_ + d, [this, w] {
            if (!alive(*w)) return;
            execute(w, w->m->on_slept(tp(now_)), from_slept);
        });
        return;
    }
    case akind::fetch:
        do_fetch(w, a.head, false);
        return;
    case akind::refresh:
        do_fetch(w, false, true);
        return;
    case akind::store: {
        const auto token = w->m->token();
        const auto state = a.state;
        log("  P", w->proxy, " W", w->write, " store_under_lease ", str(state));
        store_call<cache::result<bool>>(
            w, "store_under_lease",
            [this, ref, token, state] {
                bool r = store_->store_under_lease(ref, token, state);
                log("  store store_under_lease ", ref.key, ": ", r ? "stored" : "lease lost");
                return cache::result<bool>(r);
            },
            [this, w](cache::result<bool> r) { execute(w, w->m->on_stored(r, tp(now_)), from_stored); });
        return;
    }
    case akind::forward:
        do_forward(w);
        return;
    case akind::commit: {
        const auto token = w->m->token();
        const auto outcome = a.outcome;
        const auto state = a.state;
        const auto hold = a.hold;
        const int res = w->res;
        log("  P", w->proxy, " W", w->write, " commit ", name(outcome), " ", str(state), " hold ", hold.count(), "ms");
        proxies_[w->proxy].snapshots.forget(ref.key);   // as the proxy does (proxy/tracking.cpp)
        store_call<cache::result<bool>>(
            w, "commit",
            [this, ref, token, outcome, state, hold, res] {
                std::optional<memory_backend::image> before;
                if (opt_.mut == mutation::commit_keeps_lost) before = store_->save();
                bool held = store_->commit(ref, token, outcome, state, hold);
                if (!held && before) store_->restore(*before);
                auto& mi = mirror_[res];
                if (held && mi.holder == token) {
                    if (hold.count() > 0) mi.end = std::min(mi.end, now_ + static_cast<usec>(hold.count()) * ms);
                    else mi.holder.clear();
                }
                log("  store commit ", ref.key, ": ", held ? "held" : "lease lost");
                return cache::result<bool>(held);
            },
            [this, w](cache::result<bool> r) { execute(w, w->m->on_committed(r, tp(now_)), from_committed); });
        return;
    }
    case akind::respond:
        finish_write(w, a);
        return;
    }
}

void world::do_fetch(std::shared_ptr<write_op> w, bool head, bool refresh) {
    const int res = w->res;
    if (refresh && chance(0.05)) {
        log("  P", w->proxy, " W", w->write, " refresh: the write's response broke off");
        fetch_outcome f;
        f.write_response_failed = true;
        at(now_ + uniform(100, 2 * ms), [this, w, f] {
            if (!alive(*w)) return;
            execute(w, w->m->on_refreshed(f, tp(now_)), from_refreshed);
        });
        return;
    }
    log("  P", w->proxy, " W", w->write, refresh ? " refresh GET" : (head ? " revalidate HEAD" : " revalidate GET"));
    at(now_ + origin_latency(), [this, w, res, refresh] {
        const auto& org = origin_[res];
        fetch_outcome f;
        const double r = unit();
        if (r < 0.03) {
            f.failed = true;
        } else if (r < 0.06) {
            f.status = 500;
        } else if (org.exists) {
            f.status = 200;
            f.state = resource_state::present(tag_for(res, org.version, writes_[w->write].variant));
        } else {
            f.status = 404;
            f.state = resource_state::absent();
        }
        log("  origin ", refresh ? "refresh" : "revalidation", " r", res, " W", w->write, ": ",
            f.failed ? std::string("failed") : std::to_string(f.status), " v", org.version, " ",
            f.state ? str(*f.state) : std::string());
        at(now_ + origin_latency(), [this, w, f, refresh] {
            if (!alive(*w)) return;
            if (refresh) execute(w, w->m->on_refreshed(f, tp(now_)), from_refreshed);
            else execute(w, w->m->on_fetched(f, tp(now_)), from_fetched);
        });
    });
}

void world::origin_apply(int id, usec t_send) {
    auto& rec = writes_[id];
    auto& org = origin_[rec.res];
    if (rec.is_delete && rec.applied && !org.exists) {
        rec.resolved = now_;
        log("  ORIGIN: W", id, " (resent) deletes nothing: already deleted");
        return;
    }
    apply_record a;
    a.t = now_;
    a.write = id;
    a.res = rec.res;
    a.before_exists = org.exists;
    a.before_version = org.version;
    a.beyond_contract = now_ > t_send + wp_.deadline + wp_.margin;
    org.version = next_version_++;
    org.exists = !rec.is_delete;
    if (++org.writes % 4 == 0) ++org.sticky;
    a.version = org.version;
    applies_.push_back(a);
    rec.applied_etag = org.exists ? origin_etag(rec.res, rec.variant) : std::string();
    rec.applied = true;
    rec.resolved = now_;
    log("  ORIGIN applies W", id, " to r", rec.res, ": v", a.before_version, a.before_exists ? "" : "(absent)", " -> v",
        a.version, org.exists ? "" : "(absent)", a.beyond_contract ? " [after its lease: unfenced]" : "");
}

void world::origin_drop(int id) {
    auto& rec = writes_[id];
    rec.resolved = now_;
    log("  ORIGIN drops W", id);
}

void world::do_forward(std::shared_ptr<write_op> w) {
    auto& rec = writes_[w->write];
    const int id = w->write;
    std::uniform_real_distribution<double> u(0, 1);
    if (u(aux_) < wp_.p_not_sent) {
        // Connecting failed: no byte reached the origin.
        log("  P", w->proxy, " W", id, " forward: connect failed");
        origin_answer ans;
        ans.k = origin_answer::kind::not_sent;
        at(now_ + 1 * ms + static_cast<usec>(u(aux_) * 20 * ms), [this, w, ans] {
            if (!alive(*w)) return;
            w->last_answer = ans;
            execute(w, w->m->on_forwarded(ans, tp(now_)), from_forwarded);
        });
        return;
    }
    // A DELETE (no body) sent on a pooled connection the origin had closed is resent on a fresh
    // one: the first may have been applied whatever the second's answer says.
    rec.forwarded = true;
    const bool retried = rec.is_delete && u(aux_) < wp_.p_retried;
    if (retried) {
        const usec t0 = now_ + 200 + static_cast<usec>(u(aux_) * 800);
        const bool applies = u(aux_) < 0.5;
        at(t0, [this, id, applies, ts = now_] {
            if (writes_[id].arrive < 0) writes_[id].arrive = now_;
            log("  ORIGIN receives W", id, " on a closing connection", applies ? ", applies it" : ", drops it");
            if (applies) origin_apply(id, ts);
        });
        log("  P", w->proxy, " W", id, " forward: the pooled connection was closed; resent");
    }
    const usec ts = now_ + (retried ? 2 * ms : 0);
    // The session's deadline for the exchange: the upstream's request_timeout, and the lease's
    // end less the margin (write_deadline).
    const usec deadline = std::min(ts + wp_.deadline, from_tp(w->m->write_deadline()));
    std::discrete_distribution<int> pick(wp_.origin_weights.begin(), wp_.origin_weights.end());
    const auto oc = static_cast<origin_class>(pick(rng_));
    rec.oc = oc;
    if (oc == origin_class::unfenced) excluded_.push_back("unfenced");
    const usec ta = ts + uniform(200, 3 * ms);   // (a resent request: its second attempt)
    const usec proc = uniform(500, std::max<usec>(600, wp_.deadline / 4));
    const usec net2 = uniform(200, 3 * ms);
    const usec contract_end = ts + wp_.deadline + wp_.margin;
    log("  P", w->proxy, " W", id, " forward (origin: ", name(oc), ")");
    at(ta, [this, id] {
        if (writes_[id].arrive < 0) writes_[id].arrive = now_;
        log("  ORIGIN receives W", id);
    });
    origin_answer ans;
    ans.retried = retried;
    usec answer_at = ta + proc + net2;
    switch (oc) {
    case origin_class::ok:
        at(ta + proc, [this, id, ts] { origin_apply(id, ts); });
        ans.k = origin_answer::kind::response;
        ans.status = chance(0.5) ? 200 : 204;
        break;
    case origin_class::accepted: {
        ans.k = origin_answer::kind::response;
        ans.status = 202;
        at(uniform(ta + proc, contract_end - 1), [this, id, ts] { origin_apply(id, ts); });
        break;
    }
    case origin_class::redirect:
        at(ta + proc, [this, id, ts] { origin_apply(id, ts); });
        ans.k = origin_answer::kind::response;
        ans.status = chance(0.5) ? 303 : 302;
        break;
    case origin_class::client_error:
        at(ta + proc, [this, id] { origin_drop(id); });
        ans.k = origin_answer::kind::response;
        ans.status = chance(0.5) ? 422 : 400;
        break;
    case origin_class::error_applied:
        at(ta + proc, [this, id, ts] { origin_apply(id, ts); });
        ans.k = origin_answer::kind::response;
        ans.status = 500;
        break;
    case origin_class::error_late: {
        ans.k = origin_answer::kind::response;
        ans.status = 502;
        const usec lo = ta + proc;
        at(uniform(lo, std::max(lo, std::min(answer_at + wp_.late_window, contract_end) - 1)),
           [this, id, ts] { origin_apply(id, ts); });
        break;
    }
    case origin_class::error_not:
        at(ta + proc, [this, id] { origin_drop(id); });
        ans.k = origin_answer::kind::response;
        ans.status = 503;
        break;
    case origin_class::reset_before:
        at(ta, [this, id] { origin_drop(id); });
        ans.k = origin_answer::kind::lost;
        answer_at = ta + net2;
        break;
    case origin_class::reset_after:
        at(ta + proc, [this, id, ts] { origin_apply(id, ts); });
        ans.k = origin_answer::kind::lost;
        break;
    case origin_class::slow: {
        ans.k = origin_answer::kind::lost;
        answer_at = std::numeric_limits<usec>::max() / 4;   // never within the deadline
        const usec lo = std::max(ta, ts + wp_.deadline);
        const usec hi = std::max(lo, std::min(lo + wp_.late_window, contract_end) - 1);
        if (chance(0.7)) at(uniform(lo, hi), [this, id, ts] { origin_apply(id, ts); });
        else at(uniform(lo, hi), [this, id] { origin_drop(id); });
        break;
    }
    case origin_class::unfenced:
        ans.k = origin_answer::kind::lost;
        answer_at = std::numeric_limits<usec>::max() / 4;
        at(contract_end + uniform(1 * ms, static_cast<usec>(wp_.lease_ms) * ms),
           [this, id, ts] { origin_apply(id, ts); });
        break;
    case origin_class::count_:
        break;
    }
    if (answer_at > deadline) {
        // The proxy gives up (504): the outcome is unknown; the origin carries on regardless.
        ans = origin_answer{};
        ans.k = origin_answer::kind::lost;
        answer_at = std::max(deadline, now_);
    }
    at(answer_at, [this, w, ans] {
        if (!alive(*w)) return;
        origin_answer a = ans;
        if (a.k == origin_answer::kind::response && a.status >= 200 && a.status < 300 && wp_.mode == etag_mode::origin &&
            !w->p.is_delete && writes_[w->write].applied) {
            // The origin's ETag of what the write made (read when it answered).
            const auto& tag = writes_[w->write].applied_etag;
            if (!tag.empty()) a.validator = resource_state::present(tag);
        }
        w->last_answer = a;
        log("  P", w->proxy, " W", w->write, " origin answered: ",
            a.k == origin_answer::kind::response ? std::to_string(a.status) : std::string("lost (timeout/reset)"),
            a.validator ? " ETag " + a.validator->etag : std::string());
        execute(w, w->m->on_forwarded(a, tp(now_)), from_forwarded);
    });
}

void world::finish_write(std::shared_ptr<write_op> w, const write_action& a) {
    w->finished = true;
    auto& rec = writes_[w->write];
    auto& cl = clients_[w->client];
    rec.completed = now_;
    rec.rep = a.reply;
    rec.ver = a.verdict;
    if (a.reply == reply::relay) rec.status = w->last_answer.status;
    log("C", w->client, " W", w->write, " <- ", name(a.reply),
        a.reply == reply::relay ? " " + std::to_string(rec.status) : std::string(),
        a.reply == reply::reject ? (a.verdict == verdict::exists ? " (exists)" : " (stale)") : "",
        a.etag.empty() ? std::string() : " ETag " + a.etag);
    std::string etag = a.etag;
    if (wp_.mode == etag_mode::origin && a.reply == reply::relay && w->last_answer.validator)
        etag = w->last_answer.validator->etag;   // relayed with the origin's response
    if (a.reply == reply::relay && rec.status >= 200 && rec.status < 300 && !etag.empty() && !w->p.is_delete &&
        !rec.unjudged) {
        cl.have = true;
        cl.exists = true;
        cl.old_tag = rec.tag;
        cl.old_version = rec.base;
        cl.tag = etag;
        cl.version = version_of(w->res, etag);
        cl.tag_source = 2;
        cl.tag_from_write = w->write;
        cl.tag_since = rec.invoked;
        cl.res = w->res;
    }
    const int c = w->client;
    at(now_ + uniform(0, 20) * ms, [this, c] { client_next(c); });
}

// ---------------------------------------------------------------------------------------------
// The checker

void world::check() {
    auto wname = [](const write_record& w) { return "W" + std::to_string(w.id); };
    // (1) No lost update: every conditional write the origin applied was based on the version
    // current when it was applied.
    for (const auto& a : applies_) {
        const auto& w = writes_[a.write];
        std::string what;
        if (w.ck == cond_kind::if_match && (!a.before_exists || a.before_version != w.base))
            what = "lost update: " + wname(w) + " (If-Match " + w.tag + ", based on v" + std::to_string(w.base) +
                   ") applied to r" + std::to_string(w.res) + " at " + std::to_string(a.t) + "us on v" +
                   std::to_string(a.before_version) + (a.before_exists ? "" : " (absent)");
        if (w.ck == cond_kind::create && a.before_exists)
            what = "lost update: " + wname(w) + " (If-None-Match: *) applied to r" + std::to_string(w.res) + " at " +
                   std::to_string(a.t) + "us over existing v" + std::to_string(a.before_version);
        if (!what.empty()) violation(what + (a.beyond_contract ? " [applied after its lease: unfenced]" : ""));
    }
    // (1') I1: no two proxied writes to one resource in flight at the origin at once.
    for (int r = 0; r < wp_.resources; ++r) {
        std::vector<const write_record*> fw;
        for (const auto& w : writes_)
            if (w.res == r && w.arrive >= 0) fw.push_back(&w);
        std::sort(fw.begin(), fw.end(), [](auto* a, auto* b) { return a->arrive < b->arrive; });
        const write_record* open = nullptr;
        for (auto* w : fw) {
            if (open && (open->resolved < 0 || open->resolved > w->arrive))
                violation("two writes in flight: " + wname(*w) + " reached the origin at " + std::to_string(w->arrive) +
                          "us while " + wname(*open) + " (received " + std::to_string(open->arrive) + "us) was " +
                          (open->resolved < 0 ? "never resolved" : "resolved only at " + std::to_string(open->resolved) + "us"));
            const usec end = w->resolved < 0 ? std::numeric_limits<usec>::max() : w->resolved;
            if (!open || end > (open->resolved < 0 ? std::numeric_limits<usec>::max() : open->resolved)) open = w;
        }
    }
    // (2) Every write answered 2xx is in the origin's history.
    for (const auto& w : writes_)
        if (w.completed >= 0 && !w.crashed && w.rep == reply::relay && w.status >= 200 && w.status < 300 && !w.applied)
            violation(wname(w) + " answered " + std::to_string(w.status) + " but the origin never applied it");
    // (3) No false reject (I2).
    for (const auto& w : writes_) {
        if (w.completed < 0 || w.crashed || w.rep != reply::reject) continue;
        if (w.tag_source == 0) continue;
        const bool stale = w.ck == cond_kind::if_match && w.ver == verdict::stale;
        const bool exists = w.ck == cond_kind::create;   // the client just saw it absent
        if (!stale && !exists) continue;
        bool quiet = true;
        for (const auto& o : writes_) {
            if (o.id == w.id || o.res != w.res || o.id == w.tag_from_write) continue;
            if (o.invoked > w.completed) continue;
            usec end = std::max(o.completed < 0 ? std::numeric_limits<usec>::max() : o.completed,
                                o.forwarded && o.resolved < 0 ? std::numeric_limits<usec>::max() : o.resolved);
            if (end >= w.tag_since) quiet = false;
        }
        for (const auto& f : faults_)
            if (f.t >= w.tag_since && f.t <= w.completed) quiet = false;
        if (quiet)
            violation("false reject: " + wname(w) + " (" + (stale ? "If-Match " + w.tag : std::string("If-None-Match: *")) +
                      ", received through the proxy at " + std::to_string(w.tag_since) + "us) got a " +
                      (stale ? "stale" : "exists") + " reject at " + std::to_string(w.completed) +
                      "us with no other write to r" + std::to_string(w.res) + " in between");
    }
}

seed_result world::run(std::uint64_t seed) {
    draw_params();
    if (wp_.sticky_origin_mode) excluded_.push_back("origin_mode_sticky_etag");
    {
        std::uniform_real_distribution<double> u(0, 1);
        wp_.p_not_sent = u(aux_) < 0.5 ? 0.0 : u(aux_) * 0.1;
        wp_.p_retried = u(aux_) < 0.5 ? 0.0 : u(aux_) * 0.3;
        // Reads that reuse a snapshot: off in a third of the seeds, else up to 2 s (longer than
        // most histories, so that most reads reuse one), or forced by the mutation that needs it.
        // A stream of its own: the other streams' draws stay as they were.
        std::mt19937_64 reuse_rng(seed ^ 0xc2b2ae3d27d4eb4fULL);
        const bool off = u(reuse_rng) < 0.33 && opt_.mut != mutation::snapshot_after_read;
        wp_.snapshot_reuse = off ? 0 : static_cast<usec>(1 + u(reuse_rng) * 2000) * ms;
    }
    start();
    const std::uint64_t limit = 2'000'000;
    while (!q_.empty() && events_ < limit) {
        auto ev = std::move(const_cast<event&>(q_.top()));
        q_.pop();
        now_ = ev.t;
        ++events_;
        ev.fn();
    }
    if (events_ >= limit) violation("the simulation did not end within " + std::to_string(limit) + " events");
    for (const auto& c : clients_)
        if (!c.done) violation("client C" + std::to_string(c.id) + " never finished");
    check();

    seed_result r;
    r.seed = seed;
    r.violations = violations_;
    std::sort(excluded_.begin(), excluded_.end());
    excluded_.erase(std::unique(excluded_.begin(), excluded_.end()), excluded_.end());
    r.excluded_kinds = excluded_;
    if (!violations_.empty()) {
        if (excluded_.empty()) r.failed = true;
        else r.excluded = true;
    }
    r.params = wp_.line();
    r.trace = std::move(trace_);
    r.events = events_;
    r.writes = writes_.size();
    for (const auto& w : writes_) {
        r.forwarded += w.forwarded;
        r.applied += w.applied;
        r.rejected += w.rep == reply::reject && w.completed >= 0 && !w.crashed;
        r.busy += w.rep == reply::busy && w.completed >= 0 && !w.crashed;
    }
    return r;
}

}  // namespace

bool parse_mutation(const std::string& n, mutation& out) {
    for (auto m : all_mutations())
        if (n == to_string(m)) {
            out = m;
            return true;
        }
    if (n == "none") {
        out = mutation::none;
        return true;
    }
    return false;
}

const char* to_string(mutation m) {
    switch (m) {
    case mutation::none: return "none";
    case mutation::redirect_keep: return "redirect_keep";
    case mutation::accepted_release: return "accepted_release";
    case mutation::unknown_release: return "unknown_release";
    case mutation::no_lease_margin: return "no_lease_margin";
    case mutation::record_leased: return "record_leased";
    case mutation::commit_keeps_lost: return "commit_keeps_lost";
    case mutation::commit_wrong_validator: return "commit_wrong_validator";
    case mutation::retried_ignored: return "retried_ignored";
    case mutation::snapshot_after_read: return "snapshot_after_read";
    }
    return "?";
}

std::vector<mutation> all_mutations() {
    return {mutation::redirect_keep, mutation::accepted_release, mutation::unknown_release,
            mutation::no_lease_margin, mutation::record_leased, mutation::commit_keeps_lost,
            mutation::commit_wrong_validator, mutation::retried_ignored, mutation::snapshot_after_read};
}

seed_result run_seed(std::uint64_t seed, const options& opt) {
    world w(seed, opt);
    return w.run(seed);
}

}  // namespace ifm::sim

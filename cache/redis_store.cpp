#include "cache/redis_store.hpp"

#include "cache/memory_store.hpp"

#include <spdlog/spdlog.h>

#include "cache/crc16.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>

namespace ifm::cache {

// Embedded from cache/lua/*.lua at build time (cmake/embed_lua.cmake).
namespace lua {
extern const std::string_view prelude;
extern const std::string_view acquire;
extern const std::string_view store_under_lease;
extern const std::string_view commit;
extern const std::string_view snapshot;
extern const std::string_view observe;
extern const std::string_view idempotency;
extern const std::string_view release;
}  // namespace lua

namespace {

using boost::system::error_code;

// Indexes into redis_options::scripts.
enum script : std::size_t {
    acquire_script, store_script, commit_script, snapshot_script, observe_script, idem_script, release_script
};

// release.lua for an acquire that timed out (redis_store::async_acquire); the router is held so
// that the store may go away first. Not sent because the connection was being dropped (the
// acquire's own timeout may drop it): sent again once connected; the acquire, buffered in the old
// connection, runs as Redis wakes up, before a new connection's handshake is done. Given up when
// the lease would have expired anyway.
net::awaitable<void> release_late_acquire(std::shared_ptr<redis_router> router, std::vector<std::string> keys,
                                          std::vector<std::string> args, std::string token,
                                          std::chrono::milliseconds lease) {
    args.push_back(std::move(token));
    const auto give_up = std::chrono::steady_clock::now() + lease;
    net::steady_timer pause(co_await net::this_coro::executor);
    for (;;) {
        auto r = co_await router->async_eval(release_script, keys, args);
        if (r) {
            if (r->reply.kind == redis_reply::type::integer && r->reply.integer == 1)
                spdlog::debug("redis: released the lease of an acquire that had timed out");
            co_return;
        }
        if (r.error() != make_error_code(store_errc::unavailable)) co_return;   // sent (timeout) or refused
        if (std::chrono::steady_clock::now() + std::chrono::milliseconds(100) >= give_up) co_return;
        pause.expires_after(std::chrono::milliseconds(100));
        auto [ec] = co_await pause.async_wait(net::as_tuple(net::use_awaitable));
        if (ec) co_return;
    }
}

}  // namespace

// Every script is the prelude (key layout, epoch, shared helpers) followed by its own body. All
// but idempotency.lua also exist as commands of the optional Redis module (cache/redis_module).
const std::vector<lua_script>& redis_store::scripts() {
    static const auto with_prelude = [](std::string_view body) {
        std::string text(lua::prelude);
        text += body;
        return text;
    };
    static const std::vector<lua_script> scripts{
        {"acquire", with_prelude(lua::acquire), "IFM.ACQUIRE"},
        {"store_under_lease", with_prelude(lua::store_under_lease), "IFM.STORE_UNDER_LEASE"},
        {"commit", with_prelude(lua::commit), "IFM.COMMIT"},
        {"snapshot", with_prelude(lua::snapshot), "IFM.SNAPSHOT"},
        {"observe", with_prelude(lua::observe), "IFM.OBSERVE"},
        {"idempotency", std::string(lua::idempotency)},
        {"release", with_prelude(lua::release), "IFM.RELEASE"},
    };
    return scripts;
}

namespace {

// For Redis Cluster: a short string whose hash slot is `slot`, so that the epoch key of a
// resource's slot can share the script's slot ("<prefix>:epoch:{<tag>}").
const std::string& slot_tag(std::uint16_t slot) {
    static const std::vector<std::string> tags = [] {
        std::vector<std::string> t(cluster_slots);
        std::size_t filled = 0;
        for (std::uint64_t i = 0; filled < cluster_slots; ++i) {
            auto s = std::to_string(i);
            auto& slot_entry = t[crc16(s) % cluster_slots];
            if (slot_entry.empty()) {
                slot_entry = std::move(s);
                ++filled;
            }
        }
        return t;
    }();
    return tags[slot];
}

error_code errc(store_errc e) { return make_error_code(e); }

// An error reply: a server that is loading, busy, read-only (a replica after a failover) or
// refusing us is unavailable; anything else is a bug or a tampered key (protocol).
error_code reply_error(std::string_view op, const redis_reply& r) {
    static constexpr std::string_view transient[] = {"LOADING", "BUSY", "READONLY", "MASTERDOWN",
                                                     "TRYAGAIN", "CLUSTERDOWN", "NOAUTH", "OOM"};
    for (auto prefix : transient) {
        if (r.str.starts_with(prefix)) {
            spdlog::warn("redis: {}: {}", op, r.str);
            return errc(store_errc::unavailable);
        }
    }
    if (r.is_error() && r.str.find("NOPERM") != std::string::npos) {
        // An ACL too narrow: EVALSHA itself refused, or a key or command a script needs.
        const bool scripts = r.str.find("'evalsha'") != std::string::npos ||
                             r.str.find("'script") != std::string::npos;
        spdlog::error("redis: {}: {}: {}", op, r.str,
                      scripts ? make_error_code(store_errc::scripts_denied).message()
                              : std::string("the Redis user lacks a permission: see README \"Redis ACL\""));
        return errc(scripts ? store_errc::scripts_denied : store_errc::protocol);
    }
    spdlog::error("redis: {}: unexpected reply: {}", op,
                  r.is_error() ? r.str : "type " + std::to_string(static_cast<int>(r.kind)));
    return errc(store_errc::protocol);
}

const std::string* as_string(const redis_reply& r) {
    return r.kind == redis_reply::type::string || r.kind == redis_reply::type::status ? &r.str
                                                                                     : nullptr;
}

template <class Int>
bool parse_int(std::string_view s, Int& out) {
    if (s.empty()) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size();
}

// Decodes (s, e, m) as the scripts store them.
std::optional<resource_state> decode_state(const std::string& s, const std::string& e,
                                           const std::string& m) {
    if (s == "a") return resource_state::absent();
    if (s != "p") return resource_state::unknown();
    std::optional<std::int64_t> lm;
    if (!m.empty()) {
        std::int64_t v = 0;
        if (!parse_int(m, v)) return std::nullopt;
        lm = v;
    }
    return resource_state::present(e, lm);
}

// Appends (s, e, m) as the scripts expect them.
void encode_state(std::vector<std::string>& args, const resource_state& in) {
    auto s = detail::normalized(in);
    switch (s.state) {
    case resource_state::kind::unknown: args.emplace_back(); break;
    case resource_state::kind::absent: args.emplace_back("a"); break;
    case resource_state::kind::present: args.emplace_back("p"); break;
    }
    args.push_back(s.etag);
    args.push_back(s.last_modified ? std::to_string(*s.last_modified) : std::string());
}

char match_code(condition::match m) {
    switch (m) {
    case condition::match::any: return 'a';
    case condition::match::list: return 'l';
    case condition::match::none: break;
    }
    return 'n';
}

// A 0/1 integer reply.
result<bool> decode_flag(std::string_view op, const redis_reply& r) {
    if (r.kind != redis_reply::type::integer) return detail::failure{reply_error(op, r)};
    return r.integer == 1;
}

}  // namespace

redis_store::redis_store(net::any_io_executor ex, const config::store_config& cfg,
                         const redis_target& target, unsigned wait_replicas)
    : prefix_(cfg.key_prefix), cluster_(target.mode == redis_mode::cluster), validator_ttl_(cfg.validator_ttl),
      wait_replicas_(wait_replicas), wait_timeout_(cfg.wait_timeout),
      command_timeout_(cfg.timeout), young_server_wait_(cfg.young_server_wait),
      epoch_seen_(target.mode == redis_mode::cluster ? cluster_slots : 1, false), rng_(detail::make_token_rng()) {
    redis_options opts;
    opts.command_timeout = cfg.timeout;
    opts.connect_timeout = cfg.connect_timeout;
    opts.scripts = scripts();
    opts.young_server_wait = cfg.young_server_wait;
    router_ = make_redis_router(std::move(ex), target, std::move(opts));
    router_->start();
}

redis_store::~redis_store() {
    // Frees the hiredis contexts now, even if the io_context no longer runs; coroutine frames
    // still parked in it hold their own reference to the connections.
    router_->close();
}

void redis_store::close() {
    router_->close();
}

std::string redis_store::resource_key(std::string_view prefix, std::string_view key) {
    std::string out;
    out.reserve(prefix.size() + key.size() + 4);
    out.append(prefix);
    out.append(":{");
    // Runs without a brace or a percent sign are copied whole (most keys are one run). A plain
    // loop: find_first_of calls memchr over the three characters for every character of the key.
    std::size_t run = 0;
    for (std::size_t i = 0; i < key.size(); ++i) {
        const char c = key[i];
        if (c != '{' && c != '}' && c != '%') continue;
        out.append(key.substr(run, i - run));
        out.append(c == '{' ? "%7B" : c == '}' ? "%7D" : "%25");
        run = i + 1;
    }
    out.append(key.substr(run));
    out.push_back('}');
    return out;
}

std::vector<std::string> redis_store::keys(std::string_view key) const {
    std::vector<std::string> k(3);
    k[0] = resource_key(prefix_, key);
    k[1].reserve(k[0].size() + 2);
    k[1].append(k[0]).append(":l");
    k[2].reserve(prefix_.size() + 6 + (cluster_ ? 6 : 0));
    k[2].append(prefix_).append(":epoch");
    if (cluster_) {
        k[2] += ":{";
        k[2] += slot_tag(hash_slot(k[0]));
        k[2] += '}';
    }
    return k;
}

std::size_t redis_store::epoch_index(std::string_view key) const {
    return cluster_ ? hash_slot(resource_key(prefix_, key)) : 0;
}

// A script ran: the epoch of the key's slot exists now (it creates it when missing).
void redis_store::saw_epoch(std::string_view key) {
    epoch_seen_[epoch_index(key)] = true;
}

std::vector<std::string> redis_store::args(const resource_ref& ref) const {
    std::vector<std::string> a;
    a.reserve(12);
    // A store whose epoch this proxy never saw may be brand new (nothing lost) or have lost its
    // data: young_server_wait decides whether to trust it on first sight. Once a script ran, the
    // epoch exists; a later loss is always waited out.
    bool seen = epoch_seen_[epoch_index(ref.key)];
    a.push_back(std::to_string(seen || young_server_wait_ ? longest_lease_.count() : 0));
    a.push_back(std::to_string(validator_ttl_.count()));
    a.push_back(ref.variant);
    return a;
}

std::string redis_store::new_token() {
    return detail::make_lease_token(rng_);
}

// GCC 12 takes Asio's frame allocator (aligned_alloc, freed by its own operator delete) for a
// mismatched new/delete once this coroutine's frame passes some size: a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
net::awaitable<result<acquire_result>> redis_store::async_acquire(
    resource_ref ref, condition cond, std::chrono::milliseconds lease) {
    longest_lease_ = std::max(longest_lease_, lease);
    auto token = new_token();
    auto a = args(ref);
    const std::size_t common_args = a.size();   // what release.lua takes before the token
    a.push_back(token);
    a.push_back(std::to_string(std::max<std::int64_t>(lease.count(), 1)));  // PX 0 is an error
    a.push_back(std::string(1, match_code(cond.if_match)) + match_code(cond.if_none_match));
    a.push_back(cond.if_unmodified_since ? std::to_string(*cond.if_unmodified_since) : std::string());
    const bool im_list = cond.if_match == condition::match::list;
    a.push_back(std::to_string(im_list ? cond.if_match_tags.size() : 0));
    if (im_list)
        for (auto& t : cond.if_match_tags) a.push_back(std::move(t));
    if (cond.if_none_match == condition::match::list)
        for (auto& t : cond.if_none_match_tags) a.push_back(std::move(t));

    // The frame holds the router: the store may be destroyed while this waits.
    auto router = router_;
    const auto k = keys(ref.key);
    const bool connected = router->connected();   // else nothing is sent: it fails at once
    auto r = co_await router->async_eval(acquire_script, k, a);
    if (!r) {
        // Sent, but no answer: timed out, or the connection was dropped meanwhile (unavailable;
        // a slow command's timeout drops it after connect_timeout without replies). Redis may
        // still run the acquire (a slow server reads it late) and hold the lease for nobody: ask
        // it to drop the lease if this token took it. Queued behind the acquire on the same
        // connection when it is still up; nothing waits for the answer.
        if (r.error() == make_error_code(store_errc::timeout) ||
            (connected && r.error() == make_error_code(store_errc::unavailable))) {
            // release.lua takes the acquire's keys and args(ref)'s arguments, the first of `a` (not
            // asked of the store again: it may be gone).
            std::vector<std::string> release_args(a.begin(), a.begin() + common_args);
            net::co_spawn(co_await net::this_coro::executor,
                          release_late_acquire(std::move(router), k, std::move(release_args), std::move(token), lease),
                          net::detached);
        }
        co_return detail::failure{r.error()};
    }
    saw_epoch(ref.key);
    const auto& v = r->reply;
    if (v.kind != redis_reply::type::array || v.elements.size() != 5) co_return detail::failure{reply_error("acquire", v)};
    const std::string* f[5];
    for (int i = 0; i < 5; ++i)
        if (!(f[i] = as_string(v.elements[i]))) co_return detail::failure{reply_error("acquire", v)};
    std::int64_t fleet = 0;
    if (parse_int(*f[4], fleet)) longest_lease_ = std::max(longest_lease_, std::chrono::milliseconds(fleet));
    const auto& status = *f[0];
    if (status == "recovering") co_return detail::fail(store_errc::recovering);
    auto state = decode_state(*f[1], *f[2], *f[3]);
    if (!state) co_return detail::failure{reply_error("acquire", v)};

    acquire_result out;
    out.current = std::move(*state);
    if (status == "ok") {
        out.status = acquire_status::ok;
    } else if (status == "unknown") {
        out.status = acquire_status::unknown;
    } else if (status == "mismatch") {
        out.status = acquire_status::mismatch;
    } else if (status == "busy") {
        out.status = acquire_status::busy;
    } else {
        co_return detail::failure{reply_error("acquire", v)};
    }
    if (out.status == acquire_status::ok || out.status == acquire_status::unknown) {
        out.token = std::move(token);
        if (r->node && r->node->replacement_started_at() + longest_lease_ > std::chrono::steady_clock::now()) {
            // This Redis replaced (restarted from a dump) the one we used, and may have lost the
            // leases of writes still at the origin; theirs began before it started, so they have
            // ended once it has been up for the fleet's longest lease. Until then nothing is forwarded.
            resource_state unchanged;
            auto release = async_commit(ref, out.token, commit_outcome::keep, unchanged);
            auto released = co_await std::move(release);
            if (!released) spdlog::warn("redis: releasing a lease on {} failed: {}", ref.key, released.error().message());
            co_return detail::failure{errc(store_errc::recovering)};
        }
        if (wait_replicas_ > 0) {
            bool confirmed = co_await async_confirm_lease(ref, out.token, std::move(*r));
            if (!confirmed) co_return detail::failure{errc(store_errc::unavailable)};
        }
    }
    co_return out;
}
#pragma GCC diagnostic pop

net::awaitable<bool> redis_store::async_confirm_lease(resource_ref ref, std::string token,
                                                      routed_reply via) {
    auto wait = detail::argv_of("WAIT", std::to_string(wait_replicas_), std::to_string(wait_timeout_.count()));
    auto w = co_await via.node->async_exec_in_session(via.session, std::move(wait),
                                                      command_timeout_ + wait_timeout_);
    if (w && w->kind == redis_reply::type::integer && w->integer >= wait_replicas_) co_return true;
    spdlog::warn("redis: a write lease on {} was not confirmed by {} replica(s) of {} within {} ms ({}); "
                 "releasing it",
                 ref.key, wait_replicas_, via.node->options().endpoint.describe(), wait_timeout_.count(),
                 !w ? w.error().message()
                    : w->kind == redis_reply::type::integer ? std::to_string(w->integer) + " confirmed"
                                                            : w->str);
    // Not forwarded, so nothing changed: keep the state. If the release fails too, the lease
    // expires and the write marker makes the resource unknown.
    resource_state unchanged;
    auto released = co_await async_commit(std::move(ref), std::move(token), commit_outcome::keep, unchanged);
    if (!released) spdlog::warn("redis: releasing the unconfirmed lease failed: {}", released.error().message());
    co_return false;
}

net::awaitable<result<bool>> redis_store::async_store_under_lease(
    resource_ref ref, std::string token, resource_state state) {
    auto a = args(ref);
    a.push_back(std::move(token));
    encode_state(a, state);
    const auto k = keys(ref.key);
    auto r = co_await router_->async_eval(store_script, k, a);
    if (!r) co_return detail::failure{r.error()};
    saw_epoch(ref.key);
    co_return decode_flag("store_under_lease", r->reply);
}

net::awaitable<result<bool>> redis_store::async_commit(
    resource_ref ref, std::string token, commit_outcome outcome, resource_state state,
    std::chrono::milliseconds hold) {
    auto a = args(ref);
    a.push_back(std::move(token));
    switch (outcome) {
    case commit_outcome::set: a.emplace_back("set"); break;
    case commit_outcome::keep: a.emplace_back("keep"); break;
    case commit_outcome::unknown: a.emplace_back("unknown"); break;
    }
    encode_state(a, state);
    a.push_back(std::to_string(std::max<std::int64_t>(hold.count(), 0)));
    const auto k = keys(ref.key);
    auto r = co_await router_->async_eval(commit_script, k, a);
    if (!r) co_return detail::failure{r.error()};
    saw_epoch(ref.key);
    co_return decode_flag("commit", r->reply);
}

net::awaitable<result<snapshot>> redis_store::async_snapshot(resource_ref ref) {
    const auto k = keys(ref.key);
    const auto a = args(ref);
    auto r = co_await router_->async_eval(snapshot_script, k, a);
    if (!r) co_return detail::failure{r.error()};
    saw_epoch(ref.key);
    const auto& v = r->reply;
    if (v.kind != redis_reply::type::array || v.elements.size() != 5 ||
        v.elements[4].kind != redis_reply::type::integer)
        co_return detail::failure{reply_error("snapshot", v)};
    const std::string* f[4];
    for (int i = 0; i < 4; ++i)
        if (!(f[i] = as_string(v.elements[i]))) co_return detail::failure{reply_error("snapshot", v)};
    auto state = decode_state(*f[0], *f[1], *f[2]);
    snapshot out;
    if (!state || !parse_int(*f[3], out.generation)) co_return detail::failure{reply_error("snapshot", v)};
    out.state = std::move(*state);
    out.leased = v.elements[4].integer == 1;
    // Likewise a read records nothing while such writes may still be in flight (as if leased).
    if (r->node && r->node->replacement_started_at() + longest_lease_ > std::chrono::steady_clock::now())
        out.leased = true;
    co_return out;
}

net::awaitable<result<bool>> redis_store::async_observe(
    resource_ref ref, std::uint64_t generation, resource_state state) {
    auto a = args(ref);
    a.push_back(std::to_string(generation));
    encode_state(a, state);
    const auto k = keys(ref.key);
    auto r = co_await router_->async_eval(observe_script, k, a);
    if (!r) co_return detail::failure{r.error()};
    saw_epoch(ref.key);
    co_return decode_flag("observe", r->reply);
}

// "<resource hash key>:i:<sha1 of the idempotency key>": the resource's hash tag (one cluster
// slot with it, though no script needs both), a key of any bytes kept out of the Redis key.
std::string redis_store::idem_key(std::string_view resource, std::string_view key) const {
    return resource_key(prefix_, resource) + ":i:" + sha1_hex(key);
}

net::awaitable<result<idem_result>> redis_store::async_idem_begin(
    std::string resource, std::string key, std::string fingerprint, std::string owner,
    std::chrono::milliseconds in_flight_ttl) {
    std::vector<std::string> k{idem_key(resource, key)};
    std::vector<std::string> a{"begin", std::move(fingerprint), std::move(owner),
                               std::to_string(std::max<long long>(1, in_flight_ttl.count()))};
    auto r = co_await router_->async_eval(idem_script, k, a);
    if (!r) co_return detail::failure{r.error()};
    const auto& v = r->reply;
    const std::string* f[2];
    if (v.kind != redis_reply::type::array || v.elements.size() != 2 || !(f[0] = as_string(v.elements[0])) ||
        !(f[1] = as_string(v.elements[1])))
        co_return detail::failure{reply_error("idempotency", v)};
    idem_result out;
    if (*f[0] == "reserved") out.status = idem_status::reserved;
    else if (*f[0] == "in_flight") out.status = idem_status::in_flight;
    else if (*f[0] == "mismatch") out.status = idem_status::mismatch;
    else if (*f[0] == "completed") out.status = idem_status::completed, out.response = *f[1];
    else co_return detail::failure{reply_error("idempotency", v)};
    co_return out;
}

net::awaitable<result<bool>> redis_store::async_idem_complete(
    std::string resource, std::string key, std::string owner, std::string response, std::chrono::milliseconds ttl) {
    std::vector<std::string> k{idem_key(resource, key)};
    std::vector<std::string> a{"complete", std::move(owner), std::move(response),
                               std::to_string(std::max<long long>(1, ttl.count()))};
    auto r = co_await router_->async_eval(idem_script, k, a);
    if (!r) co_return detail::failure{r.error()};
    co_return decode_flag("idempotency", r->reply);
}

net::awaitable<result<bool>> redis_store::async_idem_forget(std::string resource, std::string key, std::string owner) {
    std::vector<std::string> k{idem_key(resource, key)};
    std::vector<std::string> a{"forget", std::move(owner)};
    auto r = co_await router_->async_eval(idem_script, k, a);
    if (!r) co_return detail::failure{r.error()};
    co_return decode_flag("idempotency", r->reply);
}

net::awaitable<result<void>> redis_store::async_ping() {
    return router_->async_ping();
}

}  // namespace ifm::cache

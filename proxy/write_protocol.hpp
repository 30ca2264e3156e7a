// The conditional-write protocol of SPEC §5 as a sans-io state machine (Boost.MySQL's shape):
// it never performs I/O, it says what to do next, and is told what happened. The client session
// executes its actions against the real store and origin (proxy/tracking.cpp); the simulator
// (tests/sim) executes them against a simulated store, origin and clock. Every decision of the
// write path lives here, so what the simulator checks is what the proxy does.
//
//   start ──► acquire ──ok──────────────────────────────► forward ──► commit ──► respond
//               │ busy ──► sleep ──► acquire (on_busy: wait)    ▲          ▲
//               │ unknown / mismatch+revalidate ──► fetch ──► store ─┘          │
//               │ mismatch ──► respond (409)               2xx+refresh ──► refresh
//
// Times are passed in by the caller (steady clock, or simulated): the machine measures the lease
// from just before the acquire that took it and forwards only while what remains exceeds the
// origin's deadline plus a margin (the origin cannot check a fencing token: HARDENING.md).
#pragma once

#include "cache/store.hpp"
#include "config/config.hpp"
#include "proxy/precondition.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace ifm::proxy {

using protocol_clock = std::chrono::steady_clock;

struct write_params {
    cache::condition cond;                  // unconditional: a write the route does not require a precondition of
    config::etag_mode etag = config::etag_mode::hash;
    bool is_delete = false;
    // A write the proxy does not judge (SPEC §5.5: WebDAV COPY/MOVE, extension methods): taken
    // under the lease like any write, never refused for its precondition, and whatever the
    // origin answers it makes the validator unknown.
    bool invalidate_only = false;
    bool revalidate_on_mismatch = false;
    bool refresh_after_write = false;
    bool wait_on_busy = false;
    bool fail_open = false;                 // on_store_error: fail_open
    protocol_clock::duration busy_wait{std::chrono::milliseconds(200)};
    std::chrono::milliseconds lease{std::chrono::seconds(15)};
    protocol_clock::duration origin_deadline{std::chrono::seconds(10)};   // the upstream's request_timeout
    protocol_clock::duration safety_margin{std::chrono::seconds(1)};
    // How long a write whose outcome is unknown (5xx, timeout, reset) keeps the lease; nullopt:
    // the rest of the lease (SPEC §5.4).
    std::optional<std::chrono::milliseconds> settle;
    // A condition beyond `cond` (WebDAV's If header: proxy/dav_if.hpp), checked under the lease
    // against the state just fetched from the origin; false: 412. Setting it revalidates always.
    std::function<bool(const cache::resource_state&)> also_requires;
};

// What the proxy's own GET/HEAD to the origin found (revalidation, refresh).
struct fetch_outcome {
    bool failed = false;                    // transport failure or bad response: nothing learned
    unsigned status = 0;
    // What the answer says of the resource (state_from_fetch); nullopt: nothing usable (a 5xx...).
    std::optional<cache::resource_state> state;
    // Refresh only: the write's own 2xx response could not be read whole (reset, truncated).
    bool write_response_failed = false;
};

// What the origin's answer to the forwarded write proves (SPEC §5.4).
struct origin_answer {
    enum class kind : std::uint8_t {
        not_sent,   // no byte reached the origin (connect failed, the client's body was bad first)
        response,   // a final response header was read
        lost,       // sent, then timeout, reset, truncated or malformed response: outcome unknown
    };
    kind k = kind::lost;
    unsigned status = 0;
    // The bytes went out on a connection that failed and again on a fresh one: the first may
    // have been applied whatever the second says.
    bool retried = false;
    // `origin` and `auto` routes: the origin's strong ETag (and Last-Modified) on a 2xx, if any.
    std::optional<cache::resource_state> validator;
};

// What the session must do next.
struct write_action {
    enum class kind : std::uint8_t {
        acquire,    // store.async_acquire(ref, unconditional ? {} : cond, lease); then on_acquired
        sleep,      // wait `delay`; then on_slept
        fetch,      // GET (HEAD when `head`) the resource under the lease; then on_fetched
        store,      // store.async_store_under_lease(ref, token, state); then on_stored
        forward,    // send the write (conditionals stripped when `strip_conditionals`); then on_forwarded
        refresh,    // buffer the write's response body, then GET the resource; then on_refreshed
        commit,     // store.async_commit(ref, token, outcome, state, hold); then on_committed
        respond,    // done: send `reply`
    };
    enum class reply_kind : std::uint8_t {
        relay,                // the origin's response (with `etag` as its ETag when not empty)
        relay_unchecked,      // fail_open: the origin's response, nothing was judged or committed
        reject,               // reject_status (`verdict`, `current`)
        also_failed,          // 412: `also_requires` failed (`current`)
        busy,                 // 409 write-in-progress
        store_unavailable,    // 503 (`store_error`)
        lease_lost,           // 503: the lease expired while revalidating
        lease_too_short,      // 503: not enough lease left to forward safely
        revalidation_failed,  // 502: the origin's answer to the revalidation says nothing usable
        origin_failed,        // the forward or the fetch failed: the session maps its own error (502/504)
    };
    kind what = kind::respond;
    bool unconditional = false;             // acquire
    protocol_clock::duration delay{};       // sleep
    bool head = false;                      // fetch
    bool strip_conditionals = false;        // forward
    cache::resource_state state;            // store, commit
    cache::commit_outcome outcome = cache::commit_outcome::keep;   // commit
    std::chrono::milliseconds hold{0};      // commit
    reply_kind reply = reply_kind::relay;   // respond
    cache::verdict verdict = cache::verdict::pass;
    cache::resource_state current;
    std::string etag;
    boost::system::error_code store_error;
};

class write_machine {
public:
    explicit write_machine(write_params p) : p_(std::move(p)) {}
    const write_params& params() const { return p_; }

    write_action start(protocol_clock::time_point now);
    write_action on_acquired(const cache::result<cache::acquire_result>& r, protocol_clock::time_point now);
    write_action on_slept(protocol_clock::time_point now);
    write_action on_fetched(const fetch_outcome& f, protocol_clock::time_point now);
    write_action on_stored(const cache::result<bool>& r, protocol_clock::time_point now);
    write_action on_forwarded(const origin_answer& a, protocol_clock::time_point now);
    write_action on_refreshed(const fetch_outcome& f, protocol_clock::time_point now);
    write_action on_committed(const cache::result<bool>& r, protocol_clock::time_point now);

    const std::string& token() const { return token_; }
    outcome precondition() const { return outcome_; }
    // Forwarded while holding the lease (a commit follows).
    bool forwarded() const { return forwarded_; }
    // The deadline of everything the forward does (body sent, response header read): the lease's
    // end less the margin. max() before the lease is taken.
    protocol_clock::time_point write_deadline() const { return deadline_; }

private:
    write_action acquire(protocol_clock::time_point now, bool unconditional);
    write_action judge(const cache::resource_state& state, protocol_clock::time_point now);
    write_action forward(protocol_clock::time_point now);
    write_action commit(cache::commit_outcome o, cache::resource_state s, std::chrono::milliseconds hold,
                        write_action then);
    write_action respond(write_action::reply_kind r);
    std::chrono::milliseconds settle_hold() const;

    write_params p_;
    std::string token_;
    outcome outcome_ = outcome::passed;
    protocol_clock::time_point started_{};
    protocol_clock::time_point lease_start_{};
    protocol_clock::time_point deadline_ = protocol_clock::time_point::max();
    protocol_clock::duration backoff_{std::chrono::milliseconds(2)};
    bool revalidating_ = false;     // the lease was taken to revalidate (unknown, or mismatch + revalidate)
    bool forced_ = false;           // the unconditional re-acquire of revalidate_on_mismatch
    bool forwarded_ = false;
    bool unchecked_ = false;        // fail_open: forwarded without a lease
    cache::resource_state fetched_;
    std::string refreshed_etag_;    // handed to the client only if the commit still held the lease
    write_action after_commit_;     // what to respond once the commit returns
};

// The commit rule of SPEC §5.4 as a table: what the origin's answer to a write proves.
struct commit_decision {
    cache::commit_outcome outcome = cache::commit_outcome::unknown;
    cache::resource_state state;
    bool hold = false;        // keep the lease (for the settle time) instead of releasing it
    bool refresh = false;     // 2xx with refresh_after_write: fetch the new validator first
};
commit_decision decide_commit(const write_params& p, const origin_answer& a);

// SPEC §5.6: may a read record the validator it saw? Only if no lease was held when it started,
// the store did not reconnect meanwhile (a Redis that lost its data reads generation 0 as
// before), and what it saw differs from what is recorded (else there is nothing to do).
bool read_may_record(const cache::snapshot& before, const cache::resource_state& seen, bool store_reconnected);

// Reads that cannot matter (issue 12): a worker's last snapshot of a resource, reused by its next
// reads for `ttl` (store.snapshot_reuse) instead of asking the store again before each one.
//
// Why it is safe (SPEC §5.6): a read may record what it saw only if no lease is held and the
// generation is unchanged since *before the request was forwarded*. A snapshot taken before an
// earlier read was also taken before this one: the observe that follows carries its generation,
// and the store refuses it if any commit, or any write's lease (held, or lost with its `w`
// marker), came since then, however old the snapshot. The snapshot's age bounds nothing but
// freshness: a read whose answer equals the reused state records nothing (the store held that
// state when the snapshot was taken; if it has forgotten it since, the next write revalidates at
// the origin, as for any unknown validator). Skipping a record can only leave a validator
// unknown, never wrong. Entries are reused only from unleased snapshots and confirmed observes,
// and only while the store has not reconnected (a Redis that lost its data reads generation 0
// again). tests/sim runs every read through this class (mutation `snapshot_after_read` shows its
// checker catches the unsafe variant: a snapshot taken after the read).
class snapshot_cache {
public:
    snapshot_cache(std::chrono::milliseconds ttl, std::size_t capacity = 4096) : ttl_(ttl), capacity_(capacity) {}
    void set_ttl(std::chrono::milliseconds ttl) { ttl_ = ttl; }

    // A snapshot of `ref` taken at or after `now - ttl`, usable in place of a new one; nullopt: take one.
    // `reconnects`: the store's reconnect count now (a change forgets everything).
    std::optional<cache::snapshot> reuse(const cache::resource_ref& ref, protocol_clock::time_point now,
                                         std::uint64_t reconnects);
    // A snapshot was taken at `at` (before the read was forwarded).
    void taken(const cache::resource_ref& ref, const cache::snapshot& s, protocol_clock::time_point at,
               std::uint64_t reconnects);
    // The observe of `seen` with `generation` was answered at `at`: recorded (the store held that
    // generation, no lease, and now `seen`) or refused (something changed: forget the resource).
    void observed(const cache::resource_ref& ref, std::uint64_t generation, const cache::resource_state& seen,
                  bool recorded, protocol_clock::time_point at, std::uint64_t reconnects);
    // This worker wrote the resource: forget every variant.
    void forget(const std::string& key);
    std::size_t size() const { return entries_.size(); }

private:
    struct entry {
        std::string variant;
        cache::snapshot snap;
        protocol_clock::time_point at;
    };
    entry* find(const cache::resource_ref& ref);
    void erase(const cache::resource_ref& ref);
    void sync(std::uint64_t reconnects);
    void put(const cache::resource_ref& ref, const cache::snapshot& s, protocol_clock::time_point at);

    std::chrono::milliseconds ttl_;
    std::size_t capacity_;
    std::uint64_t reconnects_ = 0;
    std::unordered_map<std::string, std::vector<entry>> entries_;   // by resource key: its variants
};

}  // namespace ifm::proxy

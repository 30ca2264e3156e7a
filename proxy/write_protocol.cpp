#include "proxy/write_protocol.hpp"

#include <algorithm>

namespace ifm::proxy {

using cache::acquire_status;
using cache::commit_outcome;
using cache::resource_state;
using kind = write_action::kind;
using reply_kind = write_action::reply_kind;

namespace {

bool is_2xx(unsigned s) { return s >= 200 && s < 300; }

}  // namespace

commit_decision decide_commit(const write_params& p, const origin_answer& a) {
    commit_decision d;
    switch (a.k) {
    case origin_answer::kind::not_sent:
        d.outcome = commit_outcome::keep;      // nothing reached the origin
        return d;
    case origin_answer::kind::lost:
        d.hold = true;                         // the origin may still be applying it
        return d;
    case origin_answer::kind::response:
        break;
    }
    const unsigned s = a.status;
    if (a.retried) {
        d.hold = true;                         // the first attempt may still be applied
    } else if (s == 202) {
        d.hold = true;                         // queued: applies later, must not be overtaken
    } else if (is_2xx(s)) {
        if (p.invalidate_only) return d;       // what it changed is not ours to know
        d.outcome = commit_outcome::set;
        if (p.is_delete) {
            d.state = resource_state::absent();
        } else if (p.etag != config::etag_mode::hash && a.validator) {
            d.state = *a.validator;
        } else if (p.etag != config::etag_mode::origin && p.refresh_after_write) {
            d.refresh = true;
        }
        // else: set to unknown (in hash mode the write's bytes are not the representation)
    } else if (s >= 300 && s < 400) {
        // Nothing proven: many legacy apps apply a form write, then redirect (303/302).
    } else if (s >= 400 && s < 500) {
        d.outcome = commit_outcome::keep;      // not applied
    } else {
        d.hold = true;                         // 5xx: a gateway may give up while the app applies it
    }
    return d;
}

bool read_may_record(const cache::snapshot& before, const resource_state& seen, bool store_reconnected) {
    return !before.leased && !store_reconnected && before.state != seen;
}

void snapshot_cache::sync(std::uint64_t reconnects) {
    if (reconnects != reconnects_) {
        entries_.clear();
        reconnects_ = reconnects;
    }
}

snapshot_cache::entry* snapshot_cache::find(const cache::resource_ref& ref) {
    auto it = entries_.find(ref.key);
    if (it == entries_.end()) return nullptr;
    for (auto& e : it->second)
        if (e.variant == ref.variant) return &e;
    return nullptr;
}

void snapshot_cache::erase(const cache::resource_ref& ref) {
    auto it = entries_.find(ref.key);
    if (it == entries_.end()) return;
    std::erase_if(it->second, [&](const entry& e) { return e.variant == ref.variant; });
    if (it->second.empty()) entries_.erase(it);
}

std::optional<cache::snapshot> snapshot_cache::reuse(const cache::resource_ref& ref, protocol_clock::time_point now,
                                                     std::uint64_t reconnects) {
    sync(reconnects);
    if (ttl_.count() <= 0) return std::nullopt;
    auto* e = find(ref);
    if (!e) return std::nullopt;
    if (now - e->at >= ttl_) {
        erase(ref);
        return std::nullopt;
    }
    return e->snap;
}

void snapshot_cache::put(const cache::resource_ref& ref, const cache::snapshot& s, protocol_clock::time_point at) {
    if (ttl_.count() <= 0) return;
    if (auto* e = find(ref)) {
        e->snap = s;
        e->at = at;
        return;
    }
    if (entries_.size() >= capacity_) entries_.clear();   // bounded; a dropped entry costs one snapshot
    entries_[ref.key].push_back(entry{ref.variant, s, at});
}

void snapshot_cache::taken(const cache::resource_ref& ref, const cache::snapshot& s, protocol_clock::time_point at,
                           std::uint64_t reconnects) {
    sync(reconnects);
    if (s.leased) {
        erase(ref);   // a write is in flight: its commit will move the generation
        return;
    }
    put(ref, s, at);
}

void snapshot_cache::observed(const cache::resource_ref& ref, std::uint64_t generation, const resource_state& seen,
                              bool recorded, protocol_clock::time_point at, std::uint64_t reconnects) {
    sync(reconnects);
    if (!recorded) {
        erase(ref);
        return;
    }
    put(ref, cache::snapshot{seen, generation, false}, at);
}

void snapshot_cache::forget(const std::string& key) {
    entries_.erase(key);
}

std::chrono::milliseconds write_machine::settle_hold() const {
    return p_.settle.value_or(p_.lease);
}

write_action write_machine::respond(reply_kind r) {
    write_action a;
    a.what = kind::respond;
    a.reply = r;
    return a;
}

write_action write_machine::commit(commit_outcome o, resource_state s, std::chrono::milliseconds hold,
                                   write_action then) {
    after_commit_ = std::move(then);
    write_action a;
    a.what = kind::commit;
    a.outcome = o;
    a.state = std::move(s);
    a.hold = hold;
    return a;
}

write_action write_machine::start(protocol_clock::time_point now) {
    started_ = now;
    return acquire(now, p_.invalidate_only);
}

write_action write_machine::acquire(protocol_clock::time_point now, bool unconditional) {
    lease_start_ = now;   // measured from just before the acquire (HARDENING.md, "Redis leases")
    write_action a;
    a.what = kind::acquire;
    a.unconditional = unconditional || p_.cond.unconditional();
    return a;
}

write_action write_machine::on_slept(protocol_clock::time_point now) {
    return acquire(now, false);
}

write_action write_machine::on_acquired(const cache::result<cache::acquire_result>& r,
                                        protocol_clock::time_point now) {
    if (!r) {
        outcome_ = outcome::store_error;
        if (p_.fail_open && !forced_) {
            unchecked_ = true;   // I4 relaxed on purpose by the operator
            write_action a;
            a.what = kind::forward;
            a.strip_conditionals = p_.etag != config::etag_mode::origin;
            return a;
        }
        auto a = respond(reply_kind::store_unavailable);
        a.store_error = r.error();
        return a;
    }
    switch (r->status) {
    case acquire_status::busy:
        if (p_.wait_on_busy && !forced_ && (now - started_) + backoff_ < p_.busy_wait) {
            write_action a;
            a.what = kind::sleep;
            a.delay = backoff_;
            backoff_ = std::min<protocol_clock::duration>(backoff_ * 2, std::chrono::milliseconds(50));
            return a;
        }
        outcome_ = outcome::rejected_busy;
        return respond(reply_kind::busy);
    case acquire_status::mismatch:
        if (p_.revalidate_on_mismatch && !forced_) {
            // Take the lease unconditionally, then check against what the origin says now.
            forced_ = true;
            return acquire(now, true);
        }
        {
            auto v = cache::evaluate(p_.cond, r->current);
            if (v == cache::verdict::pass) v = cache::verdict::stale;   // matched another variant's tag
            outcome_ = v == cache::verdict::exists ? outcome::rejected_exists : outcome::rejected_stale;
            auto a = respond(reply_kind::reject);
            a.verdict = v;
            a.current = r->current;
            return a;
        }
    case acquire_status::ok:
    case acquire_status::unknown:
        break;
    }
    token_ = r->token;
    deadline_ = lease_start_ + p_.lease - p_.safety_margin;
    const bool also = bool(p_.also_requires);
    const bool must_know = !p_.invalidate_only && (!p_.cond.unconditional() || also);
    if (must_know && (forced_ || also || r->status == acquire_status::unknown)) {
        revalidating_ = true;
        write_action a;
        a.what = kind::fetch;
        a.head = p_.etag == config::etag_mode::origin;
        return a;
    }
    return forward(now);
}

write_action write_machine::on_fetched(const fetch_outcome& f, protocol_clock::time_point now) {
    if (f.failed || !f.state) {
        outcome_ = outcome::aborted;   // judged, neither forwarded nor rejected
        return commit(commit_outcome::keep, {}, std::chrono::milliseconds(0),
                      respond(f.failed ? reply_kind::origin_failed : reply_kind::revalidation_failed));
    }
    fetched_ = *f.state;
    write_action a;
    a.what = kind::store;
    a.state = fetched_;
    return a;
}

write_action write_machine::on_stored(const cache::result<bool>& r, protocol_clock::time_point now) {
    if (!r) {
        // Nothing was forwarded: the lease goes back, as after a failed revalidation (a store
        // that runs the store_under_lease late has recorded what was fetched under the lease,
        // which `keep` leaves). Only if the commit cannot reach the store either do the lease
        // and its write marker stay until they expire (then the state is unknown). Keeping the
        // lease cost a slow Redis (bench/hostile --only slowredis) 409s for a whole write_lease.
        outcome_ = outcome::store_error;
        auto then = respond(reply_kind::store_unavailable);
        then.store_error = r.error();
        return commit(commit_outcome::keep, fetched_, std::chrono::milliseconds(0), std::move(then));
    }
    if (!*r) {
        outcome_ = outcome::aborted;
        return respond(reply_kind::lease_lost);
    }
    auto v = cache::evaluate(p_.cond, fetched_);
    if (v != cache::verdict::pass) {
        outcome_ = v == cache::verdict::exists ? outcome::rejected_exists : outcome::rejected_stale;
        auto then = respond(reply_kind::reject);
        then.verdict = v;
        then.current = fetched_;
        return commit(commit_outcome::keep, fetched_, std::chrono::milliseconds(0), std::move(then));
    }
    if (p_.also_requires && !p_.also_requires(fetched_)) {
        outcome_ = outcome::rejected_stale;
        auto then = respond(reply_kind::also_failed);
        then.current = fetched_;
        return commit(commit_outcome::keep, fetched_, std::chrono::milliseconds(0), std::move(then));
    }
    outcome_ = outcome::revalidated;
    return forward(now);
}

write_action write_machine::forward(protocol_clock::time_point now) {
    auto remaining = lease_start_ + p_.lease - now;
    if (remaining < p_.origin_deadline + p_.safety_margin) {
        outcome_ = outcome::aborted;
        return commit(commit_outcome::keep, {}, std::chrono::milliseconds(0), respond(reply_kind::lease_too_short));
    }
    forwarded_ = true;
    write_action a;
    a.what = kind::forward;
    a.strip_conditionals = p_.etag != config::etag_mode::origin;
    return a;
}

write_action write_machine::on_forwarded(const origin_answer& answer, protocol_clock::time_point now) {
    const auto relay_or_fail = answer.k == origin_answer::kind::response ? reply_kind::relay : reply_kind::origin_failed;
    if (unchecked_) return respond(answer.k == origin_answer::kind::response ? reply_kind::relay_unchecked
                                                                             : reply_kind::origin_failed);
    auto d = decide_commit(p_, answer);
    if (d.refresh) {
        write_action a;
        a.what = kind::refresh;
        return a;
    }
    // SPEC §5.4: a 202 keeps the lease until it expires (the queued write applies later, whatever
    // the settle time says of a backend that gave up); 5xx / lost keep it for the settle time.
    // (Found by the simulator: tests/sim/findings, seed 287.)
    const bool queued = answer.k == origin_answer::kind::response && answer.status == 202;
    const auto hold = !d.hold ? std::chrono::milliseconds(0) : queued ? p_.lease : settle_hold();
    return commit(d.outcome, d.state, hold, respond(relay_or_fail));
}

write_action write_machine::on_refreshed(const fetch_outcome& f, protocol_clock::time_point now) {
    if (f.write_response_failed) {
        // A 2xx header, then the body broke off: applied most likely, but not provably.
        return commit(commit_outcome::unknown, {}, settle_hold(), respond(reply_kind::origin_failed));
    }
    if (!f.failed && f.state && f.state->state == resource_state::kind::present && !f.state->etag.empty()) {
        // A lease that ran out during the refresh may have let another write through, whose
        // result the fetch could have seen: the tag is the client's only if the commit held it.
        refreshed_etag_ = f.state->etag;
        return commit(commit_outcome::set, *f.state, std::chrono::milliseconds(0), respond(reply_kind::relay));
    }
    return commit(commit_outcome::set, {}, std::chrono::milliseconds(0), respond(reply_kind::relay));
}

write_action write_machine::on_committed(const cache::result<bool>& r, protocol_clock::time_point now) {
    auto a = std::move(after_commit_);
    if (!refreshed_etag_.empty() && r && *r) a.etag = std::move(refreshed_etag_);
    return a;
}

}  // namespace ifm::proxy

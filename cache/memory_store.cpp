#include "cache/memory_store.hpp"

#include <algorithm>

namespace ifm::cache {

using detail::normalized;

namespace {

std::vector<std::string> tag_values(const std::vector<std::pair<std::string, std::string>>& tags) {
    std::vector<std::string> out;
    out.reserve(tags.size());
    for (const auto& t : tags) out.push_back(t.second);
    return out;
}

bool has_tag_list(const condition& c) {
    return c.if_match == condition::match::list || c.if_none_match == condition::match::list;
}

}  // namespace

memory_backend::memory_backend(clock_fn now, std::chrono::milliseconds validator_ttl)
    : now_(now ? std::move(now) : clock_fn([] { return clock::now(); })),
      validator_ttl_(validator_ttl),
      clock_(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count())),
      ready_at_(clock::time_point::min()) {}

bool memory_backend::leased(entry& e, clock::time_point now) {
    if (e.lease_token.empty()) return false;
    if (now < e.lease_expiry) return true;
    e.lease_token.clear();  // expired, as Redis' PX would have deleted it
    return false;
}

memory_backend::entry& memory_backend::at(const std::string& key, clock::time_point now) {
    auto& e = entries_[key];
    // Expired as Redis would expire the hash; a lease or an uncommitted write keeps it (the TTL
    // is refreshed by every acquire and is at least twice the longest lease).
    if (e.expires != clock::time_point{} && now >= e.expires && !leased(e, now) && e.writer.empty()) e = entry{};
    return e;
}

void memory_backend::forget_validators(entry& e) {
    e.tags.clear();
    e.overflow = false;
}

// A write that took the lease and never committed: forget the state and move the generation,
// so that neither this state nor a read that started before the write can be trusted.
void memory_backend::settle(entry& e, clock::time_point now) {
    if (!e.writer.empty() && !leased(e, now)) {
        e.kind = resource_state::kind::unknown;
        e.last_modified.reset();
        forget_validators(e);
        e.writer.clear();
        e.generation = next_generation(e.generation);
    }
}

// The Redis rule max(g + 1, TIME in µs) with a process-wide monotonic counter for TIME: a
// generation never repeats, so a snapshot can never match a later generation.
std::uint64_t memory_backend::next_generation(std::uint64_t g) {
    return std::max(g + 1, ++clock_);
}

// Records `s` for `variant`: a new existence, or a tag that differs from the one recorded for
// the same variant, means the resource changed (behind the proxy's back): the others go.
void memory_backend::record(entry& e, const std::string& variant, const resource_state& in) {
    const auto s = normalized(in);
    if (s.state != e.kind) forget_validators(e);
    e.kind = s.state;
    e.last_modified = s.last_modified;
    if (s.state != resource_state::kind::present || s.etag.empty()) return;
    auto it = std::find_if(e.tags.begin(), e.tags.end(), [&](const auto& t) { return t.first == variant; });
    if (it != e.tags.end()) {
        if (it->second == s.etag) return;
        forget_validators(e);
    } else if (e.tags.size() >= max_variants) {
        e.overflow = true;
        return;
    }
    e.tags.emplace_back(variant, s.etag);
}

resource_state memory_backend::view(const entry& e, const std::string& variant) const {
    resource_state s;
    s.state = e.kind;
    if (e.kind != resource_state::kind::present) return s;
    s.last_modified = e.last_modified;
    for (const auto& [v, tag] : e.tags)
        if (v == variant) s.etag = tag;
    return s;
}

bool memory_backend::recovering(clock::time_point now, std::chrono::milliseconds fleet_lease, bool reading) {
    if (!ready_at_) {
        // A read that knows no fleet lease cannot start the wait: with 0 it would end it at once
        // (found by the simulator: tests/sim/findings, seed 194). An acquire with 0 trusts a
        // store it never saw (young_server_wait: false).
        if (reading && fleet_lease.count() == 0) return true;
        ready_at_ = now + fleet_lease;
    }
    return now < *ready_at_;
}

result<acquire_result> memory_backend::acquire(const resource_ref& ref, const condition& cond,
                                               std::chrono::milliseconds lease, std::string token,
                                               std::chrono::milliseconds fleet_lease) {
    const auto now = now_();
    std::lock_guard lock(mutex_);
    if (recovering(now, fleet_lease)) return detail::fail(store_errc::recovering);
    longest_lease_ = std::max(longest_lease_, lease);
    auto& e = at(ref.key, now);
    settle(e, now);
    acquire_result r;
    r.current = view(e, ref.variant);
    if (leased(e, now)) {
        r.status = acquire_status::busy;
        return r;
    }
    if (e.kind == resource_state::kind::unknown) {
        r.status = acquire_status::unknown;
    } else if (evaluate(cond, e.kind, e.last_modified, tag_values(e.tags)) == verdict::pass) {
        r.status = acquire_status::ok;
    } else if (e.kind == resource_state::kind::present && has_tag_list(cond) &&
               (e.overflow || std::none_of(e.tags.begin(), e.tags.end(),
                                           [&](const auto& t) { return t.first == ref.variant; }))) {
        // The tag may be a variant's that was not recorded (max_variants, or its read could not
        // record it): revalidate instead of refusing a tag the client just received (I2; found
        // by the simulator: tests/sim/findings, seed 12834).
        r.status = acquire_status::unknown;
    } else {
        r.status = acquire_status::mismatch;
        return r;
    }
    e.lease_token = token;
    e.writer = token;
    e.lease_expiry = now + std::max(lease, std::chrono::milliseconds(1));
    e.expires = now + std::max(validator_ttl_, 2 * lease);
    r.token = std::move(token);
    return r;
}

bool memory_backend::store_under_lease(const resource_ref& ref, const std::string& token,
                                       const resource_state& state) {
    const auto now = now_();
    std::lock_guard lock(mutex_);
    auto it = entries_.find(ref.key);
    if (it == entries_.end() || !leased(it->second, now) || it->second.lease_token != token) return false;
    forget_validators(it->second);
    record(it->second, ref.variant, state);
    return true;
}

bool memory_backend::commit(const resource_ref& ref, const std::string& token, commit_outcome outcome,
                            const resource_state& state, std::chrono::milliseconds hold) {
    const auto now = now_();
    std::lock_guard lock(mutex_);
    auto& e = at(ref.key, now);
    const bool held = leased(e, now) && e.lease_token == token;
    if (held) {
        if (outcome == commit_outcome::set) {
            forget_validators(e);
            record(e, ref.variant, state);
        } else if (outcome == commit_outcome::unknown) {
            e.kind = resource_state::kind::unknown;
            forget_validators(e);
        }
        if (hold.count() > 0) {
            e.lease_expiry = std::min(e.lease_expiry, now + hold);   // the lease stays; the outcome is recorded
        } else {
            e.lease_token.clear();
        }
        e.writer.clear();
    } else {
        e.kind = resource_state::kind::unknown;  // the write's effect is unknown: never trust it
        forget_validators(e);
    }
    e.generation = next_generation(e.generation);
    e.expires = now + validator_ttl_;
    return held;
}

snapshot memory_backend::read(const resource_ref& ref, std::chrono::milliseconds fleet_lease) {
    const auto now = now_();
    std::lock_guard lock(mutex_);
    const bool recovering_now = recovering(now, fleet_lease, true);
    auto it = entries_.find(ref.key);
    if (it == entries_.end()) return {{}, 0, recovering_now};
    auto& e = it->second;
    if (e.expires != clock::time_point{} && now >= e.expires && !leased(e, now) && e.writer.empty())
        return {{}, 0, recovering_now};
    if (!e.writer.empty() && !leased(e, now)) return {resource_state::unknown(), e.generation, recovering_now};
    return {view(e, ref.variant), e.generation, leased(e, now) || recovering_now};
}

bool memory_backend::observe(const resource_ref& ref, std::uint64_t generation, const resource_state& state,
                             std::chrono::milliseconds fleet_lease) {
    const auto now = now_();
    std::lock_guard lock(mutex_);
    if (recovering(now, fleet_lease, true)) return false;
    auto it = entries_.find(ref.key);
    // A 404 of a resource nobody tracks is not recorded: strangers could fill the store.
    if (state.state == resource_state::kind::absent && it == entries_.end()) return false;
    auto& e = at(ref.key, now);
    if (!e.writer.empty() || leased(e, now) || e.generation != generation) return false;
    const bool tracked_before = e.kind != resource_state::kind::unknown || !e.tags.empty();
    if (state.state == resource_state::kind::absent && !tracked_before && e.generation == 0) return false;
    record(e, ref.variant, state);
    e.expires = now + validator_ttl_;
    const auto s = normalized(state);
    if (s.state != resource_state::kind::present || s.etag.empty()) return true;
    return view(e, ref.variant).etag == s.etag;   // false: not recorded (max_variants)
}

memory_backend::idem_entry* memory_backend::idem_at(const std::string& id, clock::time_point now) {
    auto it = idem_.find(id);
    if (it == idem_.end()) return nullptr;
    if (it->second.expires <= now) {
        idem_.erase(it);
        return nullptr;
    }
    return &it->second;
}

idem_result memory_backend::idem_begin(const std::string& id, const std::string& fingerprint, const std::string& owner,
                                       std::chrono::milliseconds in_flight_ttl) {
    std::lock_guard lock(mutex_);
    auto now = now_();
    auto* e = idem_at(id, now);
    if (!e) {
        idem_[id] = idem_entry{fingerprint, owner, false, {}, now + in_flight_ttl};
        return {idem_status::reserved, {}};
    }
    if (e->fingerprint != fingerprint) return {idem_status::mismatch, {}};
    if (!e->completed) return {idem_status::in_flight, {}};
    return {idem_status::completed, e->response};
}

bool memory_backend::idem_complete(const std::string& id, const std::string& owner, const std::string& response,
                                   std::chrono::milliseconds ttl) {
    std::lock_guard lock(mutex_);
    auto now = now_();
    auto* e = idem_at(id, now);
    if (!e || e->owner != owner) return false;
    e->completed = true;
    e->response = response;
    e->expires = now + ttl;
    return true;
}

bool memory_backend::idem_forget(const std::string& id, const std::string& owner) {
    std::lock_guard lock(mutex_);
    auto* e = idem_at(id, now_());
    if (!e || e->owner != owner) return false;
    idem_.erase(id);
    return true;
}

std::size_t memory_backend::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

memory_backend::image memory_backend::save() const {
    std::lock_guard lock(mutex_);
    return {entries_, ready_at_, longest_lease_};
}

void memory_backend::restore(const image& i) {
    std::lock_guard lock(mutex_);
    entries_ = i.entries;
    ready_at_ = i.ready_at;
    longest_lease_ = i.longest_lease;
}

void memory_backend::lose_data() {
    std::lock_guard lock(mutex_);
    entries_.clear();
    idem_.clear();
    ready_at_.reset();
    longest_lease_ = std::chrono::milliseconds(0);
}

// ---------------------------------------------------------------------------------------------

memory_store::memory_store(std::shared_ptr<memory_backend> backend)
    : backend_(std::move(backend)), rng_(detail::make_token_rng()) {}

net::awaitable<result<acquire_result>> memory_store::async_acquire(
    resource_ref ref, condition cond, std::chrono::milliseconds lease) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->acquire(ref, cond, lease, detail::make_lease_token(rng_), std::max(longest_lease_, lease));
}

net::awaitable<result<bool>> memory_store::async_store_under_lease(
    resource_ref ref, std::string token, resource_state state) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->store_under_lease(ref, token, state);
}

net::awaitable<result<bool>> memory_store::async_commit(
    resource_ref ref, std::string token, commit_outcome outcome, resource_state state,
    std::chrono::milliseconds hold) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->commit(ref, token, outcome, state, hold);
}

net::awaitable<result<snapshot>> memory_store::async_snapshot(resource_ref ref) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->read(ref, longest_lease_);
}

net::awaitable<result<bool>> memory_store::async_observe(
    resource_ref ref, std::uint64_t generation, resource_state state) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->observe(ref, generation, state, longest_lease_);
}

namespace {
std::string idem_id(const std::string& resource, const std::string& key) {
    return std::to_string(resource.size()) + ":" + resource + key;
}
}  // namespace

net::awaitable<result<idem_result>> memory_store::async_idem_begin(
    std::string resource, std::string key, std::string fingerprint, std::string owner,
    std::chrono::milliseconds in_flight_ttl) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->idem_begin(idem_id(resource, key), fingerprint, owner, in_flight_ttl);
}

net::awaitable<result<bool>> memory_store::async_idem_complete(
    std::string resource, std::string key, std::string owner, std::string response, std::chrono::milliseconds ttl) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->idem_complete(idem_id(resource, key), owner, response, ttl);
}

net::awaitable<result<bool>> memory_store::async_idem_forget(std::string resource, std::string key, std::string owner) {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return backend_->idem_forget(idem_id(resource, key), owner);
}

net::awaitable<result<void>> memory_store::async_ping() {
    if (closed_) co_return detail::fail(store_errc::unavailable);
    co_return result<void>{};
}

}  // namespace ifm::cache

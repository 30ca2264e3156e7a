// The tracked paths of a client session: reads record validators (SPEC §4, §5.5), writes run the
// lease protocol (SPEC §5): acquire → (revalidate) → forward → commit → respond.
#include "proxy/session.hpp"

#include "proxy/hasher.hpp"
#include "proxy/http_util.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

namespace ifm::proxy {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr auto lease_safety_margin = std::chrono::seconds(1);

using cache::resource_state;
using config::etag_mode;

std::string field_value(const http::fields& f, http::field name) {
    auto it = f.find(name);
    return it == f.end() ? std::string{} : std::string(it->value());
}

std::string strong_etag(std::string_view value) {
    auto tag = parse_entity_tag(trim(value));
    return tag && !tag->weak ? tag->opaque : std::string{};
}

std::optional<std::int64_t> last_modified_of(const http::fields& f) {
    auto v = field_value(f, http::field::last_modified);
    return v.empty() ? std::nullopt : parse_http_date(v);
}

// Headers a request the proxy makes on its own must not inherit from the client's write.
bool excluded_from_fetch(http::field f) {
    switch (f) {
    case http::field::content_length: case http::field::content_type:
    case http::field::content_encoding: case http::field::content_range:
    case http::field::content_md5: case http::field::content_language:
    case http::field::content_location: case http::field::transfer_encoding:
    case http::field::expect: case http::field::if_match: case http::field::if_none_match:
    case http::field::if_modified_since: case http::field::if_unmodified_since:
    case http::field::if_range: case http::field::range:
        return true;
    default:
        return false;
    }
}

void strip_conditionals(http::fields& f) {
    for (auto name : {http::field::if_match, http::field::if_none_match, http::field::if_modified_since,
                      http::field::if_unmodified_since, http::field::if_range})
        f.erase(name);
}

bool is_2xx(unsigned s) { return s >= 200 && s < 300; }

// What a revalidation response's header says of the resource.
void read_header(fetch_result& f, const http::response_header<>& h) {
    f.status = h.result_int();
    f.etag = field_value(h, http::field::etag);
    f.last_modified = last_modified_of(h);
}

}  // namespace

net::awaitable<void> client_session::write_head_only(request_context& ctx, http::response_header<> h) {
    http::response<http::empty_body> res{std::move(h)};
    prepare_client_response(ctx, res.base());
    ctx.status = res.result_int();
    client_.expires_after(ctx.rt->cfg.limits.body_timeout);
    http::response_serializer<http::empty_body> sr{res};
    auto [ec, n] = co_await http::async_write_header(client_, sr, use_tuple);
    if (ec) ctx.client_keep_alive = false;
}

// Reads the rest of the origin's response body into `out`, stopping once it exceeds `limit`.
net::awaitable<client_session::buffered> client_session::buffer_response_body(request_context& ctx, pooled_connection& oc,
                                                              std::string& out, std::size_t limit) {
    auto& body = res_->get().body();
    const auto& up = ctx.pool->config();
    if (auto length = res_->content_length(); length && *length <= limit) out.reserve(out.size() + *length);
    // Read into the relay buffer and append: growing `out` by resize() would zero each chunk.
    char* chunk = relay_buffer();
    while (!res_->is_done() && out.size() <= limit) {
        body.data = chunk;
        body.size = relay_buffer_size;
        oc->stream.expires_after(up.request_timeout);
        auto [ec, n] = co_await http::async_read(oc->stream, oc->buffer, *res_, use_tuple);
        out.append(chunk, relay_buffer_size - body.size);
        if (ec && ec != http::error::need_buffer) co_return buffered::failed;
    }
    co_return res_->is_done() && out.size() <= limit ? buffered::complete : buffered::too_large;
}

// GET/HEAD on a tracked route: forward, derive the validator, record it if nothing was written
// meanwhile, answer If-None-Match ourselves where the validator is ours.
net::awaitable<void> client_session::serve_read(request_context& ctx) {
    const auto& route = *ctx.route;
    const auto& limits = ctx.rt->cfg.limits;
    auto& msg = req_->get();
    auto client_inm = joined_field(msg, http::field::if_none_match);

    // The generation before the request reaches the origin (SPEC §5.5).
    auto connections = w_.store->reconnects();
    auto snap = co_await w_.store->async_snapshot(ctx.key);
    bool may_record = snap && !snap->leased;

    bool may_hash = route.etag != etag_mode::origin;
    if (may_hash) {
        // The origin does not know our tags; a HEAD becomes a GET so that the body can be hashed.
        // If-Range carries one of our tags, which the origin cannot check: send the whole
        // representation instead (RFC 9110 §13.1.5 allows ignoring Range).
        if (msg.count(http::field::if_range)) msg.erase(http::field::range);
        strip_conditionals(msg.base());
        if (ctx.head) msg.method(http::verb::get);
    }
    prepare_origin_request(ctx);
    auto oc = co_await send_to_origin(ctx);
    if (!oc) {
        co_await fail_origin(ctx, oc.error());
        co_return;
    }
    auto& res = res_->get();
    unsigned status = res.result_int();
    std::optional<resource_state> seen;
    std::string body;
    bool body_complete = res_->is_done();
    bool ours = false;   // the client-visible ETag is proxy-computed

    auto origin_tag = strong_etag(field_value(res, http::field::etag));
    // In hash mode the origin's tags mean nothing to us: clients only ever see ours.
    if (route.etag == etag_mode::hash) res.erase(http::field::etag);
    if (status == 200) {
        if (route.etag == etag_mode::origin || (route.etag == etag_mode::auto_ && !origin_tag.empty())) {
            if (!origin_tag.empty()) seen = resource_state::present(origin_tag, last_modified_of(res));
        } else {
            auto len = res_->content_length();
            res.erase(http::field::etag);
            if (len && *len > limits.max_hash_body) {
                w_.stats.untracked_large_bodies.fetch_add(1, std::memory_order_relaxed);
                spdlog::debug("{}: body of {} bytes exceeds max_hash_body: not tracked", ctx.target, *len);
            } else {
                auto b = co_await buffer_response_body(ctx, *oc, body, limits.max_hash_body);
                if (b == buffered::failed) {
                    pending_ = problem{502, "bad-origin-response", "Bad gateway",
                                           "the origin's response ended early", {}, {}, 0};
                    co_await respond(ctx);
                    co_return;
                }
                body_complete = b == buffered::complete;
                if (body_complete) {
                    auto tag = hash_etag(body);
                    res.set(http::field::etag, tag);
                    res.content_length(body.size());
                    seen = resource_state::present(tag, last_modified_of(res));
                    ours = true;
                } else {
                    w_.stats.untracked_large_bodies.fetch_add(1, std::memory_order_relaxed);
                }
            }
        }
    } else if (status == 404 || status == 410) {
        seen = resource_state::absent();
    }

    // A store reconnect meanwhile may be a Redis that lost its data, where a resource never
    // written reads generation 0 as it did before: the generation check cannot tell.
    if (seen && may_record && snap->state != *seen && w_.store->reconnects() == connections)
        co_await w_.store->async_observe(ctx.key, snap->generation, *seen);

    if (ours && client_inm && if_none_match_matches(*client_inm, seen->etag)) {
        // RFC 9110 §15.4.5: a 304 carries the validator and the caching headers of the 200.
        http::response_header<> h;
        h.result(http::status::not_modified);
        for (auto f : {http::field::etag, http::field::cache_control, http::field::content_location,
                       http::field::date, http::field::expires, http::field::vary})
            if (auto it = res.find(f); it != res.end()) h.set(f, it->value());
        if (body_complete && res_->keep_alive()) oc->keep();
        co_await write_head_only(ctx, std::move(h));
        co_return;
    }
    if (ctx.head && may_hash) {
        if (body_complete && res_->keep_alive()) oc->keep();
        co_await write_head_only(ctx, std::move(res.base()));
        co_return;
    }
    co_await relay_response(ctx, *oc, body);
}

// A GET (or HEAD) the proxy sends on its own, under the lease, to learn the current validator.
net::awaitable<fetch_result> client_session::fetch(request_context& ctx, bool use_head) {
    origin_timer timing(w_.stats, origin_kind::fetch);
    fetch_result f;
    const auto& cfg = ctx.rt->cfg;
    const auto& up = ctx.pool->config();
    const auto& orig = req_->get();
    http::request<http::empty_body> r{use_head ? http::verb::head : http::verb::get, ctx.target, 11};
    for (const auto& field : orig)
        if (!excluded_from_fetch(field.name())) r.insert(field.name_string(), field.value());
    strip_hop_by_hop(r.base());
    add_forwarding_headers(r.base(), cfg.headers.forwarded, peer_, ctx.host);
    if (!up.host_header.empty()) r.set(http::field::host, up.host_header);
    r.keep_alive(true);

    for (int attempt = 0; attempt < 2; ++attempt) {
        auto oc = co_await ctx.pool->async_acquire(attempt > 0);
        if (!oc) {
            f.ec = oc.error();
            co_return f;
        }
        (*oc)->stream.expires_after(up.request_timeout);
        auto [wec, wn] = co_await http::async_write((*oc)->stream, r, use_tuple);
        // 1xx interim responses are skipped; each response needs a parser of its own.
        std::optional<http::response_parser<http::string_body>> p;
        boost::system::error_code ec = wec;
        while (!ec && (!p || p->get().result_int() < 200)) {
            p.emplace();
            p->body_limit(cfg.limits.max_hash_body);
            p->header_limit(static_cast<std::uint32_t>(cfg.limits.max_header_bytes * 4));
            if (use_head) p->skip(true);
            auto [rec, rn] = co_await http::async_read((*oc)->stream, (*oc)->buffer, *p, use_tuple);
            ec = rec;
        }
        if (ec == http::error::body_limit) {
            // The header is complete: what it says still counts. No body hash, so in `hash` mode
            // (and `auto` without a strong origin tag) the state is "exists, tag unknown".
            read_header(f, p->get().base());
            f.too_large = true;
            co_return f;
        }
        if (ec) {
            if (attempt == 0 && oc->reused()) continue;
            f.ec = ec;
            co_return f;
        }
        auto& res = p->get();
        if (auto why = check_response_framing(res.base()); !why.empty()) {
            f.ec = make_error_code(http::error::bad_transfer_encoding);
            co_return f;
        }
        read_header(f, res.base());
        if (!use_head && is_2xx(f.status)) f.body_etag = hash_etag(res.body());
        if (p->keep_alive()) oc->keep();
        co_return f;
    }
    co_return f;
}

std::optional<resource_state> client_session::state_from_fetch(const request_context& ctx, const fetch_result& f) const {
    if (f.status == 404 || f.status == 410) return resource_state::absent();
    if (!is_2xx(f.status)) return std::nullopt;
    auto origin_tag = strong_etag(f.etag);
    switch (ctx.route->etag) {
    case etag_mode::origin:
        return resource_state::present(origin_tag, f.last_modified);
    case etag_mode::auto_:
        return resource_state::present(origin_tag.empty() ? f.body_etag : origin_tag, f.last_modified);
    case etag_mode::hash:
        return resource_state::present(f.body_etag, f.last_modified);
    }
    return std::nullopt;
}

net::awaitable<void> client_session::reject(request_context& ctx, cache::verdict v, resource_state current) {
    problem p;
    p.status = ctx.route->reject_status;
    if (v == cache::verdict::exists) {
        ctx.precondition = outcome::rejected_exists;
        p.slug = "already-exists";
        p.title = "Resource already exists";
        p.detail = "If-None-Match: * but the resource exists";
    } else {
        ctx.precondition = outcome::rejected_stale;
        p.slug = "stale-precondition";
        p.title = "Precondition failed: stale validator";
        p.detail = current.state == resource_state::kind::absent
                       ? "the resource does not exist"
                       : "the precondition does not match the resource's current validator";
    }
    if (current.state == resource_state::kind::present && !current.etag.empty()) p.current_etag = current.etag;
    pending_ = std::move(p);
    co_await respond(ctx);
}

net::awaitable<void> client_session::refuse_busy(request_context& ctx) {
    ctx.precondition = outcome::rejected_busy;
    pending_ = problem{ctx.route->reject_status, "write-in-progress", "Another write is in progress",
                       "another write to this resource is in flight; retry", {}, {}, 1};
    co_await respond(ctx);
}

// I4: fail closed. Nothing is forwarded unjudged.
net::awaitable<void> client_session::refuse_store_unavailable(request_context& ctx, boost::system::error_code ec) {
    ctx.precondition = outcome::store_error;
    pending_ = problem{503, "store-unavailable", "Validator store unavailable",
                       "conditional writes are refused while the validator store cannot be reached (" +
                           ec.message() + ")", {}, {}, 1};
    co_await respond(ctx);
}

// Commits with a token; a failed commit is logged (the lease expires, and the store's write
// marker makes the resource unknown). Returns whether `token` still held the lease: only then
// was no other write forwarded since this one took it.
net::awaitable<bool> client_session::commit_as(request_context& ctx, const std::string& token,
                                               cache::commit_outcome outcome, const resource_state& state) {
    auto r = co_await w_.store->async_commit(ctx.key, token, outcome, state);
    if (!r) spdlog::warn("commit of {} failed: {}", ctx.key, r.error().message());
    co_return r && *r;
}

// Ends the write: the commit rule of SPEC §5.4. Returns the state committed.
net::awaitable<resource_state> client_session::commit_after(request_context& ctx, std::string token,
                                                           const http::response_header<>* h,
                                                           boost::system::error_code ec) {
    using cache::commit_outcome;
    commit_outcome outcome = commit_outcome::unknown;
    resource_state state;
    if (!ec && h) {
        unsigned s = h->result_int();
        if (s == 202) {
            outcome = commit_outcome::unknown;   // accepted for processing, not applied yet
        } else if (is_2xx(s)) {
            outcome = commit_outcome::set;
            if (ctx.method == http::verb::delete_) {
                state = resource_state::absent();
            } else if (ctx.route->etag != etag_mode::hash) {
                auto tag = strong_etag(field_value(*h, http::field::etag));
                if (!tag.empty()) state = resource_state::present(tag, last_modified_of(*h));
            }
        } else if (s >= 300 && s < 500 && !ctx.origin_retried) {
            outcome = commit_outcome::keep;   // definitively not applied
        }
    } else if (ec && !ctx.origin_sent) {
        outcome = commit_outcome::keep;       // nothing reached the origin
    } else if (ec == beast::error::timeout) {
        // The origin may still be applying the write, and cannot check a fencing token: keep the
        // lease until it expires (past the exchange deadline), so that no other write is
        // forwarded meanwhile. A token that does not hold the lease makes the state unknown and
        // leaves the lease alone (validator_store::async_commit).
        const std::string not_the_holder;
        co_await commit_as(ctx, not_the_holder, commit_outcome::unknown, state);
        co_return state;
    }
    co_await commit_as(ctx, token, outcome, state);
    co_return state;
}

net::awaitable<void> client_session::serve_write(request_context& ctx) {
    const auto& route = *ctx.route;
    const auto& cfg = ctx.rt->cfg;
    auto& msg = req_->get();
    conditional_headers ch{joined_field(msg, http::field::if_match), joined_field(msg, http::field::if_none_match),
                           joined_field(msg, http::field::if_unmodified_since),
                           joined_field(msg, http::field::if_modified_since)};
    auto pre = parse_write_precondition(ch);
    if (pre.type == write_precondition::kind::malformed) {
        ctx.precondition = outcome::malformed;
        pending_ = problem{400, "malformed-precondition", "Malformed precondition", pre.error, {}, {}, 0};
        co_await respond(ctx);
        co_return;
    }
    if (pre.type == write_precondition::kind::none && route.require_precondition) {
        ctx.precondition = outcome::missing;
        pending_ = problem{428, "precondition-required", "Precondition required",
                               "this route requires If-Match or If-None-Match on " + ctx.method_name, {}, {}, 0};
        co_await respond(ctx);
        co_return;
    }
    cache::condition cond = pre.type == write_precondition::kind::condition ? pre.cond : cache::condition{};
    auto& store = *w_.store;
    const resource_state unknown_state;

    auto started = std::chrono::steady_clock::now();
    auto lease_start = started;
    std::string token;
    bool revalidate = false;
    for (auto backoff = std::chrono::milliseconds(2);;) {
        lease_start = std::chrono::steady_clock::now();
        auto acq = co_await store.async_acquire(ctx.key, cond, route.write_lease);
        if (!acq) {
            if (cfg.on_store_error == config::store_error_policy::fail_open) {
                ctx.precondition = outcome::store_error;
                spdlog::warn("store unavailable ({}); on_store_error: fail_open forwards {} {} UNCHECKED",
                             acq.error().message(), ctx.method_name, ctx.target);
                if (route.etag != etag_mode::origin) strip_conditionals(msg.base());
                prepare_origin_request(ctx);
                co_await forward(ctx);
                co_return;
            }
            co_await refuse_store_unavailable(ctx, acq.error());
            co_return;
        }
        if (acq->status == cache::acquire_status::busy) {
            auto waited = std::chrono::steady_clock::now() - started;
            if (route.on_busy == config::busy_policy::wait && waited + backoff < route.busy_wait) {
                net::steady_timer t(w_.ioc);
                t.expires_after(backoff);
                co_await t.async_wait(use_tuple);
                backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
                continue;
            }
            co_await refuse_busy(ctx);
            co_return;
        }
        if (acq->status == cache::acquire_status::mismatch) {
            if (!route.revalidate_on_mismatch || revalidate) {
                co_await reject(ctx, cache::evaluate(cond, acq->current), acq->current);
                co_return;
            }
            // Take the lease unconditionally, then check against what the origin says now.
            cache::condition unconditional;
            lease_start = std::chrono::steady_clock::now();
            auto forced = co_await store.async_acquire(ctx.key, unconditional, route.write_lease);
            if (!forced) {
                co_await refuse_store_unavailable(ctx, forced.error());
                co_return;
            }
            if (forced->status == cache::acquire_status::busy) {
                co_await refuse_busy(ctx);
                co_return;
            }
            token = forced->token;
            revalidate = true;
            break;
        }
        token = acq->token;
        revalidate = acq->status == cache::acquire_status::unknown && !cond.unconditional();
        break;
    }

    ctx.precondition = outcome::passed;
    if (revalidate) {
        auto f = co_await fetch(ctx, route.etag == etag_mode::origin);
        if (f.ec) {
            co_await commit_after(ctx, token, nullptr, make_error_code(net::error::operation_aborted));
            ctx.precondition = outcome::aborted;
            co_await fail_origin(ctx, f.ec);
            co_return;
        }
        // A representation too large to hash has no validator we can compute: it exists, and
        // only `If-Match: *` or an `If-None-Match` list can pass (I1: never forwarded unjudged).
        if (f.too_large) {
            w_.stats.untracked_large_bodies.fetch_add(1, std::memory_order_relaxed);
            spdlog::info("{}: representation exceeds max_hash_body; judged as existing without a validator",
                         ctx.target);
        }
        auto state = state_from_fetch(ctx, f);
        if (!state) {
            co_await commit_after(ctx, token, nullptr, make_error_code(net::error::operation_aborted));
            ctx.precondition = outcome::aborted;
            pending_ = problem{502, "revalidation-failed", "Bad gateway",
                                   "the origin answered " + std::to_string(f.status) +
                                       " to the revalidation request", {}, {}, 0};
            co_await respond(ctx);
            co_return;
        }
        auto stored = co_await store.async_store_under_lease(ctx.key, token, *state);
        if (!stored) {
            // The lease (and its write marker) stay until they expire: then the state is unknown.
            co_await refuse_store_unavailable(ctx, stored.error());
            co_return;
        }
        if (!*stored) {
            ctx.precondition = outcome::aborted;
            pending_ = problem{503, "lease-lost", "Write lease lost",
                                   "the write lease expired while revalidating; retry", {}, {}, 1};
            co_await respond(ctx);
            co_return;
        }
        auto v = cache::evaluate(cond, *state);
        if (v != cache::verdict::pass) {
            co_await commit_as(ctx, token, cache::commit_outcome::keep, *state);
            co_await reject(ctx, v, *state);
            co_return;
        }
        ctx.precondition = outcome::revalidated;
    }

    // The origin cannot check a fencing token: forward only while the lease outlives the
    // origin's deadline by a margin (HARDENING.md, "Redis leases").
    auto remaining = lease_start + route.write_lease - std::chrono::steady_clock::now();
    if (remaining < ctx.pool->config().request_timeout + lease_safety_margin) {
        co_await commit_as(ctx, token, cache::commit_outcome::keep, unknown_state);
        ctx.precondition = outcome::aborted;
        pending_ = problem{503, "lease-too-short", "Write lease too short",
                               "not enough of the write lease remains to forward safely; retry", {}, {}, 1};
        co_await respond(ctx);
        co_return;
    }

    ctx.write_deadline = lease_start + route.write_lease - lease_safety_margin;
    if (route.etag != etag_mode::origin) strip_conditionals(msg.base());
    prepare_origin_request(ctx);
    auto oc = co_await send_to_origin(ctx);
    ctx.write_deadline = std::chrono::steady_clock::time_point::max();
    if (!oc) {
        co_await commit_after(ctx, token, nullptr, oc.error());
        co_await fail_origin(ctx, oc.error());
        co_return;
    }
    auto& res = res_->get();
    bool refresh = route.refresh_after_write && route.etag != etag_mode::origin &&
                   is_2xx(res.result_int()) && ctx.method != http::verb::delete_;
    if (!refresh) {
        co_await commit_after(ctx, token, &res.base(), {});
        co_await relay_response(ctx, *oc, no_prefix_);
        co_return;
    }
    // Fetch the new validator while still holding the lease and hand it to the client, so it
    // can chain writes without re-reading.
    std::string body;
    auto b = co_await buffer_response_body(ctx, *oc, body, cfg.limits.max_body_bytes);
    if (b == buffered::failed) {
        co_await commit_after(ctx, token, nullptr, make_error_code(net::error::connection_reset));
        pending_ = problem{502, "bad-origin-response", "Bad gateway",
                               "the origin's response ended early", {}, {}, 0};
        co_await respond(ctx);
        co_return;
    }
    bool complete = b == buffered::complete;
    if (complete && res_->keep_alive()) oc->keep();
    fetch_result f;
    if (complete) f = co_await fetch(ctx, false);
    else f.ec = make_error_code(net::error::message_size);
    auto state = f.ec ? std::nullopt : state_from_fetch(ctx, f);
    if (state && state->state == resource_state::kind::present && !state->etag.empty()) {
        // A lease that ran out during the refresh may have let another write through, whose
        // result the fetch could have seen: that tag is not this client's to chain on.
        bool held = co_await commit_as(ctx, token, cache::commit_outcome::set, *state);
        if (held) res.set(http::field::etag, state->etag);
    } else {
        co_await commit_as(ctx, token, cache::commit_outcome::set, unknown_state);
    }
    if (complete) res.content_length(body.size());
    co_await relay_response(ctx, *oc, body);
}

}  // namespace ifm::proxy

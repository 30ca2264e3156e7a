// The tracked paths of a client session: reads record validators (SPEC §4, §5.5), writes run the
// lease protocol (SPEC §5): acquire → (revalidate) → forward → commit → respond.
#include "proxy/session.hpp"

#include "proxy/dav_if.hpp"
#include "proxy/drained_read.hpp"
#include "proxy/hasher.hpp"
#include "proxy/request_gate.hpp"
#include "proxy/http_util.hpp"
#include "proxy/resource_key.hpp"
#include "proxy/write_protocol.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

namespace ifm::proxy {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

using cache::resource_state;
using config::etag_mode;

// The value as it sits in `f` (valid while `f` is unchanged); field_value when it must outlive it.
std::string_view field_view(const header_fields& f, http::field name) {
    auto it = f.find(name);
    return it == f.end() ? std::string_view{} : std::string_view(it->value());
}

std::string field_value(const header_fields& f, http::field name) { return std::string(field_view(f, name)); }

std::string strong_etag(std::string_view value) {
    auto tag = parse_entity_tag(trim(value));
    return tag && !tag->weak ? tag->opaque : std::string{};
}

std::optional<std::int64_t> last_modified_of(const header_fields& f) {
    auto v = field_view(f, http::field::last_modified);
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

void strip_conditionals(header_fields& f) {
    for (auto name : {http::field::if_match, http::field::if_none_match, http::field::if_modified_since,
                      http::field::if_unmodified_since, http::field::if_range})
        f.erase(name);
}

bool is_2xx(unsigned s) { return s >= 200 && s < 300; }

// What a revalidation response's header says of the resource.
void read_header(fetch_result& f, const response_header& h) {
    f.status = h.result_int();
    f.etag = field_value(h, http::field::etag);
    f.last_modified = last_modified_of(h);
    f.content_encoding = field_value(h, http::field::content_encoding);
}

}  // namespace

net::awaitable<void> client_session::write_head_only(request_context& ctx, response_header h) {
    response_message<http::empty_body> res{std::move(h)};
    prepare_client_response(ctx, res.base());
    ctx.status = res.result_int();
    client_.expires_after(ctx.rt->cfg.limits.body_timeout);
    http::response_serializer<http::empty_body, header_fields> sr{res};
    auto [ec, n] = co_await http::async_write_header(client_, sr, use_tuple);
    if (ec) ctx.client_keep_alive = false;
}

// GET/HEAD on a tracked route: forward, derive the validator, record it if nothing was written
// meanwhile, answer If-None-Match ourselves where the validator is ours.
net::awaitable<void> client_session::serve_read(request_context& ctx) {
    const auto& route = *ctx.route;
    const auto& limits = ctx.rt->cfg.limits;
    auto& msg = req_->get();
    auto client_inm = joined_field(msg, http::field::if_none_match);

    // The generation before the request reaches the origin (SPEC §5.6). The variant is the one
    // of an identity response: if the origin answers with another coding, the state read here is
    // not that variant's and the validator is recorded without comparing.
    auto connections = w_.store->reconnects();
    cache::resource_ref ref{ctx.key, variant_of(ctx, "")};
    cache::result<cache::snapshot> snap;
    // A snapshot this worker took for an earlier read is as good as a new one (snapshot_cache).
    if (auto reused = w_.snapshots.reuse(ref, protocol_clock::now(), connections)) {
        snap = *reused;
        w_.stats.snapshots_reused.fetch_add(1, std::memory_order_relaxed);
    } else {
        auto taken_at = protocol_clock::now();
        {
            store_timer t(ctx.store_time);
            snap = co_await w_.store->async_snapshot(ref);
        }
        if (snap) w_.snapshots.taken(ref, *snap, taken_at, connections);
    }
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

    auto origin_tag = strong_etag(field_view(res, http::field::etag));
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
                auto b = co_await buffer_response_body(ctx, *oc, body, limits.max_hash_body, ctx.buffered_bytes);
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
    if (seen && snap) {
        auto variant = variant_of(ctx, field_view(res, http::field::content_encoding));
        auto before = *snap;
        if (variant != ref.variant) before.state = resource_state::unknown();   // not comparable
        if (read_may_record(before, *seen, w_.store->reconnects() != connections)) {
            bool same_variant = variant == ref.variant;
            ref.variant = std::move(variant);
            cache::result<bool> recorded;
            {
                store_timer t(ctx.store_time);
                recorded = co_await w_.store->async_observe(ref, snap->generation, *seen);
            }
            if (same_variant)
                w_.snapshots.observed(ref, snap->generation, *seen, recorded && *recorded, protocol_clock::now(),
                                      connections);
        }
    }

    if (ours && client_inm && if_none_match_matches(*client_inm, seen->etag)) {
        // RFC 9110 §15.4.5: a 304 carries the validator and the caching headers of the 200.
        response_header h;
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
    origin_timer timing(w_.stats, origin_kind::fetch, &ctx.origin_time);
    fetch_result f;
    const auto& cfg = ctx.rt->cfg;
    const auto& up = ctx.pool->config();
    const auto& orig = req_->get();
    request_message<http::empty_body> r{use_head ? http::verb::head : http::verb::get, ctx.target, 11};
    for (const auto& field : orig)
        if (!excluded_from_fetch(field.name())) r.insert(field.name_string(), field.value());
    strip_hop_by_hop(r.base());
    add_forwarding_headers(r.base(), cfg.headers.forwarded, peer_, ctx.host, ctx.rt->trusted_proxy(peer_address_),
                           client_scheme());
    if (!up.host_header.empty()) r.set(http::field::host, up.host_header);
    r.set("X-Request-Id", ctx.request_id);   // the origin logs the id the client sees
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
        // Trailers are dropped (RFC 9110 §6.5.1): a trailer ETag must not pass for the header's.
        std::optional<http::response_parser<http::string_body, field_allocator<char>>> p;
        header_snapshot header;
        std::function<void(std::uint64_t, std::string_view, boost::system::error_code&)> on_chunk =
            [&](std::uint64_t size, std::string_view, boost::system::error_code&) {
                if (size == 0) header.take(p->get());
            };
        boost::system::error_code ec = wec;
        while (!ec && (!p || p->get().result_int() < 200)) {
            p.emplace();
            header.clear();
            p->on_chunk_header(on_chunk);
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
        header.drop_added(res);
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

std::string client_session::key_for(const request_context& ctx, std::string_view target, std::string_view host) const {
    const auto& route = *ctx.route;
    const auto& up = ctx.pool->config();
    // `keep` and `sorted` share one key (the sorted query): switching between them never gives
    // one resource two leases; two spellings an origin tells apart merely share a lease.
    auto mode = route.query == config::query_mode::ignore ? config::query_mode::ignore : config::query_mode::sorted;
    auto normalized = normalize_target(target, mode);
    char port[8];
    const auto port_end = std::to_chars(port, port + sizeof port, up.port).ptr;
    std::string origin;
    origin.reserve(up.host.size() + 1 + static_cast<std::size_t>(port_end - port));
    origin += up.host;
    origin += ':';
    origin.append(port, port_end);
    return resource_key(resource_scope(origin, up.host_header.empty() ? host : up.host_header),
                        normalized ? *normalized : target, {});
}

std::string client_session::variant_of(const request_context& ctx, std::string_view content_encoding) {
    return variant_id(ctx.vary_values, content_encoding);
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
                       "writes are refused while the validator store cannot be reached or is recovering (" +
                           ec.message() + ")", {}, {}, 1};
    co_await respond(ctx);
}

write_params client_session::write_params_for(const request_context& ctx, cache::condition cond) const {
    const auto& route = *ctx.route;
    write_params p;
    p.cond = std::move(cond);
    p.etag = route.etag;
    p.is_delete = ctx.method == http::verb::delete_;
    p.revalidate_on_mismatch = route.revalidate_on_mismatch;
    p.refresh_after_write = route.refresh_after_write;
    p.wait_on_busy = route.on_busy == config::busy_policy::wait;
    p.busy_wait = route.busy_wait;
    p.fail_open = ctx.rt->cfg.on_store_error == config::store_error_policy::fail_open;
    p.lease = route.write_lease;
    p.origin_deadline = ctx.pool->config().request_timeout;
    p.safety_margin = route.lease_margin;
    p.settle = route.settle_time;
    return p;
}

// A judged write (SPEC §3): its preconditions, then the write protocol.
net::awaitable<void> client_session::serve_write(request_context& ctx) {
    const auto& route = *ctx.route;
    if (route.enforce == config::enforce_mode::off) {
        // Not judged, but still tracked: forwarded like a write outside `methods` (SPEC §5.5).
        co_await forward_unjudged(ctx, true);
        co_return;
    }
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
    // WebDAV's If header (RFC 4918 §10.4) may carry entity tags: on a route whose tags are the
    // proxy's, the origin cannot check them, so the proxy judges them under the lease and forwards
    // only the lock-token conditions (proxy/dav_if.hpp, docs/webdav-if.md).
    std::optional<dav_if> dav;
    if (route.etag != etag_mode::origin) {
        if (auto value = joined_field(msg, "if")) {
            auto parsed = parse_dav_if(*value);
            if (!parsed) {
                ctx.precondition = outcome::malformed;
                pending_ = problem{400, "malformed-precondition", "Malformed precondition", "If: " + parsed.error(), {}, {}, 0};
                co_await respond(ctx);
                co_return;
            }
            if (rewrite_dav_if(*parsed, ctx.target, ctx.host, {}, false).has_etags) dav = std::move(*parsed);
        }
    }
    if (pre.type == write_precondition::kind::none && !dav && route.require_precondition &&
        route.enforce == config::enforce_mode::report) {
        // Judged as the unconditional write it is (leased, committed by the origin's answer).
        ctx.would_reject = outcome::would_reject_missing;
        spdlog::info("enforce: report: {} {} has no precondition; forwarded (on would answer 428)", ctx.method_name,
                     ctx.target);
    } else if (pre.type == write_precondition::kind::none && !dav && route.require_precondition) {
        ctx.precondition = outcome::missing;
        pending_ = problem{428, "precondition-required", "Precondition required",
                               "this route requires If-Match or If-None-Match on " + ctx.method_name, {}, {}, 0};
        co_await respond(ctx);
        co_return;
    }
    cache::condition cond = pre.type == write_precondition::kind::condition ? pre.cond : cache::condition{};
    // Locals, not temporaries, in co_await expressions: GCC 12 destroys those twice.
    auto params = write_params_for(ctx, std::move(cond));
    std::optional<std::string> dav_forward;
    if (dav) {
        params.also_requires = [&](const resource_state& s) {
            std::vector<std::string> tags;
            if (!s.etag.empty()) tags.push_back(s.etag);
            auto r = rewrite_dav_if(*dav, ctx.target, ctx.host, tags, s.state == resource_state::kind::present);
            dav_forward = std::move(r.forwarded);
            return r.passes;
        };
    }
    // Idempotent retries (proxy/idempotency_session.cpp): a replay or a refusal ends here.
    idempotent_write idem;
    bool go_on = co_await begin_idempotent(ctx, idem);
    if (go_on) {
        co_await run_write(ctx, std::move(params), dav ? &dav_forward : nullptr, &idem);
    }
    co_await forget_idempotent(ctx, idem);   // only if still reserved (a path that did not answer)
    end_idempotent(idem);
}

// SPEC §5.5: an unsafe method the route does not judge still changes its target (and, for WebDAV
// COPY/MOVE, its Destination): refused, or forwarded under both leases and made unknown.
net::awaitable<void> client_session::serve_unjudged_write(request_context& ctx) {
    if (ctx.route->unjudged_writes == config::unjudged_policy::refuse) {
        pending_ = problem{405, "method-not-allowed", "Method not allowed",
                           ctx.method_name + " is not allowed on this route (routes[].unjudged_writes: refuse)", {}, {}, 0};
        co_await respond(ctx);
        co_return;
    }
    co_await forward_unjudged(ctx, false);
}

// Forwarded under the lease of its target (and Destination), whose validators it makes unknown.
// `wait_for_lease`: wait for a busy lease up to a whole lease (which bounds every holder's), as
// enforce: off and report must not refuse what `on` would; else the route's on_busy.
net::awaitable<void> client_session::forward_unjudged(request_context& ctx, bool wait_for_lease) {
    auto p = write_params_for(ctx, {});
    p.invalidate_only = true;
    p.revalidate_on_mismatch = false;
    p.refresh_after_write = false;
    if (wait_for_lease) {
        p.wait_on_busy = true;
        p.busy_wait = p.lease;
    }
    co_await run_write(ctx, std::move(p));
}

// enforce: report (README "Report-only rollout"). The judged write failed and holds no lease; it
// is forwarded all the same, as a write the proxy does not judge: its result is not ours to know,
// so the resource's validators become unknown (SPEC §5.5) and a later write with the old tag is
// revalidated against the origin instead of being accepted on a tag this write made stale.
net::awaitable<void> client_session::forward_despite(request_context& ctx, outcome would, resource_state current) {
    ctx.would_reject = would;
    if (current.state == resource_state::kind::present && !current.etag.empty()) ctx.current_etag = current.etag;
    spdlog::info("enforce: report: {} {} would be refused ({}); forwarded", ctx.method_name, ctx.target, to_string(would));
    co_await forward_unjudged(ctx, true);
}

// Lease squatting (issue 15): were the lease taken before the body is read, a client that sends
// one byte of its body and stalls would hold the resource for the whole lease (every other
// writer: 409 write-in-progress), with no say of the origin. A body whose Content-Length is at
// most limits.max_prebuffered_body is therefore read whole first, bounded by the client's own
// deadlines (body_timeout, min_body_rate) and counted in limits.max_buffered_bytes; the lease
// then covers only the forward. Larger and chunked bodies still stream under the lease, whose
// end (ctx.write_deadline) cuts them off (README, "Operations").
net::awaitable<bool> client_session::prebuffer_body(request_context& ctx) {
    const auto& limits = ctx.rt->cfg.limits;
    auto len = req_->content_length();
    // A body the whole budget could never hold streams, as a larger one does.
    auto bound = std::min(limits.max_prebuffered_body, limits.max_buffered_bytes);
    if (req_->is_done() || !len || *len == 0 || *len > bound) co_return true;
    if (!ctx.prebody_bytes.grow(*len)) {
        pending_ = problem{503, "memory-budget-exhausted", "Memory budget exhausted",
                           "the proxy holds limits.max_buffered_bytes of bodies already; retry", {}, {}, 1};
        co_await respond(ctx);
        co_return false;
    }
    if (ctx.expect_continue && buffer_.size() == 0) {
        // The client waits for our word before it sends the body: we read it before the origin
        // has seen anything, so the 100 is ours to send.
        static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
        client_.expires_after(limits.body_timeout);
        auto [cec, cn] = co_await net::async_write(client_, net::buffer(cont), use_tuple);
        if (cec) {
            ctx.client_keep_alive = false;
            ctx.status = 499;
            co_return false;
        }
    }
    ctx.expect_continue = false;
    ctx.prebody.resize(static_cast<std::size_t>(*len));
    auto& body = req_->get().body();
    body.data = ctx.prebody.data();
    body.size = ctx.prebody.size();
    auto body_start = std::chrono::steady_clock::now();
    boost::system::error_code bec;
    for (;;) {
        std::size_t used = 0;
        bec = parse_body_bytes(*req_, {static_cast<const char*>(buffer_.data().data()), buffer_.size()}, used);
        buffer_.consume(used);
        if (bec != http::error::need_more) break;
        std::uint64_t received = ctx.prebody.size() - body.size;
        // Room for the rest of this body and one byte more (a pipelined request is read later):
        // a buffer sized for the largest read grew to 16 KiB for every small body and was freed
        // after the request, about 3k instructions of malloc and free per write (callgrind). The
        // byte more makes the read that brings the whole rest a short one, which tells the
        // reactor the socket is drained (proxy/drained_read.hpp): the read of the next request
        // then waits for epoll instead of first trying a recv that finds nothing.
        auto room = std::min({buffer_.max_size() - buffer_.size(), relay_buffer_size, std::size_t(body.size) + 1});
        client_.expires_at(body_read_deadline(body_start, received, limits, std::chrono::steady_clock::now()));
        auto [rec, rn] = co_await client_.async_read_some(drained_read(buffer_.prepare(room)), use_tuple);
        if (rec) {
            bec = rec;
            break;
        }
        buffer_.commit(rn);
    }
    if (bec == http::error::need_buffer && req_->is_done()) bec = {};
    if (!bec && req_->is_done()) {
        ctx.body_read = true;
        co_return true;
    }
    // As exchange() does when a client fails in its body: answered if still there, else gone.
    ctx.framing_error = true;
    ctx.client_keep_alive = false;
    auto answer = body_error_problem(bec ? bec : make_error_code(http::error::partial_message));
    if (answer) {
        pending_ = std::move(*answer);
        co_await respond(ctx);
    } else {
        ctx.status = 400;
    }
    co_return false;
}

// Executes the write machine's actions (proxy/write_protocol.hpp) against the store and origin.
// ctx.companions: other resources the write changes (a WebDAV Destination, the route's
// dependencies), leased after the target, just before the write is forwarded, and made unknown by
// its commit (kept if the write was not applied). Their leases are never waited for, so writes
// whose companions overlap cannot deadlock: the later one gets busy.
net::awaitable<void> client_session::run_write(request_context& ctx, write_params params,
                                               const std::optional<std::string>* dav_if_forward,
                                               idempotent_write* idem) {
    using kind = write_action::kind;
    using reply_kind = write_action::reply_kind;
    auto& store = *w_.store;
    auto& msg = req_->get();
    auto now = [] { return protocol_clock::now(); };
    cache::resource_ref ref{ctx.key, variant_of(ctx, "")};
    std::vector<std::string> companion_tokens;   // aligned with ctx.companions once leased
    std::optional<pooled_connection> oc;
    boost::system::error_code origin_error;
    unsigned fetch_status = 0;
    std::string body;           // the write's response body, buffered for a refresh
    bool body_buffered = false;
    // The outcome counted: a write `on` would have refused and that went through is reported as
    // such; a write forwarded without judgment (enforce: off, methods outside the route's) counts
    // only when it was refused (store outage), never as `passed`.
    const bool invalidate_only = params.invalidate_only;
    auto outcome_of = [&](const write_machine& wm) {
        if (ctx.would_reject != outcome::not_judged && wm.forwarded()) return ctx.would_reject;
        auto o = wm.precondition();
        return invalidate_only && o == outcome::passed ? outcome::not_judged : o;
    };
    bool body_at_hand = co_await prebuffer_body(ctx);
    if (!body_at_hand) co_return;
    // The parameters live in the machine from here on (m.params()): no copy of the condition's
    // tags beyond the one each acquire consumes.
    write_machine m(std::move(params));
    const write_params& p = m.params();

    auto a = m.start(now());
    for (;;) {
        switch (a.what) {
        case kind::acquire: {
            // A local, not a temporary, in the co_await expression: GCC 12 destroys those twice.
            auto c = a.unconditional ? cache::condition{} : p.cond;
            cache::result<cache::acquire_result> r;
            {
                store_timer t(ctx.store_time);
                r = co_await store.async_acquire(ref, std::move(c), p.lease);
            }
            a = m.on_acquired(r, now());
            break;
        }
        case kind::sleep: {
            net::steady_timer t(w_.ioc);
            t.expires_after(a.delay);
            co_await t.async_wait(use_tuple);
            a = m.on_slept(now());
            break;
        }
        case kind::fetch: {
            auto f = co_await fetch(ctx, a.head);
            fetch_outcome fo;
            fo.failed = bool(f.ec);
            fo.status = fetch_status = f.status;
            if (f.ec) origin_error = f.ec;
            else fo.state = state_from_fetch(ctx, f);
            if (f.too_large) {
                // No validator can be computed: it exists, and only `If-Match: *` or an
                // `If-None-Match` list can pass (I1: never forwarded unjudged).
                w_.stats.untracked_large_bodies.fetch_add(1, std::memory_order_relaxed);
                spdlog::info("{}: representation exceeds max_hash_body; judged as existing without a validator",
                             ctx.target);
            }
            ref.variant = variant_of(ctx, f.content_encoding);
            a = m.on_fetched(fo, now());
            break;
        }
        case kind::store: {
            cache::result<bool> r;
            {
                store_timer t(ctx.store_time);
                r = co_await store.async_store_under_lease(ref, m.token(), a.state);
            }
            a = m.on_stored(r, now());
            break;
        }
        case kind::forward: {
            if (!ctx.companions.empty() && m.forwarded()) {
                std::optional<cache::result<cache::acquire_result>> refused;
                for (const auto& companion : ctx.companions) {
                    cache::condition unconditional;
                    cache::result<cache::acquire_result> r;
                    {
                        store_timer t(ctx.store_time);
                        r = co_await store.async_acquire(companion, std::move(unconditional), p.lease);
                    }
                    if (!r || r->status == cache::acquire_status::busy) {
                        refused = std::move(r);
                        break;
                    }
                    companion_tokens.push_back(r->token);
                }
                if (refused) {
                    // Nothing was forwarded: every lease taken goes back unchanged.
                    resource_state unchanged;
                    auto released = co_await store.async_commit(ref, m.token(), cache::commit_outcome::keep, unchanged);
                    if (!released) spdlog::warn("releasing the lease on {} failed: {}", ctx.key, released.error().message());
                    for (std::size_t i = 0; i < companion_tokens.size(); ++i) {
                        auto c = co_await store.async_commit(ctx.companions[i], companion_tokens[i],
                                                             cache::commit_outcome::keep, unchanged);
                        if (!c) spdlog::warn("releasing the lease on {} failed: {}", ctx.companions[i].key, c.error().message());
                    }
                    if (!*refused) co_await refuse_store_unavailable(ctx, refused->error());
                    else co_await refuse_busy(ctx);
                    co_return;
                }
            }
            if (m.precondition() == outcome::store_error)
                spdlog::warn("store unavailable; on_store_error: fail_open forwards {} {} UNCHECKED", ctx.method_name,
                             ctx.target);
            if (a.strip_conditionals) strip_conditionals(msg.base());
            if (dav_if_forward && *dav_if_forward) {
                msg.erase("If");
                if (!(*dav_if_forward)->empty()) msg.set("If", **dav_if_forward);
            }
            ctx.write_deadline = m.write_deadline();
            prepare_origin_request(ctx);
            auto sent = co_await send_to_origin(ctx);
            ctx.write_deadline = protocol_clock::time_point::max();
            origin_answer ans;
            if (!sent) {
                origin_error = sent.error();
                ans.k = ctx.origin_sent ? origin_answer::kind::lost : origin_answer::kind::not_sent;
            } else {
                oc.emplace(std::move(*sent));
                const auto& h = res_->get();
                ans.k = origin_answer::kind::response;
                ans.status = h.result_int();
                ans.retried = ctx.origin_retried;
                if (auto tag = strong_etag(field_view(h, http::field::etag)); !tag.empty())
                    ans.validator = resource_state::present(tag, last_modified_of(h));
            }
            a = m.on_forwarded(ans, now());
            break;
        }
        case kind::refresh: {
            fetch_outcome fo;
            auto b = co_await buffer_response_body(ctx, *oc, body, ctx.rt->cfg.limits.max_body_bytes,
                                                   ctx.buffered_bytes);
            if (b == buffered::failed) {
                fo.write_response_failed = true;
                origin_error = make_error_code(http::error::partial_message);
            } else {
                body_buffered = b == buffered::complete;
                if (body_buffered && res_->keep_alive()) (*oc).keep();
                if (body_buffered) {
                    auto f = co_await fetch(ctx, false);
                    fo.failed = bool(f.ec);
                    if (!f.ec) fo.state = state_from_fetch(ctx, f);
                    ref.variant = variant_of(ctx, f.content_encoding);
                } else {
                    fo.failed = true;   // too large to hold: the new validator stays unknown
                }
            }
            a = m.on_refreshed(fo, now());
            break;
        }
        case kind::commit: {
            cache::result<bool> r;
            {
                store_timer t(ctx.store_time);
                r = co_await store.async_commit(ref, m.token(), a.outcome, a.state, a.hold);
            }
            if (!r) spdlog::warn("commit of {} failed: {}", ctx.key, r.error().message());
            w_.snapshots.forget(ctx.key);   // its reads would find the generation moved: ask again
            for (const auto& c : ctx.companions) w_.snapshots.forget(c.key);
            // Whatever the write did to its companions is unknown, unless it was not applied. The
            // target's commit first: until theirs, each companion is still leased, so nothing can
            // record or pass a precondition on it in between (no atomicity across keys needed,
            // which Redis Cluster could not give for keys in other slots).
            for (std::size_t i = 0; i < companion_tokens.size(); ++i) {
                auto o = a.outcome == cache::commit_outcome::keep ? a.outcome : cache::commit_outcome::unknown;
                resource_state none;
                cache::result<bool> c;
                {
                    store_timer t(ctx.store_time);
                    c = co_await store.async_commit(ctx.companions[i], companion_tokens[i], o, none, a.hold);
                }
                if (!c) {
                    spdlog::warn("commit of {} failed: {}", ctx.companions[i].key, c.error().message());
                } else if (o == cache::commit_outcome::unknown) {
                    ++ctx.companions_invalidated;
                    if (i < ctx.dependents) w_.stats.count_dependent_invalidation(ctx.rt.get(), ctx.route);
                }
            }
            a = m.on_committed(r, now());
            break;
        }
        case kind::respond:
            ctx.precondition = outcome_of(m);
            // Not relayed from the origin: a retry is judged anew, not told the key is in use.
            if (idem && a.reply != reply_kind::relay && a.reply != reply_kind::relay_unchecked)
                co_await forget_idempotent(ctx, *idem);
            switch (a.reply) {
            case reply_kind::relay:
            case reply_kind::relay_unchecked: {
                auto& res = res_->get();
                // Clients of a hash route only ever see the proxy's validators (SPEC §5.4).
                bool origin_tag_is_ours = ctx.route->etag == etag_mode::origin ||
                    (ctx.route->etag == etag_mode::auto_ && !strong_etag(field_view(res, http::field::etag)).empty());
                if (!origin_tag_is_ours) res.erase(http::field::etag);
                if (!a.etag.empty()) res.set(http::field::etag, a.etag);
                bool read_ahead = false;   // body bytes read to be stored for an idempotent retry
                if (idem && idem->active)
                    read_ahead = co_await record_idempotent(ctx, *idem, *oc, body, body_buffered,
                                                            a.reply == reply_kind::relay);
                if (body_buffered) res.content_length(body.size());
                if (!body_buffered && !read_ahead) body.clear();
                auto& prefix = body_buffered || read_ahead ? body : no_prefix_;
                co_await relay_response(ctx, *oc, prefix);
                break;
            }
            case reply_kind::reject:
                if (ctx.route->enforce == config::enforce_mode::report && !p.invalidate_only) {
                    auto would = a.verdict == cache::verdict::exists ? outcome::would_reject_exists
                                                                     : outcome::would_reject_stale;
                    co_await forward_despite(ctx, would, a.current);
                    co_return;
                }
                co_await reject(ctx, a.verdict, a.current);
                break;
            case reply_kind::also_failed: {
                // RFC 4918 §10.4.1: a false If header is 412, whatever the route's reject_status.
                problem p{412, "if-header-failed", "Precondition failed: WebDAV If header",
                          "no list of the If header matches the resource's current state", {}, {}, 0};
                if (a.current.state == resource_state::kind::present && !a.current.etag.empty())
                    p.current_etag = a.current.etag;
                pending_ = std::move(p);
                co_await respond(ctx);
                break;
            }
            case reply_kind::busy:
                if (ctx.route->enforce == config::enforce_mode::report && !p.invalidate_only) {
                    resource_state unknown;
                    co_await forward_despite(ctx, outcome::would_reject_busy, unknown);
                    co_return;
                }
                co_await refuse_busy(ctx);
                break;
            case reply_kind::store_unavailable:
                co_await refuse_store_unavailable(ctx, a.store_error);
                break;
            case reply_kind::lease_lost:
                pending_ = problem{503, "lease-lost", "Write lease lost",
                                   "the write lease expired while revalidating; retry", {}, {}, 1};
                co_await respond(ctx);
                break;
            case reply_kind::lease_too_short:
                pending_ = problem{503, "lease-too-short", "Write lease too short",
                                   "not enough of the write lease remains to forward safely; retry", {}, {}, 1};
                co_await respond(ctx);
                break;
            case reply_kind::revalidation_failed:
                pending_ = problem{502, "revalidation-failed", "Bad gateway",
                                   "the origin answered " + std::to_string(fetch_status) +
                                       " to the revalidation request", {}, {}, 0};
                co_await respond(ctx);
                break;
            case reply_kind::origin_failed:
                if (origin_error == http::error::partial_message) {
                    pending_ = problem{502, "bad-origin-response", "Bad gateway",
                                       "the origin's response ended early", {}, {}, 0};
                    co_await respond(ctx);
                } else {
                    co_await fail_origin(ctx, origin_error);
                }
                break;
            }
            ctx.precondition = outcome_of(m);
            co_return;
        }
    }
}

}  // namespace ifm::proxy

// Idempotent retries on judged writes (SPEC §9, README "Idempotent retries"): the session part.
// The record of (resource, Idempotency-Key) is reserved before the write machine runs, and
// completed with the origin's response only when the write is known to be applied (2xx except
// 202); any other outcome forgets it, so that a retry is judged like any write (I1, I2 hold: a
// replay never forwards anything and never takes a lease, and nothing is replayed as success
// that was not one).
#include "proxy/session.hpp"

#include "cache/memory_store.hpp"
#include "proxy/http_util.hpp"
#include "proxy/idempotency.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

namespace ifm::proxy {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string field_or_empty(const header_fields& f, http::field name) {
    auto it = f.find(name);
    return it == f.end() ? std::string{} : std::string(it->value());
}

std::string new_owner() {
    thread_local auto rng = cache::detail::make_token_rng();
    return cache::detail::make_lease_token(rng);
}

}  // namespace

net::awaitable<bool> client_session::begin_idempotent(request_context& ctx, idempotent_write& idem) {
    const auto& route = *ctx.route;
    auto& msg = req_->get();
    if (!route.idempotency.enabled || msg.count("Idempotency-Key") == 0) co_return true;
    std::optional<std::string> key;
    if (msg.count("Idempotency-Key") == 1) key = parse_idempotency_key(msg["Idempotency-Key"]);
    if (!key) {
        ctx.precondition = outcome::malformed;
        pending_ = problem{400, "malformed-idempotency-key", "Malformed Idempotency-Key",
                           "Idempotency-Key must be one quoted Structured Field string of 1 to " +
                               std::to_string(max_idempotency_key) + " printable ASCII characters", {}, {}, 0};
        co_await respond(ctx);
        co_return false;
    }

    // The body is part of the fingerprint: read whole into buffer_ before anything is judged, so
    // that the forward sends it from there as one piece (exchange()).
    const auto& limits = ctx.rt->cfg.limits;
    std::size_t need = 0;
    if (!req_->is_done()) {
        auto len = req_->content_length();
        if (!len || *len > limits.max_hash_body) {
            pending_ = problem{len ? 413u : 411u, "idempotency-body-unsupported",
                               len ? "Body too large for an idempotent write" : "Length required",
                               len ? "a write with Idempotency-Key may carry at most limits.max_hash_body (" +
                                         std::to_string(limits.max_hash_body) + " bytes)"
                                   : "a write with Idempotency-Key needs a Content-Length (its body is fingerprinted)",
                               {}, {}, 0};
            co_await respond(ctx);
            co_return false;
        }
        need = static_cast<std::size_t>(*len);
        if (need > buffer_.max_size()) {
            idem.normal_buffer = buffer_.max_size();
            beast::flat_buffer bigger(need + idem.normal_buffer);
            auto n = net::buffer_copy(bigger.prepare(buffer_.size()), buffer_.data());
            bigger.commit(n);
            buffer_ = std::move(bigger);
        }
        if (ctx.expect_continue && buffer_.size() < need) {
            static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
            client_.expires_after(limits.body_timeout);
            auto [cec, cn] = co_await net::async_write(client_, net::buffer(cont), use_tuple);
            if (cec) {
                ctx.client_keep_alive = false;
                co_return false;
            }
            ctx.expect_continue = false;
        }
        while (buffer_.size() < need) {
            client_.expires_after(limits.body_timeout);
            auto room = buffer_.prepare(need - buffer_.size());
            auto [ec, n] = co_await client_.async_read_some(room, use_tuple);
            buffer_.commit(n);
            if (ec) {
                // Nothing judged, nothing forwarded: the client is gone or too slow.
                ctx.client_keep_alive = false;
                ctx.status = 400;
                co_return false;
            }
        }
    }
    std::string_view body(static_cast<const char*>(buffer_.data().data()), need);
    auto body_hash = sha256_hex(body);
    auto im = field_or_empty(msg, http::field::if_match), inm = field_or_empty(msg, http::field::if_none_match);
    auto ius = field_or_empty(msg, http::field::if_unmodified_since);
    auto ims = field_or_empty(msg, http::field::if_modified_since);
    // The credentials are part of the request: another client's retry with the same key is a
    // mismatch (422), never a replay of someone else's response.
    auto auth = sha256_hex(field_or_empty(msg, http::field::authorization));
    auto target = ctx.key + "\n" + auth;
    auto fp = request_fingerprint({ctx.method_name, target, body_hash, im, inm, ius, ims});

    idem.key = std::move(*key);
    idem.owner = new_owner();
    cache::result<cache::idem_result> r;
    {
        // The record outlives the write (its busy wait, then its lease); a proxy that dies
        // meanwhile leaves it to expire, and the retry is then judged normally.
        auto in_flight = route.write_lease + route.busy_wait;
        auto k = idem.key, o = idem.owner, res = ctx.key;
        store_timer t(ctx.store_time);
        r = co_await w_.store->async_idem_begin(std::move(res), std::move(k), std::move(fp), std::move(o), in_flight);
    }
    if (!r) {
        co_await refuse_store_unavailable(ctx, r.error());
        co_return false;
    }
    switch (r->status) {
    case cache::idem_status::reserved:
        idem.active = true;
        co_return true;
    case cache::idem_status::in_flight:
        ctx.precondition = outcome::idempotency_in_flight;
        pending_ = problem{409, "idempotency-key-in-use", "Idempotency-Key in use",
                           "a request with this Idempotency-Key is still being processed; retry later", {}, {}, 1};
        co_await respond(ctx);
        co_return false;
    case cache::idem_status::mismatch:
        ctx.precondition = outcome::idempotency_mismatch;
        pending_ = problem{422, "idempotency-key-reused", "Idempotency-Key reused",
                           "this Idempotency-Key was used with a different request (method, target, body, "
                           "preconditions or credentials)", {}, {}, 0};
        co_await respond(ctx);
        co_return false;
    case cache::idem_status::completed:
        break;
    }
    auto stored = decode_response(r->response);
    if (!stored) {
        spdlog::warn("{}: unreadable idempotency record for key {}: judged as a new write", ctx.target, idem.key);
        co_return true;   // not reserved: the write runs unrecorded
    }
    // The replay: nothing forwarded, no lease taken. The body was read; the connection stays usable.
    ctx.precondition = outcome::replayed;
    co_await discard_body(ctx);
    response_message<http::string_body> res{static_cast<http::status>(stored->status), 11};
    if (!stored->etag.empty()) res.set(http::field::etag, stored->etag);
    if (!stored->location.empty()) res.set(http::field::location, stored->location);
    if (!stored->content_type.empty() && stored->body_stored) res.set(http::field::content_type, stored->content_type);
    res.set(replay_header, "true");
    res.body() = stored->body_stored ? std::move(stored->body) : std::string{};
    res.prepare_payload();
    ctx.client_keep_alive = ctx.client_keep_alive && ctx.body_read && !ctx.framing_error;
    prepare_client_response(ctx, res.base());
    ctx.status = res.result_int();
    ctx.bytes_sent = res.body().size();
    client_.expires_after(limits.body_timeout);
    auto [ec, n] = co_await http::async_write(client_, res, use_tuple);
    if (ec) ctx.client_keep_alive = false;
    co_return false;
}

net::awaitable<bool> client_session::record_idempotent(request_context& ctx, idempotent_write& idem, pooled_connection& oc,
                                                       std::string& body, bool& body_buffered, bool relayable) {
    const auto& cfg = ctx.route->idempotency;
    auto& res = res_->get();
    unsigned status = res.result_int();
    if (!relayable || status < 200 || status >= 300 || status == 202) {
        co_await forget_idempotent(ctx, idem);
        co_return false;
    }
    bool prefix = false;
    if (!body_buffered) {
        auto b = co_await buffer_response_body(ctx, oc, body, cfg.max_response_bytes, ctx.buffered_bytes);
        if (b == buffered::failed) {
            co_await forget_idempotent(ctx, idem);   // the response broke off: nothing to replay
            co_return !body.empty();
        }
        body_buffered = b == buffered::complete;
        prefix = !body_buffered && !body.empty();
    }
    stored_response s;
    s.status = status;
    s.etag = field_or_empty(res, http::field::etag);
    s.location = field_or_empty(res, http::field::location);
    s.content_type = field_or_empty(res, http::field::content_type);
    s.body_stored = body_buffered && body.size() <= cfg.max_response_bytes;
    if (s.body_stored) s.body = body;
    auto encoded = encode_response(s);
    cache::result<bool> r;
    {
        auto res_key = ctx.key, k = idem.key, o = idem.owner;
        store_timer t(ctx.store_time);
        r = co_await w_.store->async_idem_complete(std::move(res_key), std::move(k), std::move(o), std::move(encoded),
                                                   cfg.ttl);
    }
    if (!r) spdlog::warn("{}: storing the response for Idempotency-Key {} failed: {}", ctx.target, idem.key,
                         r.error().message());
    idem.active = false;
    co_return prefix;
}

net::awaitable<void> client_session::forget_idempotent(request_context& ctx, idempotent_write& idem) {
    if (!idem.active) co_return;
    idem.active = false;
    cache::result<bool> r;
    {
        auto res_key = ctx.key, k = idem.key, o = idem.owner;
        store_timer t(ctx.store_time);
        r = co_await w_.store->async_idem_forget(std::move(res_key), std::move(k), std::move(o));
    }
    // Left behind, it expires after the write's lease: retries get 409 until then.
    if (!r) spdlog::warn("{}: forgetting Idempotency-Key {} failed: {}", ctx.target, idem.key, r.error().message());
}

void client_session::end_idempotent(idempotent_write& idem) {
    if (idem.normal_buffer == 0 || buffer_.size() > idem.normal_buffer) return;
    beast::flat_buffer normal(idem.normal_buffer);
    auto n = net::buffer_copy(normal.prepare(buffer_.size()), buffer_.data());
    normal.commit(n);
    buffer_ = std::move(normal);
    idem.normal_buffer = 0;
}

}  // namespace ifm::proxy

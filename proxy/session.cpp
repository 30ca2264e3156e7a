#include "proxy/session.hpp"

#include "proxy/dependencies.hpp"

#include "proxy/access_log.hpp"
#include "proxy/drained_read.hpp"
#include "proxy/hasher.hpp"
#include "proxy/http_util.hpp"
#include "proxy/request_gate.hpp"
#include "proxy/request_id.hpp"
#include "proxy/resource_key.hpp"
#include "proxy/response_spool.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

#include <array>

#include <sys/socket.h>

namespace ifm::proxy {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
// Request bodies up to this size are read and dropped after a rejection so the connection can
// be kept; larger ones close it.
constexpr std::size_t max_discard_bytes = 64 * 1024;
// 1xx responses accepted before the final response of one request.
constexpr int max_interim_responses = 8;
// Bytes of a streamed response held in memory for a client that falls behind, before the spool
// file takes the rest: four relay buffers, so that a client that keeps up does not make it touch
// the file (with one, the origin's side often ran a buffer ahead and every 16 KiB went through
// pwrite, pread and ftruncate: 1 MiB GETs at 0.6x; with four, 0.86x, no file I/O).
constexpr std::size_t spool_memory_bytes = 64 * 1024;
log_limiter spool_full_log(std::chrono::seconds(10));

bool has_response_body(unsigned status, bool head) {
    return !head && status >= 200 && status != 204 && status != 304;
}

std::string header_string(const header_fields& f, http::field name) {
    auto it = f.find(name);
    return it == f.end() ? std::string{} : std::string(it->value());
}

bool is_timeout(const boost::system::error_code& ec) {
    return ec == beast::error::timeout || ec == make_error_code(origin_errc::connect_timeout);
}

// A Destination header (RFC 4918 §10.3): absolute URI or absolute path -> (normalized path, host);
// nullopt when malformed or ambiguously spelled.
std::optional<std::pair<std::string, std::string>> destination_of(std::string_view value, std::string_view host) {
    std::string_view target = value;
    std::string_view dest_host = host;
    if (auto scheme = value.find("://"); scheme != std::string_view::npos) {
        auto rest = value.substr(scheme + 3);
        auto slash = rest.find('/');
        if (slash == std::string_view::npos || slash == 0) return std::nullopt;
        dest_host = rest.substr(0, slash);
        if (dest_host.find('@') != std::string_view::npos) return std::nullopt;
        target = rest.substr(slash);
    }
    if (!target.starts_with('/') || !ambiguous_path(target).empty()) return std::nullopt;
    auto normalized = normalize_target(target, config::query_mode::keep);
    if (!normalized) return std::nullopt;
    return std::pair{std::move(*normalized), std::string(dest_host)};
}

problem origin_problem(boost::system::error_code ec) {
    if (ec == make_error_code(origin_errc::pool_exhausted))
        return {503, "origin-busy", "Origin connection limit reached", ec.message(), {}, {}, 1};
    if (is_timeout(ec))
        return {504, "origin-timeout", "Origin timed out", ec.message(), {}, {}, 0};
    if (ec.category() == make_error_code(http::error::end_of_stream).category() && ec != http::error::end_of_stream)
        return {502, "bad-origin-response", "Bad gateway", "malformed response from the origin: " + ec.message(), {}, {}, 0};
    return {502, "origin-unreachable", "Bad gateway", ec.message(), {}, {}, 0};
}

// Chunk extensions are neither validated nor bounded by Beast 1.81 (HARDENING.md). One callback
// for every parser (Beast keeps a reference to it): stateless, so sharing it is safe.
std::function<void(std::uint64_t, std::string_view, boost::system::error_code&)> chunk_header_check =
    [](std::uint64_t size, std::string_view ext, boost::system::error_code& ec) { check_chunk_header(size, ext, ec); };

// What a send_now did not send of `out`, written asynchronously (under the stream's expiry,
// set by the caller). A coroutine of its own, so that the usual whole send costs no frame.
net::awaitable<boost::system::error_code> write_rest(tcp_or_tls_stream& s, std::array<net::const_buffer, 2> out,
                                                    std::size_t sent) {
    beast::buffers_suffix<std::array<net::const_buffer, 2>> left(out);
    left.consume(sent);
    auto [ec, n] = co_await net::async_write(s, left, use_tuple);
    co_return ec;
}

// A keep-alive connection idle this long leaves its session and waits parked (worker::park).
constexpr auto park_after = std::chrono::seconds(1);

net::awaitable<void> run_session(worker& w, tcp::socket socket, std::uint64_t served,
                                 std::shared_ptr<boost::asio::ssl::context> tls) {
    client_session s(w, std::move(socket), served, std::move(tls));
    co_await s.run();
}

client_stream make_client_stream(tcp::socket socket, boost::asio::ssl::context* tls) {
    if (tls) return client_stream(std::move(socket), *tls);
    return client_stream(std::move(socket));
}

void report_exception(std::exception_ptr e) {
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        spdlog::error("session ended by an exception (a bug): {}", ex.what());
    }
}

}  // namespace

void start_session(worker& w, tcp::socket socket) {
    net::co_spawn(w.ioc, run_session(w, std::move(socket), 0, w.rt->listen_tls), report_exception);
}

void resume_session(worker& w, tcp::socket socket, std::uint64_t served) {
    // Only plain connections are parked (see wait_for_tls_request).
    net::co_spawn(w.ioc, run_session(w, std::move(socket), served, nullptr), report_exception);
}

client_session::client_session(worker& w, tcp::socket socket, std::uint64_t served,
                               std::shared_ptr<boost::asio::ssl::context> tls)
    : w_(w), tls_(std::move(tls)), client_(make_client_stream(std::move(socket), tls_.get())),
      buffer_(w.rt->cfg.limits.max_header_bytes + 16 * 1024), served_(served) {
    boost::system::error_code ec;
    auto ep = client_.socket().remote_endpoint(ec);
    peer_ = ec ? "-" : ep.address().to_string();
    if (!ec) peer_address_ = ep.address();
    client_.socket().set_option(tcp::no_delay(true), ec);
    client_.socket().non_blocking(true, ec);   // wait_for_request() reads only what is there
    w_.sessions.insert(this);
    if (served == 0) {
        w_.stats.client_connections.fetch_add(1, std::memory_order_relaxed);
        w_.stats.client_connections_total.fetch_add(1, std::memory_order_relaxed);
    }
}

client_session::~client_session() {
    w_.remove_waiting(wait_node_);
    w_.sessions.erase(this);
    if (!parked_) w_.stats.client_connections.fetch_sub(1, std::memory_order_relaxed);
}

char* client_session::relay_buffer() {
    if (!relay_buf_) {
        if (!w_.spare_buffers.empty()) {
            relay_buf_ = std::move(w_.spare_buffers.back());
            w_.spare_buffers.pop_back();
        } else {
            relay_buf_ = std::make_unique_for_overwrite<char[]>(relay_buffer_size);
        }
    }
    return relay_buf_.get();
}

void client_session::close_if_idle() {
    if (idle_) {
        boost::system::error_code ec;
        client_.socket().shutdown(tcp::socket::shutdown_both, ec);
        client_.cancel();
    }
}

net::awaitable<bool> client_session::handshake() {
    client_.expires_after(w_.rt->cfg.limits.header_timeout);
    auto [ec] = co_await client_.tls()->async_handshake(boost::asio::ssl::stream_base::server, use_tuple);
    if (!ec) co_return true;
    // A connection closed before its first byte (a TCP port probe) is not a failed handshake.
    if (ec != net::error::eof && ec != boost::asio::ssl::error::stream_truncated)
        w_.stats.tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("{}: TLS handshake failed: {}", peer_, ec.message());
    co_return false;
}

net::awaitable<void> client_session::run() {
    if (client_.tls() && !co_await handshake()) {
        client_.close();
        co_return;
    }
    while (!w_.draining) {
        auto n = co_await wait_for_request();
        if (n == next::parked) {
            // The socket outlives the session, still counted as open (see ~client_session).
            parked_ = true;
            w_.park(client_.release_socket(), served_, idle_deadline_);
            co_return;
        }
        if (n == next::closed) break;
        if (!co_await serve_one()) break;
        // Between requests we hold no per-request memory: an idle connection costs only its
        // socket and coroutine frame (and the buffer, if a pipelined request is in it).
        if (relay_buf_ && w_.spare_buffers.size() < worker::max_spare_buffers)
            w_.spare_buffers.push_back(std::move(relay_buf_));
        relay_buf_.reset();
        req_.reset();
        res_.reset();
        if (buffer_.size() == 0) buffer_.shrink_to_fit();
    }
    if (auto* t = client_.tls()) {
        // close_notify, then the TCP close; the client's own close_notify is waited for briefly
        // (a client that never answers costs this session a second, nothing else).
        client_.expires_after(std::chrono::seconds(1));
        co_await t->async_shutdown(use_tuple);
    }
    boost::system::error_code ec;
    client_.socket().shutdown(tcp::socket::shutdown_send, ec);
    client_.close();
}

net::awaitable<client_session::next> client_session::wait_for_request() {
    // The limits are read through w_.rt each time, never kept across the wait: a reload (SIGHUP)
    // replaces the worker's runtime meanwhile, and nothing else holds the old one alive.
    // The first request's header is due within header_timeout of the accept (nginx's
    // client_header_timeout): a connection that never sends a byte must not hold its slot for
    // idle_timeout. A keep-alive connection may idle between requests, then the header is due
    // within header_timeout of its first byte.
    const auto first_deadline = std::chrono::steady_clock::now() + w_.rt->cfg.limits.header_timeout;
    if (buffer_.size() > 0) {   // a pipelined request is already here
        header_deadline_ = first_deadline;
        co_return next::request;
    }
    // A kept-alive connection still idle after park_after leaves its session (and its read
    // buffer): a parked connection holds only its socket (worker::park).
    const auto now = std::chrono::steady_clock::now();
    const auto deadline = served_ == 0 ? first_deadline : now + w_.rt->cfg.limits.idle_timeout;
    if (client_.tls()) co_return co_await wait_for_tls_request(deadline);
    const auto park_at = served_ == 0 ? deadline : std::min(deadline, now + park_after);
    idle_ = true;
    auto [readable, n] = co_await read_some_until(park_at);
    idle_ = false;
    if (w_.draining) co_return next::closed;
    if (n == 0 && !readable) {
        if (park_at == deadline) co_return next::closed;   // idle timeout: nothing to answer
        idle_deadline_ = deadline;
        co_return next::parked;
    }
    if (n == 0) co_return next::closed;   // closed by the client, or a socket error
    net::buffer_copy(buffer_.prepare(n), net::buffer(first_bytes_.data(), n));
    buffer_.commit(n);
    header_deadline_ = served_ == 0 ? first_deadline
                                    : std::chrono::steady_clock::now() + w_.rt->cfg.limits.header_timeout;
    co_return next::request;
}

net::awaitable<client_session::next> client_session::wait_for_tls_request(std::chrono::steady_clock::time_point deadline) {
    idle_ = true;
    client_.expires_at(deadline);
    auto [ec, n] = co_await client_.async_read_some(buffer_.prepare(2048), use_tuple);
    idle_ = false;
    if (ec || w_.draining) co_return next::closed;   // closed, timed out, or drained while idle
    buffer_.commit(n);
    header_deadline_ = std::chrono::steady_clock::now() + w_.rt->cfg.limits.header_timeout;
    if (served_ == 0) header_deadline_ = std::min(header_deadline_, deadline);
    co_return next::request;
}

// A read (not an async_wait: Asio re-arms epoll with epoll_ctl for every wait, while a read
// costs at most one recv that finds the socket drained before it is queued for the next edge),
// into first_bytes_ (part of the session, no allocation while idle: a 2 KiB buffer_ here cost
// 0.7 KiB more per parked connection in bench/run's idle part, heap pages kept by
// fragmentation). The deadline is the worker's: one timer for every waiting session
// (worker::add_waiting) cancels the read. `readable` false: the deadline came first; bytes read
// are kept either way, and none with the read first means EOF or an error (Asio retries a read
// that would block).
net::awaitable<std::tuple<bool, std::size_t>> client_session::read_some_until(
    std::chrono::steady_clock::time_point deadline) {
    client_.expires_never();
    wait_node_.deadline = deadline;
    w_.add_waiting(wait_node_);
    auto [ec, n] = co_await client_.socket().async_read_some(
        drained_read(net::buffer(first_bytes_)), net::bind_cancellation_slot(wait_node_.cancel.slot(), use_tuple));
    const bool expired = wait_node_.expired;
    w_.remove_waiting(wait_node_);
    // Bytes win over a deadline reached as they came (the read completed first).
    if (!ec) co_return std::tuple<bool, std::size_t>{true, n};
    co_return std::tuple<bool, std::size_t>{!(expired && ec == net::error::operation_aborted), 0};
}

net::awaitable<void> client_session::respond(request_context& ctx) {
    auto p = std::move(pending_);
    if (p.instance.empty()) p.instance = ctx.target;
    if (ctx.request_id.empty()) ctx.request_id = generate_request_id();   // the header was unreadable
    if (p.current_etag) ctx.current_etag = p.current_etag;
    w_.stats.count_problem(p.slug);
    if (!ctx.body_read && ctx.client_keep_alive) co_await discard_body(ctx);
    bool keep = ctx.client_keep_alive && !ctx.framing_error && ctx.body_read && !w_.draining;
    ctx.client_keep_alive = keep;
    auto res = make_problem_response(p, 11, keep, ctx.head, ctx.request_id);
    ctx.status = p.status;
    ctx.bytes_sent = ctx.head ? 0 : res.body().size();
    co_await send_whole(res);
}

// A response of the proxy's own, header and body in one send when the socket takes it.
net::awaitable<boost::system::error_code> client_session::send_whole(response_message<http::string_body>& res) {
    std::string head;
    serialize_header(res.base(), head);
    std::array<net::const_buffer, 2> out{net::buffer(head), net::buffer(res.body())};
    if (auto sent = client_.send_now(out); sent < net::buffer_size(out)) {
        client_.expires_after(w_.rt->cfg.limits.body_timeout);
        auto ec = co_await write_rest(client_, out, sent);
        co_return ec;
    }
    co_return boost::system::error_code{};
}

// A response of the proxy's own that is not a problem (OPTIONS / TRACE at Max-Forwards: 0).
net::awaitable<void> client_session::answer_here(request_context& ctx, response_message<http::string_body> res) {
    if (!ctx.body_read && ctx.client_keep_alive) co_await discard_body(ctx);
    ctx.client_keep_alive = ctx.client_keep_alive && ctx.body_read && !w_.draining;
    res.content_length(res.body().size());
    prepare_client_response(ctx, res.base());
    ctx.status = res.result_int();
    ctx.bytes_sent = res.body().size();
    auto ec = co_await send_whole(res);
    if (ec) ctx.client_keep_alive = false;
}

// After a rejection the body was never read. Small bodies are read and dropped so that the
// connection stays usable; otherwise the connection is closed after the response.
net::awaitable<void> client_session::discard_body(request_context& ctx) {
    if (!req_ || !req_->is_header_done()) co_return;
    if (req_->is_done()) {
        ctx.body_read = true;
        co_return;
    }
    auto len = req_->content_length();
    if (ctx.expect_continue || !len || *len > max_discard_bytes) co_return;
    auto& body = req_->get().body();
    while (!req_->is_done()) {
        body.data = relay_buffer();
        body.size = relay_buffer_size;
        client_.expires_after(w_.rt->cfg.limits.body_timeout);
        auto [ec, n] = co_await http::async_read(client_, buffer_, *req_, use_tuple);
        if (ec && ec != http::error::need_buffer) co_return;
    }
    ctx.body_read = true;
}

// One read of request header bytes, due at header_deadline_. The deadline is a timer raced
// against the read rather than the stream's expiry, which would close the socket: a client that
// began a header and did not finish it in time is owed a 408 (as HAProxy sends), not a reset.
net::awaitable<std::tuple<boost::system::error_code, std::size_t>> client_session::read_header_bytes(std::size_t room) {
    client_.expires_never();
    net::steady_timer timer(client_.get_executor(), header_deadline_);
    auto group = net::experimental::make_parallel_group(
        client_.async_read_some(buffer_.prepare(room), net::deferred),   // through TLS, if any
        timer.async_wait(net::deferred));
    auto [order, rec, rn, tec] = co_await group.async_wait(net::experimental::wait_for_one(), net::use_awaitable);
    // Bytes that arrived just as the timer fired are kept (the caller commits `rn`).
    if (order[0] == 1) co_return std::tuple{boost::system::error_code(beast::error::timeout), rn};
    co_return std::tuple{rec, rn};
}

// GCC 12 takes Asio's frame allocator (aligned_alloc, freed by its own operator delete) for a
// mismatched new/delete once this coroutine's frame passes some size: a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
net::awaitable<bool> client_session::serve_one() {
    const auto& limits = w_.rt->cfg.limits;
    request_context ctx;
    ctx.rt = w_.rt;
    ctx.pools = w_.pools;
    ctx.start = std::chrono::steady_clock::now();

    req_.emplace();
    configure_request_parser(*req_, limits);   // before the header is read: Beast ignores later limits
    req_->on_chunk_header(chunk_header_check);

    // The whole header block is buffered and screened before Beast parses it: once parsed,
    // obs-fold and whitespace around framing values are invisible (request_gate.hpp).
    boost::system::error_code ec;
    head_scanner scan;
    for (;;) {
        std::string_view raw(static_cast<const char*>(buffer_.data().data()), buffer_.size());
        auto st = scan.scan(raw);
        if (st == head_scanner::state::complete) break;
        if (st == head_scanner::state::refused) {
            ec = http::error::bad_field;
            break;
        }
        if (raw.size() > limits.max_header_bytes) {
            ec = http::error::header_limit;
            break;
        }
        auto [rec, rn] = co_await read_header_bytes(4096);
        buffer_.commit(rn);
        if (rec) {
            ec = rec;
            break;
        }
    }
    if (!ec) {
        // The whole header is buffered: parsed here, as gate_request() (the request fuzzer's
        // entry) parses it, not through http::async_read_header, whose composed operation and
        // posted completion cost about 4 % of a GET's instructions for no read at all.
        std::size_t used = 0;
        ec = feed_header(*req_, {static_cast<const char*>(buffer_.data().data()), buffer_.size()}, used);
        buffer_.consume(used);
        if (ec == http::error::need_more) {
            // Beast wants more than the screen saw (never seen): let it read, as before.
            client_.expires_at(header_deadline_);
            auto [hec, hn] = co_await http::async_read_header(client_, buffer_, *req_, use_tuple);
            ec = hec;
        }
    }
    if (ec) {
        ctx.framing_error = true;
        ctx.client_keep_alive = false;
        if (ec == http::error::end_of_stream || ec == net::error::eof ||
            ec == net::error::connection_reset)
            co_return false;
        if (req_->is_header_done()) ctx.target = std::string(req_->get().target());
        pending_ = read_error_problem(ec);
        if (!scan.reason().empty()) pending_.detail = scan.reason();
        co_await respond(ctx);
        access_entry e;
        e.client = peer_;
        e.method = "-";
        e.target = ctx.target;
        e.route = e.upstream = "-";
        e.status = ctx.status;
        e.bytes = ctx.bytes_sent;
        e.duration = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - ctx.start);
        e.request_id = ctx.request_id;
        log_access(e);
        w_.stats.count_response(ctx.status);
        co_return false;
    }
    ++served_;

    auto& msg = req_->get();
    ctx.method = msg.method();
    ctx.method_name = std::string(msg.method_string());
    ctx.head = ctx.method == http::verb::head;
    ctx.client_version = msg.version();
    ctx.target = std::string(msg.target());
    ctx.client_keep_alive = msg.keep_alive() &&
        (limits.max_requests_per_connection == 0 || served_ < limits.max_requests_per_connection);
    ctx.body_read = req_->is_done();
    ctx.host = header_string(msg, http::field::host);
    // Kept when the client's is usable, else ours; either way the origin sees the same id.
    if (auto rid = msg.find("X-Request-Id"); rid != msg.end() && msg.count("X-Request-Id") == 1 &&
                                             valid_request_id(rid->value()))
        ctx.request_id = std::string(rid->value());
    else
        ctx.request_id = generate_request_id();
    if (auto tp = msg.find("traceparent"); tp != msg.end()) ctx.trace_id = std::string(trace_id_of(tp->value()));
    ctx.if_match = joined_field(msg, http::field::if_match);
    ctx.if_none_match = joined_field(msg, http::field::if_none_match);

    auto finish = [&] {
        auto elapsed = std::chrono::steady_clock::now() - ctx.start;
        w_.stats.count_request(ctx.rt.get(), ctx.route, ctx.method, ctx.status, elapsed);
        if (ctx.precondition != outcome::not_judged) w_.stats.count_outcome(ctx.rt.get(), ctx.route, ctx.precondition);
        auto opt = [](const std::optional<std::string>& v) {
            return v ? std::optional<std::string_view>(*v) : std::nullopt;
        };
        log_access({.client = peer_, .method = ctx.method_name, .target = ctx.target,
                    .route = ctx.route ? std::string_view(ctx.route->name) : "-",
                    .upstream = ctx.pool ? std::string_view(ctx.pool->config().name) : "-",
                    .status = ctx.status, .bytes = ctx.bytes_sent,
                    .duration = std::chrono::duration_cast<std::chrono::microseconds>(elapsed),
                    .precondition = ctx.precondition, .request_id = ctx.request_id, .trace_id = ctx.trace_id,
                    .key = ctx.key, .if_match = opt(ctx.if_match), .if_none_match = opt(ctx.if_none_match),
                    .current_etag = opt(ctx.current_etag), .store_time = ctx.store_time,
                    .origin_time = ctx.origin_time, .invalidated = ctx.companions_invalidated});
    };

    // Field count, framing, target length, absolute-form and target syntax (request_gate.hpp):
    // any refusal closes the connection, since the framing of what follows cannot be trusted.
    auto checked = check_request(msg.base(), limits);
    if (checked.refusal) {
        ctx.framing_error = true;
        pending_ = std::move(*checked.refusal);
        co_await respond(ctx);
        finish();
        co_return false;
    }
    ctx.target = std::string(msg.target());   // origin-form now (or "*")
    // Max-Forwards (RFC 9110 §7.6.2) on OPTIONS and TRACE: 0 makes the proxy the final
    // recipient, which answers itself; otherwise one less goes on.
    if (ctx.method == http::verb::options || ctx.method == http::verb::trace) {
        if (auto mf = max_forwards_of(msg)) {
            if (*mf == 0) {
                response_message<http::string_body> own{http::status::ok, 11};
                if (ctx.method == http::verb::trace) {
                    own.set(http::field::content_type, "message/http");
                    own.body() = trace_reflection(msg.base());
                }
                co_await answer_here(ctx, std::move(own));
                finish();
                co_return ctx.client_keep_alive;
            }
            msg.set(http::field::max_forwards, std::to_string(*mf - 1));
        }
    }
    std::optional<std::string> normalized = std::move(checked.normalized);
    std::string_view path = *normalized;
    path = path.substr(0, path.find('?'));
    int route_index = ctx.rt->match(ctx.host, path, ctx.method_name);
    if (route_index < 0) {
        pending_ = problem{404, "no-route", "No route", "no route matches this request", {}, {}, 0};
        co_await respond(ctx);
        finish();
        co_return ctx.client_keep_alive;
    }
    ctx.route = &ctx.rt->cfg.routes[route_index];
    ctx.pool = (*ctx.pools)[ctx.rt->route_upstream[route_index]].get();

    ctx.expect_continue = iequals(header_string(msg, http::field::expect), "100-continue");
    if (ctx.expect_continue) {
        msg.erase(http::field::expect);
    } else if (msg.count(http::field::expect)) {
        pending_ = problem{417, "expectation-failed", "Expectation failed",
                               "only Expect: 100-continue is supported", {}, {}, 0};
        co_await respond(ctx);
        finish();
        co_return ctx.client_keep_alive;
    }

    if (ctx.method == http::verb::get && ctx.client_version == 11 && req_->is_done() &&
        is_websocket_upgrade(msg.base()))
        ctx.upgrade = std::string(msg[http::field::upgrade]);

    const auto& route = *ctx.route;
    const bool safe = ctx.method == http::verb::get || ctx.method == http::verb::head ||
                      ctx.method == http::verb::options || ctx.method == http::verb::trace;
    if (!safe) {
        // Judge what the origin will act on: a spelling the origin may resolve to another path
        // than the one the route and key were chosen by could reach a resource unjudged.
        if (auto why = ambiguous_path(ctx.target); !why.empty()) {
            pending_ = problem{400, "ambiguous-target", "Ambiguous request target",
                               "writes are refused on targets with " + std::string(why), {}, {}, 0};
            co_await respond(ctx);
            finish();
            co_return ctx.client_keep_alive;
        }
    }
    // OPTIONS * names no resource; a WebSocket is no representation: neither is tracked.
    const bool untracked = ctx.target == "*" || !ctx.upgrade.empty();
    bool judged = !untracked && route.track &&
        std::find(route.methods.begin(), route.methods.end(), ctx.method_name) != route.methods.end();
    bool read = !untracked && route.track && (ctx.method == http::verb::get || ctx.method == http::verb::head);
    bool unjudged_write = route.track && !safe && !judged;
    if (judged || read || unjudged_write) {
        ctx.key = key_for(ctx, ctx.target, ctx.host);
        for (const auto& name : route.vary) ctx.vary_values.emplace_back(name, joined_field(msg, name).value_or(""));
    }
    ctx.abort_on_client_close = !judged;
    if (judged || unjudged_write) add_dependents(ctx);
    if (judged) {
        co_await serve_write(ctx);
    } else if (read) {
        co_await serve_read(ctx);
    } else if (unjudged_write) {
        // WebDAV COPY/MOVE also change their Destination (RFC 4918 §10.3).
        if (auto d = joined_field(msg, "destination")) {
            auto dest = destination_of(*d, ctx.host);
            if (!dest) {
                pending_ = problem{400, "bad-destination", "Bad Destination header",
                                   "Destination must be an absolute URI or an absolute path without ambiguous segments", {}, {}, 0};
                co_await respond(ctx);
                finish();
                co_return ctx.client_keep_alive;
            }
            add_companion(ctx, dest->first, dest->second);
        }
        co_await serve_unjudged_write(ctx);
    } else {
        prepare_origin_request(ctx);
        co_await forward(ctx);
    }
    finish();
    co_return ctx.client_keep_alive && !w_.draining;
}
#pragma GCC diagnostic pop

void client_session::add_companion(request_context& ctx, std::string_view path, std::string_view host) {
    int i = ctx.rt->match(host, path.substr(0, path.find('?')), ctx.method_name);
    if (i < 0 || !ctx.rt->cfg.routes[i].track) return;
    request_context other;
    other.route = &ctx.rt->cfg.routes[i];
    other.pool = (*ctx.pools)[ctx.rt->route_upstream[i]].get();
    auto key = key_for(other, path, host);
    if (key == ctx.key || std::ranges::any_of(ctx.companions, [&](const auto& c) { return c.key == key; })) return;
    ctx.companions.push_back({std::move(key), ""});
}

void client_session::add_dependents(request_context& ctx) {
    if (ctx.route->dependencies.empty()) return;
    auto path = normalize_target(ctx.target, config::query_mode::ignore);
    if (!path) return;
    for (const auto& p : dependent_paths(ctx.route->dependencies, *path)) add_companion(ctx, p, ctx.host);
    ctx.dependents = ctx.companions.size();
}

void client_session::prepare_origin_request(request_context& ctx) {
    auto& msg = req_->get();
    const auto& cfg = ctx.rt->cfg;
    const auto client_version = msg.version();
    strip_hop_by_hop(msg.base());
    msg.version(11);
    // Our own framing (never the client's Transfer-Encoding): length if known, else chunked.
    if (auto len = req_->content_length()) {
        msg.content_length(*len);
    } else if (req_->chunked()) {
        msg.chunked(true);
    }
    msg.set("X-Request-Id", ctx.request_id);   // the origin logs the id the client sees
    add_forwarding_headers(msg.base(), cfg.headers.forwarded, peer_, ctx.host, ctx.rt->trusted_proxy(peer_address_),
                           client_scheme());
    if (cfg.headers.via) append_via(msg.base(), client_version);
    if (!ctx.pool->config().host_header.empty()) msg.set(http::field::host, ctx.pool->config().host_header);
    // Persistent: HTTP/1.1 with no Connection field left (strip_hop_by_hop removed them all).
    if (!ctx.upgrade.empty()) {
        msg.set(http::field::upgrade, ctx.upgrade);
        msg.set(http::field::connection, "upgrade");
    }
}

// Sends the request (header + streamed body) and reads the response header into res_.
net::awaitable<boost::system::error_code> client_session::exchange(request_context& ctx, pooled_connection& oc) {
    auto& msg = req_->get();
    const auto& up = ctx.pool->config();
    http::request_serializer<http::buffer_body, header_fields> sr{msg};
    auto& body = msg.body();
    const auto& limits = ctx.rt->cfg.limits;
    // The body is read by our own loop and parsed by parse_body_bytes (request_gate.hpp, the code
    // the request fuzzer runs). What came with the header is parsed before anything is sent: a
    // malformed body sent in one piece with its header (a smuggling probe) reaches nobody.
    boost::system::error_code bec;
    std::size_t early = 0;
    bool whole = false;   // sent in one piece: the loop below has nothing to do
    if (!req_->is_done()) {
        body.data = relay_buffer();
        body.size = relay_buffer_size;
        std::size_t used = 0;
        bec = parse_body_bytes(*req_, {static_cast<const char*>(buffer_.data().data()), buffer_.size()}, used);
        buffer_.consume(used);
        if (bec == http::error::need_more || bec == http::error::need_buffer) bec = {};
        early = relay_buffer_size - body.size;
    }
    if (bec) {
        oc.keep();   // nothing was sent on it
    } else {
        ctx.origin_sent = true;   // from here on the origin may act on the request
        oc->stream.expires_at(ctx.deadline(up.request_timeout));
        if (req_->is_done() && (early == 0 || !msg.chunked())) {
            // The whole request is at hand: header and body in one write, our own serialization.
            std::string head;
            serialize_header(msg.base(), head);
            // A prebuffered body (prebuffer_body) is sent from where it was read.
            auto rest = ctx.prebody.empty() ? net::const_buffer(relay_buf_.get(), early) : net::buffer(ctx.prebody);
            std::array<net::const_buffer, 2> out{net::buffer(head), rest};
            if (auto sent = oc->stream.send_now(out); sent < net::buffer_size(out)) {
                auto ec = co_await write_rest(oc->stream, out, sent);
                if (ec) co_return ec;
            }
            whole = true;
        } else if (early == 0) {
            // The body is still to come: the header goes out alone (and 100 Continue may be due).
            auto [ec, n] = co_await http::async_write_header(oc->stream, sr, use_tuple);
            if (ec) co_return ec;
        }
        if (ctx.expect_continue && !req_->is_done() && buffer_.size() == 0 && early == 0) {
            static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
            client_.expires_at(ctx.deadline(limits.body_timeout));
            auto [cec, cn] = co_await net::async_write(client_, net::buffer(cont), use_tuple);
            if (cec) co_return make_error_code(net::error::connection_aborted);
            ctx.continue_sent = true;
        }
    }
    auto body_start = std::chrono::steady_clock::now();
    std::uint64_t received = early;
    while (!bec && !whole) {
        if (early > 0) {
            body.data = relay_buffer();
            body.size = std::exchange(early, 0);
            body.more = !req_->is_done();
        } else if (!req_->is_done()) {
            body.data = relay_buffer();
            body.size = relay_buffer_size;
            // One socket read at a time until the parser has body bytes: what arrived is
            // relayed at once, and body_timeout is the longest gap between two reads.
            for (;;) {
                std::size_t used = 0;
                bec = parse_body_bytes(*req_, {static_cast<const char*>(buffer_.data().data()), buffer_.size()}, used);
                buffer_.consume(used);
                if (bec != http::error::need_more || body.size < relay_buffer_size) break;
                auto room = std::min(buffer_.max_size() - buffer_.size(), relay_buffer_size);
                if (room == 0) {
                    bec = http::error::buffer_overflow;   // a chunk line or trailer that never ends
                    break;
                }
                auto rate_deadline = body_read_deadline(body_start, received, limits, std::chrono::steady_clock::now());
                client_.expires_at(std::min(ctx.deadline(limits.body_timeout), rate_deadline));
                auto [rec, rn] = co_await client_.async_read_some(buffer_.prepare(room), use_tuple);
                if (rec) {
                    bec = rec;
                    break;
                }
                buffer_.commit(rn);
            }
            if (bec == http::error::need_more || bec == http::error::need_buffer) bec = {};
            if (bec) break;
            body.size = relay_buffer_size - body.size;
            received += body.size;
            // Never hand the serializer an empty buffer: it would write a zero-size chunk, the
            // last-chunk marker, in the middle of a chunked body.
            body.data = body.size > 0 ? relay_buffer() : nullptr;
            body.more = !req_->is_done();
        } else {
            body.data = nullptr;
            body.size = 0;
            body.more = false;
        }
        oc->stream.expires_at(ctx.deadline(up.request_timeout));
        auto [wec, wn] = co_await http::async_write(oc->stream, sr, use_tuple);
        if (wec && wec != http::error::need_buffer) co_return wec;
        if (req_->is_done() || sr.is_done()) break;
    }
    if (bec) {
        // The client failed in its body: the origin saw at most an incomplete request, and a
        // connection that carried part of it is dropped with `oc`. A client still there gets
        // 400 / 413 (a read that timed out has closed the socket).
        ctx.framing_error = true;
        ctx.client_keep_alive = false;
        if (bec == http::error::body_limit) co_return make_error_code(http::error::body_limit);
        auto answer = body_error_problem(bec);
        if (answer) {
            pending_ = std::move(*answer);
            co_await respond(ctx);
        }
        co_return make_error_code(net::error::connection_aborted);
    }
    ctx.body_read = true;

    for (int interim = 0;; ++interim) {
        // An origin that sends 1xx responses without end would hold the request forever.
        if (interim == max_interim_responses) co_return make_error_code(http::error::bad_status);
        res_.emplace();
        res_header_.clear();
        res_->on_chunk_header(res_chunk_header_);
        res_->header_limit(static_cast<std::uint32_t>(ctx.rt->cfg.limits.max_header_bytes * 4));
        res_->body_limit(boost::none);
        if (msg.method() == http::verb::head) res_->skip(true);
        auto hec = co_await read_origin_header(ctx, oc, ctx.deadline(up.request_timeout));
        if (hec) co_return hec;
        auto status = res_->get().result_int();
        if (status >= 200) break;
        if (status == 101) {
            // Final for a forwarded Upgrade; else a switch nobody asked for: a broken origin.
            if (!ctx.upgrade.empty()) break;
            co_return make_error_code(http::error::bad_status);
        }
        // Other 1xx (103 Early Hints, 102...) go on to the client, as RFC 9110 §15.2 asks of a
        // proxy, but not to an HTTP/1.0 client (which cannot take them), and not a 100 when the
        // client has had ours (Expect is answered here, never forwarded).
        if (ctx.client_version < 11 || (status == 100 && ctx.continue_sent)) continue;
        auto& interim_header = res_->get().base();
        strip_hop_by_hop(interim_header);
        if (ctx.rt->cfg.headers.via) append_via(interim_header, 11);
        interim_header.version(11);
        std::string head;
        serialize_header(interim_header, head);
        if (status == 100) ctx.continue_sent = true;
        client_.expires_at(ctx.deadline(limits.body_timeout));
        auto [iec, in] = co_await net::async_write(client_, net::buffer(head), use_tuple);
        if (iec) {
            ctx.client_gone = true;
            ctx.client_keep_alive = false;
            co_return make_error_code(net::error::connection_aborted);
        }
    }
    ++oc->requests;
    co_return boost::system::error_code{};
}

void client_session::prepare_client_response(request_context& ctx, response_header& h) {
    bool body = has_response_body(h.result_int(), ctx.head);
    strip_hop_by_hop(h);
    bool length = h.find(http::field::content_length) != h.end();
    if (ctx.rt->cfg.headers.via) append_via(h, 11);
    if (body && !length) {
        // Close-delimited or chunked from the origin: chunked to an HTTP/1.1 client, close-
        // delimited to an HTTP/1.0 one.
        if (ctx.client_version >= 11) h.set(http::field::transfer_encoding, "chunked");
        else ctx.client_keep_alive = false;
    }
    if (w_.draining) ctx.client_keep_alive = false;
    h.set("X-Request-Id", ctx.request_id);
    h.version(11);
    // HTTP/1.1 to the client: persistent unless we say close (hop-by-hop fields are gone).
    if (!ctx.client_keep_alive) h.set(http::field::connection, "close");
}

net::awaitable<void> client_session::fail_origin(request_context& ctx, boost::system::error_code ec) {
    w_.stats.count_origin_error(ctx.rt.get(), ctx.route);
    if (ec == http::error::body_limit) {
        pending_ = problem{413, "body-too-large", "Content too large",
                               "the request body exceeds limits.max_body_bytes", {}, {}, 0};
        co_await respond(ctx);
        co_return;
    }
    if (ec == net::error::connection_aborted && ctx.framing_error) {
        ctx.status = 400;   // the client went away or sent a bad body: nobody to answer
        co_return;
    }
    if (ec == net::error::connection_aborted && ctx.client_gone) {
        ctx.status = 499;   // nginx's "client closed request", for the access log and metrics
        ctx.client_keep_alive = false;
        co_return;
    }
    pending_ = origin_problem(ec);
    co_await respond(ctx);
}

// Sends the prepared request and reads the response header into res_. A reused connection the
// origin had closed is retried once on a fresh one, but only for a request without a body whose
// bytes we still hold (RFC 9110 §9.2.2).
net::awaitable<boost::system::result<pooled_connection>> client_session::send_to_origin(request_context& ctx) {
    origin_timer timing(w_.stats, origin_kind::forward, &ctx.origin_time);
    for (int attempt = 0;; ++attempt) {
        auto oc = co_await ctx.pool->async_acquire(attempt > 0);
        if (!oc) co_return oc.error();
        bool no_body = req_->is_done();
        auto ec = co_await exchange(ctx, *oc);
        if (ec) {
            if (attempt == 0 && oc->reused() && no_body && is_idempotent(ctx.method) &&
                (ec == http::error::end_of_stream || ec == net::error::connection_reset ||
                 ec == net::error::broken_pipe || ec == net::error::eof)) {
                ctx.origin_retried = ctx.origin_sent;
                continue;
            }
            co_return ec;
        }
        if (auto why = check_response_framing(res_->get().base()); !why.empty())
            co_return make_error_code(http::error::bad_transfer_encoding);
        // Complete with its header (HEAD, 204, 304, Content-Length: 0) yet more bytes came with
        // it: the origin frames its responses differently from us (a body to HEAD...). Those
        // bytes must never be read as the response to the next request on this connection.
        // Bytes that come later are found when the connection is next taken from the pool
        // (origin_pool::alive's peek): asking the socket here as well (FIONREAD) cost every
        // bodiless response a system call. (A 101's bytes after the header belong to the new
        // protocol: the tunnel relays them.)
        if (res_->is_done() && res_->get().result_int() != 101 && (*oc)->buffer.size() > 0)
            co_return make_error_code(http::error::unexpected_body);
        co_return std::move(*oc);
    }
}

// Plain forwarding: request out, response back, both streamed.
net::awaitable<void> client_session::forward(request_context& ctx) {
    auto oc = co_await send_to_origin(ctx);
    if (!oc) {
        co_await fail_origin(ctx, oc.error());
        co_return;
    }
    if (res_->get().result_int() == 101) {
        co_await tunnel(ctx, std::move(*oc));
        co_return;
    }
    co_await relay_response(ctx, *oc, no_prefix_);
}

namespace {

struct tunnel_state {
    std::chrono::steady_clock::time_point last_activity;
    int running = 2;
    net::steady_timer* wake;
};

tcp::socket& socket_of(tcp_or_tls_stream& s) { return s.socket(); }

// One direction of a tunnel. EOF is passed on as a half-close (a TCP one, also under TLS: no
// close_notify); an error ends both directions.
template <class From, class To>
net::awaitable<void> pump(tunnel_state& st, From& from, To& to, char* buf, std::size_t size, std::uint64_t& moved) {
    for (;;) {
        auto [ec, n] = co_await from.async_read_some(net::buffer(buf, size), use_tuple);
        if (n > 0) {
            st.last_activity = std::chrono::steady_clock::now();
            auto [wec, wn] = co_await net::async_write(to, net::buffer(buf, n), use_tuple);
            moved += wn;
            if (wec) ec = wec;
        }
        if (ec) {
            boost::system::error_code ignored;
            if (ec == net::error::eof) {
                socket_of(to).shutdown(tcp::socket::shutdown_send, ignored);
            } else {
                socket_of(from).close(ignored);
                socket_of(to).close(ignored);
            }
            break;
        }
    }
    --st.running;
    st.wake->cancel();
}

}  // namespace

net::awaitable<void> client_session::tunnel(request_context& ctx, pooled_connection oc) {
    auto& res = res_->get();
    // The origin's 101, with our hop-by-hop handling, and the Upgrade it agreed to.
    auto agreed = std::string(res[http::field::upgrade]);
    strip_hop_by_hop(res.base());
    if (ctx.rt->cfg.headers.via) append_via(res.base(), 11);
    if (!agreed.empty()) res.set(http::field::upgrade, agreed);
    res.set(http::field::connection, "upgrade");
    res.set("X-Request-Id", ctx.request_id);
    res.version(11);
    ctx.status = 101;
    ctx.client_keep_alive = false;   // the connection is the tunnel's now
    std::string head;
    serialize_header(res.base(), head);
    // What either side sent already after its header is relayed first.
    std::string from_origin(static_cast<const char*>(oc->buffer.data().data()), oc->buffer.size());
    oc->buffer.consume(oc->buffer.size());
    std::string from_client(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    buffer_.consume(buffer_.size());
    client_.expires_after(ctx.rt->cfg.limits.body_timeout);
    std::array<net::const_buffer, 2> out{net::buffer(head), net::buffer(from_origin)};
    auto [wec, wn] = co_await net::async_write(client_, out, use_tuple);
    if (wec) co_return;
    ctx.bytes_sent += from_origin.size();
    if (!from_client.empty()) {
        oc->stream.expires_after(ctx.pool->config().request_timeout);
        auto [oec, on] = co_await net::async_write(oc->stream, net::buffer(from_client), use_tuple);
        if (oec) co_return;
    }
    client_.expires_never();
    oc->stream.expires_never();
    const auto idle = ctx.rt->cfg.limits.tunnel_idle_timeout;
    net::steady_timer wake(client_.get_executor());
    tunnel_state st{std::chrono::steady_clock::now(), 2, &wake};
    auto back = std::make_unique<char[]>(relay_buffer_size);
    std::uint64_t to_origin = 0;
    auto& cs = client_.socket();
    auto& os = oc->stream.socket();
    // Both sides through their streams (TLS or not).
    net::co_spawn(client_.get_executor(), pump(st, client_, oc->stream, relay_buffer(), relay_buffer_size, to_origin),
                  net::detached);
    net::co_spawn(client_.get_executor(), pump(st, oc->stream, client_, back.get(), relay_buffer_size, ctx.bytes_sent),
                  net::detached);
    // The pumps use this frame: it outlives them (running reaches 0 only when both have ended).
    while (st.running > 0) {
        wake.expires_at(st.last_activity + idle);
        auto [tec] = co_await wake.async_wait(use_tuple);
        if (st.running > 0 && std::chrono::steady_clock::now() >= st.last_activity + idle) {
            boost::system::error_code ignored;
            cs.close(ignored);
            os.close(ignored);
        }
    }
}

// Writes the response header and streams the body (after `prefix`, bytes already read).
net::awaitable<void> client_session::relay_response(request_context& ctx, pooled_connection& oc,
                                                    std::string& prefix) {
    auto& res = res_->get();
    auto& body = res.body();
    // Body bytes that arrived with the header are parsed before the header goes out, so that
    // bad framing at the start of the body (a malformed first chunk) still gets a 502.
    std::size_t early = 0;
    if (prefix.empty() && !res_->is_done() && oc->buffer.size() > 0) {
        body.data = relay_buffer();
        body.size = relay_buffer_size;
        boost::system::error_code pec;
        while (!pec && !res_->is_done() && oc->buffer.size() > 0) {
            auto used = res_->put(oc->buffer.data(), pec);
            oc->buffer.consume(used);
            if (used == 0) break;
        }
        if (pec && pec != http::error::need_more && pec != http::error::need_buffer) {
            w_.stats.count_origin_error(ctx.rt.get(), ctx.route);
            pending_ = origin_problem(pec);
            co_await respond(ctx);
            co_return;   // `oc` is not kept: the connection is discarded
        }
        early = relay_buffer_size - body.size;
    }
    // The whole chunked body, trailers included, may have come with the header.
    drop_response_trailers();
    prepare_client_response(ctx, res.base());
    ctx.status = res.result_int();
    const auto& limits = ctx.rt->cfg.limits;
    if (res_->is_done() && !res.chunked()) {
        // The whole response is at hand (the usual small one): header and body in one write,
        // our own serialization.
        std::string head;
        serialize_header(res.base(), head);
        net::const_buffer bytes = !prefix.empty() ? net::buffer(prefix) : net::const_buffer(relay_buf_.get(), early);
        ctx.bytes_sent += bytes.size();
        std::array<net::const_buffer, 2> out{net::buffer(head), bytes};
        release_origin(oc);   // nothing more to read: a stalled client must not hold the slot
        if (auto sent = client_.send_now(out); sent < net::buffer_size(out)) {
            client_.expires_after(limits.body_timeout);
            auto ec = co_await write_rest(client_, out, sent);
            if (ec) ctx.client_keep_alive = false;
        }
        co_return;
    }
    client_.expires_after(limits.body_timeout);
    // Streamed: the origin's side and the client's side run side by side, joined by a spool
    // (memory, then a temporary file), so that a client slower than the origin does not hold
    // the origin connection: it goes back to the pool when the response is read (issue 15).
    // The client's copy of the header is its own: trailers the parser adds later stay out of it.
    response_message<http::buffer_body> out{res.base()};
    response_spool spool(spool_memory_bytes, limits.max_spooled_response, limits.spool_dir);
    if (early > 0) spool.preload(relay_buffer(), early);
    relay_signals sig{net::steady_timer(client_.get_executor()), net::steady_timer(client_.get_executor())};
    if (!client_.tls() && !out.chunked()) sig.direct_fd = client_.socket().native_handle();
    if (res_->is_done()) {
        release_origin(oc);
        sig.reader_done = true;
    }
    using namespace net::experimental::awaitable_operators;
    co_await (spool_from_origin(ctx, oc, spool, sig) && relay_to_client(ctx, oc, out, prefix, spool, sig));
    ctx.bytes_sent += sig.direct_bytes;
    if (spool.used_file()) w_.stats.spooled_responses.fetch_add(1, std::memory_order_relaxed);
    if (spool.hit_limit() || !spool.file_error().empty()) {
        w_.stats.spool_full.fetch_add(1, std::memory_order_relaxed);
        std::uint64_t suppressed = 0;
        if (spool_full_log.ready(suppressed))
            spdlog::warn("{}: no room to spool a response for a slow client ({}): its origin connection is held "
                         "until the client catches up ({} more like it in the last 10 s)",
                         ctx.target,
                         spool.file_error().empty() ? "limits.max_spooled_bytes or max_spooled_response reached"
                                                    : spool.file_error(),
                         suppressed);
    }
    if (sig.origin_failed) {
        // The header is out: all we can do is cut the client connection short.
        ctx.client_keep_alive = false;
        w_.stats.count_origin_error(ctx.rt.get(), ctx.route);
    }
    if (sig.client_gone) ctx.client_keep_alive = false;
}

namespace {

// Sends what the socket takes now, without waiting (0 if it takes nothing, or fails: the bytes
// then go through the spool and the client's side meets the error).
std::size_t send_now(int fd, const char* p, std::size_t n) {
    auto r = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    return r > 0 ? static_cast<std::size_t>(r) : 0;
}

// Waits until the other side of a relay cancels `t` (cancel() wakes a waiting side and does
// nothing to one that is not waiting: each side checks its condition before it waits).
net::awaitable<void> wait_for(net::steady_timer& t) {
    t.expires_at(net::steady_timer::time_point::max());
    co_await t.async_wait(use_tuple);
}

}  // namespace

// The origin's side of a streamed response: reads the body into the spool while there is room,
// and gives the connection back as soon as the body is read.
net::awaitable<void> client_session::spool_from_origin(request_context& ctx, pooled_connection& oc,
                                                       response_spool& spool, relay_signals& sig) {
    auto& body = res_->get().body();
    const auto& up = ctx.pool->config();
    while (!sig.reader_done && !sig.client_gone) {
        if (!spool.make_room(relay_buffer_size)) {
            co_await wait_for(sig.room);   // the client takes some first
            continue;
        }
        body.data = relay_buffer();
        body.size = relay_buffer_size;
        oc->stream.expires_after(up.request_timeout);
        // Beast's read here, not read_from_origin: with it, plain 1 MiB GETs ran at 0.63x and the
        // spool went to its file (the client's side stopped taking pieces straight, send_now);
        // not understood yet, measured with bench/run's size part and strace.
        auto [ec, n] = co_await http::async_read(oc->stream, oc->buffer, *res_, use_tuple);
        if (sig.client_gone) break;
        auto got = relay_buffer_size - body.size;
        const bool failed = ec && ec != http::error::need_buffer;
        std::size_t sent = 0;
        if (!failed && got > 0 && sig.direct_fd >= 0 && sig.writer_waiting && spool.size() == 0)
            sent = send_now(sig.direct_fd, relay_buffer(), got);
        sig.direct_bytes += sent;
        if (failed || !spool.append(relay_buffer() + sent, got - sent)) {
            sig.origin_failed = true;
            break;
        }
        drop_response_trailers();
        if (res_->is_done()) {
            sig.reader_done = true;
            release_origin(oc);   // whatever the client does from here
        }
        if (spool.size() > 0 || sig.reader_done) sig.data.cancel();   // all sent directly: nothing to wake for
    }
    sig.reader_done = true;
    sig.data.cancel();
}

// The client's side: the header (with `prefix`, body bytes read before), then what the spool
// holds, until the origin's side is done and the spool empty.
net::awaitable<void> client_session::relay_to_client(request_context& ctx, pooled_connection& oc,
                                                     response_message<http::buffer_body>& msg, std::string& prefix,
                                                     response_spool& spool, relay_signals& sig) {
    const auto& limits = ctx.rt->cfg.limits;
    auto& body = msg.body();
    http::response_serializer<http::buffer_body, header_fields> sr{msg};
    auto gone = [&] {
        sig.client_gone = true;
        if (oc) oc->stream.cancel();   // the origin's side stops reading
        sig.room.cancel();
    };
    // The header goes out alone only when no body bytes are at hand yet (an event stream's
    // client sees it at once); otherwise it shares the first write with them.
    if (prefix.empty() && spool.size() == 0 && !sig.reader_done) {
        client_.expires_after(limits.body_timeout);
        auto [ec, n] = co_await http::async_write_header(client_, sr, use_tuple);
        if (ec) co_return gone();
    }
    auto chunk = std::make_unique_for_overwrite<char[]>(relay_buffer_size);
    bool first = true;
    for (;;) {
        if (first && !prefix.empty()) {
            body.data = prefix.data();
            body.size = prefix.size();
        } else {
            while (spool.size() == 0 && !sig.reader_done) {
                sig.writer_waiting = true;
                co_await wait_for(sig.data);
                sig.writer_waiting = false;
            }
            body.size = spool.take(chunk.get(), relay_buffer_size);
            body.data = body.size > 0 ? chunk.get() : nullptr;
            sig.room.cancel();
            if (spool.failed()) {   // the file could not be read back: cut, as for an origin failure
                sig.origin_failed = true;
                co_return gone();
            }
        }
        first = false;
        bool last = sig.reader_done && spool.size() == 0;
        if (last && sig.origin_failed) {
            // What the client may still have is sent; the end of the body is not.
            if (body.size == 0) co_return;
            body.more = true;
        } else {
            body.more = !last;
        }
        ctx.bytes_sent += body.size;
        client_.expires_after(limits.body_timeout);
        auto [wec, wn] = co_await http::async_write(client_, sr, use_tuple);
        if (wec && wec != http::error::need_buffer) co_return gone();
        if (last) co_return;
    }
}

void client_session::drop_response_trailers() {
    res_header_.drop_added(res_->get());
}

// The origin's response has been read whole: its connection is pooled again (if the origin
// keeps it alive) or closed, freeing its slot whatever the client does next.
void client_session::release_origin(pooled_connection& oc) {
    if (!oc) return;
    if (res_->is_done() && res_->keep_alive()) oc.keep();
    oc.reset();
}

namespace {

// EOF or an error on the client's socket, without consuming anything.
bool client_closed(int fd) {
    char byte;
    auto n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return false;
    return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

log_limiter over_budget_log(std::chrono::seconds(10));

}  // namespace

// Reads the origin's response into res_ until the parser has the header (`what` header) or the
// whole message, or has filled the body buffer it was given (need_buffer, `what` body): what
// oc->buffer holds is parsed first, then one async_read_some at a time. This is
// http::async_read_header's / http::async_read's loop without their composed operations and the
// posted completion they make even when no read is needed (4 % of a GET's instructions). The reads
// obey the stream's expiry set by the caller; the hang-up watch cancels them through the stream.
net::awaitable<boost::system::error_code> client_session::read_from_origin(pooled_connection& oc, read_until what) {
    auto& b = oc->buffer;
    auto& p = *res_;
    for (;;) {
        if (what == read_until::header ? p.is_header_done() : p.is_done()) co_return boost::system::error_code{};
        if (b.size() > 0) {
            boost::system::error_code ec;
            auto used = p.put(b.data(), ec);
            b.consume(used);
            if (ec && ec != http::error::need_more) co_return ec;   // need_buffer: the body buffer is full
            if (!ec && used > 0) continue;
        }
        auto limit = b.max_size() - b.size();
        if (limit == 0) co_return make_error_code(http::error::buffer_overflow);
        auto room = std::min<std::size_t>({std::max<std::size_t>(512, b.capacity() - b.size()), 65536, limit});
        auto [ec, n] = co_await oc->stream.async_read_some(drained_read(b.prepare(room)), use_tuple);
        b.commit(n);
        if (ec == net::error::eof) {
            if (!p.got_some()) co_return make_error_code(http::error::end_of_stream);
            boost::system::error_code eof_ec;
            p.put_eof(eof_ec);   // the end of a close-delimited body, or a message cut short
            if (eof_ec || p.is_done()) co_return eof_ec;
            co_return make_error_code(http::error::partial_message);
        }
        if (ec) co_return ec;
    }
}

namespace {

// The client-side watch while the origin prepares its header, once started: a one-byte peek whose
// handler owns this state, so it may run after read_origin_header has moved on.
struct hangup_state {
    char peeked = 0;
    bool waiting = true;   // read_origin_header still waits for the origin
    bool fired = false;    // the peek saw EOF or an error on the client's socket
    origin_stream* origin = nullptr;   // valid while `waiting`: the origin read to cancel
    net::cancellation_signal peek_cancel;   // stops the peek once the header is in
};

// What starts late while the origin prepares its header, in read_origin_header's frame, linked
// into the worker's list: the client hang-up watch (`hangup`), and the request deadline. Most
// origins answer within a tick, and their requests pay for neither a watch nor a timer (a timed
// read cost a GET about 1,000 instructions: Beast's timer armed, cancelled and its handler run).
struct hangup_watch : deferred_watch {
    worker* w = nullptr;
    tcp::socket* client = nullptr;
    origin_stream* origin = nullptr;
    bool hangup = false;
    waiting_node deadline;                 // request_timeout: cancels the origin read at the deadline
    std::shared_ptr<hangup_state> state;   // set when the worker starts the hang-up watch
};

void start_hangup_watch(hangup_watch& w) {
    w.state = std::make_shared<hangup_state>();
    w.state->origin = w.origin;
    // A receive, not an async_wait: no epoll_ctl. Bytes there (pipelining) stay in the socket and
    // end the watch; EOF or an error means the client is gone: the origin read is cancelled.
    w.client->async_receive(
        net::buffer(&w.state->peeked, 1), tcp::socket::message_peek,
        net::bind_cancellation_slot(w.state->peek_cancel.slot(), [st = w.state](boost::system::error_code ec, std::size_t n) {
            if (!st->waiting || ec == net::error::operation_aborted) return;
            if (ec || n == 0) {
                st->fired = true;
                st->origin->cancel();
            }
        }));
}

void start_origin_wait(deferred_watch& n) {
    auto& w = static_cast<hangup_watch&>(n);
    if (w.hangup) start_hangup_watch(w);
    // The worker's deadline list (one timer for every waiting session) cancels the read; a
    // deadline already past (request_timeout under two ticks) fires at once.
    w.deadline.cancel.slot().assign([origin = w.origin](net::cancellation_type) { origin->cancel(); });
    w.w->add_waiting(w.deadline);
}

// Unlinks what has not fired, whatever ends read_origin_header's frame.
struct watch_link {
    worker& w;
    hangup_watch& n;
    ~watch_link() {
        w.cancel_watch(n);
        w.remove_waiting(n.deadline);
    }
};

}  // namespace

net::awaitable<boost::system::error_code> client_session::read_origin_header(
    request_context& ctx, pooled_connection& oc, std::chrono::steady_clock::time_point deadline) {
    // Neither the hang-up watch nor the deadline starts unless the origin has not answered within
    // a tick or two of worker::watch_delay (a hang-up is noticed that much later, and a
    // request_timeout under 40 ms may come that much late; most requests never pay for either).
    oc->stream.expires_never();
    hangup_watch watch;
    watch.w = &w_;
    watch.client = &client_.socket();
    watch.origin = &oc->stream;
    watch.hangup = ctx.abort_on_client_close && buffer_.size() == 0;
    watch.deadline.deadline = deadline;
    watch.arm = start_origin_wait;
    w_.defer_watch(watch);
    watch_link link{w_, watch};
    auto hec = co_await read_from_origin(oc, read_until::header);
    w_.cancel_watch(watch);
    w_.remove_waiting(watch.deadline);
    // The origin's later reads (the body) keep the deadline, as before.
    oc->stream.expires_at(deadline);
    if (watch.state) {
        watch.state->waiting = false;
        watch.state->peek_cancel.emit(net::cancellation_type::terminal);   // a no-op if the peek has completed
        if (watch.state->fired && hec && client_closed(client_.socket().native_handle())) {
            // The origin connection is left mid-exchange: dropped with `oc`, never pooled.
            ctx.client_gone = true;
            w_.stats.client_aborts.fetch_add(1, std::memory_order_relaxed);
            co_return make_error_code(net::error::connection_aborted);
        }
    }
    if (watch.deadline.expired && hec) {
        // As Beast's own timeout does: the connection, left mid-exchange, is closed.
        oc->stream.close();
        co_return make_error_code(beast::error::timeout);
    }
    co_return hec;
}

net::awaitable<client_session::buffered> client_session::buffer_response_body(
    request_context& ctx, pooled_connection& oc, std::string& out, std::size_t limit, buffer_reservation& budget) {
    auto& body = res_->get().body();
    const auto& up = ctx.pool->config();
    auto length = res_->content_length();
    if (length && *length > limit) co_return buffered::too_large;
    // A known length is reserved whole before a byte is read; an unknown one a relay buffer
    // ahead of what is read. Either way nothing is read that the budget does not cover.
    bool fits = length ? budget.grow(*length > budget.size() ? *length - budget.size() : 0) : true;
    if (fits && length) out.reserve(out.size() + *length);
    char* chunk = relay_buffer();
    while (fits && !res_->is_done() && out.size() <= limit) {
        if (!length && out.size() + relay_buffer_size > budget.size() &&
            !budget.grow(out.size() + relay_buffer_size - budget.size())) {
            fits = false;
            break;
        }
        body.data = chunk;
        body.size = relay_buffer_size;
        oc->stream.expires_after(up.request_timeout);
        auto ec = co_await read_from_origin(oc, read_until::body);
        out.append(chunk, relay_buffer_size - body.size);
        if (ec && ec != http::error::need_buffer) co_return buffered::failed;
    }
    // What the tracking code reads next (ETag, Last-Modified, Content-Encoding) is the header's.
    drop_response_trailers();
    if (!fits) {
        w_.stats.unbuffered_over_budget.fetch_add(1, std::memory_order_relaxed);
        std::uint64_t suppressed = 0;
        if (over_budget_log.ready(suppressed))
            spdlog::warn("{}: limits.max_buffered_bytes ({} bytes) reached: response streamed without a validator, "
                         "untracked ({} more like it in the last 10 s)",
                         ctx.target, buffered_budget().limit(), suppressed);
        co_return buffered::too_large;
    }
    co_return res_->is_done() && out.size() <= limit ? buffered::complete : buffered::too_large;
}

}  // namespace ifm::proxy

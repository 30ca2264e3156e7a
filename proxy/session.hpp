// A client connection: one straight coroutine loop (read a request → judge → forward → relay
// the response → loop). Requests on one connection are served strictly in order, so pipelined
// requests are answered in order.
#pragma once

#include "proxy/http_util.hpp"
#include "proxy/memory_budget.hpp"
#include "proxy/origin_pool.hpp"
#include "proxy/precondition.hpp"
#include "proxy/problem.hpp"
#include "proxy/worker.hpp"
#include "proxy/write_protocol.hpp"

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

namespace ifm::proxy {

class response_spool;

// Starts serving `socket` on worker `w` (detached; the session ends with the connection, or
// when it is parked while idle).
void start_session(worker& w, tcp::socket socket);
// Serves the next request of a parked keep-alive connection (worker::park) that has `served`
// requests behind it.
void resume_session(worker& w, tcp::socket socket, std::uint64_t served);

// What the proxy knows of one request while serving it.
struct request_context {
    std::shared_ptr<const runtime> rt;
    std::shared_ptr<std::vector<std::unique_ptr<origin_pool>>> pools;
    const config::route_config* route = nullptr;
    origin_pool* pool = nullptr;
    std::string target;            // as received (origin-form after absolute-form conversion)
    std::string host;
    std::string key;               // store key of the resource; empty when untracked
    // Other resources a write changes (a WebDAV Destination, the route's `dependencies`): leased
    // with it and made unknown by its commit (SPEC §5.5, §9).
    std::vector<cache::resource_ref> companions;
    std::size_t dependents = 0;    // the first ones come from the route's dependencies
    std::size_t companions_invalidated = 0;
    // The values of the route's `vary` headers (with the content coding: the variant, SPEC §4).
    std::vector<std::pair<std::string, std::string>> vary_values;
    http::verb method = http::verb::unknown;
    std::string method_name;
    bool head = false;
    bool client_keep_alive = true;
    bool expect_continue = false;
    // A WebSocket handshake (GET, Upgrade: websocket, Connection: upgrade, no body): forwarded
    // untracked with its Upgrade; an origin's 101 turns the connection into a byte tunnel.
    std::string upgrade;
    bool continue_sent = false;    // the client has had a 100 Continue (ours or the origin's)
    unsigned client_version = 11;  // of the request as received (10 or 11)
    bool body_read = false;        // the request body was consumed (forwarded or discarded)
    bool framing_error = false;
    bool origin_sent = false;      // some request bytes may have reached the origin
    // The request went again on a fresh connection after its bytes had gone out on a reused one
    // that then failed: the first attempt may have been applied, whatever the second one says.
    bool origin_retried = false;
    // Not a judged write: if the client closes while the origin works on the request, the origin
    // connection is dropped and its slot freed (judged writes run to their commit).
    bool abort_on_client_close = false;
    bool client_gone = false;      // the client closed before the origin answered
    // Bytes of limits.max_buffered_bytes held by a response body buffered for this request, until
    // the request is over (the client has received it).
    buffer_reservation buffered_bytes;
    // A write's body read whole before its lease was taken (limits.max_prebuffered_body), with
    // the bytes of limits.max_buffered_bytes it holds; empty when the body is streamed.
    std::string prebody;
    buffer_reservation prebody_bytes;
    unsigned status = 0;
    std::uint64_t bytes_sent = 0;
    outcome precondition = outcome::not_judged;
    // enforce: report: what `on` would have refused; reported as the outcome once forwarded.
    outcome would_reject = outcome::not_judged;
    std::chrono::steady_clock::time_point start;
    // For the access log and correlation (X-Request-Id, traceparent, what explains a 409).
    std::string request_id;                   // the client's if valid, else generated
    std::string trace_id;                     // from a well-formed traceparent
    std::optional<std::string> if_match;      // as the client sent them
    std::optional<std::string> if_none_match;
    std::optional<std::string> current_etag;  // set by respond() from a rejection's problem
    // Time spent waiting on the store and on the origin, summed over the request: origin_timer
    // (proxy/metrics.hpp) adds to origin_time; store calls add to store_time with store_timer.
    std::chrono::microseconds store_time{0};
    std::chrono::microseconds origin_time{0};
    // A judged write must be over (body sent, response header read) before its lease ends: the
    // origin cannot check a fencing token, so a slow upload must not outlive the lease.
    std::chrono::steady_clock::time_point write_deadline = std::chrono::steady_clock::time_point::max();

    // Now + `timeout`, but never past the write deadline.
    std::chrono::steady_clock::time_point deadline(std::chrono::steady_clock::duration timeout) const {
        return std::min(std::chrono::steady_clock::now() + timeout, write_deadline);
    }
};

// The result of a request the proxy sent to the origin on its own (revalidation, refresh).
struct fetch_result {
    boost::system::error_code ec;  // transport failure (502/504)
    unsigned status = 0;
    std::string etag;              // the origin's ETag header, if any
    std::optional<std::int64_t> last_modified;
    std::string body_etag;         // hash of the body (GET, 200, not too large)
    std::string content_encoding;  // of the answer: which variant it describes
    bool too_large = false;
};

// An optional kept on the heap: an idle connection holds a pointer, not a parser (272 bytes).
template <class T>
class boxed {
public:
    template <class... Args>
    T& emplace(Args&&... args) {
        p_ = std::make_unique<T>(std::forward<Args>(args)...);
        return *p_;
    }
    void reset() { p_.reset(); }
    T* operator->() const { return p_.get(); }
    T& operator*() const { return *p_; }
    explicit operator bool() const { return p_ != nullptr; }

private:
    std::unique_ptr<T> p_;
};

class client_session {
public:
    // `served` > 0: a parked connection resumed (already counted as open).
    // `tls`: the listener's TLS context (listen_tls) the connection was accepted with, or null.
    client_session(worker& w, tcp::socket socket, std::uint64_t served = 0,
                   std::shared_ptr<boost::asio::ssl::context> tls = nullptr);
    ~client_session();
    net::awaitable<void> run();
    // Drain: closes the connection if it is waiting for a next request.
    void close_if_idle();

private:
    using request_parser = http::request_parser<http::buffer_body, field_allocator<char>>;
    using response_parser = http::response_parser<http::buffer_body, field_allocator<char>>;

    net::awaitable<bool> serve_one();
    enum class next { request, closed, parked };
    net::awaitable<next> wait_for_request();
    // Reads what the client sends next (at most first_bytes_) or returns at `deadline`:
    // {arrived before the deadline, bytes read (0: EOF or an error, if it arrived)}.
    net::awaitable<std::tuple<bool, std::size_t>> read_some_until(
        std::chrono::steady_clock::time_point deadline);
    net::awaitable<std::tuple<boost::system::error_code, std::size_t>> read_header_bytes(std::size_t room);
    // Sends `pending_` (staged by the caller: GCC 12 destroys non-trivial temporaries inside
    // co_await expressions twice, so none may appear there).
    net::awaitable<void> respond(request_context& ctx);
    net::awaitable<void> discard_body(request_context& ctx);
    net::awaitable<void> answer_here(request_context& ctx, response_message<http::string_body> res);
    // Reads a bounded request body whole into ctx.prebody; false when the client was answered
    // (or is gone) instead.
    net::awaitable<bool> prebuffer_body(request_context& ctx);

    // Forwarding.
    void prepare_origin_request(request_context& ctx);
    net::awaitable<boost::system::error_code> exchange(request_context& ctx, pooled_connection& oc);
    net::awaitable<boost::system::result<pooled_connection>> send_to_origin(request_context& ctx);
    net::awaitable<void> forward(request_context& ctx);
    net::awaitable<void> write_head_only(request_context& ctx, response_header h);
    // After the origin's 101: relays bytes both ways until both sides close, one fails, or
    // limits.tunnel_idle_timeout passes with no byte either way. The client connection ends with it.
    net::awaitable<void> tunnel(request_context& ctx, pooled_connection oc);
    enum class buffered { complete, too_large, failed };
    net::awaitable<buffered> buffer_response_body(request_context& ctx, pooled_connection& oc,
                                                  std::string& out, std::size_t limit);
    // The same within the process's budget of buffered bytes (limits.max_buffered_bytes): the
    // bytes are reserved in `budget` (pass ctx.buffered_bytes, which holds them until the client
    // has the response). A body that does not fit is not read: too_large, so it is streamed
    // untracked like one over `limit` (counted in ifmatch_unbuffered_over_budget_total).
    net::awaitable<buffered> buffer_response_body(request_context& ctx, pooled_connection& oc,
                                                  std::string& out, std::size_t limit,
                                                  buffer_reservation& budget);
    // A response of the proxy's own: serialized here and sent like a whole origin response.
    net::awaitable<boost::system::error_code> send_whole(response_message<http::string_body>& res);
    // The origin's response header into res_, by `deadline` (request_timeout); with
    // ctx.abort_on_client_close, gives up with connection_aborted (and ctx.client_gone) when the
    // client closes first.
    net::awaitable<boost::system::error_code> read_origin_header(request_context& ctx, pooled_connection& oc,
                                                                std::chrono::steady_clock::time_point deadline);
    enum class read_until { header, body };   // body: the whole body, or a full body buffer
    net::awaitable<boost::system::error_code> read_from_origin(pooled_connection& oc, read_until what);
    net::awaitable<void> relay_response(request_context& ctx, pooled_connection& oc, std::string& prefix);
    // The two sides of a streamed response (relay_response), joined by a spool.
    struct relay_signals {
        net::steady_timer data;   // the origin's side appended, or is done
        net::steady_timer room;   // the client's side took bytes, or is gone
        bool reader_done = false;
        bool origin_failed = false;
        bool client_gone = false;
        // The fast path: while the client keeps up, the origin's side sends what it read
        // straight to the client's socket (a non-blocking send, no copy through the spool), and
        // spools only what the socket does not take. Possible on a plain connection whose body
        // goes out as it came (not re-chunked), while the client's side waits with the header
        // sent and nothing spooled: then no bytes can overtake others. -1: not possible.
        int direct_fd = -1;
        bool writer_waiting = false;
        std::uint64_t direct_bytes = 0;
    };
    net::awaitable<void> spool_from_origin(request_context& ctx, pooled_connection& oc, response_spool& spool,
                                           relay_signals& sig);
    net::awaitable<void> relay_to_client(request_context& ctx, pooled_connection& oc,
                                         response_message<http::buffer_body>& msg, std::string& prefix,
                                         response_spool& spool, relay_signals& sig);
    void release_origin(pooled_connection& oc);
    // Trailer fields are dropped, never merged into the header (RFC 9110 §6.5.1, README).
    void drop_response_trailers();
    net::awaitable<void> fail_origin(request_context& ctx, boost::system::error_code ec);
    void prepare_client_response(request_context& ctx, response_header& h);

    // Tracking (SPEC §4, §5).
    struct idempotent_write {   // an Idempotency-Key's record (proxy/idempotency_session.cpp)
        bool active = false;    // a record is reserved: it must be completed or forgotten
        std::string key, owner;
        std::size_t normal_buffer = 0;   // buffer_'s max_size before it grew to hold the body
    };
    net::awaitable<void> serve_read(request_context& ctx);
    net::awaitable<void> serve_write(request_context& ctx);
    net::awaitable<void> serve_unjudged_write(request_context& ctx);
    net::awaitable<void> forward_unjudged(request_context& ctx, bool wait_for_lease);
    net::awaitable<void> forward_despite(request_context& ctx, outcome would, cache::resource_state current);
    // `dav_if`: where the If header's rewrite lands once judged (proxy/dav_if.hpp), or null.
    net::awaitable<void> run_write(request_context& ctx, write_params params,
                                   const std::optional<std::string>* dav_if_forward = nullptr,
                                   idempotent_write* idem = nullptr);
    // ctx.companions of a write on ctx's route: the Destination's key (if any) and the route's
    // dependencies (proxy/dependencies.hpp), each on the route that serves its path.
    void add_companion(request_context& ctx, std::string_view path, std::string_view host);
    void add_dependents(request_context& ctx);
    write_params write_params_for(const request_context& ctx, cache::condition cond) const;

    // Idempotent retries (proxy/idempotency_session.cpp, SPEC §9).
    // With an Idempotency-Key on a route that enables it: reads the body, fingerprints the
    // request and reserves its record. False when it has answered (replay, 400, 409, 411, 413,
    // 422, 503).
    net::awaitable<bool> begin_idempotent(request_context& ctx, idempotent_write& idem);
    // Before a judged write's response is relayed: a 2xx (not 202) from the origin is stored
    // (its body read into `body` up to max_response_bytes), anything else forgets the record.
    // Returns true when `body` holds bytes already read from the origin that must be relayed.
    net::awaitable<bool> record_idempotent(request_context& ctx, idempotent_write& idem, pooled_connection& oc,
                                           std::string& body, bool& body_buffered, bool relayable);
    net::awaitable<void> forget_idempotent(request_context& ctx, idempotent_write& idem);
    void end_idempotent(idempotent_write& idem);
    // The store key of `target` on `ctx`'s route and origin (SPEC §4).
    std::string key_for(const request_context& ctx, std::string_view target, std::string_view host) const;
    static std::string variant_of(const request_context& ctx, std::string_view content_encoding);
    net::awaitable<fetch_result> fetch(request_context& ctx, bool use_head);
    std::optional<cache::resource_state> state_from_fetch(const request_context& ctx, const fetch_result& f) const;
    net::awaitable<void> reject(request_context& ctx, cache::verdict v, cache::resource_state current);
    net::awaitable<void> refuse_busy(request_context& ctx);
    net::awaitable<void> refuse_store_unavailable(request_context& ctx, boost::system::error_code ec);

    static constexpr std::size_t relay_buffer_size = 16 * 1024;
    char* relay_buffer();   // relay_buffer_size bytes, allocated for the request being served

    // "https" on a listen_tls connection, else "http" (X-Forwarded-Proto, Forwarded).
    std::string_view client_scheme() { return client_.tls() ? "https" : "http"; }
    // The server handshake (listen_tls), within limits.header_timeout; false when it failed.
    net::awaitable<bool> handshake();
    // wait_for_request() on a TLS connection: OpenSSL may hold decrypted bytes the socket no
    // longer shows, so it reads through the stream (and such a connection is never parked).
    net::awaitable<next> wait_for_tls_request(std::chrono::steady_clock::time_point deadline);

    worker& w_;
    std::shared_ptr<boost::asio::ssl::context> tls_;   // outlives client_, which refers to it
    client_stream client_;
    beast::flat_buffer buffer_;
    std::array<char, 1024> first_bytes_;   // the next request's first bytes, read while idle
    waiting_node wait_node_;               // in w_'s waiting list while read_some_until waits
    std::string peer_;
    boost::asio::ip::address peer_address_;   // unspecified when unknown: never trusted
    boxed<request_parser> req_;
    boxed<response_parser> res_;
    // res_'s header fields, recorded when its last chunk began: Beast 1.81 inserts the trailer
    // section's fields among them (drop_response_trailers() erases those; RFC 9110 §6.5.1).
    header_snapshot res_header_;
    std::function<void(std::uint64_t, std::string_view, boost::system::error_code&)> res_chunk_header_ =
        [this](std::uint64_t size, std::string_view, boost::system::error_code&) {
            if (size == 0) res_header_.take(res_->get());
        };
    std::unique_ptr<char[]> relay_buf_;
    problem pending_;
    std::string no_prefix_;
    std::uint64_t served_ = 0;
    // wait_for_request() returned `parked`: the deadline handed to worker::park.
    std::chrono::steady_clock::time_point idle_deadline_;
    bool parked_ = false;
    // When the header of the request being read is due (set by wait_for_request()).
    std::chrono::steady_clock::time_point header_deadline_;
    bool idle_ = false;
};

}  // namespace ifm::proxy

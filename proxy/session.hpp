// A client connection: one straight coroutine loop (read a request → judge → forward → relay
// the response → loop). Requests on one connection are served strictly in order, so pipelined
// requests are answered in order.
#pragma once

#include "proxy/origin_pool.hpp"
#include "proxy/precondition.hpp"
#include "proxy/problem.hpp"
#include "proxy/worker.hpp"
#include "proxy/write_protocol.hpp"

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace ifm::proxy {

// Starts serving `socket` on worker `w` (detached; the session ends with the connection).
void start_session(worker& w, tcp::socket socket);

// What the proxy knows of one request while serving it.
struct request_context {
    std::shared_ptr<const runtime> rt;
    std::shared_ptr<std::vector<std::unique_ptr<origin_pool>>> pools;
    const config::route_config* route = nullptr;
    origin_pool* pool = nullptr;
    std::string target;            // as received (origin-form after absolute-form conversion)
    std::string host;
    std::string key;               // store key of the resource; empty when untracked
    // The values of the route's `vary` headers (with the content coding: the variant, SPEC §4).
    std::vector<std::pair<std::string, std::string>> vary_values;
    http::verb method = http::verb::unknown;
    std::string method_name;
    bool head = false;
    bool client_keep_alive = true;
    bool expect_continue = false;
    bool body_read = false;        // the request body was consumed (forwarded or discarded)
    bool framing_error = false;
    bool origin_sent = false;      // some request bytes may have reached the origin
    // The request went again on a fresh connection after its bytes had gone out on a reused one
    // that then failed: the first attempt may have been applied, whatever the second one says.
    bool origin_retried = false;
    unsigned status = 0;
    std::uint64_t bytes_sent = 0;
    outcome precondition = outcome::not_judged;
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

class client_session {
public:
    client_session(worker& w, tcp::socket socket);
    ~client_session();
    net::awaitable<void> run();
    // Drain: closes the connection if it is waiting for a next request.
    void close_if_idle();

private:
    using request_parser = http::request_parser<http::buffer_body>;
    using response_parser = http::response_parser<http::buffer_body>;

    net::awaitable<bool> serve_one();
    net::awaitable<bool> wait_for_request();
    // Sends `pending_` (staged by the caller: GCC 12 destroys non-trivial temporaries inside
    // co_await expressions twice, so none may appear there).
    net::awaitable<void> respond(request_context& ctx);
    net::awaitable<void> discard_body(request_context& ctx);

    // Forwarding.
    void prepare_origin_request(request_context& ctx);
    net::awaitable<boost::system::error_code> exchange(request_context& ctx, pooled_connection& oc);
    net::awaitable<boost::system::result<pooled_connection>> send_to_origin(request_context& ctx);
    net::awaitable<void> forward(request_context& ctx);
    net::awaitable<void> write_head_only(request_context& ctx, http::response_header<> h);
    enum class buffered { complete, too_large, failed };
    net::awaitable<buffered> buffer_response_body(request_context& ctx, pooled_connection& oc,
                                                  std::string& out, std::size_t limit);
    net::awaitable<void> relay_response(request_context& ctx, pooled_connection& oc, std::string& prefix);
    net::awaitable<void> fail_origin(request_context& ctx, boost::system::error_code ec);
    void prepare_client_response(request_context& ctx, http::response_header<>& h);

    // Tracking (SPEC §4, §5).
    net::awaitable<void> serve_read(request_context& ctx);
    net::awaitable<void> serve_write(request_context& ctx);
    net::awaitable<void> serve_unjudged_write(request_context& ctx, std::optional<cache::resource_ref> destination);
    // `dav_if`: where the If header's rewrite lands once judged (proxy/dav_if.hpp), or null.
    net::awaitable<void> run_write(request_context& ctx, write_params params,
                                   std::optional<cache::resource_ref> companion,
                                   const std::optional<std::string>* dav_if_forward = nullptr);
    write_params write_params_for(const request_context& ctx, cache::condition cond) const;
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

    worker& w_;
    beast::tcp_stream client_;
    beast::flat_buffer buffer_;
    std::string peer_;
    std::optional<request_parser> req_;
    std::optional<response_parser> res_;
    std::function<void(std::uint64_t, std::string_view, boost::system::error_code&)> on_chunk_;
    std::unique_ptr<char[]> relay_buf_;
    problem pending_;
    std::string no_prefix_;
    std::uint64_t served_ = 0;
    // When the header of the request being read is due (set by wait_for_request()).
    std::chrono::steady_clock::time_point header_deadline_;
    bool idle_ = false;
};

}  // namespace ifm::proxy

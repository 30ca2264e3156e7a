// bench/floor: the plain relay's floor (bench/run --only floor). Asio and C++20 coroutines as the
// proxy uses them, one io_context on one thread, but no HTTP library: a message is its header up
// to CRLFCRLF and a Content-Length body, relayed as it is over one origin connection per client
// connection. What the event loop, the coroutines and the kernel cost per request, with no
// parsing, routing or policy. -DUSE_TCP_STREAM: the same on beast::tcp_stream with a timeout
// per operation, as the proxy's streams have. Benchmark code: no error handling beyond closing.
#include "relay_main.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <charconv>
#include <cstring>
#include <string_view>

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using net::awaitable;
using net::use_awaitable;

// The stream both sides use, its per-operation timeout, and its socket.
#ifdef USE_TCP_STREAM
using stream_t = beast::tcp_stream;
#define TIMEOUT(s) s.expires_after(std::chrono::seconds(10))
#define SOCK(s) s.socket()
#else
using stream_t = tcp::socket;
#define TIMEOUT(s) (void)0
#define SOCK(s) s
#endif

// Reads one message (header + Content-Length body) into buf; returns its size, 0 on EOF/error.
// Bytes past it stay in buf[n..len).
template <class S>
static awaitable<std::size_t> read_message(S& s, char* buf, std::size_t cap, std::size_t& len) {
    for (;;) {
        std::string_view v(buf, len);
        auto end = v.find("\r\n\r\n");
        if (end != std::string_view::npos) {
            std::size_t body = 0;
            auto cl = v.substr(0, end).find("Content-Length: ");
            if (cl == std::string_view::npos) cl = v.substr(0, end).find("content-length: ");
            if (cl != std::string_view::npos) {
                auto p = buf + cl + 16;
                std::from_chars(p, buf + end, body);
            }
            std::size_t total = end + 4 + body;
            while (len < total) {
                auto [ec, n] = co_await s.async_read_some(net::buffer(buf + len, cap - len), net::as_tuple(use_awaitable));
                if (ec || n == 0) co_return 0;
                len += n;
            }
            co_return total;
        }
        if (len == cap) co_return 0;
        TIMEOUT(s);
        auto [ec, n] = co_await s.async_read_some(net::buffer(buf + len, cap - len), net::as_tuple(use_awaitable));
        if (ec || n == 0) co_return 0;
        len += n;
    }
}

static awaitable<void> session(tcp::socket client_sock, tcp::endpoint origin_ep) {
    stream_t client(std::move(client_sock));
    stream_t origin(client.get_executor());
    auto [cec] = co_await origin.async_connect(origin_ep, net::as_tuple(use_awaitable));
    if (cec) co_return;
    SOCK(origin).set_option(tcp::no_delay(true));
    SOCK(client).set_option(tcp::no_delay(true));
    static thread_local char cbuf[1 << 16], obuf[1 << 17];
    std::size_t clen = 0;
    for (;;) {
        auto n = co_await read_message(client, cbuf, sizeof cbuf, clen);
        if (!n) co_return;
        TIMEOUT(origin);
        auto [wec, wn] = co_await net::async_write(origin, net::buffer(cbuf, n), net::as_tuple(use_awaitable));
        if (wec) co_return;
        std::memmove(cbuf, cbuf + n, clen - n);
        clen -= n;
        std::size_t olen = 0;
        auto m = co_await read_message(origin, obuf, sizeof obuf, olen);
        if (!m) co_return;
        TIMEOUT(client);
        auto [rec, rn] = co_await net::async_write(client, net::buffer(obuf, m), net::as_tuple(use_awaitable));
        if (rec) co_return;
    }
}

int main(int argc, char** argv) { return floor_relay::run(argc, argv, session); }

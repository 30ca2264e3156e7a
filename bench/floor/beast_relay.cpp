// bench/floor: bare_relay.cpp's loop with Beast's HTTP layer (bench/run --only floor): a parser,
// fields and a serializer per message (http::async_read / async_write, string_body), on
// beast::tcp_stream with a timeout per operation. What Beast's message layer costs per request
// above the bare relay, with no routing or policy. Benchmark code: no error handling beyond closing.
#include "relay_main.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using net::awaitable;
using net::use_awaitable;

static awaitable<void> session(tcp::socket client_sock, tcp::endpoint origin_ep) {
    beast::tcp_stream client(std::move(client_sock));
    beast::tcp_stream origin(client.get_executor());
    auto [cec] = co_await origin.async_connect(origin_ep, net::as_tuple(use_awaitable));
    if (cec) co_return;
    origin.socket().set_option(tcp::no_delay(true));
    client.socket().set_option(tcp::no_delay(true));
    beast::flat_buffer cbuf, obuf;
    for (;;) {
        http::request<http::string_body> req;
        client.expires_after(std::chrono::seconds(10));
        auto [ec, n] = co_await http::async_read(client, cbuf, req, net::as_tuple(use_awaitable));
        if (ec) co_return;
        origin.expires_after(std::chrono::seconds(10));
        auto [wec, wn] = co_await http::async_write(origin, req, net::as_tuple(use_awaitable));
        if (wec) co_return;
        http::response<http::string_body> res;
        origin.expires_after(std::chrono::seconds(10));
        auto [rec, rn] = co_await http::async_read(origin, obuf, res, net::as_tuple(use_awaitable));
        if (rec) co_return;
        client.expires_after(std::chrono::seconds(10));
        auto [xec, xn] = co_await http::async_write(client, res, net::as_tuple(use_awaitable));
        if (xec) co_return;
    }
}

int main(int argc, char** argv) { return floor_relay::run(argc, argv, session); }

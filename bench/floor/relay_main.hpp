// bench/floor: what both relays share: the accept loop and main(). bare_relay.cpp and
// beast_relay.cpp, each a program of its own, pass their `session` to floor_relay::run().
#pragma once

#include <boost/asio.hpp>

#include <cstdio>
#include <cstdlib>

namespace floor_relay {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// A connection's relay: the client's socket and the origin to open a connection to.
using session_fn = net::awaitable<void> (*)(tcp::socket, tcp::endpoint);

inline net::awaitable<void> listener(tcp::acceptor acc, tcp::endpoint origin_ep, session_fn session) {
    for (;;) {
        auto [ec, s] = co_await acc.async_accept(net::as_tuple(net::use_awaitable));
        if (ec) continue;
        net::co_spawn(acc.get_executor(), session(std::move(s), origin_ep), net::detached);
    }
}

// NAME LISTEN_PORT ORIGIN_PORT, on 127.0.0.1, one thread.
inline int run(int argc, char** argv, session_fn session) {
    if (argc < 3) {
        std::fprintf(stderr, "%s LISTEN_PORT ORIGIN_PORT\n", argv[0]);
        return 2;
    }
    net::io_context ioc(1);
    tcp::acceptor acc(ioc, {net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::atoi(argv[1]))});
    tcp::endpoint origin_ep(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::atoi(argv[2])));
    net::co_spawn(ioc, listener(std::move(acc), origin_ep, session), net::detached);
    ioc.run();
    return 0;
}

}  // namespace floor_relay

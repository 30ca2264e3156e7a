// Reads that tell Asio's reactor the socket is drained (proxy/drained_read.hpp): the read after a
// short one makes no recv until epoll reports data, and no read ever waits for data that came.
#include "proxy/drained_read.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <doctest/doctest.h>

#include <dlfcn.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace net = boost::asio;
using net::ip::tcp;
using ifm::proxy::drained_read;

namespace {

std::atomic<int> counted_fd{-1};
std::atomic<int> counted_recvs{0};

}  // namespace

// Asio reads a single buffer with recv(2): counted here for one socket, then passed on to the
// next definition (libc's, or a sanitizer's interceptor).
extern "C" ssize_t recv(int fd, void* buf, size_t n, int flags) {
    using recv_fn = ssize_t (*)(int, void*, size_t, int);
    static const auto next = reinterpret_cast<recv_fn>(::dlsym(RTLD_NEXT, "recv"));
    if (fd == counted_fd.load(std::memory_order_relaxed)) counted_recvs.fetch_add(1, std::memory_order_relaxed);
    return next(fd, buf, n, flags);
}

namespace {

struct tcp_pair {
    net::io_context io;
    tcp::socket reader{io}, writer{io};
    tcp_pair() {
        tcp::acceptor acc(io, tcp::endpoint(net::ip::address_v4::loopback(), 0));
        writer.connect(acc.local_endpoint());
        acc.accept(reader);
        reader.non_blocking(true);
    }
    ~tcp_pair() { counted_fd = -1; }
};

// Bytes read by one read started on `p.reader` (through `read`), and the recv calls it made
// before any data was there and in all.
struct second_read {
    int recvs_while_empty = -1;
    int recvs_total = -1;
    std::size_t got = 0;
};

// The completion handler of a read that stores its byte count in `got`.
auto store_in(std::size_t& got) {
    return [&got](boost::system::error_code ec, std::size_t n) {
        CHECK(!ec);
        got = n;
    };
}

// `read(buffer, size, got)` starts one read of the reader (socket `fd`): once with 10 bytes there
// for a 100-byte buffer, then with nothing there until 5 bytes are written.
template <class StartRead>
second_read after_a_short_read(tcp_pair& p, int fd, StartRead read) {
    char buf[100];
    std::size_t got = 0;
    net::write(p.writer, net::buffer(std::string(10, 'a')));
    counted_fd = fd;
    read(buf, sizeof buf, got);
    p.io.run_for(std::chrono::seconds(5));
    p.io.restart();
    REQUIRE(got == 10);   // short: 10 of 100
    counted_recvs = 0;
    second_read r;
    read(buf, sizeof buf, r.got);
    p.io.poll();   // the read is started; nothing has been written yet
    r.recvs_while_empty = counted_recvs.load();
    net::write(p.writer, net::buffer(std::string(5, 'b')));
    p.io.run_for(std::chrono::seconds(5));
    r.recvs_total = counted_recvs.load();
    return r;
}

}  // namespace

TEST_CASE("drained_read: after a short read, the next read makes no recv until data comes") {
    tcp_pair p;
    second_read r;
    int want_while_empty = 0;
    SUBCASE("on the socket") {
        r = after_a_short_read(p, p.reader.native_handle(), [&](char* b, std::size_t n, std::size_t& got) {
            p.reader.async_read_some(drained_read(net::buffer(b, n)), store_in(got));
        });
    }
    SUBCASE("through beast::tcp_stream (its reads hand the socket a prefix of the buffer)") {
        boost::beast::tcp_stream s(std::move(p.reader));
        r = after_a_short_read(p, s.socket().native_handle(), [&](char* b, std::size_t n, std::size_t& got) {
            s.expires_after(std::chrono::seconds(5));
            s.async_read_some(drained_read(net::buffer(b, n)), store_in(got));
        });
    }
    SUBCASE("Asio's own reads try a recv that finds nothing first (what the test would see without drained_read)") {
        want_while_empty = 1;
        r = after_a_short_read(p, p.reader.native_handle(), [&](char* b, std::size_t n, std::size_t& got) {
            p.reader.async_read_some(net::buffer(b, n), store_in(got));
        });
    }
    CHECK(r.got == 5);
    CHECK(r.recvs_while_empty == want_while_empty);
    CHECK(r.recvs_total == want_while_empty + 1);
}

TEST_CASE("drained_read: a read that fills its buffer does not count as draining") {
    tcp_pair p;
    char buf[10];
    std::size_t got = 0;
    net::write(p.writer, net::buffer(std::string(15, 'a')));
    p.reader.async_read_some(drained_read(net::buffer(buf)), store_in(got));
    p.io.run_for(std::chrono::seconds(5));
    p.io.restart();
    REQUIRE(got == 10);
    got = 0;
    p.reader.async_read_some(drained_read(net::buffer(buf)), store_in(got));
    p.io.poll();
    CHECK(got == 5);   // read at once, without waiting for another event
}

TEST_CASE("drained_read: every byte arrives, whatever the sizes and timing of writes and reads") {
    // A lost wakeup would leave a read waiting for data that is already there: the run's
    // deadline would pass with bytes missing.
    for (int through_stream = 0; through_stream < 2; ++through_stream) {
        INFO("through beast::tcp_stream: " << through_stream);
        tcp_pair p;
        boost::beast::tcp_stream s(std::move(p.reader));
        s.socket().non_blocking(true);
        std::string sent, received;
        std::mt19937 rng(42 + through_stream);
        for (int i = 0; i < 3000; ++i) sent.push_back(static_cast<char>('a' + rng() % 26));
        for (int i = 0; i < 6; ++i) sent += sent;   // 192,000 bytes
        std::thread writer([&] {
            std::mt19937 wr(7);
            for (std::size_t at = 0; at < sent.size();) {
                auto n = std::min<std::size_t>(sent.size() - at, 1 + wr() % 3000);
                net::write(p.writer, net::buffer(sent.data() + at, n));
                at += n;
                if (wr() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(wr() % 200));
            }
        });
        std::vector<char> buf(4096);
        std::function<void()> next = [&] {
            auto want = 1 + rng() % buf.size();
            auto done = [&](boost::system::error_code ec, std::size_t n) {
                if (ec) return;
                received.append(buf.data(), n);
                if (received.size() < sent.size()) next();
            };
            if (through_stream)
                s.async_read_some(drained_read(net::buffer(buf.data(), want)), done);
            else
                s.socket().async_read_some(drained_read(net::buffer(buf.data(), want)), done);
        };
        next();
        p.io.run_for(std::chrono::seconds(20));
        writer.join();
        CHECK(received.size() == sent.size());
        CHECK(received == sent);
    }
}

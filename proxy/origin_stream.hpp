// A byte stream that is plain TCP or TLS over TCP, chosen per connection at run time: to an
// origin (an upstream with tls.enabled) and from a client (listen_tls). Beast's HTTP algorithms
// take it like either stream (it is an AsyncReadStream and AsyncWriteStream); timeouts are the
// TCP layer's in both cases.
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <variant>

namespace ifm::proxy {

class tcp_or_tls_stream {
public:
    using executor_type = boost::asio::any_io_executor;
    using tls_stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

    // To be connected (an origin).
    explicit tcp_or_tls_stream(executor_type ex) : s_(std::in_place_index<0>, std::move(ex)) {}
    tcp_or_tls_stream(executor_type ex, boost::asio::ssl::context& tls)
        : s_(std::in_place_index<1>, std::move(ex), tls) {}
    // Accepted (a client); with `tls`, the server handshake is still to be done.
    explicit tcp_or_tls_stream(boost::asio::ip::tcp::socket s) : s_(std::in_place_index<0>, std::move(s)) {}
    tcp_or_tls_stream(boost::asio::ip::tcp::socket s, boost::asio::ssl::context& tls)
        : s_(std::in_place_index<1>, boost::beast::tcp_stream(std::move(s)), tls) {}

    executor_type get_executor() noexcept { return tcp().get_executor(); }
    boost::beast::tcp_stream& tcp() { return s_.index() == 0 ? std::get<0>(s_) : std::get<1>(s_).next_layer(); }
    boost::asio::ip::tcp::socket& socket() { return tcp().socket(); }
    // Null for a plain connection.
    tls_stream* tls() { return std::get_if<1>(&s_); }

    template <class Duration>
    void expires_after(Duration d) { tcp().expires_after(d); }
    template <class TimePoint>
    void expires_at(TimePoint t) { tcp().expires_at(t); }
    void expires_never() { tcp().expires_never(); }
    void cancel() { tcp().cancel(); }
    // The TCP socket, taken out of a plain stream (a TLS one has state beyond it).
    boost::asio::ip::tcp::socket release_socket() { return std::get<0>(s_).release_socket(); }
    // No TLS close_notify: the origin sees the connection end, which is all a pool needs.
    void close() { tcp().close(); }

    // The handler goes to the chosen stream as is: its executor and cancellation slot (the
    // parallel group in read_origin_header) stay attached.
    template <class MutableBufferSequence, class ReadToken>
    auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token) {
        return boost::asio::async_initiate<ReadToken, void(boost::system::error_code, std::size_t)>(
            [this](auto handler, const MutableBufferSequence& b) {
                if (auto* t = tls()) t->async_read_some(b, std::move(handler));
                else std::get<0>(s_).async_read_some(b, std::move(handler));
            },
            token, buffers);
    }

    template <class ConstBufferSequence, class WriteToken>
    auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
        return boost::asio::async_initiate<WriteToken, void(boost::system::error_code, std::size_t)>(
            [this](auto handler, const ConstBufferSequence& b) {
                if (auto* t = tls()) t->async_write_some(b, std::move(handler));
                else std::get<0>(s_).async_write_some(b, std::move(handler));
            },
            token, buffers);
    }

    // Sends what the socket takes at once, as one sendmsg(2) that never blocks: no operation, no
    // timer, no completion to post and resume, where most small requests and responses go whole
    // (two timed asynchronous writes cost a GET about 8,900 of its 44,100 instructions). Plain TCP
    // only (a TLS record goes through its engine): 0 there, and on a full buffer or an error,
    // which the asynchronous write of the rest then meets itself.
    template <class ConstBufferSequence>
    std::size_t send_now(const ConstBufferSequence& buffers) {
        if (tls()) return 0;
        std::array<iovec, 4> iov{};
        std::size_t n = 0, total = 0;
        for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it) {
            boost::asio::const_buffer b(*it);
            if (b.size() == 0) continue;
            if (n == iov.size()) return 0;   // more pieces than here: the asynchronous write sends them
            iov[n].iov_base = const_cast<void*>(b.data());
            iov[n].iov_len = b.size();
            total += b.size();
            ++n;
        }
        // Above 64 KiB (a buffered hash-route body) the asynchronous write is the cheaper: with one
        // sendmsg of header + 64 KiB, a 64 KiB hash-route GET cost 1.26-1.44x the CPU (bench/pinned_ab, 3
        // runs); Asio writes at most 64 KiB per call.
        if (n == 0 || total > 65536) return 0;
        msghdr m{};
        m.msg_iov = iov.data();
        m.msg_iovlen = n;
        auto r = ::sendmsg(std::get<0>(s_).socket().native_handle(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        return r > 0 ? static_cast<std::size_t>(r) : 0;
    }

private:
    std::variant<boost::beast::tcp_stream, tls_stream> s_;
};

using origin_stream = tcp_or_tls_stream;
using client_stream = tcp_or_tls_stream;

}  // namespace ifm::proxy

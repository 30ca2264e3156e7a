// The byte stream to one origin: plain TCP, or TLS over TCP for an upstream with tls.enabled,
// chosen per connection at run time. Beast's HTTP algorithms take it like either stream (it is
// an AsyncReadStream and AsyncWriteStream); timeouts are the TCP layer's in both cases.
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <variant>

namespace ifm::proxy {

class origin_stream {
public:
    using executor_type = boost::asio::any_io_executor;
    using tls_stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

    explicit origin_stream(executor_type ex) : s_(std::in_place_index<0>, std::move(ex)) {}
    origin_stream(executor_type ex, boost::asio::ssl::context& tls)
        : s_(std::in_place_index<1>, std::move(ex), tls) {}

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

private:
    std::variant<boost::beast::tcp_stream, tls_stream> s_;
};

}  // namespace ifm::proxy

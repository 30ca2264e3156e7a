// A socket read that tells Asio's reactor when it drained the socket, so that the next read on
// that socket waits for epoll instead of first trying a recv that finds nothing.
//
// Asio 1.81 tries every read at once ("speculatively") unless the socket's last read met EOF: a
// read that returns fewer bytes than asked does not count as draining it. On a keep-alive
// connection the read after each exchange (the client's next request, the origin's response to
// the request just sent) therefore always began with a recv that failed with EAGAIN: two of an
// untracked GET's seven system calls (bench/syscalls), though cheap ones, about 0.2 µs each here
// (bench/syscall_cost.c). For a TCP socket a short read does mean "drained": the kernel copies until
// the buffer is full or the receive queue (and its backlog) is empty, and data that comes later
// raises a new edge-triggered event, which lets the reactor try reads again. HAProxy reasons the
// same way (a short recv marks its fd as not ready).
//
// How: reads whose buffer is a `drained_read` (on the socket, or through beast::tcp_stream) use
// the explicit specializations below of Asio's reactive_socket_recv_op_base, which are Asio's own
// code with one change: on a stream socket a read that returns fewer bytes than asked reports
// done_and_exhausted, as Asio's does for EOF. They specialize an Asio template for types of ours,
// as proxy/frame_pool.hpp does: no Asio header is copied or changed, and reads of any other
// buffer type (Beast's, OpenSSL's, hiredis's) are Asio's own. Through TLS, the TLS stream reads
// the socket into buffers of its own: those reads keep Asio's behaviour.
//
// Use it only where no other read is queued on the same socket at the same time: a drained read
// that completes from the reactor stops the reactor performing further queued reads on that
// socket until its next event.
#pragma once

#include <boost/asio/basic_stream_socket.hpp>   // first: the detail header needs what it declares
#include <boost/asio/buffer.hpp>

#include <boost/asio/detail/reactive_socket_recv_op.hpp>
#include <boost/asio/version.hpp>
#include <boost/beast/core/buffers_prefix.hpp>

#if BOOST_ASIO_VERSION != 102600
#error "proxy/drained_read.hpp specializes Asio 1.26's reactive_socket_recv_op_base (Boost 1.81): check it against this Asio"
#endif

namespace ifm::proxy {

// One buffer, read into as Asio reads any mutable_buffer; also a sequence of that one buffer,
// for beast::buffers_prefix (beast::tcp_stream's reads).
struct drained_read : boost::asio::mutable_buffer {
    explicit drained_read(boost::asio::mutable_buffer b) : boost::asio::mutable_buffer(b) {}
    const boost::asio::mutable_buffer* begin() const { return this; }
    const boost::asio::mutable_buffer* end() const { return begin() + 1; }
};

}  // namespace ifm::proxy

namespace boost::asio::detail {

// Asio's reactive_socket_recv_op_base (detail/reactive_socket_recv_op.hpp) for a buffer sequence
// of one drained_read, with the one change above.
template <class Buffers>
class ifm_drained_recv_op_base : public reactor_op {
public:
    ifm_drained_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                             socket_ops::state_type state, const Buffers& buffers, socket_base::message_flags flags,
                             func_type complete_func)
        : reactor_op(success_ec, &ifm_drained_recv_op_base::do_perform, complete_func),
          socket_(socket), state_(state), buffers_(buffers), flags_(flags) {}

    static status do_perform(reactor_op* base) {
        auto* o = static_cast<ifm_drained_recv_op_base*>(base);
        boost::asio::mutable_buffer b;
        auto it = boost::asio::buffer_sequence_begin(o->buffers_);
        if (it != boost::asio::buffer_sequence_end(o->buffers_)) b = *it;   // one buffer at most
        const bool stream = (o->state_ & socket_ops::stream_oriented) != 0;
        status result =
            socket_ops::non_blocking_recv1(o->socket_, b.data(), b.size(), o->flags_, stream, o->ec_, o->bytes_transferred_)
                ? done
                : not_done;
        // Asio's test is bytes_transferred_ == 0 (EOF); a short read drains the socket too.
        if (result == done && stream && o->bytes_transferred_ < b.size()) result = done_and_exhausted;
        return result;
    }

private:
    socket_type socket_;
    socket_ops::state_type state_;
    Buffers buffers_;
    socket_base::message_flags flags_;
};

// Read on the socket itself.
template <>
class reactive_socket_recv_op_base<ifm::proxy::drained_read>
    : public ifm_drained_recv_op_base<ifm::proxy::drained_read> {
public:
    using ifm_drained_recv_op_base::ifm_drained_recv_op_base;
};

// Read through beast::tcp_stream, which hands the socket a prefix of the caller's buffers (its
// rate limit; ours is unlimited, so the prefix is the whole buffer).
template <>
class reactive_socket_recv_op_base<boost::beast::buffers_prefix_view<ifm::proxy::drained_read>>
    : public ifm_drained_recv_op_base<boost::beast::buffers_prefix_view<ifm::proxy::drained_read>> {
public:
    using ifm_drained_recv_op_base::ifm_drained_recv_op_base;
};

}  // namespace boost::asio::detail

// The request path without I/O: the raw-header screen, parser settings and checks that
// client_session applies to every request from a client, and the bytes it would forward.
// The session calls these same functions on socket bytes; tests/fuzz/request_fuzz.cpp calls
// gate_request() on arbitrary bytes and re-parses what would reach the origin (HARDENING.md).
#pragma once

#include "config/config.hpp"
#include "proxy/problem.hpp"

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ifm::proxy {

using request_parser = http::request_parser<http::buffer_body, field_allocator<char>>;

// Screens the raw header block as it arrives, for what Beast 1.81 accepts or hides once it has
// parsed a header: obs-fold continuation lines (joined into the value), whitespace variants of
// Content-Length / Transfer-Encoding (trimmed away), bare CR or LF, NUL. Call scan() with the
// received bytes (starting at the request line, the same prefix growing between calls); the
// work over all calls is linear in the header size.
class head_scanner {
public:
    enum class state { incomplete, complete, refused };
    state scan(std::string_view raw);
    // complete: bytes up to and including the empty line that ends the header block.
    std::size_t head_size() const { return head_size_; }
    // refused: why (for a 400).
    const std::string& reason() const { return reason_; }

private:
    state refuse(std::string why);
    std::size_t line_start_ = 0;
    std::size_t searched_ = 0;   // bytes of the current line already searched for LF
    bool request_line_ = true;
    std::size_t head_size_ = 0;
    std::string reason_;
};

// Feeds `input` from `pos` to the parser until it has the header ({}), needs more than there is
// (need_more), or fails; `pos` moves past what the parser consumed. The session parses a header
// block head_scanner found complete with it, without a socket read.
boost::system::error_code feed_header(request_parser& p, std::string_view input, std::size_t& pos);

// Sets the header and body limits (Beast ignores a body_limit set after the header was parsed).
// The caller also installs check_chunk_header with on_chunk_header (Beast keeps a reference to
// the callback, so it must outlive the parser).
void configure_request_parser(request_parser& p, const config::limits_config& limits);

// The chunk-header callback: chunk extensions are validated (RFC 9112 §7.1.1, quoted strings
// included, which Beast 1.81 does not check) and capped at 256 bytes.
void check_chunk_header(std::uint64_t size, std::string_view extensions, boost::system::error_code& ec);

// Parses body bytes (`data`: what is buffered, from the start) into the parser's buffer_body
// buffer until the parser is done ({}), its buffer is full (need_buffer), it needs more bytes
// (need_more), or the body is malformed. `used` says how much of `data` was consumed. Two gaps of
// Beast 1.81 are closed here: trailer fields (which Beast merges into the header map) are
// discarded, and a chunk line whose quoted extension runs past its CRLF, on which Beast would
// wait for a closing quote forever, is refused (bad_chunk_extension). A trailer Content-Length or
// Transfer-Encoding still fails the parse (Beast checks them against the framing): refused.
boost::system::error_code parse_body_bytes(request_parser& p, std::string_view data, std::size_t& used);

// The problem sent when reading a request header failed (431, 413, 408 or 400).
problem read_error_problem(const boost::system::error_code& ec);

// The answer to a client that failed in the middle of its request body: 413, 400 (bad
// chunking, trailer fields); nullopt when the client is gone (EOF, reset, or too slow: a read
// that timed out has closed the socket), so nobody is left to answer.
std::optional<problem> body_error_problem(const boost::system::error_code& ec);

// What the checks make of a parsed request header.
struct request_check {
    std::optional<problem> refusal;  // set: answer this and close the client connection
    std::string normalized;          // accepted: normalize_target(target, keep)
};

// Every check of a parsed request header, in order: field count (431), framing
// (check_request_framing, 400), target length (414), absolute-form target (its authority must
// equal Host; rewritten to origin-form in `h`), target syntax (400).
request_check check_request(request_header& h, const config::limits_config& limits);

// Deadline of the next read of a request body. No gap may exceed body_timeout; with a
// min_body_rate the whole body must also arrive within body_timeout plus one second per
// min_body_rate bytes received (Apache mod_reqtimeout's MinRate).
std::chrono::steady_clock::time_point body_read_deadline(std::chrono::steady_clock::time_point body_start,
                                                         std::uint64_t received,
                                                         const config::limits_config& limits,
                                                         std::chrono::steady_clock::time_point now);

// The request header as it goes to the origin: hop-by-hop fields (and those named in
// Connection) removed, HTTP/1.1, our own framing (never the client's Transfer-Encoding),
// forwarding headers, Via, the upstream's Host override, keep-alive.
void rewrite_for_origin(request_header& h, std::optional<std::uint64_t> content_length, bool chunked,
                        const config::headers_config& headers, std::string_view client_ip,
                        std::string_view host, std::string_view host_header);

// The whole request path on bytes: screen, parse, check, rewrite, stream the body through the
// same parser and serializer as the session (the client address is 192.0.2.1).
struct gate_result {
    enum class kind {
        forwarded,    // `forwarded` holds the complete request the origin would receive
        refused,      // `refusal` is the answer; `forwarded` what reached the origin before
                      // (a prefix of a request, never a complete one)
        incomplete,   // the input ended before the request did
    };
    kind outcome = kind::incomplete;
    std::optional<problem> refusal;
    std::string forwarded;
    std::size_t consumed = 0;        // input bytes that belong to this request
    std::string method;              // as the proxy understood the request
    std::string target;              // origin-form
    std::string normalized;
    std::string body;                // the body bytes after de-chunking
};
gate_result gate_request(std::string_view input, const config::limits_config& limits,
                         const config::headers_config& headers = {});

}  // namespace ifm::proxy

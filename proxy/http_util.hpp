// Header utilities for a proxy's duties (RFC 9110 §7.6): hop-by-hop fields, Via, Forwarded /
// X-Forwarded-*, and the framing checks Beast 1.81 leaves to us (HARDENING.md).
#pragma once

#include "config/config.hpp"
#include "proxy/header_fields.hpp"

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/empty_body.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace ifm::proxy {

namespace http = boost::beast::http;

// The comma-separated tokens of a Connection header (lower-cased, trimmed, empties dropped).
std::vector<std::string> connection_tokens(std::string_view value);

// Removes the hop-by-hop fields (RFC 9110 §7.6.1) and every field named in Connection.
void strip_hop_by_hop(header_fields& f);

// Appends `client_ip` to X-Forwarded-For (after any existing values).
void append_x_forwarded_for(header_fields& f, std::string_view client_ip);

// Adds the forwarding headers of `style` for a request from `client_ip` that arrived with `host`.
// From a `trusted` peer (headers.trusted_proxies) the incoming X-Forwarded-For / Forwarded are
// extended and X-Forwarded-Proto / -Host kept; from any other they are all replaced (a client
// must not choose the address or scheme the origin believes). Style `none` leaves them alone.
void add_forwarding_headers(header_fields& f, config::forwarded_style style,
                            std::string_view client_ip, std::string_view host, bool trusted = false,
                            std::string_view proto = "http");

// Appends our Via entry ("1.1 ifmatch-proxy").
void append_via(header_fields& f, unsigned version);

// The value of every line of `name` joined with ", " (RFC 9110 §5.3); nullopt if absent.
std::optional<std::string> joined_field(const header_fields& f, http::field name);
std::optional<std::string> joined_field(const header_fields& f, std::string_view name);

// The number of field lines in `f`.
std::size_t field_count(const header_fields& f);

// Beast 1.81 parses a trailer section into the header's field map, and inserts each field next
// to the fields of the same name, not at the end: a trailer `Set-Cookie` lands among the
// header's. Trailers are never merged into the header (RFC 9110 §6.5.1), so they are dropped,
// told apart by one of these two means:
// - by the names of the trailer's field lines, in order (the raw trailer section was read): of
//   each name, the last as many fields as the trailer had lines are the trailer's;
void drop_trailer_fields(header_fields& f, const std::vector<std::string_view>& trailer_names);
// - by the header's own fields, recorded before the trailer section was parsed (the chunk
//   callback of the last chunk): everything else is the trailer's.
class header_snapshot {
public:
    void take(const header_fields& f);
    bool taken() const { return taken_; }
    // Erases every field `f` did not hold when take() was called; forgets the snapshot.
    void drop_added(header_fields& f);
    void clear() { kept_.clear(); taken_ = false; }

private:
    std::vector<const void*> kept_;   // sorted addresses of the header's field elements
    bool taken_ = false;
};

// The Max-Forwards value (RFC 9110 §7.6.2: 1*DIGIT, one field line); nullopt when absent or
// malformed (then it is forwarded as it came).
std::optional<std::uint64_t> max_forwards_of(const header_fields& f);

// The body of a TRACE answered here (RFC 9110 §9.3.8): the request as received, start line and
// fields, minus those likely to hold credentials (Authorization, Proxy-Authorization, Cookie).
std::string trace_reflection(const request_header& h);

// A WebSocket opening handshake's header (RFC 6455 §4.1): `Upgrade: websocket` and a
// Connection naming `upgrade`.
bool is_websocket_upgrade(const request_header& h);

// RFC 9110 §5.6.2 tchar: a byte of a token (field names, chunk extension names).
bool is_tchar(char c);

// Case-insensitive ASCII equality.
bool iequals(std::string_view a, std::string_view b);
std::string_view trim(std::string_view s);

// Request framing checks Beast 1.81 does not make (HARDENING.md). Returns an empty string when
// the header is acceptable, else the reason for a 400 (after which the connection is closed).
std::string check_request_framing(const request_header& h);

// Response framing checks for what the origin sent (a failure means 502 and discarding the
// origin connection).
std::string check_response_framing(const response_header& h);

// Is the method one whose request may not be retried (RFC 9110 §9.2.2)?
bool is_idempotent(http::verb v);

// The header block as it goes on the wire (start line, fields in order, blank line), appended
// to `out`: one contiguous buffer, where Beast's serializer hands the socket one buffer per
// field. Used when the whole message can go out in one write (no body still to stream).
void serialize_header(const request_header& h, std::string& out);
void serialize_header(const response_header& h, std::string& out);

}  // namespace ifm::proxy

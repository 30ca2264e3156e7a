// Header utilities for a proxy's duties (RFC 9110 §7.6): hop-by-hop fields, Via, Forwarded /
// X-Forwarded-*, and the framing checks Beast 1.81 leaves to us (HARDENING.md).
#pragma once

#include "config/config.hpp"

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
void strip_hop_by_hop(http::fields& f);

// Appends `client_ip` to X-Forwarded-For (after any existing values).
void append_x_forwarded_for(http::fields& f, std::string_view client_ip);

// Adds the forwarding headers of `style` for a request from `client_ip` that arrived with `host`.
void add_forwarding_headers(http::fields& f, config::forwarded_style style,
                            std::string_view client_ip, std::string_view host);

// Appends our Via entry ("1.1 ifmatch-proxy").
void append_via(http::fields& f, unsigned version);

// The value of every line of `name` joined with ", " (RFC 9110 §5.3); nullopt if absent.
std::optional<std::string> joined_field(const http::fields& f, http::field name);
std::optional<std::string> joined_field(const http::fields& f, std::string_view name);

// Case-insensitive ASCII equality.
bool iequals(std::string_view a, std::string_view b);
std::string_view trim(std::string_view s);

// Request framing checks Beast 1.81 does not make (HARDENING.md). Returns an empty string when
// the header is acceptable, else the reason for a 400 (after which the connection is closed).
std::string check_request_framing(const http::request_header<>& h);

// Response framing checks for what the origin sent (a failure means 502 and discarding the
// origin connection).
std::string check_response_framing(const http::response_header<>& h);

// Is the method one whose request may not be retried (RFC 9110 §9.2.2)?
bool is_idempotent(http::verb v);

// The header block as it goes on the wire (start line, fields in order, blank line), appended
// to `out`: one contiguous buffer, where Beast's serializer hands the socket one buffer per
// field. Used when the whole message can go out in one write (no body still to stream).
void serialize_header(const http::request_header<>& h, std::string& out);
void serialize_header(const http::response_header<>& h, std::string& out);

}  // namespace ifm::proxy

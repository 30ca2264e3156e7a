// Responses the proxy makes itself: application/problem+json (RFC 9457), SPEC §6.
#pragma once

#include "proxy/header_fields.hpp"

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace ifm::proxy {

namespace http = boost::beast::http;

struct problem {
    unsigned status = 500;
    std::string_view slug;             // type = "urn:ifmatch-proxy:problem:<slug>"
    std::string_view title;            // short, fixed per slug
    std::string detail;                // this occurrence
    std::string instance;              // the request target
    std::optional<std::string> current_etag;
    unsigned retry_after = 0;          // seconds; 0: no Retry-After header
};

// JSON string escaping, used for problem bodies and JSON logs: control characters as \u00XX,
// and every byte that is not part of well-formed UTF-8 as \ufffd, so the output is valid JSON
// (RFC 8259 §8.1) whatever bytes a client sent.
void append_json_string(std::string& out, std::string_view s);

// The length of the well-formed UTF-8 sequence at the start of `s` (1 to 4), or 0 if its first
// byte does not begin one (stray continuation, overlong form, surrogate, beyond U+10FFFF,
// truncated).
std::size_t utf8_sequence_length(std::string_view s);

// `request_id`, when not empty, goes into the body ("request_id") and the X-Request-Id header.
response_message<http::string_body> make_problem_response(const problem& p, unsigned version,
                                                        bool keep_alive, bool head_request,
                                                        std::string_view request_id = {});

}  // namespace ifm::proxy

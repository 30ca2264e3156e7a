// Responses the proxy makes itself: application/problem+json (RFC 9457), SPEC §6.
#pragma once

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

// JSON string escaping (control characters as \u00XX), used for problem bodies and JSON logs.
void append_json_string(std::string& out, std::string_view s);

http::response<http::string_body> make_problem_response(const problem& p, unsigned version,
                                                        bool keep_alive, bool head_request);

}  // namespace ifm::proxy

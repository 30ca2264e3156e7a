#include "proxy/problem.hpp"

#include <boost/beast/http/field.hpp>

#include <cstdio>

namespace ifm::proxy {

void append_json_string(std::string& out, std::string_view s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out += static_cast<char>(c);
            }
        }
    }
    out += '"';
}

http::response<http::string_body> make_problem_response(const problem& p, unsigned version,
                                                        bool keep_alive, bool head_request) {
    std::string body = "{\"type\":";
    append_json_string(body, "urn:ifmatch-proxy:problem:" + std::string(p.slug));
    body += ",\"title\":";
    append_json_string(body, p.title);
    body += ",\"status\":" + std::to_string(p.status) + ",\"detail\":";
    append_json_string(body, p.detail);
    body += ",\"instance\":";
    append_json_string(body, p.instance);
    if (p.current_etag) {
        body += ",\"current_etag\":";
        append_json_string(body, *p.current_etag);
    }
    body += "}\n";

    http::response<http::string_body> res{static_cast<http::status>(p.status), version};
    res.set(http::field::server, "ifmatch-proxy");
    res.set(http::field::content_type, "application/problem+json");
    res.set(http::field::cache_control, "no-store");
    if (p.current_etag && !p.current_etag->empty()) res.set(http::field::etag, *p.current_etag);
    if (p.retry_after) res.set(http::field::retry_after, std::to_string(p.retry_after));
    res.keep_alive(keep_alive);
    res.content_length(body.size());
    if (!head_request) res.body() = std::move(body);
    return res;
}

}  // namespace ifm::proxy

#include "proxy/request_gate.hpp"

#include "proxy/http_util.hpp"
#include "proxy/resource_key.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/serializer.hpp>

#include <algorithm>
#include <cctype>
#include <iterator>

namespace ifm::proxy {

namespace net = boost::asio;
namespace beast = boost::beast;

namespace {

constexpr std::size_t max_chunk_extensions = 256;

bool is_ws(char c) { return c == ' ' || c == '\t'; }

problem bad_request(std::string detail) {
    return {400, "malformed-request", "Bad request", std::move(detail), {}, {}, 0};
}

bool valid_chunk_extensions(std::string_view s);

// Called when the parser of a chunked body wants more bytes although `rest` (its unconsumed
// input) already holds a complete chunk-size line: Beast 1.81 scans a quoted extension past the
// line end and waits for a closing quote. True when that line's extensions are invalid.
bool stuck_on_chunk_line(std::string_view rest) {
    if (rest.starts_with("\r\n")) rest.remove_prefix(2);   // the CRLF that ends chunk data
    auto eol = rest.find("\r\n");
    if (eol == std::string_view::npos) return false;        // the line is still arriving
    auto line = rest.substr(0, eol);
    std::size_t digits = 0;
    while (digits < line.size() && std::isxdigit(static_cast<unsigned char>(line[digits]))) ++digits;
    return digits == 0 || !valid_chunk_extensions(line.substr(digits));
}

// Appends what the serializer has to write (the header, or the body it was given) to `out`.
boost::system::error_code drain(http::request_serializer<http::buffer_body, header_fields>& sr, std::string& out, bool header_only) {
    while (!(header_only ? sr.is_header_done() : sr.is_done())) {
        boost::system::error_code ec;
        std::size_t n = 0;
        sr.next(ec, [&](boost::system::error_code&, const auto& buffers) {
            for (auto b : beast::buffers_range_ref(buffers)) {
                out.append(static_cast<const char*>(b.data()), b.size());
                n += b.size();
            }
        });
        if (ec == http::error::need_buffer) return {};
        if (ec) return ec;
        sr.consume(n);
    }
    return {};
}

// RFC 9112 §7.1.1: *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
bool valid_chunk_extensions(std::string_view s) {
    std::size_t i = 0;
    auto skip_ws = [&] { while (i < s.size() && is_ws(s[i])) ++i; };
    auto token = [&] {
        auto start = i;
        while (i < s.size() && is_tchar(s[i])) ++i;
        return i > start;
    };
    auto quoted = [&] {
        if (i >= s.size() || s[i] != '"') return false;
        for (++i; i < s.size(); ++i) {
            auto c = static_cast<unsigned char>(s[i]);
            if (c == '"') {
                ++i;
                return true;
            }
            if (c == '\\') {
                if (++i >= s.size()) return false;
                c = static_cast<unsigned char>(s[i]);
                if (!(c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f))) return false;
                continue;
            }
            if (!(c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f))) return false;
        }
        return false;
    };
    for (;;) {
        skip_ws();
        if (i == s.size()) return true;
        if (s[i] != ';') return false;
        ++i;
        skip_ws();
        if (!token()) return false;
        auto before = i;
        skip_ws();
        if (i < s.size() && s[i] == '=') {
            ++i;
            skip_ws();
            if (!token() && !quoted()) return false;
        } else {
            i = before;
        }
    }
}

}  // namespace

boost::system::error_code feed_header(request_parser& p, std::string_view input, std::size_t& pos) {
    for (;;) {
        if (p.is_header_done()) return {};
        if (pos == input.size()) return http::error::need_more;
        boost::system::error_code ec;
        auto used = p.put(net::buffer(input.data() + pos, input.size() - pos), ec);
        pos += used;
        if (ec) return ec;
        if (used == 0) return http::error::need_more;
    }
}

head_scanner::state head_scanner::refuse(std::string why) {
    reason_ = std::move(why);
    return state::refused;
}

head_scanner::state head_scanner::scan(std::string_view raw) {
    if (!reason_.empty()) return state::refused;
    if (head_size_ != 0) return state::complete;
    for (auto i = line_start_ + searched_; i < raw.size(); ++i) {
        char c = raw[i];
        if (c == '\0') return refuse("NUL in the request header");
        if (c == '\r') {
            if (i + 1 == raw.size()) {   // is it followed by LF? Look again with more bytes
                searched_ = i - line_start_;
                return state::incomplete;
            }
            if (raw[i + 1] != '\n') return refuse("bare CR in the request header");
            continue;
        }
        if (c != '\n') continue;
        if (i == line_start_ || raw[i - 1] != '\r') return refuse("bare LF in the request header");
        auto line = raw.substr(line_start_, i - 1 - line_start_);
        if (request_line_) {
            if (line.empty()) return refuse("empty request line");
            request_line_ = false;
        } else if (line.empty()) {
            head_size_ = i + 1;
            return state::complete;
        } else if (is_ws(line.front())) {
            return refuse("obsolete line folding (obs-fold) in the request header");
        } else if (auto colon = line.find(':'); colon != std::string_view::npos) {
            auto name = line.substr(0, colon);
            if (!name.empty() && is_ws(name.back())) return refuse("whitespace between a header name and its colon");
            if (iequals(name, "content-length") || iequals(name, "transfer-encoding")) {
                // Accept exactly "Name: value" or "Name:value". Parsers trim other whitespace
                // differently (a tab, a trailing space): a framing value in any other form is
                // a desync attempt, not a client bug.
                auto value = line.substr(colon + 1);
                if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
                if (value.find_first_of(" \t") != std::string_view::npos)
                    return refuse(std::string(name) + " value with surrounding or inner whitespace");
            }
        }
        line_start_ = i + 1;
        searched_ = 0;
    }
    searched_ = raw.size() - line_start_;
    return state::incomplete;
}

void configure_request_parser(request_parser& p, const config::limits_config& limits) {
    p.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(limits.max_header_bytes, UINT32_MAX)));
    p.body_limit(limits.max_body_bytes);
}

void check_chunk_header(std::uint64_t, std::string_view extensions, boost::system::error_code& ec) {
    if (extensions.size() > max_chunk_extensions || !valid_chunk_extensions(extensions))
        ec = http::error::bad_chunk_extension;
}

problem read_error_problem(const boost::system::error_code& ec) {
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
        return {431, "header-too-large", "Request header fields too large",
                "the request header exceeds limits.max_header_bytes", {}, {}, 0};
    if (ec == http::error::body_limit)
        return {413, "body-too-large", "Content too large", "the request body exceeds limits.max_body_bytes", {}, {}, 0};
    if (ec == beast::error::timeout)
        return {408, "request-timeout", "Request timeout",
                "the request header was not received within limits.header_timeout", {}, {}, 0};
    return bad_request(ec.message());
}

// Beast 1.81 parses a trailer section with its header rules, which accept obs-fold. The header
// itself is screened by head_scanner before Beast sees it; a trailer section is checked here,
// after Beast parsed it: `message` ends with the last-chunk line, `fields` trailer fields and the
// empty line (Beast needs all of them in the one put() that finishes the message). Walking back
// over `fields` field lines, any line that starts with whitespace (obs-fold), has whitespace
// before its colon or holds a NUL or a bare CR or LF is refused, as in the header.
boost::system::error_code check_trailer_section(std::string_view message, std::size_t fields,
                                                std::vector<std::string_view>& names) {
    names.clear();
    if (!message.ends_with("\r\n\r\n")) return http::error::bad_field;
    std::size_t end = message.size() - 2;   // just after the last field line's CRLF
    for (std::size_t seen = 0; seen < fields;) {
        if (end < 3) return http::error::bad_field;
        auto line_end = end - 2;   // where this line's CRLF starts
        auto prev = message.rfind("\r\n", line_end - 1);
        if (prev == std::string_view::npos) return http::error::bad_field;
        auto line = message.substr(prev + 2, line_end - prev - 2);
        if (line.empty()) return http::error::bad_field;
        if (is_ws(line.front())) return http::error::bad_obs_fold;
        if (line.find_first_of(std::string_view("\0\r\n", 3)) != std::string_view::npos)
            return http::error::bad_field;
        auto colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0 || is_ws(line[colon - 1])) return http::error::bad_field;
        names.push_back(line.substr(0, colon));
        ++seen;
        end = prev + 2;
    }
    return {};
}

boost::system::error_code parse_body_bytes(request_parser& p, std::string_view data, std::size_t& used) {
    used = 0;
    // Beast parses a trailer section whole, in the put() that finishes the message, and appends
    // it to the header map: the count from before this call is the header's.
    auto fields = field_count(p.get());
    for (;;) {
        if (p.is_done()) {
            // Trailer fields are discarded (RFC 9110 §6.5.1), never merged into the header, which
            // may not have gone out yet (a request sent in one piece).
            if (auto added = field_count(p.get()) - fields; p.chunked() && added > 0) {
                std::vector<std::string_view> names;
                if (auto ec = check_trailer_section(data.substr(0, used), added, names)) return ec;
                drop_trailer_fields(p.get(), names);
            }
            return {};
        }
        if (used == data.size()) return http::error::need_more;
        boost::system::error_code ec;
        auto n = p.put(net::buffer(data.data() + used, data.size() - used), ec);
        used += n;
        if (!ec && n == 0) ec = http::error::need_more;
        if (ec == http::error::need_more && p.chunked() && stuck_on_chunk_line(data.substr(used)))
            return http::error::bad_chunk_extension;
        if (ec) return ec;
    }
}

std::optional<problem> body_error_problem(const boost::system::error_code& ec) {
    if (ec == http::error::body_limit)
        return problem{413, "body-too-large", "Content too large", "the request body exceeds limits.max_body_bytes", {}, {}, 0};
    // Anything but a parse error means the client's connection failed (a read that timed out
    // closed the socket: beast::tcp_stream): nobody to answer.
    bool parse_error = ec.category() == make_error_code(http::error::bad_chunk).category() &&
                       ec != http::error::end_of_stream && ec != http::error::partial_message;
    if (!parse_error) return std::nullopt;
    if (ec == http::error::bad_field) return bad_request("malformed trailer section in the request");
    if (ec == http::error::bad_obs_fold)
        return bad_request("obsolete line folding (obs-fold) in the request's trailer section");
    return bad_request("malformed request body: " + ec.message());
}

request_check check_request(request_header& h, const config::limits_config& limits) {
    request_check out;
    auto fields = static_cast<std::size_t>(std::distance(h.begin(), h.end()));
    if (fields > limits.max_header_fields) {
        out.refusal = problem{431, "header-too-large", "Request header fields too large",
                              "the request has more than limits.max_header_fields header fields", {}, {}, 0};
        return out;
    }
    if (auto why = check_request_framing(h); !why.empty()) {
        out.refusal = bad_request(std::move(why));
        return out;
    }
    if (h.target().size() > limits.max_target_bytes) {
        out.refusal = problem{414, "target-too-long", "URI too long",
                              "the request target exceeds limits.max_target_bytes", "-", {}, 0};
        return out;
    }
    // Asterisk-form (RFC 9112 §3.2.4): OPTIONS about the server as a whole, routed as "/" and
    // forwarded as "*".
    if (h.target() == "*") {
        if (h.method() != http::verb::options)
            out.refusal = bad_request("the asterisk-form target \"*\" is for OPTIONS only");
        else
            out.normalized = "/";
        return out;
    }
    // Absolute-form (RFC 9112 §3.2.2): the authority must agree with Host; forward origin-form.
    std::string_view target = h.target();
    if (!target.empty() && target[0] != '/') {
        if (target.size() <= 7 || !iequals(target.substr(0, 7), "http://")) {
            out.refusal = bad_request("the request target must be origin-form or an http:// URI");
            return out;
        }
        auto rest = target.substr(7);
        auto slash = rest.find_first_of("/?");
        auto authority = rest.substr(0, slash);
        auto host = h[http::field::host];
        if (authority.empty() || !iequals(authority, host)) {
            out.refusal = bad_request("the absolute-form target's authority disagrees with Host");
            return out;
        }
        std::string origin_form = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
        if (origin_form[0] == '?') origin_form.insert(0, "/");
        h.target(origin_form);
    }
    auto normalized = normalize_target(h.target(), config::query_mode::keep);
    if (!normalized) {
        out.refusal = bad_request("malformed request target");
        return out;
    }
    out.normalized = std::move(*normalized);
    return out;
}

std::chrono::steady_clock::time_point body_read_deadline(std::chrono::steady_clock::time_point body_start,
                                                         std::uint64_t received,
                                                         const config::limits_config& limits,
                                                         std::chrono::steady_clock::time_point now) {
    auto gap = now + limits.body_timeout;
    if (limits.min_body_rate == 0) return gap;
    // Seconds earned by the bytes received so far; beyond a day the rate no longer binds.
    auto earned = static_cast<double>(received) / static_cast<double>(limits.min_body_rate);
    if (earned > 86400.0) return gap;
    auto allowed = body_start + limits.body_timeout +
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(earned));
    return std::min(gap, allowed);
}

void rewrite_for_origin(request_header& h, std::optional<std::uint64_t> content_length, bool chunked,
                        const config::headers_config& headers, std::string_view client_ip,
                        std::string_view host, std::string_view host_header) {
    auto received_version = h.version();
    strip_hop_by_hop(h);   // Transfer-Encoding included: the framing below is ours
    h.version(11);
    if (content_length) {
        h.set(http::field::content_length, std::to_string(*content_length));
    } else if (chunked) {
        h.set(http::field::transfer_encoding, "chunked");
    }
    add_forwarding_headers(h, headers.forwarded, client_ip, host);
    if (headers.via) append_via(h, received_version);
    if (!host_header.empty()) h.set(http::field::host, host_header);
}

gate_result gate_request(std::string_view input, const config::limits_config& limits,
                         const config::headers_config& headers) {
    gate_result r;
    auto refuse = [&](problem p) {
        r.outcome = gate_result::kind::refused;
        r.refusal = std::move(p);
        return r;
    };

    head_scanner scan;
    switch (scan.scan(input)) {
    case head_scanner::state::refused:
        return refuse(bad_request(scan.reason()));
    case head_scanner::state::incomplete:
        if (input.size() > limits.max_header_bytes) return refuse(read_error_problem(http::error::header_limit));
        return r;
    case head_scanner::state::complete:
        break;
    }

    request_parser p;
    configure_request_parser(p, limits);
    auto on_chunk = &check_chunk_header;   // Beast keeps a reference: it must outlive `p`
    p.on_chunk_header(on_chunk);
    std::size_t pos = 0;
    if (auto ec = feed_header(p, input, pos)) {
        if (ec == http::error::need_more) return r;
        return refuse(read_error_problem(ec));
    }
    auto& msg = p.get();
    r.method = std::string(msg.method_string());
    auto checked = check_request(msg.base(), limits);
    if (checked.refusal) return refuse(std::move(*checked.refusal));
    r.target = std::string(msg.target());
    r.normalized = std::move(checked.normalized);

    std::string host(msg[http::field::host]);
    std::optional<std::uint64_t> length;
    if (auto l = p.content_length()) length = *l;
    rewrite_for_origin(msg.base(), length, p.chunked(), headers, "192.0.2.1", host, {});
    http::request_serializer<http::buffer_body, header_fields> sr{msg};
    sr.split(true);

    // The body, as exchange() relays it: through the parser into a buffer, out through the
    // serializer with our framing. What came with the header is parsed before anything is sent.
    char buf[4096];
    auto& body = msg.body();
    std::size_t early = 0;
    auto read_body = [&]() -> std::optional<boost::system::error_code> {
        body.data = buf;
        body.size = sizeof buf;
        std::size_t used = 0;
        auto ec = parse_body_bytes(p, input.substr(pos), used);
        pos += used;
        if (ec && ec != http::error::need_more && ec != http::error::need_buffer) return ec;
        std::size_t n = sizeof buf - body.size;
        r.body.append(buf, n);
        body.data = n > 0 ? buf : nullptr;   // an empty buffer would become a last-chunk
        body.size = n;
        body.more = !p.is_done();
        if (ec == http::error::need_more) return ec;
        return std::nullopt;
    };
    auto body_refusal = [&](const boost::system::error_code& ec) {
        auto answer = body_error_problem(ec);
        return refuse(answer ? std::move(*answer) : bad_request(ec.message()));
    };
    bool starved = false;   // the input ended inside the body
    if (!p.is_done()) {
        auto ec = read_body();
        if (ec && *ec != http::error::need_more) return body_refusal(*ec);
        starved = ec.has_value();
        early = body.size;
    }
    if (auto ec = drain(sr, r.forwarded, true)) return refuse(bad_request(ec.message()));
    bool first = true;
    do {
        if (first && (early > 0 || starved)) {
            // `body` still holds what the first read produced.
        } else if (!p.is_done()) {
            if (starved) return r;
            auto ec = read_body();
            if (ec && *ec != http::error::need_more) return body_refusal(*ec);
            starved = ec.has_value();
        } else {
            body.data = nullptr;
            body.size = 0;
            body.more = false;
        }
        first = false;
        if (auto ec = drain(sr, r.forwarded, false)) return refuse(bad_request(ec.message()));
    } while (!p.is_done() || !sr.is_done());
    r.consumed = pos;
    r.outcome = gate_result::kind::forwarded;
    return r;
}

}  // namespace ifm::proxy

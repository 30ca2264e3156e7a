#include "proxy/http_util.hpp"

#include <algorithm>
#include <array>
#include <iterator>

namespace ifm::proxy {

namespace {

// Proxy-Connection is not standard, but RFC 9110 §7.6.1 names it among the fields an
// intermediary removes: old clients and proxies send it in place of Connection.
constexpr std::array<http::field, 9> hop_by_hop_fields = {
    http::field::connection,        http::field::keep_alive,
    http::field::proxy_authenticate, http::field::proxy_authorization,
    http::field::proxy_connection,  http::field::te,
    http::field::trailer,           http::field::transfer_encoding,
    http::field::upgrade,
};

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_tchar(char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// uri-host [":" port] (RFC 3986 reg-name / IPv4 / IP-literal characters); may be empty.
bool is_authority(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               std::string_view("-._~%!$&'()*+,;=:[]").find(c) != std::string_view::npos;
    });
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::vector<std::string> connection_tokens(std::string_view value) {
    std::vector<std::string> out;
    while (!value.empty()) {
        auto comma = value.find(',');
        auto token = trim(value.substr(0, comma));
        if (!token.empty()) {
            std::string t(token);
            std::transform(t.begin(), t.end(), t.begin(), lower);
            out.push_back(std::move(t));
        }
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
    return out;
}

void strip_hop_by_hop(http::fields& f) {
    std::vector<std::string> named;
    for (auto it = f.find(http::field::connection); it != f.end() && it->name() == http::field::connection; ++it) {
        for (auto& t : connection_tokens(it->value())) named.push_back(std::move(t));
    }
    for (auto name : hop_by_hop_fields) f.erase(name);
    for (auto& n : named) f.erase(n);
}

std::optional<std::string> joined_field(const http::fields& f, std::string_view name) {
    auto [first, last] = f.equal_range(name);
    if (first == last) return std::nullopt;
    std::string out;
    for (auto it = first; it != last; ++it) {
        if (!out.empty()) out += ", ";
        out.append(it->value().data(), it->value().size());
    }
    return out;
}

std::optional<std::string> joined_field(const http::fields& f, http::field name) {
    return joined_field(f, http::to_string(name));
}

std::size_t field_count(const http::fields& f) {
    return static_cast<std::size_t>(std::distance(f.begin(), f.end()));
}

void drop_trailer_fields(http::fields& f, const std::vector<std::string_view>& trailer_names) {
    // Beast keeps fields of one name together, each new one after the last: a trailer line's
    // field is the last of its name still there.
    for (auto name : trailer_names) {
        auto last = f.end();
        for (auto it = f.begin(); it != f.end(); ++it)
            if (iequals(it->name_string(), name)) last = it;
        if (last != f.end()) f.erase(last);
    }
}

void header_snapshot::take(const http::fields& f) {
    kept_.clear();
    for (const auto& field : f) kept_.push_back(&field);
    std::ranges::sort(kept_);
    taken_ = true;
}

void header_snapshot::drop_added(http::fields& f) {
    if (!taken_) return;
    for (auto it = f.begin(); it != f.end();) {
        const void* at = &*it;
        if (std::ranges::binary_search(kept_, at)) ++it;
        else it = f.erase(it);
    }
    clear();
}

bool is_websocket_upgrade(const http::request_header<>& h) {
    if (h.count(http::field::upgrade) != 1 || !iequals(trim(h[http::field::upgrade]), "websocket")) return false;
    for (auto it = h.find(http::field::connection); it != h.end() && it->name() == http::field::connection; ++it)
        for (auto& t : connection_tokens(it->value()))
            if (t == "upgrade") return true;
    return false;
}

std::optional<std::uint64_t> max_forwards_of(const http::fields& f) {
    if (f.count(http::field::max_forwards) != 1) return std::nullopt;
    auto v = trim(f[http::field::max_forwards]);
    if (v.empty() || v.size() > 18) return std::nullopt;
    std::uint64_t n = 0;
    for (char c : v) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return n;
}

std::string trace_reflection(const http::request_header<>& h) {
    std::string out;
    out.append(h.method_string().data(), h.method_string().size());
    out += ' ';
    out.append(h.target().data(), h.target().size());
    out += h.version() == 10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n";
    for (const auto& field : h) {
        auto name = field.name();
        if (name == http::field::authorization || name == http::field::proxy_authorization ||
            name == http::field::cookie)
            continue;
        out.append(field.name_string().data(), field.name_string().size());
        out += ": ";
        out.append(field.value().data(), field.value().size());
        out += "\r\n";
    }
    out += "\r\n";
    return out;
}

void append_x_forwarded_for(http::fields& f, std::string_view client_ip) {
    auto existing = joined_field(f, "X-Forwarded-For");
    f.erase("X-Forwarded-For");
    if (existing && !trim(*existing).empty()) {
        f.set("X-Forwarded-For", std::string(trim(*existing)) + ", " + std::string(client_ip));
    } else {
        f.set("X-Forwarded-For", client_ip);
    }
}

void add_forwarding_headers(http::fields& f, config::forwarded_style style,
                            std::string_view client_ip, std::string_view host, bool trusted,
                            std::string_view proto) {
    if (style == config::forwarded_style::none) return;
    if (!trusted) {
        for (auto name : {"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"}) f.erase(name);
        f.erase(http::field::forwarded);
    }
    switch (style) {
    case config::forwarded_style::none:
        return;
    case config::forwarded_style::x_forwarded:
        append_x_forwarded_for(f, client_ip);
        // A trusted proxy in front (a TLS ingress) knows the scheme and host the client used.
        if (f.count("X-Forwarded-Proto") == 0) f.set("X-Forwarded-Proto", proto);
        if (!host.empty() && f.count("X-Forwarded-Host") == 0) f.set("X-Forwarded-Host", host);
        return;
    case config::forwarded_style::forwarded: {
        // RFC 7239: IPv6 addresses and anything with a colon must be quoted.
        std::string node = client_ip.find(':') != std::string_view::npos
                               ? "\"[" + std::string(client_ip) + "]\""
                               : std::string(client_ip);
        std::string element = "for=" + node + ";proto=" + std::string(proto);
        bool host_is_token = !host.empty() && std::all_of(host.begin(), host.end(), is_tchar);
        if (!host.empty()) element += ";host=" + (host_is_token ? std::string(host) : "\"" + std::string(host) + "\"");
        auto existing = joined_field(f, http::field::forwarded);
        f.erase(http::field::forwarded);
        f.set(http::field::forwarded, existing ? *existing + ", " + element : element);
        return;
    }
    }
}

void append_via(http::fields& f, unsigned version) {
    std::string entry = version == 10 ? "1.0 ifmatch-proxy" : "1.1 ifmatch-proxy";
    auto existing = joined_field(f, http::field::via);
    f.erase(http::field::via);
    f.set(http::field::via, existing ? *existing + ", " + entry : entry);
}

std::string check_request_framing(const http::request_header<>& h) {
    auto te_count = h.count(http::field::transfer_encoding);
    auto cl_count = h.count(http::field::content_length);
    if (te_count > 0) {
        if (cl_count > 0) return "Content-Length together with Transfer-Encoding";
        if (h.version() < 11) return "Transfer-Encoding in an HTTP/1.0 request";
        // Only exactly one "chunked" coding in one field is accepted: anything else (an empty
        // field next to "chunked" included) is a desync risk.
        if (te_count > 1 || !iequals(trim(h[http::field::transfer_encoding]), "chunked"))
            return "unsupported Transfer-Encoding";
    }
    if (cl_count > 1) return "several Content-Length fields";
    if (cl_count == 1) {
        auto v = h[http::field::content_length];
        if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return "malformed Content-Length";
    }
    auto host_count = h.count(http::field::host);
    if (h.version() >= 11 && host_count != 1)
        return host_count == 0 ? "missing Host header" : "several Host headers";
    if (host_count > 1) return "several Host headers";
    // RFC 9112 §3.2: a Host that is not uri-host [":" port] is a 400 (it is also matched
    // against routes and forwarded in X-Forwarded-Host).
    if (host_count == 1 && !is_authority(h[http::field::host])) return "malformed Host header";
    for (auto const& field : h) {
        auto name = field.name_string();
        if (name.empty() || !std::all_of(name.begin(), name.end(), is_tchar)) return "malformed header name";
        for (unsigned char c : field.value()) {
            if ((c < 0x20 && c != '\t') || c == 0x7f) return "control character in a header value";
        }
    }
    return {};
}

std::string check_response_framing(const http::response_header<>& h) {
    auto te_count = h.count(http::field::transfer_encoding);
    auto cl_count = h.count(http::field::content_length);
    if (te_count > 0 && cl_count > 0) return "origin sent Content-Length with Transfer-Encoding";
    if (cl_count > 1) return "origin sent several Content-Length fields";
    if (te_count > 0) {
        // We re-frame bodies ourselves, so a transfer-coding other than chunked would be lost.
        if (te_count > 1 || !iequals(trim(h[http::field::transfer_encoding]), "chunked"))
            return "origin sent a Transfer-Encoding other than chunked";
    }
    return {};
}

bool is_idempotent(http::verb v) {
    switch (v) {
    case http::verb::get: case http::verb::head: case http::verb::options:
    case http::verb::trace: case http::verb::put: case http::verb::delete_:
        return true;
    default:
        return false;
    }
}

namespace {

void append_fields(const http::fields& f, std::string& out) {
    for (const auto& field : f) {
        out += field.name_string();
        out += ": ";
        out += field.value();
        out += "\r\n";
    }
    out += "\r\n";
}

void append_version(unsigned version, std::string& out) {
    out += "HTTP/";
    out += static_cast<char>('0' + version / 10);
    out += '.';
    out += static_cast<char>('0' + version % 10);
}

}  // namespace

void serialize_header(const http::request_header<>& h, std::string& out) {
    out += h.method_string();
    out += ' ';
    out += h.target();
    out += ' ';
    append_version(h.version(), out);
    out += "\r\n";
    append_fields(h, out);
}

void serialize_header(const http::response_header<>& h, std::string& out) {
    append_version(h.version(), out);
    out += ' ';
    auto status = h.result_int();
    char digits[3] = {static_cast<char>('0' + status / 100 % 10), static_cast<char>('0' + status / 10 % 10),
                      static_cast<char>('0' + status % 10)};
    out.append(digits, 3);
    out += ' ';
    out += h.reason();
    out += "\r\n";
    append_fields(h, out);
}

}  // namespace ifm::proxy

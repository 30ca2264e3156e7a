#include "proxy/http_util.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>
#include <iterator>

namespace ifm::proxy {

namespace {

// Proxy-Connection is not standard, but RFC 9110 §7.6.1 names it among the fields an
// intermediary removes: old clients and proxies send it in place of Connection.
bool is_hop_by_hop(http::field name) {
    switch (name) {
    case http::field::connection: case http::field::keep_alive: case http::field::proxy_authenticate:
    case http::field::proxy_authorization: case http::field::proxy_connection: case http::field::te:
    case http::field::trailer: case http::field::transfer_encoding: case http::field::upgrade:
        return true;
    default:
        return false;
    }
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// RFC 9110 §5.6.2 tchar, as a table: checked for every byte of every field name.
constexpr std::array<bool, 256> tchar_table = [] {
    std::array<bool, 256> t{};
    for (int c = '0'; c <= '9'; ++c) t[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
    return t;
}();

// uri-host [":" port] (RFC 3986 reg-name / IPv4 / IP-literal characters); may be empty.
bool is_authority(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               std::string_view("-._~%!$&'()*+,;=:[]").find(c) != std::string_view::npos;
    });
}

}  // namespace

bool is_tchar(char c) { return tchar_table[static_cast<unsigned char>(c)]; }

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

void strip_hop_by_hop(header_fields& f) {
    // Two walks of the field list, no lookup by name (each one a search of Beast's ordered set):
    // the names Connection lists, then every field that is hop-by-hop or listed.
    std::vector<std::string> named;
    for (const auto& field : f)
        if (field.name() == http::field::connection)
            for (auto& t : connection_tokens(field.value())) named.push_back(std::move(t));
    for (auto it = f.begin(); it != f.end();) {
        const bool drop = is_hop_by_hop(it->name()) ||
                          std::ranges::any_of(named, [&](const std::string& n) { return iequals(n, it->name_string()); });
        it = drop ? f.erase(it) : std::next(it);
    }
}

std::optional<std::string> joined_field(const header_fields& f, std::string_view name) {
    auto [first, last] = f.equal_range(name);
    if (first == last) return std::nullopt;
    std::string out;
    for (auto it = first; it != last; ++it) {
        if (!out.empty()) out += ", ";
        out.append(it->value().data(), it->value().size());
    }
    return out;
}

std::optional<std::string> joined_field(const header_fields& f, http::field name) {
    return joined_field(f, http::to_string(name));
}

std::size_t field_count(const header_fields& f) {
    return static_cast<std::size_t>(std::distance(f.begin(), f.end()));
}

void drop_trailer_fields(header_fields& f, const std::vector<std::string_view>& trailer_names) {
    // Beast keeps fields of one name together, each new one after the last: a trailer line's
    // field is the last of its name still there.
    for (auto name : trailer_names) {
        auto last = f.end();
        for (auto it = f.begin(); it != f.end(); ++it)
            if (iequals(it->name_string(), name)) last = it;
        if (last != f.end()) f.erase(last);
    }
}

void header_snapshot::take(const header_fields& f) {
    kept_.clear();
    for (const auto& field : f) kept_.push_back(&field);
    std::ranges::sort(kept_);
    taken_ = true;
}

void header_snapshot::drop_added(header_fields& f) {
    if (!taken_) return;
    for (auto it = f.begin(); it != f.end();) {
        const void* at = &*it;
        if (std::ranges::binary_search(kept_, at)) ++it;
        else it = f.erase(it);
    }
    clear();
}

bool is_websocket_upgrade(const request_header& h) {
    if (h.count(http::field::upgrade) != 1 || !iequals(trim(h[http::field::upgrade]), "websocket")) return false;
    for (auto it = h.find(http::field::connection); it != h.end() && it->name() == http::field::connection; ++it)
        for (auto& t : connection_tokens(it->value()))
            if (t == "upgrade") return true;
    return false;
}

std::optional<std::uint64_t> max_forwards_of(const header_fields& f) {
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

std::string trace_reflection(const request_header& h) {
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

void append_x_forwarded_for(header_fields& f, std::string_view client_ip) {
    auto existing = joined_field(f, "X-Forwarded-For");
    if (!existing) {
        f.insert("X-Forwarded-For", client_ip);
        return;
    }
    f.erase("X-Forwarded-For");
    if (!trim(*existing).empty()) {
        f.set("X-Forwarded-For", std::string(trim(*existing)) + ", " + std::string(client_ip));
    } else {
        f.set("X-Forwarded-For", client_ip);
    }
}

void add_forwarding_headers(header_fields& f, config::forwarded_style style,
                            std::string_view client_ip, std::string_view host, bool trusted,
                            std::string_view proto) {
    if (style == config::forwarded_style::none) return;
    // Which of the forwarding fields came with the request: one walk of the list instead of a
    // lookup by name for each (most requests carry none of them).
    bool xff = false, xfp = false, xfh = false, fwd = false;
    for (const auto& field : f) {
        if (field.name() == http::field::forwarded) {
            fwd = true;
        } else if (field.name() == http::field::unknown) {
            auto n = field.name_string();
            xff = xff || iequals(n, "X-Forwarded-For");
            xfp = xfp || iequals(n, "X-Forwarded-Proto");
            xfh = xfh || iequals(n, "X-Forwarded-Host");
        }
    }
    if (!trusted) {
        if (xff) f.erase("X-Forwarded-For");
        if (xfp) f.erase("X-Forwarded-Proto");
        if (xfh) f.erase("X-Forwarded-Host");
        if (fwd) f.erase(http::field::forwarded);
        xff = xfp = xfh = fwd = false;
    }
    switch (style) {
    case config::forwarded_style::none:
        return;
    case config::forwarded_style::x_forwarded:
        if (xff) append_x_forwarded_for(f, client_ip);
        else f.insert("X-Forwarded-For", client_ip);
        // A trusted proxy in front (a TLS ingress) knows the scheme and host the client used.
        if (!xfp) f.insert("X-Forwarded-Proto", proto);
        if (!host.empty() && !xfh) f.insert("X-Forwarded-Host", host);
        return;
    case config::forwarded_style::forwarded: {
        // RFC 7239: IPv6 addresses and anything with a colon must be quoted.
        const bool quote_node = client_ip.find(':') != std::string_view::npos;
        std::string element = "for=";
        element.append(quote_node ? "\"[" : "").append(client_ip).append(quote_node ? "]\"" : "");
        element.append(";proto=").append(proto);
        if (!host.empty()) {
            const bool quote_host = !std::all_of(host.begin(), host.end(), is_tchar);
            element.append(";host=").append(quote_host ? "\"" : "").append(host).append(quote_host ? "\"" : "");
        }
        if (!fwd) {
            f.insert(http::field::forwarded, element);
            return;
        }
        auto existing = joined_field(f, http::field::forwarded);
        f.erase(http::field::forwarded);
        f.set(http::field::forwarded, existing ? *existing + ", " + element : element);
        return;
    }
    }
}

void append_via(header_fields& f, unsigned version) {
    std::string_view entry = version == 10 ? "1.0 ifmatch-proxy" : "1.1 ifmatch-proxy";
    if (f.find(http::field::via) == f.end()) {
        f.insert(http::field::via, entry);
        return;
    }
    auto existing = joined_field(f, http::field::via);
    f.erase(http::field::via);
    f.set(http::field::via, *existing + ", " + std::string(entry));
}

std::string check_request_framing(const request_header& h) {
    // One walk of the field list: the counts and values of the framing fields, and every name
    // and value checked for what may not be in them.
    std::size_t te_count = 0, cl_count = 0, host_count = 0;
    std::string_view te, cl, host;
    bool bad_name = false, bad_value = false;
    for (auto const& field : h) {
        switch (field.name()) {
        case http::field::transfer_encoding: ++te_count; te = field.value(); break;
        case http::field::content_length: ++cl_count; cl = field.value(); break;
        case http::field::host: ++host_count; host = field.value(); break;
        default: break;
        }
        auto name = field.name_string();
        if (name.empty() || !std::all_of(name.begin(), name.end(), is_tchar)) bad_name = true;
        for (unsigned char c : field.value()) {
            if ((c < 0x20 && c != '\t') || c == 0x7f) bad_value = true;
        }
    }
    if (te_count > 0) {
        if (cl_count > 0) return "Content-Length together with Transfer-Encoding";
        if (h.version() < 11) return "Transfer-Encoding in an HTTP/1.0 request";
        // Only exactly one "chunked" coding in one field is accepted: anything else (an empty
        // field next to "chunked" included) is a desync risk.
        if (te_count > 1 || !iequals(trim(te), "chunked")) return "unsupported Transfer-Encoding";
    }
    if (cl_count > 1) return "several Content-Length fields";
    if (cl_count == 1) {
        if (cl.empty() || !std::all_of(cl.begin(), cl.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return "malformed Content-Length";
    }
    if (h.version() >= 11 && host_count != 1)
        return host_count == 0 ? "missing Host header" : "several Host headers";
    if (host_count > 1) return "several Host headers";
    // RFC 9112 §3.2: a Host that is not uri-host [":" port] is a 400 (it is also matched
    // against routes and forwarded in X-Forwarded-Host).
    if (host_count == 1 && !is_authority(host)) return "malformed Host header";
    if (bad_name) return "malformed header name";
    if (bad_value) return "control character in a header value";
    return {};
}

std::string check_response_framing(const response_header& h) {
    std::size_t te_count = 0, cl_count = 0;
    std::string_view te;
    for (auto const& field : h) {
        if (field.name() == http::field::transfer_encoding) {
            ++te_count;
            te = field.value();
        } else if (field.name() == http::field::content_length) {
            ++cl_count;
        }
    }
    if (te_count > 0 && cl_count > 0) return "origin sent Content-Length with Transfer-Encoding";
    if (cl_count > 1) return "origin sent several Content-Length fields";
    if (te_count > 0) {
        // We re-frame bodies ourselves, so a transfer-coding other than chunked would be lost.
        if (te_count > 1 || !iequals(trim(te), "chunked"))
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

// Writes a header block into `out` grown once to its exact size (string appends piece by piece
// cost 3 % of a GET's instructions).
class header_writer {
public:
    header_writer(std::string& out, std::size_t size) : out_(out), at_(out.size()) { out.resize(at_ + size); }
    ~header_writer() { out_.resize(at_); }   // exactly what was written (the size was computed for it)
    header_writer(const header_writer&) = delete;
    header_writer& operator=(const header_writer&) = delete;

    void put(std::string_view s) {
        assert(at_ + s.size() <= out_.size());
        std::memcpy(out_.data() + at_, s.data(), s.size());
        at_ += s.size();
    }
    void put(char c) {
        assert(at_ < out_.size());
        out_[at_++] = c;
    }
    void version(unsigned v) {
        put("HTTP/");
        put(static_cast<char>('0' + v / 10));
        put('.');
        put(static_cast<char>('0' + v % 10));
    }
    void fields(const header_fields& f) {
        for (const auto& field : f) {
            put(field.name_string());
            put(": ");
            put(field.value());
            put("\r\n");
        }
        put("\r\n");
    }

private:
    std::string& out_;
    std::size_t at_;
};

std::size_t fields_size(const header_fields& f) {
    std::size_t n = 2;
    for (const auto& field : f) n += field.name_string().size() + field.value().size() + 4;
    return n;
}

}  // namespace

void serialize_header(const request_header& h, std::string& out) {
    header_writer w(out, h.method_string().size() + 1 + h.target().size() + 1 + 8 + 2 + fields_size(h));
    w.put(h.method_string());
    w.put(' ');
    w.put(h.target());
    w.put(' ');
    w.version(h.version());
    w.put("\r\n");
    w.fields(h);
}

void serialize_header(const response_header& h, std::string& out) {
    auto reason = h.reason();
    header_writer w(out, 8 + 1 + 3 + 1 + reason.size() + 2 + fields_size(h));
    w.version(h.version());
    w.put(' ');
    auto status = h.result_int();
    w.put(static_cast<char>('0' + status / 100 % 10));
    w.put(static_cast<char>('0' + status / 10 % 10));
    w.put(static_cast<char>('0' + status % 10));
    w.put(' ');
    w.put(reason);
    w.put("\r\n");
    w.fields(h);
}

}  // namespace ifm::proxy

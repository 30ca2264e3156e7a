#include "proxy/resource_key.hpp"

#include "proxy/hasher.hpp"

#include <algorithm>
#include <stdexcept>
#include <tuple>

namespace ifm::proxy {

namespace {

constexpr char hex_digits[] = "0123456789ABCDEF";

void append_escape(std::string& out, unsigned char c) {
    out += '%';
    out += hex_digits[c >> 4];
    out += hex_digits[c & 0xF];
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

bool is_alnum(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// RFC 3986 §2.3
bool is_unreserved(unsigned char c) {
    return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

// RFC 3986 §2.2
bool is_sub_delim(unsigned char c) {
    switch (c) {
    case '!': case '$': case '&': case '\'': case '(': case ')':
    case '*': case '+': case ',': case ';': case '=':
        return true;
    default:
        return false;
    }
}

// pchar without pct-encoded, plus "/"; the query also allows "?".
bool is_path_char(unsigned char c) {
    return is_unreserved(c) || is_sub_delim(c) || c == ':' || c == '@' || c == '/';
}
bool is_query_char(unsigned char c) { return is_path_char(c) || c == '?'; }

// CTLs, DEL and space can never be part of a request target: the request is refused, not repaired.
bool is_forbidden(unsigned char c) { return c <= 0x20 || c == 0x7F; }

// A path's reserved characters other than "/" name the same file once decoded for every origin
// we front (nginx, Apache and most frameworks decode the path before mapping it): "/x%21" and
// "/x!" are one resource. "/" stays encoded: "%2F" is ambiguous, and refused on writes.
bool decoded_in_path(unsigned char c) {
    return is_unreserved(c) || is_sub_delim(c) || c == ':' || c == '@';
}

// RFC 3986 §6.2.2.1/§6.2.2.2 on one component whose %-escapes were already validated.
template <typename Decoded, typename Allowed>
std::string normalize_percent(std::string_view s, Decoded decoded, Allowed allowed) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == '%') {
            const auto v = static_cast<unsigned char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
            if (decoded(v))
                out += static_cast<char>(v);
            else
                append_escape(out, v);
        } else if (allowed(c)) {
            out += static_cast<char>(c);
        } else {
            append_escape(out, c);
        }
    }
    return out;
}

// RFC 3986 §5.2.4 for an absolute path: a ".." at the root stays at the root.
std::string remove_dot_segments(std::string_view path) {
    std::vector<std::string_view> segments;
    bool trailing_slash = false;
    std::string_view rest = path.substr(1);  // the leading "/"
    for (;;) {
        const auto slash = rest.find('/');
        const std::string_view seg = rest.substr(0, slash);
        const bool last = slash == std::string_view::npos;
        if (seg == ".") {
            trailing_slash = last;
        } else if (seg == "..") {
            if (!segments.empty()) segments.pop_back();
            trailing_slash = last;
        } else {
            segments.push_back(seg);
            trailing_slash = false;
        }
        if (last) break;
        rest.remove_prefix(slash + 1);
    }
    std::string out;
    out.reserve(path.size());
    for (const auto seg : segments) {
        out += '/';
        out += seg;
    }
    if (trailing_slash || out.empty()) out += '/';
    return out;
}

// True when normalize_percent and remove_dot_segments would return `path` (which starts with
// "/") as it is: every byte a path character (so no '%'), no "." or ".." segment.
bool already_normal(std::string_view path) {
    for (const char ch : path)
        if (!is_path_char(static_cast<unsigned char>(ch))) return false;
    for (auto dot = path.find("/."); dot != std::string_view::npos; dot = path.find("/.", dot + 1)) {
        auto seg = path.substr(dot + 1);
        seg = seg.substr(0, seg.find('/'));
        if (seg == "." || seg == "..") return false;
    }
    return true;
}

// Parameters ordered by name, then value, then their full text (which makes equal name/value
// pairs such as `a` and `a=` order deterministically); empty parameters (`&&`) are dropped.
std::string sort_query(std::string_view query) {
    struct param {
        std::string_view text, name, value;
    };
    std::vector<param> params;
    for (;;) {
        const auto amp = query.find('&');
        const std::string_view text = query.substr(0, amp);
        if (!text.empty()) {
            const auto eq = text.find('=');
            params.push_back({text, text.substr(0, eq),
                              eq == std::string_view::npos ? std::string_view{} : text.substr(eq + 1)});
        }
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    std::stable_sort(params.begin(), params.end(), [](const param& a, const param& b) {
        return std::tie(a.name, a.value, a.text) < std::tie(b.name, b.value, b.text);
    });
    std::string out;
    for (const auto& p : params) {
        if (!out.empty()) out += '&';
        out += p.text;
    }
    return out;
}

// Route names and vary names/values: escaped so that the result holds none of the key's
// separators ('|', '=', '#') nor braces; escaping '%' itself keeps the escape injective.
bool is_plain_key_char(unsigned char c) {
    if (c <= 0x20 || c >= 0x7F) return false;
    switch (c) {
    case '%': case '{': case '}': case '|': case '#': case '=': case '"': case '\\':
        return false;
    default:
        return true;
    }
}

void append_key_escaped(std::string& out, std::string_view s) {
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (is_plain_key_char(c))
            out += ch;
        else
            append_escape(out, c);
    }
}

// A normalized target is kept readable ('%' stays as is: it only starts escapes there); any
// other byte, including '|', is escaped, so the target can never contain a separator.
void append_key_target(std::string& out, std::string_view target) {
    for (const char ch : target) {
        const auto c = static_cast<unsigned char>(ch);
        if (is_query_char(c) || c == '%')
            out += ch;
        else
            append_escape(out, c);
    }
}

}  // namespace

std::optional<std::string> normalize_target(std::string_view target, config::query_mode q) {
    if (target.empty() || target.front() != '/') return std::nullopt;
    for (std::size_t i = 0; i < target.size(); ++i) {
        const auto c = static_cast<unsigned char>(target[i]);
        if (is_forbidden(c)) return std::nullopt;
        if (c == '%' && (i + 2 >= target.size() || hex_value(target[i + 1]) < 0 ||
                         hex_value(target[i + 2]) < 0))
            return std::nullopt;
    }
    target = target.substr(0, target.find('#'));

    const auto qmark = target.find('?');
    const auto path = target.substr(0, qmark);
    // Most paths are normal already (no escape, every byte allowed raw, no dot-segment): then both
    // steps below return them unchanged, and copying them saves their work on every request.
    std::string out = already_normal(path) ? std::string(path)
                                           : remove_dot_segments(normalize_percent(path, decoded_in_path, is_path_char));
    if (qmark == std::string_view::npos || q == config::query_mode::ignore) return out;

    std::string query = normalize_percent(target.substr(qmark + 1), is_unreserved, is_query_char);
    if (q == config::query_mode::sorted) query = sort_query(query);
    // An empty query ("/a?") names the same resource as none at all for any origin we front.
    if (!query.empty()) {
        out += '?';
        out += query;
    }
    return out;
}

std::string_view ambiguous_path(std::string_view target) {
    auto path = target.substr(0, target.find_first_of("?#"));
    std::string decoded;   // unreserved escapes decoded: "%2E%2E" is ".."
    decoded.reserve(path.size());
    for (std::size_t i = 0; i < path.size(); ++i) {
        const auto c = static_cast<unsigned char>(path[i]);
        if (c == '\\') return "a backslash in the path";
        if (c == '%' && i + 2 < path.size() + 0 && hex_value(path[i + 1]) >= 0 && hex_value(path[i + 2]) >= 0) {
            const auto v = static_cast<unsigned char>(hex_value(path[i + 1]) * 16 + hex_value(path[i + 2]));
            if (v == '/' || v == '\\') return "an encoded slash or backslash (%2F, %5C) in the path";
            if (v == 0) return "an encoded NUL in the path";
            if (v == '.') {
                decoded += '.';
                i += 2;
                continue;
            }
        }
        decoded += static_cast<char>(c);
    }
    if (decoded.find("//") != std::string::npos) return "an empty path segment (//)";
    std::string_view rest = decoded;
    while (!rest.empty()) {
        rest.remove_prefix(1);   // the "/"
        auto seg = rest.substr(0, rest.find('/'));
        if (seg == "." || seg == "..") return "a dot-segment (. or ..) in the path";
        rest.remove_prefix(seg.size());
    }
    return {};
}

std::string resource_scope(std::string_view origin, std::string_view host) {
    // Host names are case-insensitive and a trailing dot names the same host. The port is left
    // out: it is the port the client reached the proxy on (two proxies of a fleet listen on
    // different ones), not something the origin's one listener tells resources apart by.
    if (auto colon = host.rfind(':'); colon != std::string_view::npos && host.find(']', colon) == std::string_view::npos)
        host = host.substr(0, colon);
    if (host.ends_with('.')) host.remove_suffix(1);
    std::string out;
    out.reserve(origin.size() + 1 + host.size());
    out += origin;
    out += '@';
    for (char c : host) out += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return out;
}

std::string variant_id(const std::vector<std::pair<std::string, std::string>>& vary_values,
                       std::string_view content_coding) {
    std::string all;
    for (const auto& [name, value] : vary_values) {
        if (value.empty()) continue;
        append_key_escaped(all, name);
        all += '=';
        append_key_escaped(all, value);
        all += '|';
    }
    std::string coding;
    for (char c : content_coding) coding += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (!coding.empty() && coding != "identity") {
        all += "content-encoding=";
        append_key_escaped(all, coding);
    }
    if (all.empty()) return {};
    return sha256_hex(all).substr(0, 16);
}

std::string resource_key(std::string_view route_name, std::string_view normalized_target,
                         const std::vector<std::pair<std::string, std::string>>& vary_values) {
    std::string key;
    key.reserve(route_name.size() + normalized_target.size() + 16);
    append_key_escaped(key, route_name);
    const std::size_t route_end = key.size();
    key += '|';
    append_key_target(key, normalized_target);
    for (const auto& [name, value] : vary_values) {
        key += '|';
        append_key_escaped(key, name);
        key += '=';
        append_key_escaped(key, value);
    }
    if (key.size() <= max_resource_key_bytes) return key;

    // Too long for a readable key: keep the (escaped) route as the visible prefix, bounded so
    // that the whole key fits; the digest covers the full key, route included, so truncating a
    // long route name cannot make two routes share keys. No '|' occurs in this form, so hashed
    // and readable keys never collide either.
    constexpr std::size_t digest_part = 1 + 64;  // '#' + hex SHA-256
    const std::size_t prefix = std::min(route_end, max_resource_key_bytes - digest_part);
    std::string hashed = key.substr(0, prefix);
    hashed += '#';
    hashed += sha256_hex(key);
    return hashed;
}

}  // namespace ifm::proxy

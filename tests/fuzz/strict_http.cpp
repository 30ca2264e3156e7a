#include "tests/fuzz/strict_http.hpp"

#include <algorithm>
#include <optional>

namespace ifm::fuzz {

namespace {

using kind = strict_request::kind;

bool tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}
bool vchar_or_obs(unsigned char c) { return (c > 0x20 && c != 0x7f); }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

struct reader {
    std::string_view in;
    std::size_t pos = 0;
    // The next line without its CRLF; nullopt: no CRLF yet. A bare CR or LF makes `bad` true.
    std::optional<std::string_view> line(bool& bad) {
        auto lf = in.find('\n', pos);
        auto cr = in.find('\r', pos);
        if (cr != std::string_view::npos && (lf == std::string_view::npos || cr + 1 < lf)) {
            if (cr + 1 < in.size()) bad = true;   // a CR not followed by LF
            return std::nullopt;
        }
        if (lf == std::string_view::npos) return std::nullopt;
        if (lf == pos || in[lf - 1] != '\r') {
            bad = true;
            return std::nullopt;
        }
        auto l = in.substr(pos, lf - 1 - pos);
        pos = lf + 1;
        return l;
    }
};

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// field-name ":" OWS field-value OWS
bool parse_field(std::string_view l, std::pair<std::string, std::string>& out) {
    auto colon = l.find(':');
    if (colon == 0 || colon == std::string_view::npos) return false;
    auto name = l.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), [](char c) { return tchar(static_cast<unsigned char>(c)); }))
        return false;
    auto value = trim(l.substr(colon + 1));
    for (unsigned char c : value)
        if (!(vchar_or_obs(c) || c == ' ' || c == '\t')) return false;
    out.first.clear();
    for (char c : name) out.first += lower(c);
    out.second = std::string(value);
    return true;
}

}  // namespace

std::size_t strict_request::count(std::string_view lower_name) const {
    return static_cast<std::size_t>(std::count_if(fields.begin(), fields.end(),
                                                  [&](const auto& f) { return f.first == lower_name; }));
}

strict_request strict_parse(std::string_view in) {
    strict_request r;
    reader rd{in};
    bool bad = false;
    auto need = [&] {
        r.status = bad ? kind::invalid : kind::incomplete;
        return r;
    };

    // request-line = method SP request-target SP HTTP-version
    auto start = rd.line(bad);
    if (!start) return need();
    auto sp1 = start->find(' ');
    if (sp1 == std::string_view::npos || sp1 == 0) return r;
    auto sp2 = start->find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return r;
    auto method = start->substr(0, sp1), target = start->substr(sp1 + 1, sp2 - sp1 - 1),
         version = start->substr(sp2 + 1);
    if (!std::all_of(method.begin(), method.end(), [](char c) { return tchar(static_cast<unsigned char>(c)); }))
        return r;
    if (!std::all_of(target.begin(), target.end(), [](char c) { return vchar_or_obs(static_cast<unsigned char>(c)); }))
        return r;
    if (version == "HTTP/1.1") r.version = 11;
    else if (version == "HTTP/1.0") r.version = 10;
    else return r;
    r.method = std::string(method);
    r.target = std::string(target);

    for (;;) {
        auto l = rd.line(bad);
        if (!l) return need();
        if (l->empty()) break;
        std::pair<std::string, std::string> f;
        if (!parse_field(*l, f)) return r;   // obs-fold, bad names and values included
        r.fields.push_back(std::move(f));
    }

    auto te = r.count("transfer-encoding"), cl = r.count("content-length");
    std::optional<std::uint64_t> length;
    bool chunked = false;
    if (te > 0) {
        if (te > 1 || cl > 0 || r.version != 11) return r;
        for (auto& [n, v] : r.fields) {
            if (n != "transfer-encoding") continue;
            std::string lv;
            for (char c : v) lv += lower(c);
            if (lv != "chunked") return r;
        }
        chunked = true;
    } else if (cl > 0) {
        if (cl > 1) return r;
        for (auto& [n, v] : r.fields) {
            if (n != "content-length") continue;
            if (v.empty() || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
                return r;
            auto digits = std::string_view(v).substr(std::min(v.find_first_not_of('0'), v.size()));
            if (digits.size() > 18) return r;
            length = digits.empty() ? 0 : std::stoull(std::string(digits));
        }
    }

    if (!chunked) {
        auto n = length.value_or(0);
        if (in.size() - rd.pos < n) return need();
        r.body = std::string(in.substr(rd.pos, n));
        r.consumed = rd.pos + n;
        r.status = kind::complete;
        return r;
    }
    // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF; last-chunk; trailer-section; CRLF
    for (;;) {
        auto l = rd.line(bad);
        if (!l) return need();
        std::size_t i = 0;
        std::uint64_t size = 0;
        while (i < l->size() && hex((*l)[i]) >= 0) {
            if (size > (UINT64_MAX >> 4)) return r;
            size = size * 16 + static_cast<unsigned>(hex((*l)[i]));
            ++i;
        }
        if (i == 0) return r;
        auto ext = l->substr(i);   // checked loosely: only its characters
        while (!ext.empty() && (ext.front() == ' ' || ext.front() == '\t')) ext.remove_prefix(1);
        if (!ext.empty() && ext.front() != ';') return r;
        for (unsigned char c : ext)
            if (!(vchar_or_obs(c) || c == ' ' || c == '\t')) return r;
        if (size == 0) break;
        if (in.size() - rd.pos < size) return need();
        r.body.append(in.substr(rd.pos, size));
        rd.pos += size;
        if (in.size() - rd.pos < 2) {
            if (in.substr(rd.pos) != std::string_view("\r").substr(0, in.size() - rd.pos)) return r;
            return need();
        }
        if (in.substr(rd.pos, 2) != "\r\n") return r;
        rd.pos += 2;
    }
    for (;;) {
        auto l = rd.line(bad);
        if (!l) return need();
        if (l->empty()) break;
        std::pair<std::string, std::string> f;
        if (!parse_field(*l, f)) return r;
    }
    r.consumed = rd.pos;
    r.status = kind::complete;
    return r;
}

}  // namespace ifm::fuzz

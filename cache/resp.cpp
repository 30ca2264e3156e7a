#include "cache/resp.hpp"

#include <cassert>
#include <charconv>
#include <cstring>

namespace ifm::cache {

namespace {

// The line at `p` (up to CRLF): false if the CRLF is not in yet, with `bad` set when what is
// there cannot start a valid line.
struct line_reader {
    const char* p;
    const char* end;
    bool bad = false;

    bool line(std::string_view& text) {
        const void* cr = std::memchr(p, '\r', static_cast<std::size_t>(end - p));
        if (!cr) return false;
        const char* at = static_cast<const char*>(cr);
        if (at + 1 == end) return false;
        if (at[1] != '\n') {
            bad = true;
            return false;
        }
        text = std::string_view(p, static_cast<std::size_t>(at - p));
        p = at + 2;
        return true;
    }
};

bool to_integer(std::string_view s, long long& v) {
    if (s.empty()) return false;
    auto [q, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc{} && q == s.data() + s.size();
}

resp_status parse(line_reader& in, redis_reply& out, int depth) {
    if (in.p == in.end) return resp_status::incomplete;
    const char tag = *in.p++;
    std::string_view text;
    if (!in.line(text)) return in.bad ? resp_status::bad : resp_status::incomplete;
    switch (tag) {
    case '+':
    case '-':
        out.kind = tag == '+' ? redis_reply::type::status : redis_reply::type::error;
        out.str.assign(text);
        return resp_status::done;
    case ':':
        out.kind = redis_reply::type::integer;
        return to_integer(text, out.integer) ? resp_status::done : resp_status::bad;
    case '$': {
        long long n = 0;
        if (!to_integer(text, n) || n < -1 || n > resp_max_bulk) return resp_status::bad;
        if (n == -1) {
            out.kind = redis_reply::type::nil;
            return resp_status::done;
        }
        const auto len = static_cast<std::size_t>(n);
        if (static_cast<std::size_t>(in.end - in.p) < len + 2) return resp_status::incomplete;
        if (in.p[len] != '\r' || in.p[len + 1] != '\n') return resp_status::bad;
        out.kind = redis_reply::type::string;
        out.str.assign(in.p, len);
        in.p += len + 2;
        return resp_status::done;
    }
    case '*': {
        long long n = 0;
        if (!to_integer(text, n) || n < -1) return resp_status::bad;
        if (n == -1) {
            out.kind = redis_reply::type::nil;
            return resp_status::done;
        }
        if (depth >= resp_max_depth) return resp_status::bad;
        // Every element takes at least 3 bytes (":0\r\n" is 4): no more elements than that can
        // be in the input, so a huge count that is not backed by bytes allocates nothing.
        if (static_cast<unsigned long long>(n) > static_cast<std::size_t>(in.end - in.p) / 3)
            return resp_status::incomplete;
        out.kind = redis_reply::type::array;
        out.elements.resize(static_cast<std::size_t>(n));
        for (auto& e : out.elements)
            if (auto st = parse(in, e, depth + 1); st != resp_status::done) return st;
        return resp_status::done;
    }
    default:
        return resp_status::bad;
    }
}

std::size_t digits(std::size_t n) {
    std::size_t d = 1;
    while (n >= 10) {
        n /= 10;
        ++d;
    }
    return d;
}

std::size_t bulk_size(std::string_view arg) {
    return 1 + digits(arg.size()) + 2 + arg.size() + 2;   // "$" length CRLF bytes CRLF
}

char* put_count(char* at, char tag, std::size_t n) {
    *at++ = tag;
    at = std::to_chars(at, at + 20, n).ptr;
    *at++ = '\r';
    *at++ = '\n';
    return at;
}

char* put_bulk(char* at, std::string_view arg) {
    at = put_count(at, '$', arg.size());
    if (!arg.empty()) std::memcpy(at, arg.data(), arg.size());
    at += arg.size();
    *at++ = '\r';
    *at++ = '\n';
    return at;
}

}  // namespace

resp_result parse_reply(std::string_view in, redis_reply& out) {
    out.str.clear();
    out.elements.clear();
    out.integer = 0;
    line_reader r{in.data(), in.data() + in.size()};
    auto st = parse(r, out, 0);
    return {st, st == resp_status::done ? static_cast<std::size_t>(r.p - in.data()) : 0};
}

void append_command(std::string& out, std::initializer_list<const std::vector<std::string>*> parts,
                    std::initializer_list<std::string_view> head) {
    std::size_t n = head.size(), size = 0;
    for (auto h : head) size += bulk_size(h);
    for (const auto* p : parts) {
        n += p->size();
        for (const auto& a : *p) size += bulk_size(a);
    }
    size += 1 + digits(n) + 2;
    const auto start = out.size();
    out.resize(start + size);
    char* at = put_count(out.data() + start, '*', n);
    for (auto h : head) at = put_bulk(at, h);
    for (const auto* p : parts)
        for (const auto& a : *p) at = put_bulk(at, a);
    assert(at == out.data() + out.size());
}

}  // namespace ifm::cache

#include "proxy/dav_if.hpp"

#include "proxy/resource_key.hpp"

#include <algorithm>

namespace ifm::proxy {

namespace {

bool is_ws(char c) { return c == ' ' || c == '\t'; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequal(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return lower(x) == lower(y);
           });
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// etagc (RFC 9110 §8.8.3: %x21 / %x23-7E / obs-text), plus SP and HTAB (see condition()).
bool is_opaque_char(char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c == 0x21 || (c >= 0x23 && c <= 0x7E) || c >= 0x80 || c == ' ' || c == '\t';
}

// scheme ":" …  (RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ))
std::size_t scheme_length(std::string_view s) {
    if (s.empty() || !is_alpha(s.front())) return 0;
    std::size_t i = 1;
    while (i < s.size() && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')) ++i;
    return i < s.size() && s[i] == ':' ? i : 0;
}

bool is_absolute_uri(std::string_view s) { return scheme_length(s) > 0; }

// Simple-ref = absolute-URI | ( path-absolute [ "?" query ] ); path-absolute never starts "//".
bool is_simple_ref(std::string_view s) {
    if (s.starts_with('/')) return !s.starts_with("//");
    return is_absolute_uri(s);
}

class parser {
public:
    explicit parser(std::string_view s) : s_(s) {}

    boost::system::result<dav_if, std::string> run() {
        dav_if out;
        std::optional<std::string> resource;
        bool tagged = false;
        bool tag_has_list = true;
        std::size_t conditions = 0;
        skip_ws();
        if (at_end()) return fail("empty");
        while (!at_end()) {
            const char c = s_[pos_];
            if (c == '<') {
                if (out.lists.empty() && !resource) {
                    tagged = true;
                } else if (!tagged) {
                    return fail("a Resource-Tag after an untagged list (the two forms do not mix)");
                }
                if (!tag_has_list) return fail("a Resource-Tag without a list");
                auto r = bracketed('<', '>', "Resource-Tag");
                if (!r) return error_;
                if (!is_simple_ref(*r)) return fail("Resource-Tag is neither an absolute URI nor an absolute path");
                resource = std::string(*r);
                tag_has_list = false;
            } else if (c == '(') {
                if (out.lists.size() == dav_if_max_lists) return fail("more than 64 lists");
                ++pos_;
                dav_if_list list;
                list.resource = resource;
                skip_ws();
                while (!at_end() && s_[pos_] != ')') {
                    if (++conditions > dav_if_max_conditions) return fail("more than 64 conditions");
                    auto cond = condition();
                    if (!cond) return cond.error();
                    list.conditions.push_back(std::move(*cond));
                    skip_ws();
                }
                if (at_end()) return fail("unterminated list (missing ')')");
                if (list.conditions.empty()) return fail("empty list");
                ++pos_;
                out.lists.push_back(std::move(list));
                tag_has_list = true;
            } else {
                return fail("expected '(' or '<'");
            }
            skip_ws();
        }
        if (!tag_has_list) return fail("a Resource-Tag without a list");
        return out;
    }

private:
    bool at_end() const { return pos_ >= s_.size(); }
    void skip_ws() {
        while (!at_end() && is_ws(s_[pos_])) ++pos_;
    }
    std::string fail(std::string_view what) const {
        return "If: " + std::string(what) + " at offset " + std::to_string(pos_);
    }

    // "<" … ">" with no whitespace, controls, quotes or brackets inside; nullopt and error_ set
    // when there is none.
    std::optional<std::string_view> bracketed(char open, char close, std::string_view what) {
        ++pos_;  // the opening bracket
        const std::size_t start = pos_;
        while (!at_end() && s_[pos_] != close) {
            const auto c = static_cast<unsigned char>(s_[pos_]);
            if (c <= 0x20 || c >= 0x7F || c == '"' || c == static_cast<unsigned char>(open)) {
                error_ = fail("invalid character in " + std::string(what));
                return std::nullopt;
            }
            ++pos_;
        }
        if (at_end()) {
            error_ = fail("unterminated " + std::string(what));
            return std::nullopt;
        }
        const auto inner = s_.substr(start, pos_ - start);
        ++pos_;
        if (inner.empty()) {
            error_ = fail("empty " + std::string(what));
            return std::nullopt;
        }
        return inner;
    }

    boost::system::result<dav_if_condition, std::string> condition() {
        dav_if_condition out;
        if (s_.size() - pos_ >= 3 && iequal(s_.substr(pos_, 3), "not")) {
            out.negated = true;
            pos_ += 3;
            skip_ws();
            if (at_end()) return fail("'Not' without a condition");
        }
        const char c = s_[pos_];
        if (c == '<') {
            auto token = bracketed('<', '>', "state token");
            if (!token) return error_;
            if (!is_absolute_uri(*token)) return fail("state token is not an absolute URI");
            out.type = dav_if_condition::kind::state_token;
            out.state_token = std::string(*token);
            return out;
        }
        if (c == '[') {
            // "[" entity-tag "]" with no whitespace around the tag. RFC 4918 takes entity-tag
            // from RFC 2616, whose opaque-tag is a quoted-string: its own examples have spaces
            // inside ("I am an ETag"), so SP and HTAB are let in besides RFC 9110's etagc. The
            // first DQUOTE ends the tag (no quoted-pair: no tag of ours has a backslash).
            ++pos_;
            const bool weak = s_.substr(pos_).starts_with("W/");
            if (weak) pos_ += 2;
            if (at_end() || s_[pos_] != '"') return fail("expected an entity-tag after '['");
            const std::size_t opaque = pos_++;
            while (!at_end() && s_[pos_] != '"') {
                if (!is_opaque_char(s_[pos_])) return fail("invalid character in entity-tag");
                ++pos_;
            }
            if (at_end()) return fail("unterminated entity-tag");
            ++pos_;
            if (at_end() || s_[pos_] != ']') return fail("expected ']' after the entity-tag");
            out.type = dav_if_condition::kind::entity_tag;
            out.tag.weak = weak;
            out.tag.opaque = std::string(s_.substr(opaque, pos_ - opaque));
            ++pos_;
            return out;
        }
        return fail(out.negated ? "expected '<' or '[' after 'Not'" : "expected a condition ('Not', '<' or '[')");
    }

    std::string_view s_;
    std::size_t pos_ = 0;
    std::string error_;
};

void append_condition(std::string& out, const dav_if_condition& c) {
    if (c.negated) out += "Not ";
    if (c.type == dav_if_condition::kind::state_token) {
        out += '<';
        out += c.state_token;
        out += '>';
    } else {
        out += '[';
        out += c.tag.str();
        out += ']';
    }
}

dav_if_condition no_lock(bool negated) {
    dav_if_condition c;
    c.type = dav_if_condition::kind::state_token;
    c.negated = negated;
    c.state_token = std::string(dav_no_lock);
    return c;
}

bool is_always_true(const dav_if_list& l) {
    return l.conditions.size() == 1 && l.conditions.front() == no_lock(true);
}

bool has_etag(const dav_if_list& l) {
    return std::any_of(l.conditions.begin(), l.conditions.end(),
                       [](const auto& c) { return c.type == dav_if_condition::kind::entity_tag; });
}

bool strong_match(const entity_tag& t, const std::vector<std::string>& current_tags) {
    if (t.weak) return false;
    return std::any_of(current_tags.begin(), current_tags.end(),
                       [&](const std::string& cur) { return !cur.starts_with("W/") && cur == t.opaque; });
}

// host[:port] (IPv6 literals in brackets) -> lower-cased host, port ("" when absent).
std::pair<std::string, std::string_view> split_authority(std::string_view a) {
    std::string_view host = a, port;
    const auto close = a.rfind(']');
    const auto colon = a.rfind(':');
    if (colon != std::string_view::npos && (close == std::string_view::npos || colon > close)) {
        host = a.substr(0, colon);
        port = a.substr(colon + 1);
    }
    std::string h(host);
    std::transform(h.begin(), h.end(), h.begin(), lower);
    return {std::move(h), port};
}

bool same_authority(std::string_view uri_authority, std::string_view request_host, std::string_view default_port) {
    if (uri_authority.empty() || request_host.empty()) return false;
    auto [uh, up] = split_authority(uri_authority);
    auto [rh, rp] = split_authority(request_host);
    if (up.empty()) up = default_port;
    if (rp.empty()) rp = default_port;
    return uh == rh && up == rp;
}

}  // namespace

boost::system::result<dav_if, std::string> parse_dav_if(std::string_view value) {
    if (value.size() > dav_if_max_bytes) return std::string("If: longer than 8 KiB");
    return parser(value).run();
}

std::string to_string(const dav_if& h) {
    std::string out;
    const std::optional<std::string>* previous = nullptr;
    for (const auto& l : h.lists) {
        if (l.resource && (!previous || *previous != l.resource)) {
            if (!out.empty()) out += ' ';
            out += '<';
            out += *l.resource;
            out += '>';
        }
        previous = &l.resource;
        if (!out.empty()) out += ' ';
        out += '(';
        for (std::size_t i = 0; i < l.conditions.size(); ++i) {
            if (i) out += ' ';
            append_condition(out, l.conditions[i]);
        }
        out += ')';
    }
    return out;
}

bool dav_if_names_target(std::string_view resource_tag, std::string_view request_target,
                         std::string_view request_host) {
    std::string path(resource_tag);
    if (!resource_tag.starts_with('/')) {
        const auto scheme = resource_tag.substr(0, scheme_length(resource_tag));
        std::string_view default_port;
        if (iequal(scheme, "http")) {
            default_port = "80";
        } else if (iequal(scheme, "https")) {
            default_port = "443";
        } else {
            return false;
        }
        auto rest = resource_tag.substr(scheme.size() + 1);
        if (!rest.starts_with("//")) return false;
        rest.remove_prefix(2);
        const auto end = std::min(rest.find_first_of("/?#"), rest.size());
        const auto authority = rest.substr(0, end);
        if (authority.find('@') != std::string_view::npos) return false;  // userinfo: not a name we compare
        if (!same_authority(authority, request_host, default_port)) return false;
        rest.remove_prefix(end);
        // "http://h" and "http://h?q" have the root path (RFC 3986 §6.2.3).
        path = rest.starts_with('/') ? std::string(rest) : "/" + std::string(rest);
    }
    auto a = normalize_target(path, config::query_mode::keep);
    auto b = normalize_target(request_target, config::query_mode::keep);
    return a && b && *a == *b;
}

dav_if_rewrite rewrite_dav_if(const dav_if& h, std::string_view request_target, std::string_view request_host,
                              const std::vector<std::string>& current_tags, bool resource_exists) {
    dav_if_rewrite out;
    std::vector<bool> own(h.lists.size());
    bool any_foreign = false;
    for (std::size_t i = 0; i < h.lists.size(); ++i) {
        const auto& l = h.lists[i];
        own[i] = !l.resource || dav_if_names_target(*l.resource, request_target, request_host);
        if (own[i]) {
            out.has_etags = out.has_etags || has_etag(l);
        } else {
            any_foreign = true;
            out.foreign_etags = out.foreign_etags || has_etag(l);
        }
    }
    if (!out.has_etags) {
        out.forwarded = to_string(h);
        return out;
    }

    // Which of the target's lists hold, as far as their entity-tags go.
    std::vector<bool> holds(h.lists.size());
    bool any_holds = false;
    for (std::size_t i = 0; i < h.lists.size(); ++i) {
        if (!own[i]) continue;
        bool ok = true;
        for (const auto& c : h.lists[i].conditions) {
            if (c.type != dav_if_condition::kind::entity_tag) continue;
            const bool match = resource_exists && strong_match(c.tag, current_tags);
            ok = ok && (match != c.negated);
        }
        holds[i] = ok;
        any_holds = any_holds || ok;
    }
    if (!any_holds && !any_foreign) {
        out.passes = false;
        return out;
    }

    dav_if rewritten;
    for (std::size_t i = 0; i < h.lists.size(); ++i) {
        const auto& l = h.lists[i];
        if (!own[i]) {
            rewritten.lists.push_back(l);
            continue;
        }
        dav_if_list kept{l.resource, {}};
        for (const auto& c : l.conditions)
            if (c.type == dav_if_condition::kind::state_token) kept.conditions.push_back(c);
        if (holds[i]) {
            if (kept.conditions.empty()) kept.conditions.push_back(no_lock(true));
        } else {
            // Nothing to submit and another list carries the header: the false list adds nothing.
            if (kept.conditions.empty() && any_holds) continue;
            kept.conditions.push_back(no_lock(false));
        }
        rewritten.lists.push_back(std::move(kept));
    }
    if (!std::all_of(rewritten.lists.begin(), rewritten.lists.end(), is_always_true))
        out.forwarded = to_string(rewritten);
    return out;
}

}  // namespace ifm::proxy

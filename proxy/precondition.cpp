#include "proxy/precondition.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <tuple>

namespace ifm::proxy {

namespace {

// Bounds on what a client can make us parse and what the store must compare per write.
constexpr std::size_t max_tag_list_bytes = 8 * 1024;
constexpr std::size_t max_tag_list_tags = 64;

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
    return s;
}

// etagc = %x21 / %x23-7E / obs-text
bool is_etagc(char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c == 0x21 || (c >= 0x23 && c <= 0x7E) || c >= 0x80;
}

// End of the entity-tag starting at `pos`, or npos when there is none.
std::size_t scan_entity_tag(std::string_view s, std::size_t pos) {
    if (s.substr(pos).starts_with("W/")) pos += 2;
    if (pos >= s.size() || s[pos] != '"') return std::string_view::npos;
    for (++pos; pos < s.size(); ++pos) {
        if (s[pos] == '"') return pos + 1;
        if (!is_etagc(s[pos])) return std::string_view::npos;
    }
    return std::string_view::npos;
}

entity_tag make_tag(std::string_view text) {
    const bool weak = text.starts_with("W/");
    return {weak, std::string(weak ? text.substr(2) : text)};
}

enum class list_error : std::uint8_t { none, syntax, too_long, too_many };

// "*" / #entity-tag (§5.6.1: `[ element ] *( OWS "," OWS [ element ] )`, at least one tag).
// Calls on_tag(text) for each entity-tag, without allocating: the GET path only compares.
template <typename OnTag>
list_error scan_list(std::string_view value, bool& any, OnTag on_tag) {
    any = false;
    if (value.size() > max_tag_list_bytes) return list_error::too_long;
    value = trim_ows(value);
    if (value == "*") {
        any = true;
        return list_error::none;
    }
    std::size_t pos = 0;
    std::size_t count = 0;
    for (;;) {
        while (pos < value.size() && (is_ows(value[pos]) || value[pos] == ',')) ++pos;
        if (pos == value.size()) break;
        const std::size_t end = scan_entity_tag(value, pos);
        if (end == std::string_view::npos) return list_error::syntax;
        if (++count > max_tag_list_tags) return list_error::too_many;
        on_tag(value.substr(pos, end - pos));
        pos = end;
        while (pos < value.size() && is_ows(value[pos])) ++pos;
        if (pos == value.size()) break;
        if (value[pos] != ',') return list_error::syntax;  // two tags need a comma between them
    }
    return count == 0 ? list_error::syntax : list_error::none;
}

list_error parse_list(std::string_view value, tag_list& out) {
    return scan_list(value, out.any,
                     [&out](std::string_view tag) { out.tags.push_back(make_tag(tag)); });
}

std::string list_error_message(std::string_view header, list_error e) {
    std::string msg(header);
    switch (e) {
    case list_error::too_long:
        msg += ": longer than " + std::to_string(max_tag_list_bytes) + " bytes";
        break;
    case list_error::too_many:
        msg += ": more than " + std::to_string(max_tag_list_tags) + " entity-tags";
        break;
    case list_error::syntax:
    case list_error::none:
        msg += ": expected an entity-tag list or *";
        break;
    }
    return msg;
}

// ---- HTTP-date (§5.6.7) ----------------------------------------------------------------------

constexpr std::array<std::string_view, 7> day_names = {"Sun", "Mon", "Tue", "Wed",
                                                       "Thu", "Fri", "Sat"};
constexpr std::array<std::string_view, 7> long_day_names = {
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
constexpr std::array<std::string_view, 12> month_names = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// A cursor over the date text; HTTP-date is case-sensitive and fixed-width, so plain
// prefix matching and counted ASCII digits are enough (no locale, no sscanf).
class date_reader {
public:
    explicit date_reader(std::string_view s) : s_(s) {}

    bool literal(std::string_view lit) {
        if (!s_.starts_with(lit)) return false;
        s_.remove_prefix(lit.size());
        return true;
    }
    std::optional<unsigned> digits(std::size_t n) {
        if (s_.size() < n) return std::nullopt;
        unsigned v = 0;
        for (std::size_t i = 0; i < n; ++i) {
            if (s_[i] < '0' || s_[i] > '9') return std::nullopt;
            v = v * 10 + static_cast<unsigned>(s_[i] - '0');
        }
        s_.remove_prefix(n);
        return v;
    }
    // Index of the name at the cursor, consumed.
    template <std::size_t N>
    std::optional<unsigned> name(const std::array<std::string_view, N>& names) {
        for (unsigned i = 0; i < N; ++i)
            if (literal(names[i])) return i;
        return std::nullopt;
    }
    std::optional<unsigned> month() {
        auto m = name(month_names);
        return m ? std::optional<unsigned>(*m + 1) : std::nullopt;
    }
    bool at_end() const { return s_.empty(); }
    char peek() const { return s_.empty() ? '\0' : s_.front(); }

private:
    std::string_view s_;
};

struct civil_time {
    std::int64_t year = 0;
    unsigned month = 0, day = 0, hour = 0, minute = 0, second = 0;
    auto tie() const { return std::tie(year, month, day, hour, minute, second); }
};

// time-of-day = hour ":" minute ":" second
bool read_time(date_reader& r, civil_time& t) {
    auto h = r.digits(2);
    if (!h || !r.literal(":")) return false;
    auto m = r.digits(2);
    if (!m || !r.literal(":")) return false;
    auto s = r.digits(2);
    if (!s) return false;
    t.hour = *h;
    t.minute = *m;
    t.second = *s;
    return true;
}

std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    using namespace std::chrono;
    const sys_days dp{year{static_cast<int>(y)} / month{m} / day{d}};
    return dp.time_since_epoch().count();
}

civil_time civil_from_epoch(std::int64_t t) {
    using namespace std::chrono;
    const sys_seconds tp{seconds{t}};
    const auto dp = floor<days>(tp);
    const year_month_day ymd{dp};
    const hh_mm_ss hms{tp - dp};
    return {static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
            static_cast<unsigned>(ymd.day()), static_cast<unsigned>(hms.hours().count()),
            static_cast<unsigned>(hms.minutes().count()),
            static_cast<unsigned>(hms.seconds().count())};
}

// Range checks (the grammar only fixes the digit counts); 60 seconds is a leap second.
std::optional<std::int64_t> to_epoch(const civil_time& t) {
    using namespace std::chrono;
    if (t.hour > 23 || t.minute > 59 || t.second > 60) return std::nullopt;
    if (t.year < 0 || t.year > 9999) return std::nullopt;
    const year_month_day ymd{year{static_cast<int>(t.year)}, month{t.month}, day{t.day}};
    if (!ymd.ok()) return std::nullopt;
    return days_from_civil(t.year, t.month, t.day) * 86400 + t.hour * 3600 + t.minute * 60 +
           t.second;
}

// §5.6.7: a two-digit year more than 50 years in the future is the most recent past year with
// the same two digits; i.e. the latest candidate not more than 50 years after `now`.
void resolve_two_digit_year(civil_time& t, unsigned yy, std::int64_t now) {
    civil_time limit = civil_from_epoch(now);
    const std::int64_t century = limit.year - ((limit.year % 100) + 100) % 100;
    limit.year += 50;
    t.year = century + yy;
    if (t.tie() > limit.tie()) {
        t.year -= 100;
    } else {
        civil_time next = t;
        next.year += 100;
        if (next.tie() <= limit.tie()) t.year = next.year;
    }
}

// IMF-fixdate = day-name "," SP day SP month SP year SP time-of-day SP "GMT"
std::optional<civil_time> parse_imf_fixdate(date_reader& r) {
    civil_time t;
    if (!r.literal(", ")) return std::nullopt;
    auto d = r.digits(2);
    if (!d || !r.literal(" ")) return std::nullopt;
    auto m = r.month();
    if (!m || !r.literal(" ")) return std::nullopt;
    auto y = r.digits(4);
    if (!y || !r.literal(" ") || !read_time(r, t) || !r.literal(" GMT") || !r.at_end())
        return std::nullopt;
    t.year = *y;
    t.month = *m;
    t.day = *d;
    return t;
}

// asctime-date = day-name SP month SP ( 2DIGIT / ( SP DIGIT ) ) SP time-of-day SP year
std::optional<civil_time> parse_asctime(date_reader& r) {
    civil_time t;
    if (!r.literal(" ")) return std::nullopt;
    auto m = r.month();
    if (!m || !r.literal(" ")) return std::nullopt;
    auto d = r.literal(" ") ? r.digits(1) : r.digits(2);
    if (!d || !r.literal(" ") || !read_time(r, t) || !r.literal(" ")) return std::nullopt;
    auto y = r.digits(4);
    if (!y || !r.at_end()) return std::nullopt;
    t.year = *y;
    t.month = *m;
    t.day = *d;
    return t;
}

// rfc850-date = day-name-l "," SP day "-" month "-" 2DIGIT SP time-of-day SP "GMT"
std::optional<civil_time> parse_rfc850(date_reader& r, std::int64_t now) {
    civil_time t;
    if (!r.name(long_day_names) || !r.literal(", ")) return std::nullopt;
    auto d = r.digits(2);
    if (!d || !r.literal("-")) return std::nullopt;
    auto m = r.month();
    if (!m || !r.literal("-")) return std::nullopt;
    auto yy = r.digits(2);
    if (!yy || !r.literal(" ") || !read_time(r, t) || !r.literal(" GMT") || !r.at_end())
        return std::nullopt;
    t.month = *m;
    t.day = *d;
    resolve_two_digit_year(t, *yy, now);
    return t;
}

void append_digits(std::string& out, std::int64_t v, int width) {
    char buf[8];
    for (int i = width - 1; i >= 0; --i, v /= 10) buf[i] = static_cast<char>('0' + v % 10);
    out.append(buf, static_cast<std::size_t>(width));
}

}  // namespace

std::optional<entity_tag> parse_entity_tag(std::string_view text) {
    if (scan_entity_tag(text, 0) != text.size()) return std::nullopt;
    return make_tag(text);
}

std::optional<tag_list> parse_tag_list(std::string_view value) {
    tag_list out;
    if (parse_list(value, out) != list_error::none) return std::nullopt;
    return out;
}

std::optional<std::int64_t> parse_http_date(std::string_view text, std::int64_t now) {
    // Field values reach us trimmed, but OWS around a value is never part of it (§5.5).
    text = trim_ows(text);
    std::optional<civil_time> t;
    date_reader r(text);
    if (r.name(day_names)) {
        if (r.peek() == ',')
            t = parse_imf_fixdate(r);
        else if (r.peek() == ' ')
            t = parse_asctime(r);
    }
    if (!t) {
        date_reader r850(text);
        t = parse_rfc850(r850, now);
    }
    if (!t) return std::nullopt;
    return to_epoch(*t);
}

std::optional<std::int64_t> parse_http_date(std::string_view text) {
    using namespace std::chrono;
    const auto now = duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
    return parse_http_date(text, now);
}

std::string format_http_date(std::int64_t epoch_seconds) {
    // IMF-fixdate has a four-digit year: clamp to 0000-01-01T00:00:00 .. 9999-12-31T23:59:59.
    static const std::int64_t min_t = days_from_civil(0, 1, 1) * 86400;
    static const std::int64_t max_t = days_from_civil(9999, 12, 31) * 86400 + 86399;
    epoch_seconds = std::clamp(epoch_seconds, min_t, max_t);
    const civil_time t = civil_from_epoch(epoch_seconds);
    using namespace std::chrono;
    const auto wd = weekday{floor<days>(sys_seconds{seconds{epoch_seconds}})}.c_encoding();

    std::string out;
    out.reserve(29);
    out += day_names[wd];
    out += ", ";
    append_digits(out, t.day, 2);
    out += ' ';
    out += month_names[t.month - 1];
    out += ' ';
    append_digits(out, t.year, 4);
    out += ' ';
    append_digits(out, t.hour, 2);
    out += ':';
    append_digits(out, t.minute, 2);
    out += ':';
    append_digits(out, t.second, 2);
    out += " GMT";
    return out;
}

write_precondition parse_write_precondition(const conditional_headers& h) {
    write_precondition out;
    auto malformed = [&out](std::string_view header, list_error e) {
        out.type = write_precondition::kind::malformed;
        out.cond = {};
        out.error = list_error_message(header, e);
        return out;
    };

    if (h.if_match) {
        tag_list list;
        if (auto e = parse_list(*h.if_match, list); e != list_error::none)
            return malformed("If-Match", e);
        if (list.any) {
            out.cond.if_match = cache::condition::match::any;
        } else {
            // Weak tags never match strongly; a list of only weak tags stays a (never matching)
            // list rather than turning into "no If-Match".
            out.cond.if_match = cache::condition::match::list;
            for (auto& tag : list.tags)
                if (!tag.weak) out.cond.if_match_tags.push_back(std::move(tag.opaque));
        }
    } else if (h.if_unmodified_since) {
        // §13.1.4: ignored with If-Match, and when not a valid HTTP-date.
        out.cond.if_unmodified_since = parse_http_date(*h.if_unmodified_since);
    }

    if (h.if_none_match) {
        tag_list list;
        if (auto e = parse_list(*h.if_none_match, list); e != list_error::none)
            return malformed("If-None-Match", e);
        if (list.any) {
            out.cond.if_none_match = cache::condition::match::any;
        } else {
            out.cond.if_none_match = cache::condition::match::list;
            for (auto& tag : list.tags) out.cond.if_none_match_tags.push_back(std::move(tag.opaque));
        }
    }

    out.type = out.cond.unconditional() ? write_precondition::kind::none
                                        : write_precondition::kind::condition;
    return out;
}

bool if_none_match_matches(std::string_view if_none_match, std::string_view current_etag) {
    if (scan_entity_tag(current_etag, 0) != current_etag.size()) return false;
    const std::string_view current = cache::opaque_tag(current_etag);
    bool any = false;
    bool matched = false;
    const auto e = scan_list(if_none_match, any, [&](std::string_view tag) {
        matched = matched || cache::opaque_tag(tag) == current;
    });
    return e == list_error::none && (any || matched);
}

std::string_view to_string(outcome o) {
    switch (o) {
    case outcome::not_judged: return "not_judged";
    case outcome::passed: return "passed";
    case outcome::revalidated: return "revalidated";
    case outcome::rejected_stale: return "rejected_stale";
    case outcome::rejected_busy: return "rejected_busy";
    case outcome::rejected_exists: return "rejected_exists";
    case outcome::missing: return "missing";
    case outcome::malformed: return "malformed";
    case outcome::store_error: return "store_error";
    case outcome::aborted: return "aborted";
    case outcome::would_reject_stale: return "would_reject_stale";
    case outcome::would_reject_busy: return "would_reject_busy";
    case outcome::would_reject_exists: return "would_reject_exists";
    case outcome::would_reject_missing: return "would_reject_missing";
    case outcome::replayed: return "replayed";
    case outcome::idempotency_in_flight: return "idempotency_in_flight";
    case outcome::idempotency_mismatch: return "idempotency_mismatch";
    }
    return "unknown";
}

}  // namespace ifm::proxy

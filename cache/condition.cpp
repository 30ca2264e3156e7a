#include "cache/condition.hpp"

#include <algorithm>

namespace ifm::cache {

namespace {

constexpr std::string_view weak_prefix = "W/";

bool is_weak(std::string_view tag) { return tag.starts_with(weak_prefix); }

}  // namespace

std::string_view opaque_tag(std::string_view tag) {
    return is_weak(tag) ? tag.substr(weak_prefix.size()) : tag;
}

verdict evaluate(const condition& c, resource_state::kind kind, std::optional<std::int64_t> last_modified,
                 const std::vector<std::string>& tags) {
    // Only a present resource has a representation to compare with; unknown counts as absent
    // (callers revalidate first), so no precondition can be satisfied by a tag it does not know.
    const bool present = kind == resource_state::kind::present;
    auto strongly_listed = [&](const std::string& t) {
        return !t.empty() && !is_weak(t) &&
               std::find(c.if_match_tags.begin(), c.if_match_tags.end(), t) != c.if_match_tags.end();
    };
    auto weakly_listed = [&](const std::string& t) {
        if (t.empty()) return false;
        const std::string_view current = opaque_tag(t);
        return std::any_of(c.if_none_match_tags.begin(), c.if_none_match_tags.end(),
                           [&](const std::string& tag) { return opaque_tag(tag) == current; });
    };

    // §13.2.2 step 1 / step 2: If-Match, else If-Unmodified-Since.
    switch (c.if_match) {
    case condition::match::any:
        if (!present) return verdict::stale;
        break;
    case condition::match::list:
        // Strong comparison (§8.8.3.2): a weak stored tag could never match, whatever the list.
        if (!present || std::none_of(tags.begin(), tags.end(), strongly_listed)) return verdict::stale;
        break;
    case condition::match::none:
        // §13.1.4: ignored when the resource has no modification date (absent has none).
        if (c.if_unmodified_since && present && last_modified && *last_modified > *c.if_unmodified_since)
            return verdict::stale;
        break;
    }

    // §13.2.2 step 3: If-None-Match.
    switch (c.if_none_match) {
    case condition::match::any:
        if (present) return verdict::exists;
        break;
    case condition::match::list:
        // Weak comparison: opaque parts only (the list is already stripped of W/).
        if (present && std::any_of(tags.begin(), tags.end(), weakly_listed)) return verdict::stale;
        break;
    case condition::match::none:
        break;
    }
    return verdict::pass;
}

verdict evaluate(const condition& c, const resource_state& s) {
    std::vector<std::string> tags;
    if (!s.etag.empty()) tags.push_back(s.etag);
    return evaluate(c, s.state, s.last_modified, tags);
}

}  // namespace ifm::cache

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

verdict evaluate(const condition& c, const resource_state& s) {
    // Only a present resource has a representation to compare with; unknown counts as absent
    // (callers revalidate first), so no precondition can be satisfied by a tag it does not know.
    const bool present = s.state == resource_state::kind::present;
    // An empty etag means "exists, tag unknown": it matches no list, in either direction.
    const bool has_tag = present && !s.etag.empty();

    // §13.2.2 step 1 / step 2: If-Match, else If-Unmodified-Since.
    switch (c.if_match) {
    case condition::match::any:
        if (!present) return verdict::stale;
        break;
    case condition::match::list: {
        // Strong comparison (§8.8.3.2): a weak stored tag could never match, whatever the list.
        const bool match = has_tag && !is_weak(s.etag) &&
                           std::find(c.if_match_tags.begin(), c.if_match_tags.end(), s.etag) !=
                               c.if_match_tags.end();
        if (!match) return verdict::stale;
        break;
    }
    case condition::match::none:
        // §13.1.4: ignored when the resource has no modification date (absent has none).
        if (c.if_unmodified_since && present && s.last_modified &&
            *s.last_modified > *c.if_unmodified_since)
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
        if (has_tag) {
            const std::string_view current = opaque_tag(s.etag);
            for (const auto& tag : c.if_none_match_tags)
                if (opaque_tag(tag) == current) return verdict::stale;
        }
        break;
    case condition::match::none:
        break;
    }
    return verdict::pass;
}

}  // namespace ifm::cache

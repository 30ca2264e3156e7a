// WebDAV If header fuzzer (proxy/dav_if.hpp): parsing never crashes and stays within its bounds,
// what parses round-trips through to_string, and what rewrite_dav_if forwards parses again, in
// canonical form, without an entity-tag on the lists it judged.
#include "proxy/dav_if.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace ifm::proxy;

namespace {

void check_rewrite(const dav_if& h, const std::vector<std::string>& tags, bool exists) {
    auto r = rewrite_dav_if(h, "/a", "h", tags, exists);
    if (!r.passes) {
        FUZZ_CHECK(r.has_etags);
        FUZZ_CHECK(r.forwarded.empty());
        return;
    }
    if (!r.has_etags) FUZZ_CHECK(r.forwarded == to_string(h));
    if (r.forwarded.empty()) return;
    auto again = parse_dav_if(r.forwarded);
    FUZZ_CHECK(again.has_value());
    FUZZ_CHECK(to_string(*again) == r.forwarded);
    if (!r.has_etags) return;
    // The judged lists (untagged, or tagged with the target) reach the origin without tags.
    for (const auto& l : again->lists) {
        if (l.resource && !dav_if_names_target(*l.resource, "/a", "h")) continue;
        for (const auto& c : l.conditions) FUZZ_CHECK(c.type == dav_if_condition::kind::state_token);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto h = parse_dav_if(text);
    if (!h) {
        FUZZ_CHECK(!h.error().empty());
        return 0;
    }
    FUZZ_CHECK(text.size() <= dav_if_max_bytes);
    FUZZ_CHECK(!h->lists.empty() && h->lists.size() <= dav_if_max_lists);
    std::size_t conditions = 0;
    std::vector<std::string> tags;
    for (const auto& l : h->lists) {
        FUZZ_CHECK(!l.conditions.empty());
        FUZZ_CHECK(l.resource.has_value() == h->lists.front().resource.has_value());
        conditions += l.conditions.size();
        for (const auto& c : l.conditions)
            if (c.type == dav_if_condition::kind::entity_tag && !c.tag.weak && tags.empty()) tags.push_back(c.tag.opaque);
    }
    FUZZ_CHECK(conditions <= dav_if_max_conditions);

    const auto text_again = to_string(*h);
    auto reparsed = parse_dav_if(text_again);
    FUZZ_CHECK(reparsed.has_value() && *reparsed == *h);

    // Against the input's own first strong tag (so that lists can hold), a foreign one, none.
    check_rewrite(*h, tags, true);
    check_rewrite(*h, {"\"zz-not-in-input\""}, true);
    check_rewrite(*h, tags, false);
    return 0;
}

// Entity-tag and precondition header fuzzer: no crash, and what parses round-trips.
#include "proxy/precondition.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <cstdint>
#include <string>
#include <string_view>

using namespace ifm::proxy;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);

    if (auto tag = parse_entity_tag(text)) {
        FUZZ_CHECK(tag->str() == text);
        FUZZ_CHECK(tag->opaque.size() >= 2 && tag->opaque.front() == '"' && tag->opaque.back() == '"');
    }
    if (auto list = parse_tag_list(text)) {
        FUZZ_CHECK(list->any != !list->tags.empty());
        if (!list->any) {
            // Re-serialized, the list parses to the same tags, and each tag on its own too.
            std::string joined;
            for (const auto& t : list->tags) {
                if (!joined.empty()) joined += ", ";
                joined += t.str();
                auto again = parse_entity_tag(t.str());
                FUZZ_CHECK(again && *again == t);
            }
            auto reparsed = parse_tag_list(joined);
            FUZZ_CHECK(reparsed && !reparsed->any && reparsed->tags == list->tags);
        }
    }
    // Whatever the headers hold, the write precondition is well-formed or reported malformed.
    conditional_headers h;
    h.if_match = std::string(text);
    auto p = parse_write_precondition(h);
    FUZZ_CHECK(p.type != write_precondition::kind::none);
    FUZZ_CHECK((p.type == write_precondition::kind::malformed) == !parse_tag_list(text));
    conditional_headers n;
    n.if_none_match = std::string(text);
    n.if_unmodified_since = std::string(text);
    (void)parse_write_precondition(n);
    (void)if_none_match_matches(text, "\"abc\"");

    if (auto t = parse_http_date(text, 1'700'000'000)) {
        auto formatted = format_http_date(*t);
        auto again = parse_http_date(formatted, 1'700'000'000);
        FUZZ_CHECK(again.has_value());
        // format_http_date clamps to years 0000..9999.
        if (*t >= -62167219200 && *t <= 253402300799) FUZZ_CHECK(*again == *t);
    }
    return 0;
}

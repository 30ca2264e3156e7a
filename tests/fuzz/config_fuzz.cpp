// Config loader fuzzer: any text gives a config or errors with a path or line, never a crash;
// a config that loads satisfies the loader's cross-checks.
#include "config/config.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto r = ifm::config::load_string(text);
    if (!r) {
        FUZZ_CHECK(!r.error().empty());
        for (const auto& e : r.error()) {
            FUZZ_CHECK(!e.message.empty());
            FUZZ_CHECK(!e.format("f.yaml").empty());
        }
        return 0;
    }
    const auto& c = *r;
    for (const auto& route : c.routes) {
        const auto* up = c.find_upstream(route.upstream);
        FUZZ_CHECK(up != nullptr);
        FUZZ_CHECK(route.reject_status == 409 || route.reject_status == 412);
    }
    FUZZ_CHECK(c.limits.max_header_bytes >= 1024);
    FUZZ_CHECK(c.limits.max_header_fields >= 1);
    FUZZ_CHECK(c.limits.max_connections >= 1);
    return 0;
}

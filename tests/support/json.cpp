#include "tests/support/json.hpp"

// Boost.JSON compiled here, once, for the test binaries (the proxy itself does not use it).
#include <boost/json/src.hpp>

namespace ifm::test {

std::optional<boost::json::value> parse_json(std::string_view text, std::string* error) {
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    if (ec) {
        if (error) *error = ec.message();
        return std::nullopt;
    }
    return v;
}

std::string json_string(const boost::json::value& v, std::string_view key) {
    if (!v.is_object()) return {};
    auto* m = v.as_object().if_contains(key);
    if (!m || !m->is_string()) return {};
    return std::string(m->as_string());
}

}  // namespace ifm::test

// A strict JSON parser for tests (Boost.JSON: invalid UTF-8 is an error, as in RFC 8259 §8.1).
#pragma once

#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace ifm::test {

// The parsed value, or nullopt with `error` set.
std::optional<boost::json::value> parse_json(std::string_view text, std::string* error = nullptr);

// The string member `key` of object `v` ("" if absent or not a string). Keys may contain dots
// (ECS flat keys: "http.request.id").
std::string json_string(const boost::json::value& v, std::string_view key);

}  // namespace ifm::test

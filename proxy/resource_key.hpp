// The tracking key of a resource (SPEC §4): which requests address the same validator.
// Pure functions, unit-tested in tests/unit/resource_key_test.cpp.
#pragma once

#include "config/config.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ifm::proxy {

// Normalizes an origin-form request target: percent-encoding normalized (decode unreserved
// chars %41 -> A, upper-case hex digits in remaining escapes, encode any byte that is not
// allowed raw), dot-segments removed (RFC 3986 §5.2.4, a path can never climb above "/"),
// query per mode (keep: as is after normalization; sorted: parameters sorted by name then value,
// stable; ignore: dropped); fragment dropped. nullopt when the target is not origin-form
// (must start with '/') or contains CTLs/space/NUL/bad %-escapes.
std::optional<std::string> normalize_target(std::string_view target, config::query_mode q);

// The store key of one resource: route name + normalized target + the values of the route's
// vary headers (name=value, in the route's order; missing header = empty). The result contains
// only printable ASCII without '{', '}', spaces or controls, is at most 200 bytes (longer keys
// become "<route>#" + hex SHA-256 of the full key via OpenSSL EVP), and a client can never make
// a key of one route equal a key of another route (the route name is a fixed, escaped prefix
// followed by a separator that cannot occur in the escaped target part).
std::string resource_key(std::string_view route_name, std::string_view normalized_target,
                         const std::vector<std::pair<std::string, std::string>>& vary_values);

// Longest key resource_key returns.
inline constexpr std::size_t max_resource_key_bytes = 200;

}  // namespace ifm::proxy

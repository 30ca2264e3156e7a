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

// SPEC §4: the key of a resource is the origin, the Host the origin sees and the normalized target
// (`resource_key(resource_scope(origin, host), target, {})`), nothing that a configuration change
// could alter (route names, `vary`): two routes, two config versions or a rolled-back reload all
// address one resource with one key, one lease and one generation. `origin` is the upstream's
// address; `host` is lower-cased, without a trailing dot or a port (the port is the proxy's
// listener, which differs across a fleet, not the origin's).
std::string resource_scope(std::string_view origin, std::string_view host);

// Which representation of a resource a validator belongs to (SPEC §4): the route's `vary` header
// values and the response's content coding. "" for the default one (no vary value, identity).
std::string variant_id(const std::vector<std::pair<std::string, std::string>>& vary_values,
                       std::string_view content_coding);

// Why a request target's path is spelled ambiguously (an encoded "/" or "\", an empty segment,
// a dot-segment, raw or encoded), or empty. Origins resolve such paths differently from the
// proxy (nginx merges slashes, some decode %2F), so a write could reach a resource the proxy did
// not judge: unsafe methods with such targets are refused (400).
std::string_view ambiguous_path(std::string_view target);

// Longest key resource_key returns.
inline constexpr std::size_t max_resource_key_bytes = 200;

}  // namespace ifm::proxy

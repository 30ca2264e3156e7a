// Resource dependencies (SPEC §9, docs/configuration.md "Resource dependencies"): which other
// resources a write changes, by a route's `dependencies` rules. Pure; unit-tested in
// tests/unit/dependencies_test.cpp.
#pragma once

#include "config/config.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ifm::proxy {

// The bound variables of `tmpl` matched against `path` (normalized, no query), or nullopt when it
// does not match: as many segments, literal segments equal to the path's (compared in the proxy's
// normalized spelling, so "/caf%C3%A9" and "/café" are one literal), each `{name}` one non-empty
// segment.
std::optional<std::vector<std::pair<std::string, std::string>>> match_path_template(std::string_view tmpl,
                                                                                    std::string_view path);

// The paths every rule whose `path` matches `path` names in `invalidates`, with its variables
// substituted; each once, in rule order, `path` itself left out.
std::vector<std::string> dependent_paths(const std::vector<config::dependency_rule>& rules, std::string_view path);

}  // namespace ifm::proxy

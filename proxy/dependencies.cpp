#include "proxy/dependencies.hpp"

#include "proxy/resource_key.hpp"

#include <algorithm>

namespace ifm::proxy {
namespace {

// "/a/b/" -> {"a", "b", ""}; "/" -> {""}.
std::vector<std::string_view> segments(std::string_view path) {
    std::vector<std::string_view> out;
    path.remove_prefix(1);
    for (;;) {
        auto slash = path.find('/');
        out.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos) return out;
        path.remove_prefix(slash + 1);
    }
}

bool is_variable(std::string_view seg) { return seg.size() >= 3 && seg.front() == '{' && seg.back() == '}'; }

}  // namespace

std::optional<std::vector<std::pair<std::string, std::string>>> match_path_template(std::string_view tmpl,
                                                                                    std::string_view path) {
    if (!path.starts_with('/')) return std::nullopt;
    auto want = segments(tmpl), have = segments(path);
    if (want.size() != have.size()) return std::nullopt;
    std::vector<std::pair<std::string, std::string>> bound;
    for (std::size_t i = 0; i < want.size(); ++i) {
        if (is_variable(want[i])) {
            if (have[i].empty()) return std::nullopt;
            bound.emplace_back(std::string(want[i].substr(1, want[i].size() - 2)), std::string(have[i]));
            continue;
        }
        // The literal in the spelling the path has after normalize_target.
        auto literal = normalize_target("/" + std::string(want[i]), config::query_mode::ignore);
        if (!literal || std::string_view(*literal).substr(1) != have[i]) return std::nullopt;
    }
    return bound;
}

std::vector<std::string> dependent_paths(const std::vector<config::dependency_rule>& rules, std::string_view path) {
    std::vector<std::string> out;
    for (const auto& rule : rules) {
        auto bound = match_path_template(rule.path, path);
        if (!bound) continue;
        for (const auto& tmpl : rule.invalidates) {
            std::string expanded;
            for (auto seg : segments(tmpl)) {
                expanded += '/';
                if (!is_variable(seg)) {
                    expanded += seg;
                    continue;
                }
                auto name = seg.substr(1, seg.size() - 2);
                auto it = std::ranges::find(*bound, name, &std::pair<std::string, std::string>::first);
                if (it != bound->end()) expanded += it->second;   // the loader checked that it is bound
            }
            auto normalized = normalize_target(expanded, config::query_mode::ignore);
            if (!normalized || *normalized == path) continue;
            if (std::ranges::find(out, *normalized) == out.end()) out.push_back(std::move(*normalized));
        }
    }
    return out;
}

}  // namespace ifm::proxy

// Process-wide counters, updated lock-free by the workers and rendered by the admin listener.
#pragma once

#include "proxy/precondition.hpp"

#include <array>
#include <atomic>
#include <cstdint>

namespace ifm::proxy {

struct metrics {
    std::array<std::atomic<std::uint64_t>, 6> responses_by_class{};   // [1]..[5]: 1xx..5xx
    std::array<std::atomic<std::uint64_t>, 9> precondition_outcomes{}; // by `outcome`
    std::atomic<std::int64_t> client_connections{0};
    std::atomic<std::uint64_t> client_connections_total{0};
    std::atomic<std::uint64_t> untracked_large_bodies{0};
    std::atomic<std::uint64_t> origin_errors{0};

    void count_response(unsigned status) {
        if (status >= 100 && status < 600) responses_by_class[status / 100].fetch_add(1, std::memory_order_relaxed);
    }
    void count_outcome(outcome o) {
        precondition_outcomes[static_cast<std::size_t>(o)].fetch_add(1, std::memory_order_relaxed);
    }
};

}  // namespace ifm::proxy

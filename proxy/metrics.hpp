// Process-wide metrics, updated lock-free by the workers and rendered by the admin listener in
// the Prometheus text format (proxy/admin.cpp). Everything on the request path is a relaxed
// atomic: per-route counters are found through an immutable table built once per runtime
// (start, reload), never through a lock.
#pragma once

#include "cache/store.hpp"
#include "proxy/precondition.hpp"

#include <boost/beast/http/verb.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ifm::proxy {

struct runtime;

// A latency histogram with fixed buckets (seconds, Prometheus' `le`), lock-free.
class histogram {
public:
    // Upper bounds in microseconds: 100us .. 10s.
    static constexpr std::array<std::uint64_t, 16> bounds_us = {
        100, 250, 500, 1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000,
        250'000, 500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000};

    void observe(std::chrono::steady_clock::duration d);
    // Appends `NAME_bucket{LABELS,le=...}`, `NAME_sum{LABELS}` and `NAME_count{LABELS}` lines;
    // `labels` is `a="x",b="y"` or empty.
    void render(std::string& out, std::string_view name, std::string_view labels) const;
    std::uint64_t count() const;

private:
    std::array<std::atomic<std::uint64_t>, bounds_us.size() + 1> buckets_{};  // not cumulative; last: +Inf
    std::atomic<std::uint64_t> sum_ns_{0};
};

// Methods are a fixed set, so that clients cannot create label values.
enum class method_label : std::uint8_t { get, head, post, put, patch, delete_, options, other };
constexpr std::size_t method_label_count = 8;
method_label to_method_label(boost::beast::http::verb v);
std::string_view to_string(method_label m);

// Requests of one route (or of none: unparsed requests and requests no route matched).
struct route_stats {
    std::array<std::array<std::atomic<std::uint64_t>, 5>, method_label_count> requests{};  // [method][class 1xx..5xx]
    histogram duration;
};

// Store operations, for the store latency histogram and error counter.
enum class store_op : std::uint8_t { acquire, store_under_lease, commit, snapshot, observe, ping };
constexpr std::size_t store_op_count = 6;
std::string_view to_string(store_op op);

// Origin exchanges: the client's request forwarded, or a request the proxy makes on its own
// (revalidation, refresh after a write).
enum class origin_kind : std::uint8_t { forward, fetch };

class metrics {
public:
    metrics();
    ~metrics();
    metrics(const metrics&) = delete;
    metrics& operator=(const metrics&) = delete;

    // Makes the routes of `rt` countable (at start and on every reload, before the workers see
    // `rt`). Counters are kept by route name, so a route that survives a reload keeps counting.
    void bind_routes(const runtime& rt);

    // One finished request. `route` points into `rt->cfg.routes`, or is null when no route
    // matched; status 0 (nothing was sent) is not counted.
    void count_request(const runtime* rt, const config::route_config* route, boost::beast::http::verb method,
                       unsigned status, std::chrono::steady_clock::duration elapsed);
    // A request whose header could not be parsed (route "(none)", method "other").
    void count_response(unsigned status) { count_request(nullptr, nullptr, boost::beast::http::verb::unknown, status, {}); }
    void count_outcome(outcome o) {
        precondition_outcomes[static_cast<std::size_t>(o)].fetch_add(1, std::memory_order_relaxed);
    }
    void observe_store(store_op op, std::chrono::steady_clock::duration d, bool ok);
    void observe_origin(origin_kind k, std::chrono::steady_clock::duration d) {
        origin_duration[static_cast<std::size_t>(k)].observe(d);
    }
    // config_reloads_total{result=applied|rejected}
    void count_reload(bool applied) { reloads[applied ? 0 : 1].fetch_add(1, std::memory_order_relaxed); }

    // The Prometheus text exposition (format 0.0.4).
    std::string render() const;

    std::array<std::atomic<std::uint64_t>, outcome_count> precondition_outcomes{};  // by `outcome`
    std::atomic<std::int64_t> client_connections{0};
    std::atomic<std::uint64_t> client_connections_total{0};
    std::atomic<std::uint64_t> untracked_large_bodies{0};
    // Hostile load (issue 15): hash-route bodies streamed unbuffered because limits.max_buffered_bytes
    // was reached; times the listeners paused at limits.max_connections; origin pool waits.
    std::atomic<std::uint64_t> unbuffered_over_budget{0};
    std::atomic<std::uint64_t> accept_paused{0};
    histogram origin_pool_wait;                          // requests that had to wait for a slot
    std::atomic<std::uint64_t> origin_pool_exhausted{0};  // no slot within pool_wait: 503
    std::atomic<std::uint64_t> client_aborts{0};         // origin exchanges cut because the client left
    std::atomic<std::uint64_t> origin_errors{0};
    std::atomic<std::int64_t> leases_held{0};   // taken by this process, not yet committed or lost
    std::array<histogram, 2> origin_duration;   // by origin_kind
    std::array<histogram, store_op_count> store_duration;
    std::array<std::atomic<std::uint64_t>, store_op_count> store_errors{};
    std::array<std::atomic<std::uint64_t>, 2> reloads{};   // applied, rejected

    // Sampled by the admin listener from the workers just before each scrape.
    std::atomic<std::int64_t> origin_connections_in_use{0};
    std::atomic<std::int64_t> origin_connections_idle{0};
    std::atomic<std::uint64_t> store_reconnects{0};
    std::atomic<std::int64_t> store_connected{0};   // workers whose store connection is up
    std::atomic<std::int64_t> workers{0};

private:
    struct binding {
        const runtime* rt;
        std::vector<route_stats*> routes;   // aligned with rt->cfg.routes
    };
    route_stats* stats_for(const runtime* rt, std::size_t index);

    mutable std::mutex mu_;   // bind_routes, the slow path of stats_for, render
    std::map<std::string, std::unique_ptr<route_stats>> by_name_;
    // Every binding made, newest last: a request that began before a reload still holds the old
    // runtime and finds its routes here (a few pointers per reload).
    std::vector<std::unique_ptr<binding>> bindings_;
    std::atomic<const binding*> current_{nullptr};
    route_stats unrouted_;
};

// Observes an origin exchange from construction to destruction (a coroutine's whole body, so
// that every co_return is covered).
class origin_timer {
public:
    origin_timer(metrics& m, origin_kind k) : m_(m), kind_(k), start_(std::chrono::steady_clock::now()) {}
    ~origin_timer() { m_.observe_origin(kind_, std::chrono::steady_clock::now() - start_); }
    origin_timer(const origin_timer&) = delete;
    origin_timer& operator=(const origin_timer&) = delete;

private:
    metrics& m_;
    origin_kind kind_;
    std::chrono::steady_clock::time_point start_;
};

// Wraps a store factory so that every store it makes reports its latency, errors and the
// leases it holds into `m`.
std::unique_ptr<cache::store_factory> instrument(std::unique_ptr<cache::store_factory> inner, metrics& m);

}  // namespace ifm::proxy

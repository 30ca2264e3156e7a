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
#include <string_view>
#include <vector>

namespace ifm::proxy {

struct runtime;

// A latency histogram with fixed buckets (seconds, Prometheus' `le`), lock-free.
class histogram {
public:
    // Upper bounds in microseconds: 100us .. 60s, past the longest timeouts one would configure
    // (request_timeout, write_lease), so that slow requests are not all lumped into +Inf.
    static constexpr std::array<std::uint64_t, 19> bounds_us = {
        100, 250, 500, 1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000,
        250'000, 500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000, 20'000'000, 30'000'000, 60'000'000};

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

// Judged writes and origin failures of one (route, upstream) pair: labels come from the
// configuration only, so their number is bounded whatever clients send.
struct route_upstream_stats {
    std::array<std::atomic<std::uint64_t>, outcome_count> outcomes{};
    std::atomic<std::uint64_t> origin_errors{0};
    std::atomic<std::uint64_t> dependent_invalidations{0};   // routes[].dependencies made unknown
};

// The problem types (RFC 9457 `type` slugs) of the responses the proxy makes itself: a fixed
// set so that the label stays bounded; a slug not listed counts as "other" (the last entry).
inline constexpr std::array<std::string_view, 25> problem_types = {
    "malformed-request", "malformed-precondition", "no-route", "request-timeout", "body-too-large",
    "target-too-long", "expectation-failed", "precondition-required", "header-too-large",
    "stale-precondition", "already-exists", "write-in-progress", "bad-origin-response", "origin-unreachable",
    "revalidation-failed", "lease-lost", "lease-too-short", "store-unavailable", "origin-busy", "origin-timeout",
    "malformed-idempotency-key", "idempotency-key-in-use", "idempotency-key-reused", "idempotency-body-unsupported",
    "other"};

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
    // The same, also counted by route and upstream (route null: only the unlabelled total).
    void count_outcome(const runtime* rt, const config::route_config* route, outcome o);
    // A response the proxy made itself (problem+json), by its type slug.
    void count_problem(std::string_view slug);
    // An origin connect, timeout or protocol failure (the unlabelled total and, with a route,
    // by route and upstream).
    void count_origin_error(const runtime* rt, const config::route_config* route);
    // A resource named by the route's `dependencies` made unknown by a write's commit.
    void count_dependent_invalidation(const runtime* rt, const config::route_config* route) {
        if (auto* us = upstream_stats_for(rt, route)) us->dependent_invalidations.fetch_add(1, std::memory_order_relaxed);
    }
    void observe_store(store_op op, std::chrono::steady_clock::duration d, bool ok);
    void observe_origin(origin_kind k, std::chrono::steady_clock::duration d) {
        origin_duration[static_cast<std::size_t>(k)].observe(d);
    }
    // config_reloads_total{result=applied|rejected}
    // Also sets config_last_reload_successful and, when applied, its timestamp.
    void count_reload(bool applied);

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
    // Streamed responses whose client fell behind: spooled to a file (limits.max_spooled_bytes),
    // or kept waiting for their client, origin connection held, because the spool had no room.
    std::atomic<std::uint64_t> spooled_responses{0};
    std::atomic<std::uint64_t> spool_full{0};
    // Tracked reads that reused their worker's snapshot of the resource (store.snapshot_reuse).
    std::atomic<std::uint64_t> snapshots_reused{0};
    histogram origin_pool_wait;                          // requests that had to wait for a slot
    std::atomic<std::uint64_t> origin_pool_exhausted{0};  // no slot within pool_wait: 503
    std::atomic<std::uint64_t> client_aborts{0};         // origin exchanges cut because the client left
    std::atomic<std::uint64_t> tls_handshake_failures{0};  // listen_tls: failed or timed out
    std::atomic<std::uint64_t> origin_errors{0};
    std::atomic<std::int64_t> leases_held{0};   // taken by this process, not yet committed or lost
    std::array<histogram, 2> origin_duration;   // by origin_kind
    std::array<histogram, store_op_count> store_duration;
    std::array<std::atomic<std::uint64_t>, store_op_count> store_errors{};
    std::array<std::atomic<std::uint64_t>, 2> reloads{};   // applied, rejected
    std::array<std::atomic<std::uint64_t>, problem_types.size()> problems{};   // by problem_types

    // Sampled by the admin listener from the workers just before each scrape.
    std::atomic<std::int64_t> origin_connections_in_use{0};
    std::atomic<std::int64_t> origin_connections_idle{0};
    std::atomic<std::uint64_t> store_reconnects{0};
    std::atomic<std::int64_t> store_connected{0};   // workers whose store connection is up
    std::atomic<std::int64_t> workers{0};

    // Set by the admin listener's readiness check (its own store ping).
    std::atomic<std::int64_t> store_up{0};
    // Judged writes refused because a restarted Redis may have lost leases still in use (the
    // young-server window), and when the last one was (steady_clock ticks; 0: never).
    std::atomic<std::uint64_t> store_recovering_refusals{0};
    std::atomic<std::int64_t> last_recovering_refusal{0};
    std::atomic<std::int64_t> draining{0};   // SIGTERM received
    std::atomic<std::int64_t> last_reload_ok{1};
    std::atomic<double> last_reload_time{0};   // unix seconds of the start or last applied reload

private:
    struct binding {
        const runtime* rt;
        std::vector<route_stats*> routes;                // aligned with rt->cfg.routes
        std::vector<route_upstream_stats*> by_upstream;  // aligned with rt->cfg.routes
    };
    const binding* binding_for(const runtime* rt) const;
    route_stats* stats_for(const runtime* rt, std::size_t index);
    route_upstream_stats* upstream_stats_for(const runtime* rt, const config::route_config* route);

    mutable std::mutex mu_;   // bind_routes, the slow path of stats_for, render
    std::map<std::string, std::unique_ptr<route_stats>> by_name_;
    std::map<std::pair<std::string, std::string>, std::unique_ptr<route_upstream_stats>> by_route_upstream_;
    // Every binding made, newest last: a request that began before a reload still holds the old
    // runtime and finds its routes here (a few pointers per reload).
    std::vector<std::unique_ptr<binding>> bindings_;
    std::atomic<const binding*> current_{nullptr};
    route_stats unrouted_;
};

// Observes an origin exchange from construction to destruction (a coroutine's whole body, so
// that every co_return is covered).
// With `total`, the time is also added there (request_context::origin_time, for the access log).
class origin_timer {
public:
    origin_timer(metrics& m, origin_kind k, std::chrono::microseconds* total = nullptr)
        : m_(m), kind_(k), total_(total), start_(std::chrono::steady_clock::now()) {}
    ~origin_timer() {
        auto d = std::chrono::steady_clock::now() - start_;
        m_.observe_origin(kind_, d);
        if (total_) *total_ += std::chrono::duration_cast<std::chrono::microseconds>(d);
    }
    origin_timer(const origin_timer&) = delete;
    origin_timer& operator=(const origin_timer&) = delete;

private:
    metrics& m_;
    origin_kind kind_;
    std::chrono::microseconds* total_;
    std::chrono::steady_clock::time_point start_;
};

// Adds the time from construction to destruction to `total` (request_context::store_time):
// wrap each store call of a request, e.g. `{ store_timer t(ctx.store_time); r = co_await op; }`.
// The store's own latency histogram is kept by instrument() below, whoever calls.
class store_timer {
public:
    explicit store_timer(std::chrono::microseconds& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
    ~store_timer() {
        total_ += std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start_);
    }
    store_timer(const store_timer&) = delete;
    store_timer& operator=(const store_timer&) = delete;

private:
    std::chrono::microseconds& total_;
    std::chrono::steady_clock::time_point start_;
};

// Process metrics from /proc/self (process_cpu_seconds_total, process_resident_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds), appended in the text format.
void render_process_metrics(std::string& out);

// Wraps a store factory so that every store it makes reports its latency, errors and the
// leases it holds into `m`.
std::unique_ptr<cache::store_factory> instrument(std::unique_ptr<cache::store_factory> inner, metrics& m);

}  // namespace ifm::proxy

#include "proxy/metrics.hpp"

#include "proxy/memory_budget.hpp"
#include "proxy/response_spool.hpp"
#include "proxy/runtime.hpp"

#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

namespace ifm::proxy {

namespace net = boost::asio;
namespace http = boost::beast::http;
using clock = std::chrono::steady_clock;

namespace {

// Microseconds as decimal seconds without trailing zeros: 250 -> "0.00025", 2500000 -> "2.5".
std::string seconds_text(std::uint64_t us) {
    std::string s = std::to_string(us / 1'000'000);
    if (auto frac = us % 1'000'000) {
        std::string f = std::to_string(frac);
        f.insert(0, 6 - f.size(), '0');
        while (f.back() == '0') f.pop_back();
        s += "." + f;
    }
    return s;
}

std::string nanos_as_seconds(std::uint64_t ns) {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<double>(ns) / 1e9);
    return ec == std::errc{} ? std::string(buf, end) : "0";
}

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

template <class T>
void sample(std::string& out, std::string_view name, std::string_view labels, T value) {
    out.append(name);
    if (!labels.empty()) out.append("{").append(labels).append("}");
    out.append(" ").append(std::to_string(value)).append("\n");
}

std::string label(std::string_view name, std::string_view value) {
    // Label values here are route names (A-Z a-z 0-9 _ . -) and fixed words: nothing to escape.
    return std::string(name) + "=\"" + std::string(value) + "\"";
}

constexpr std::string_view unrouted_name = "(none)";

}  // namespace

void histogram::observe(clock::duration d) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    if (ns < 0) ns = 0;
    std::size_t i = 0;   // the first bucket whose bound is >= the value (Prometheus' `le`)
    while (i < bounds_us.size() && static_cast<std::uint64_t>(ns) > bounds_us[i] * 1000) ++i;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed);
}

std::uint64_t histogram::count() const {
    std::uint64_t n = 0;
    for (const auto& b : buckets_) n += b.load(std::memory_order_relaxed);
    return n;
}

void histogram::render(std::string& out, std::string_view name, std::string_view labels) const {
    std::string prefix = labels.empty() ? std::string() : std::string(labels) + ",";
    std::string bucket = std::string(name) + "_bucket";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= bounds_us.size(); ++i) {
        cumulative += buckets_[i].load(std::memory_order_relaxed);
        auto le = i < bounds_us.size() ? seconds_text(bounds_us[i]) : std::string("+Inf");
        sample(out, bucket, prefix + label("le", le), cumulative);
    }
    out.append(name).append("_sum");
    if (!labels.empty()) out.append("{").append(labels).append("}");
    out.append(" ").append(nanos_as_seconds(sum_ns_.load(std::memory_order_relaxed))).append("\n");
    sample(out, std::string(name) + "_count", labels, cumulative);
}

method_label to_method_label(http::verb v) {
    switch (v) {
    case http::verb::get: return method_label::get;
    case http::verb::head: return method_label::head;
    case http::verb::post: return method_label::post;
    case http::verb::put: return method_label::put;
    case http::verb::patch: return method_label::patch;
    case http::verb::delete_: return method_label::delete_;
    case http::verb::options: return method_label::options;
    default: return method_label::other;
    }
}

std::string_view to_string(method_label m) {
    static constexpr std::string_view names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"};
    return names[static_cast<std::size_t>(m)];
}

std::string_view to_string(store_op op) {
    static constexpr std::string_view names[] = {"acquire", "store_under_lease", "commit", "snapshot", "observe", "ping"};
    return names[static_cast<std::size_t>(op)];
}

metrics::metrics() {
    last_reload_time = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
metrics::~metrics() = default;

void metrics::bind_routes(const runtime& rt) {
    std::lock_guard lock(mu_);
    auto b = std::make_unique<binding>();
    b->rt = &rt;
    for (const auto& r : rt.cfg.routes) {
        auto& slot = by_name_[r.name];
        if (!slot) slot = std::make_unique<route_stats>();
        b->routes.push_back(slot.get());
        auto& us = by_route_upstream_[{r.name, r.upstream}];
        if (!us) us = std::make_unique<route_upstream_stats>();
        b->by_upstream.push_back(us.get());
    }
    current_.store(b.get(), std::memory_order_release);
    bindings_.push_back(std::move(b));
}

const metrics::binding* metrics::binding_for(const runtime* rt) const {
    if (auto* b = current_.load(std::memory_order_acquire); b && b->rt == rt) return b;
    // A request that straddled a reload: its runtime is an older one (alive, since the request
    // holds it, so its address cannot have been reused).
    std::lock_guard lock(mu_);
    for (auto it = bindings_.rbegin(); it != bindings_.rend(); ++it)
        if ((*it)->rt == rt) return it->get();
    return nullptr;
}

route_stats* metrics::stats_for(const runtime* rt, std::size_t index) {
    auto* b = binding_for(rt);
    return b && index < b->routes.size() ? b->routes[index] : &unrouted_;
}

route_upstream_stats* metrics::upstream_stats_for(const runtime* rt, const config::route_config* route) {
    if (!rt || !route) return nullptr;
    auto* b = binding_for(rt);
    auto index = static_cast<std::size_t>(route - rt->cfg.routes.data());
    return b && index < b->by_upstream.size() ? b->by_upstream[index] : nullptr;
}

void metrics::count_outcome(const runtime* rt, const config::route_config* route, outcome o) {
    count_outcome(o);
    if (auto* us = upstream_stats_for(rt, route))
        us->outcomes[static_cast<std::size_t>(o)].fetch_add(1, std::memory_order_relaxed);
}

void metrics::count_origin_error(const runtime* rt, const config::route_config* route) {
    origin_errors.fetch_add(1, std::memory_order_relaxed);
    if (auto* us = upstream_stats_for(rt, route)) us->origin_errors.fetch_add(1, std::memory_order_relaxed);
}

void metrics::count_problem(std::string_view slug) {
    std::size_t i = 0;
    while (i + 1 < problem_types.size() && problem_types[i] != slug) ++i;
    problems[i].fetch_add(1, std::memory_order_relaxed);
}

void metrics::count_reload(bool applied) {
    reloads[applied ? 0 : 1].fetch_add(1, std::memory_order_relaxed);
    last_reload_ok = applied ? 1 : 0;
    if (applied)
        last_reload_time = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void metrics::count_request(const runtime* rt, const config::route_config* route, http::verb method,
                            unsigned status, clock::duration elapsed) {
    if (status < 100 || status >= 600) return;
    route_stats* rs = &unrouted_;
    if (rt && route) rs = stats_for(rt, static_cast<std::size_t>(route - rt->cfg.routes.data()));
    rs->requests[static_cast<std::size_t>(to_method_label(method))][status / 100 - 1].fetch_add(
        1, std::memory_order_relaxed);
    rs->duration.observe(elapsed);
}

void metrics::observe_store(store_op op, clock::duration d, bool ok) {
    auto i = static_cast<std::size_t>(op);
    store_duration[i].observe(d);
    if (!ok) store_errors[i].fetch_add(1, std::memory_order_relaxed);
}

std::string metrics::render() const {
    std::string out;
    out.reserve(16 * 1024);
    family(out, "ifmatch_build_info", "gauge", "Version of the running binary.");
    sample(out, "ifmatch_build_info", label("version", IFM_VERSION), 1);

    {
        std::lock_guard lock(mu_);
        std::vector<std::pair<std::string_view, const route_stats*>> routes;
        for (const auto& [name, rs] : by_name_) routes.emplace_back(name, rs.get());
        routes.emplace_back(unrouted_name, &unrouted_);

        family(out, "ifmatch_requests_total", "counter",
               "Requests answered, by route, method and status class (route \"(none)\": no route matched or "
               "the request could not be parsed).");
        for (const auto& [name, rs] : routes)
            for (std::size_t m = 0; m < method_label_count; ++m)
                for (std::size_t c = 0; c < 5; ++c)
                    if (auto v = rs->requests[m][c].load(std::memory_order_relaxed))
                        sample(out, "ifmatch_requests_total",
                               label("route", name) + "," + label("method", to_string(static_cast<method_label>(m))) +
                                   "," + label("class", std::to_string(c + 1) + "xx"),
                               v);
        family(out, "ifmatch_request_duration_seconds", "histogram",
               "Whole request, from its first byte to the last byte of the response, by route.");
        for (const auto& [name, rs] : routes)
            if (rs != &unrouted_ || rs->duration.count() > 0)
                rs->duration.render(out, "ifmatch_request_duration_seconds", label("route", name));

        family(out, "ifmatch_route_precondition_outcomes_total", "counter",
               "Judged writes by route, upstream and precondition outcome (the labelled form of "
               "ifmatch_precondition_outcomes_total).");
        for (const auto& [names, us] : by_route_upstream_)
            for (std::size_t i = 1; i < outcome_count; ++i)
                sample(out, "ifmatch_route_precondition_outcomes_total",
                       label("route", names.first) + "," + label("upstream", names.second) + "," +
                           label("outcome", to_string(static_cast<outcome>(i))),
                       us->outcomes[i].load(std::memory_order_relaxed));
        family(out, "ifmatch_route_origin_errors_total", "counter",
               "Origin connect, timeout and protocol failures by route and upstream (the labelled form of "
               "ifmatch_origin_errors_total).");
        for (const auto& [names, us] : by_route_upstream_)
            sample(out, "ifmatch_route_origin_errors_total",
                   label("route", names.first) + "," + label("upstream", names.second),
                   us->origin_errors.load(std::memory_order_relaxed));
        family(out, "ifmatch_route_dependent_invalidations_total", "counter",
               "Resources named by a route's dependencies whose validators a committed write made unknown, "
               "by route and upstream of the write.");
        for (const auto& [names, us] : by_route_upstream_)
            sample(out, "ifmatch_route_dependent_invalidations_total",
                   label("route", names.first) + "," + label("upstream", names.second),
                   us->dependent_invalidations.load(std::memory_order_relaxed));
    }

    family(out, "ifmatch_precondition_outcomes_total", "counter",
           "Judged writes by precondition outcome (passed, revalidated, rejected_stale, rejected_busy, "
           "rejected_exists, missing, malformed, store_error, aborted; would_reject_* on enforce: report routes).");
    for (std::size_t i = 1; i < precondition_outcomes.size(); ++i)
        sample(out, "ifmatch_precondition_outcomes_total", label("outcome", to_string(static_cast<outcome>(i))),
               precondition_outcomes[i].load(std::memory_order_relaxed));

    family(out, "ifmatch_problems_total", "counter",
           "Responses the proxy made itself (application/problem+json), by problem type: why a client got "
           "409, 428, 502, 503 or 504 from the proxy rather than from the origin.");
    for (std::size_t i = 0; i < problem_types.size(); ++i)
        sample(out, "ifmatch_problems_total", label("type", problem_types[i]), problems[i].load(std::memory_order_relaxed));

    family(out, "ifmatch_origin_duration_seconds", "histogram",
           "Origin exchanges, from taking a connection until the response header arrived (kind \"forward\": the "
           "client's request; \"fetch\": the proxy's own revalidation or refresh).");
    origin_duration[0].render(out, "ifmatch_origin_duration_seconds", label("kind", "forward"));
    origin_duration[1].render(out, "ifmatch_origin_duration_seconds", label("kind", "fetch"));
    family(out, "ifmatch_origin_errors_total", "counter", "Origin connect, timeout and protocol failures.");
    sample(out, "ifmatch_origin_errors_total", "", origin_errors.load(std::memory_order_relaxed));
    family(out, "ifmatch_origin_connections", "gauge", "Open origin connections, in use or idle in the pools.");
    sample(out, "ifmatch_origin_connections", label("state", "in_use"),
           origin_connections_in_use.load(std::memory_order_relaxed));
    sample(out, "ifmatch_origin_connections", label("state", "idle"),
           origin_connections_idle.load(std::memory_order_relaxed));

    family(out, "ifmatch_store_duration_seconds", "histogram", "Validator store operations (one round trip each).");
    for (std::size_t i = 0; i < store_op_count; ++i)
        store_duration[i].render(out, "ifmatch_store_duration_seconds", label("op", to_string(static_cast<store_op>(i))));
    family(out, "ifmatch_store_errors_total", "counter", "Store operations that failed (timeout, unavailable, protocol).");
    for (std::size_t i = 0; i < store_op_count; ++i)
        sample(out, "ifmatch_store_errors_total", label("op", to_string(static_cast<store_op>(i))),
               store_errors[i].load(std::memory_order_relaxed));
    family(out, "ifmatch_store_reconnects_total", "counter",
           "Store connections re-established after a loss (Redis), summed over the workers.");
    sample(out, "ifmatch_store_reconnects_total", "", store_reconnects.load(std::memory_order_relaxed));
    family(out, "ifmatch_store_connections_up", "gauge", "Workers whose store connection is up.");
    sample(out, "ifmatch_store_connections_up", "", store_connected.load(std::memory_order_relaxed));
    family(out, "ifmatch_leases_held", "gauge", "Write leases taken by this process and not yet committed or lost.");
    sample(out, "ifmatch_leases_held", "", leases_held.load(std::memory_order_relaxed));

    family(out, "ifmatch_client_connections", "gauge", "Open client connections.");
    sample(out, "ifmatch_client_connections", "", client_connections.load(std::memory_order_relaxed));
    family(out, "ifmatch_client_connections_accepted_total", "counter", "Accepted client connections.");
    sample(out, "ifmatch_client_connections_accepted_total", "", client_connections_total.load(std::memory_order_relaxed));
    family(out, "ifmatch_untracked_large_bodies_total", "counter",
           "Representations over limits.max_hash_body, passed through untracked.");
    sample(out, "ifmatch_untracked_large_bodies_total", "", untracked_large_bodies.load(std::memory_order_relaxed));
    family(out, "ifmatch_unbuffered_over_budget_total", "counter",
           "Hash-route responses streamed unbuffered and untracked because limits.max_buffered_bytes was reached.");
    sample(out, "ifmatch_unbuffered_over_budget_total", "", unbuffered_over_budget.load(std::memory_order_relaxed));
    family(out, "ifmatch_buffered_bytes", "gauge", "Response body bytes held in memory for hashing (limits.max_buffered_bytes).");
    sample(out, "ifmatch_buffered_bytes", "", static_cast<std::uint64_t>(buffered_budget().used()));
    family(out, "ifmatch_spooled_responses_total", "counter",
           "Streamed responses whose client read slower than the origin sent: the rest went to a spool file.");
    sample(out, "ifmatch_spooled_responses_total", "", spooled_responses.load(std::memory_order_relaxed));
    family(out, "ifmatch_spool_full_total", "counter",
           "Streamed responses that found no room in the spool (limits.max_spooled_bytes, max_spooled_response "
           "or an unusable spool_dir) and held their origin connection until their client caught up.");
    sample(out, "ifmatch_spool_full_total", "", spool_full.load(std::memory_order_relaxed));
    family(out, "ifmatch_snapshots_reused_total", "counter",
           "Tracked reads that reused their worker's recent snapshot of the resource instead of asking the store "
           "(store.snapshot_reuse).");
    sample(out, "ifmatch_snapshots_reused_total", "", snapshots_reused.load(std::memory_order_relaxed));
    family(out, "ifmatch_spooled_bytes", "gauge", "Response body bytes waiting in spool files (limits.max_spooled_bytes).");
    sample(out, "ifmatch_spooled_bytes", "", static_cast<std::uint64_t>(spooled_budget().used()));
    family(out, "ifmatch_accept_paused_total", "counter",
           "Times a listener stopped accepting because limits.max_connections client connections were open.");
    sample(out, "ifmatch_accept_paused_total", "", accept_paused.load(std::memory_order_relaxed));
    family(out, "ifmatch_origin_pool_wait_seconds", "histogram",
           "Time requests waited for an origin connection slot (only requests that had to wait).");
    origin_pool_wait.render(out, "ifmatch_origin_pool_wait_seconds", "");
    family(out, "ifmatch_origin_pool_exhausted_total", "counter",
           "Requests refused with 503 because no origin connection slot freed up within pool_wait.");
    sample(out, "ifmatch_origin_pool_exhausted_total", "", origin_pool_exhausted.load(std::memory_order_relaxed));
    family(out, "ifmatch_client_aborts_total", "counter",
           "Origin exchanges abandoned because the client closed its connection first.");
    sample(out, "ifmatch_client_aborts_total", "", client_aborts.load(std::memory_order_relaxed));
    family(out, "ifmatch_tls_handshake_failures_total", "counter",
           "Client connections on a listen_tls listener whose TLS handshake failed or timed out.");
    sample(out, "ifmatch_tls_handshake_failures_total", "", tls_handshake_failures.load(std::memory_order_relaxed));
    family(out, "ifmatch_config_reloads_total", "counter", "SIGHUP reloads, applied or rejected (old configuration kept).");
    sample(out, "ifmatch_config_reloads_total", label("result", "applied"), reloads[0].load(std::memory_order_relaxed));
    sample(out, "ifmatch_config_reloads_total", label("result", "rejected"), reloads[1].load(std::memory_order_relaxed));
    family(out, "ifmatch_config_last_reload_successful", "gauge",
           "1 if the last SIGHUP reload was applied (or none happened yet), 0 if it was rejected.");
    sample(out, "ifmatch_config_last_reload_successful", "", last_reload_ok.load(std::memory_order_relaxed));
    family(out, "ifmatch_config_last_reload_success_timestamp_seconds", "gauge",
           "Unix time of the start or of the last applied reload.");
    out.append("ifmatch_config_last_reload_success_timestamp_seconds ")
        .append(std::to_string(static_cast<std::int64_t>(last_reload_time.load())))
        .append("\n");
    family(out, "ifmatch_store_up", "gauge",
           "1 if the validator store answered the admin listener's last ping (refreshed by /readyz and /metrics).");
    sample(out, "ifmatch_store_up", "", store_up.load(std::memory_order_relaxed));
    family(out, "ifmatch_store_restart_detection_off", "gauge",
           "Redis servers that refused INFO server: their restarts cannot be detected by run_id "
           "(grant +info; README, \"Redis ACL\").");
    sample(out, "ifmatch_store_restart_detection_off", "", cache::restart_detection_off());
    family(out, "ifmatch_store_module_servers", "gauge",
           "Redis servers whose ifmatch module runs the store's scripts as its commands "
           "(README, \"Redis module\"); 0: the Lua scripts everywhere.");
    sample(out, "ifmatch_store_module_servers", "", cache::module_servers());
    family(out, "ifmatch_store_recovering_refusals_total", "counter",
           "Judged writes refused (503) because a restarted Redis may have lost leases still in use "
           "(the young-server window, store.young_server_wait).");
    sample(out, "ifmatch_store_recovering_refusals_total", "", store_recovering_refusals.load(std::memory_order_relaxed));
    family(out, "ifmatch_draining", "gauge", "1 once SIGTERM was received (/readyz fails, the listener closes soon).");
    sample(out, "ifmatch_draining", "", draining.load(std::memory_order_relaxed));
    family(out, "ifmatch_workers", "gauge", "Worker threads.");
    sample(out, "ifmatch_workers", "", workers.load(std::memory_order_relaxed));
    render_process_metrics(out);
    return out;
}

// ---- process metrics (Prometheus client libraries' standard names) ----------------------------

void render_process_metrics(std::string& out) {
    static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    static const long page = ::sysconf(_SC_PAGESIZE);
    std::ifstream stat_file("/proc/self/stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    // Fields after the command name (which may hold spaces and parentheses): state is field 3.
    auto close = stat.rfind(')');
    if (close != std::string::npos) {
        std::istringstream fields(stat.substr(close + 2));
        std::vector<std::string> f((std::istream_iterator<std::string>(fields)), std::istream_iterator<std::string>());
        // f[0] is field 3; utime 14, stime 15, starttime 22, rss 24 (pages).
        auto field = [&](std::size_t n) { return n - 3 < f.size() ? std::stod(f[n - 3]) : 0.0; };
        auto cpu = (field(14) + field(15)) / ticks;
        family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        out.append("process_cpu_seconds_total ").append(std::to_string(cpu)).append("\n");
        family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        sample(out, "process_resident_memory_bytes", "", static_cast<std::int64_t>(field(24)) * page);
        // Boot time (/proc/stat btime) + start time in ticks since boot.
        std::ifstream proc_stat("/proc/stat");
        double btime = 0;
        for (std::string line; std::getline(proc_stat, line);)
            if (line.starts_with("btime ")) btime = std::stod(line.substr(6));
        family(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
        out.append("process_start_time_seconds ").append(std::to_string(btime + field(22) / ticks)).append("\n");
    }
    std::error_code ec;
    std::int64_t fds = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::directory_iterator();
         it.increment(ec))
        ++fds;
    family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
    sample(out, "process_open_fds", "", fds > 0 ? fds - 1 : 0);   // less the one iterating
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        sample(out, "process_max_fds", "", static_cast<std::int64_t>(rl.rlim_cur));
    }
}

// ---- the instrumented store -------------------------------------------------------------------

namespace {

using cache::result;

class instrumented_store final : public cache::validator_store {
public:
    instrumented_store(std::unique_ptr<cache::validator_store> inner, metrics& m) : inner_(std::move(inner)), m_(m) {}

    net::awaitable<result<cache::acquire_result>> async_acquire(cache::resource_ref key, cache::condition cond,
                                                                std::chrono::milliseconds lease) override {
        auto t0 = clock::now();
        auto op = inner_->async_acquire(std::move(key), std::move(cond), lease);
        auto r = co_await std::move(op);
        m_.observe_store(store_op::acquire, clock::now() - t0, r.has_value());
        if (!r && r.error() == cache::store_errc::recovering) {
            m_.store_recovering_refusals.fetch_add(1, std::memory_order_relaxed);
            m_.last_recovering_refusal = clock::now().time_since_epoch().count();
        }
        if (r && (r->status == cache::acquire_status::ok || r->status == cache::acquire_status::unknown))
            m_.leases_held.fetch_add(1, std::memory_order_relaxed);
        co_return r;
    }

    net::awaitable<result<bool>> async_store_under_lease(cache::resource_ref key, std::string token,
                                                         cache::resource_state state) override {
        auto t0 = clock::now();
        auto op = inner_->async_store_under_lease(std::move(key), std::move(token), std::move(state));
        auto r = co_await std::move(op);
        m_.observe_store(store_op::store_under_lease, clock::now() - t0, r.has_value());
        // The lease is gone (expired) or the write gives up on it: it ends without a commit.
        if (!r || !*r) m_.leases_held.fetch_sub(1, std::memory_order_relaxed);
        co_return r;
    }

    net::awaitable<result<bool>> async_commit(cache::resource_ref key, std::string token, cache::commit_outcome outcome,
                                              cache::resource_state state,
                                              std::chrono::milliseconds hold = std::chrono::milliseconds(0)) override {
        auto t0 = clock::now();
        auto op = inner_->async_commit(std::move(key), std::move(token), outcome, std::move(state), hold);
        auto r = co_await std::move(op);
        m_.observe_store(store_op::commit, clock::now() - t0, r.has_value());
        m_.leases_held.fetch_sub(1, std::memory_order_relaxed);
        co_return r;
    }

    net::awaitable<result<cache::snapshot>> async_snapshot(cache::resource_ref key) override {
        auto t0 = clock::now();
        auto op = inner_->async_snapshot(std::move(key));
        auto r = co_await std::move(op);
        m_.observe_store(store_op::snapshot, clock::now() - t0, r.has_value());
        co_return r;
    }

    net::awaitable<result<bool>> async_observe(cache::resource_ref key, std::uint64_t generation,
                                               cache::resource_state state) override {
        auto t0 = clock::now();
        auto op = inner_->async_observe(std::move(key), generation, std::move(state));
        auto r = co_await std::move(op);
        m_.observe_store(store_op::observe, clock::now() - t0, r.has_value());
        co_return r;
    }

    // Idempotency records (proxy/idempotency_session.cpp): passed through. Without these the
    // base class's refusals would answer every write with a key 503.
    net::awaitable<result<cache::idem_result>> async_idem_begin(std::string resource, std::string key,
                                                                std::string fingerprint, std::string owner,
                                                                std::chrono::milliseconds in_flight_ttl) override {
        auto op = inner_->async_idem_begin(std::move(resource), std::move(key), std::move(fingerprint), std::move(owner),
                                           in_flight_ttl);
        co_return co_await std::move(op);
    }
    net::awaitable<result<bool>> async_idem_complete(std::string resource, std::string key, std::string owner,
                                                     std::string response, std::chrono::milliseconds ttl) override {
        auto op = inner_->async_idem_complete(std::move(resource), std::move(key), std::move(owner), std::move(response), ttl);
        co_return co_await std::move(op);
    }
    net::awaitable<result<bool>> async_idem_forget(std::string resource, std::string key, std::string owner) override {
        auto op = inner_->async_idem_forget(std::move(resource), std::move(key), std::move(owner));
        co_return co_await std::move(op);
    }

    net::awaitable<result<void>> async_ping() override {
        auto t0 = clock::now();
        auto op = inner_->async_ping();
        auto r = co_await std::move(op);
        m_.observe_store(store_op::ping, clock::now() - t0, r.has_value());
        co_return r;
    }

    void close() override { inner_->close(); }
    void expect_leases_up_to(std::chrono::milliseconds lease) override { inner_->expect_leases_up_to(lease); }
    std::uint64_t reconnects() const override { return inner_->reconnects(); }
    bool connected() const override { return inner_->connected(); }

private:
    std::unique_ptr<cache::validator_store> inner_;
    metrics& m_;
};

class instrumented_factory final : public cache::store_factory {
public:
    instrumented_factory(std::unique_ptr<cache::store_factory> inner, metrics& m) : inner_(std::move(inner)), m_(m) {}
    std::unique_ptr<cache::validator_store> make(net::any_io_executor ex) override {
        return std::make_unique<instrumented_store>(inner_->make(std::move(ex)), m_);
    }

private:
    std::unique_ptr<cache::store_factory> inner_;
    metrics& m_;
};

}  // namespace

std::unique_ptr<cache::store_factory> instrument(std::unique_ptr<cache::store_factory> inner, metrics& m) {
    return std::make_unique<instrumented_factory>(std::move(inner), m);
}

}  // namespace ifm::proxy

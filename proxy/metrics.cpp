#include "proxy/metrics.hpp"

#include "proxy/memory_budget.hpp"
#include "proxy/runtime.hpp"

#include <charconv>

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

metrics::metrics() = default;
metrics::~metrics() = default;

void metrics::bind_routes(const runtime& rt) {
    std::lock_guard lock(mu_);
    auto b = std::make_unique<binding>();
    b->rt = &rt;
    for (const auto& r : rt.cfg.routes) {
        auto& slot = by_name_[r.name];
        if (!slot) slot = std::make_unique<route_stats>();
        b->routes.push_back(slot.get());
    }
    current_.store(b.get(), std::memory_order_release);
    bindings_.push_back(std::move(b));
}

route_stats* metrics::stats_for(const runtime* rt, std::size_t index) {
    if (auto* b = current_.load(std::memory_order_acquire); b && b->rt == rt && index < b->routes.size())
        return b->routes[index];
    // A request that straddled a reload: its runtime is an older one (alive, since the request
    // holds it, so its address cannot have been reused).
    std::lock_guard lock(mu_);
    for (auto it = bindings_.rbegin(); it != bindings_.rend(); ++it)
        if ((*it)->rt == rt && index < (*it)->routes.size()) return (*it)->routes[index];
    return &unrouted_;
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
    }

    family(out, "ifmatch_precondition_outcomes_total", "counter",
           "Judged writes by precondition outcome (passed, revalidated, rejected_stale, rejected_busy, "
           "rejected_exists, missing, malformed, store_error, aborted).");
    for (std::size_t i = 1; i < precondition_outcomes.size(); ++i)
        sample(out, "ifmatch_precondition_outcomes_total", label("outcome", to_string(static_cast<outcome>(i))),
               precondition_outcomes[i].load(std::memory_order_relaxed));

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
    family(out, "ifmatch_config_reloads_total", "counter", "SIGHUP reloads, applied or rejected (old configuration kept).");
    sample(out, "ifmatch_config_reloads_total", label("result", "applied"), reloads[0].load(std::memory_order_relaxed));
    sample(out, "ifmatch_config_reloads_total", label("result", "rejected"), reloads[1].load(std::memory_order_relaxed));
    family(out, "ifmatch_workers", "gauge", "Worker threads.");
    sample(out, "ifmatch_workers", "", workers.load(std::memory_order_relaxed));
    return out;
}

// ---- the instrumented store -------------------------------------------------------------------

namespace {

using cache::result;

class instrumented_store final : public cache::validator_store {
public:
    instrumented_store(std::unique_ptr<cache::validator_store> inner, metrics& m) : inner_(std::move(inner)), m_(m) {}

    net::awaitable<result<cache::acquire_result>> async_acquire(std::string key, cache::condition cond,
                                                                std::chrono::milliseconds lease) override {
        auto t0 = clock::now();
        auto op = inner_->async_acquire(std::move(key), std::move(cond), lease);
        auto r = co_await std::move(op);
        m_.observe_store(store_op::acquire, clock::now() - t0, r.has_value());
        if (r && (r->status == cache::acquire_status::ok || r->status == cache::acquire_status::unknown))
            m_.leases_held.fetch_add(1, std::memory_order_relaxed);
        co_return r;
    }

    net::awaitable<result<bool>> async_store_under_lease(std::string key, std::string token,
                                                         cache::resource_state state) override {
        auto t0 = clock::now();
        auto op = inner_->async_store_under_lease(std::move(key), std::move(token), std::move(state));
        auto r = co_await std::move(op);
        m_.observe_store(store_op::store_under_lease, clock::now() - t0, r.has_value());
        // The lease is gone (expired) or the write gives up on it: it ends without a commit.
        if (!r || !*r) m_.leases_held.fetch_sub(1, std::memory_order_relaxed);
        co_return r;
    }

    net::awaitable<result<bool>> async_commit(std::string key, std::string token, cache::commit_outcome outcome,
                                              cache::resource_state state) override {
        auto t0 = clock::now();
        auto op = inner_->async_commit(std::move(key), std::move(token), outcome, std::move(state));
        auto r = co_await std::move(op);
        m_.observe_store(store_op::commit, clock::now() - t0, r.has_value());
        m_.leases_held.fetch_sub(1, std::memory_order_relaxed);
        co_return r;
    }

    net::awaitable<result<cache::snapshot>> async_snapshot(std::string key) override {
        auto t0 = clock::now();
        auto op = inner_->async_snapshot(std::move(key));
        auto r = co_await std::move(op);
        m_.observe_store(store_op::snapshot, clock::now() - t0, r.has_value());
        co_return r;
    }

    net::awaitable<result<bool>> async_observe(std::string key, std::uint64_t generation,
                                               cache::resource_state state) override {
        auto t0 = clock::now();
        auto op = inner_->async_observe(std::move(key), generation, std::move(state));
        auto r = co_await std::move(op);
        m_.observe_store(store_op::observe, clock::now() - t0, r.has_value());
        co_return r;
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

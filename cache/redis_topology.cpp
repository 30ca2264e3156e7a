#include "cache/redis_topology.hpp"

#include "cache/crc16.hpp"
#include "cache/memory_store.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <limits>
#include <mutex>

namespace ifm::cache {

namespace {

using clock = std::chrono::steady_clock;
using boost::system::error_code;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

error_code errc(store_errc e) { return make_error_code(e); }

std::string host_port(const redis_endpoint& ep) {
    auto h = ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host;
    return h + ":" + std::to_string(ep.port);
}

// "h", "h:1", "[::1]", "[::1]:1": whether a port is given.
bool has_port(std::string_view h) {
    if (h.starts_with("[")) return h.find("]:") != std::string_view::npos;
    return h.find(':') != std::string_view::npos;
}

// Spawns a router's long-lived loop; an escaping exception is a bug: log it.
template <class Awaitable>
void spawn_loop(const net::any_io_executor& ex, Awaitable loop, const char* what) {
    net::co_spawn(ex, std::move(loop), [what](std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            spdlog::error("redis: {} failed: {}", what, x.what());
        }
    });
}

net::awaitable<result<void>> async_ping_one(std::shared_ptr<redis_connection> conn) {
    auto ping = detail::argv_of("PING");
    auto r = co_await conn->async_exec(std::move(ping));
    if (!r) co_return detail::failure{r.error()};
    if (r->kind != redis_reply::type::status || r->str != "PONG") {
        spdlog::warn("redis: PING to {}: {}", conn->options().endpoint.describe(), r->str);
        co_return detail::failure{errc(r->is_error() ? store_errc::unavailable : store_errc::protocol)};
    }
    co_return result<void>{};
}

// ---------------------------------------------------------------------------------------------
// One server.

class single_router final : public redis_router {
public:
    single_router(net::any_io_executor ex, redis_options opts)
        : conn_(redis_connection::create(std::move(ex), std::move(opts))) {}
    ~single_router() override { conn_->close(); }

    void start() override { conn_->start(); }
    void close() override { conn_->close(); }

    net::awaitable<result<routed_reply>> async_eval(
        std::size_t index, const std::vector<std::string>& keys, const std::vector<std::string>& args) override {
        auto conn = conn_;
        auto session = conn->session();   // a command is sent on the session current at the call
        auto r = co_await conn->async_eval(index, keys, args);
        if (!r) co_return detail::failure{r.error()};
        co_return routed_reply{std::move(*r), std::move(conn), session};
    }
    net::awaitable<result<void>> async_ping() override { return async_ping_one(conn_); }
    bool connected() const override { return conn_->connected(); }
    std::uint64_t reconnects() const override { return conn_->reconnects(); }

private:
    std::shared_ptr<redis_connection> conn_;
};

// ---------------------------------------------------------------------------------------------
// Redis Sentinel: the data connection asks the sentinels for the master before every connect
// attempt and checks ROLE; it reconnects (and so asks again) when the connection is lost, when
// a write meets READONLY (the master was demoted), and when a periodic poll of the sentinels
// names another master (+switch-master while the old one still answers).

class sentinel_locator final : public redis_locator {
public:
    sentinel_locator(const net::any_io_executor& ex, const redis_target& target, const redis_options& base)
        : master_name_(target.master_name) {
        for (const auto& seed : target.seeds) {
            redis_options o;
            o.endpoint = seed;
            o.endpoint.user = target.sentinel_user;
            o.endpoint.password = target.sentinel_password;
            o.sentinel = true;
            o.command_timeout = base.command_timeout;
            o.connect_timeout = base.connect_timeout;
            o.backoff_min = base.backoff_min;
            o.backoff_max = base.backoff_max;
            o.client_name = base.client_name;
            sentinels_.push_back(redis_connection::create(ex, std::move(o)));
        }
    }

    void start() {
        for (auto& s : sentinels_) s->start();
    }
    void close() {
        for (auto& s : sentinels_) s->close();
    }

    // Asks the sentinels in turn, starting with the last one that answered.
    net::awaitable<boost::system::result<redis_endpoint, std::string>> async_locate() override {
        std::string why = "no sentinel reachable";
        if (std::ranges::none_of(sentinels_, [](auto& s) { return s->connected(); })) {
            // At start, or all were lost: give the preferred one a connect's time.
            auto s = sentinels_[preferred_];
            co_await s->async_wait_ready(s->options().connect_timeout);
        }
        for (const auto& s : sentinels_) {
            // Reachable but refusing us: a password to set, not a network to fix.
            if (!s->connected() && !s->refusal().empty())
                why = "sentinel " + s->options().endpoint.describe() + " refused auth (" + s->refusal() +
                      "): check store.sentinel_password and store.sentinel_username";
        }
        for (std::size_t i = 0; i < sentinels_.size(); ++i) {
            auto n = (preferred_ + i) % sentinels_.size();
            auto s = sentinels_[n];
            if (!s->connected()) continue;
            auto ask = detail::argv_of("SENTINEL", "get-master-addr-by-name", master_name_);
            auto r = co_await s->async_exec(std::move(ask));
            const auto where = s->options().endpoint.describe();
            if (!r) {
                why = "sentinel " + where + ": " + r.error().message();
                continue;
            }
            const auto& v = *r;
            std::uint16_t port = 0;
            if (v.kind == redis_reply::type::array && v.elements.size() == 2 && !v.elements[0].str.empty()) {
                const auto& p = v.elements[1].str;
                auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
                if (ec != std::errc{} || end != p.data() + p.size()) port = 0;
            }
            if (port == 0) {
                if (v.is_error() && (v.str.starts_with("NOAUTH") || v.str.starts_with("NOPERM")))
                    why = "sentinel " + where + " refused auth (" + v.str +
                          "): check store.sentinel_password and store.sentinel_username";
                else
                    why = "sentinel " + where + " knows no master named '" + master_name_ + "'" +
                          (v.is_error() ? ": " + v.str : "");
                continue;
            }
            preferred_ = n;
            redis_endpoint ep;
            ep.host = v.elements[0].str;
            ep.port = port;
            co_return ep;
        }
        co_return why;
    }

private:
    std::string master_name_;
    std::vector<std::shared_ptr<redis_connection>> sentinels_;
    std::size_t preferred_ = 0;
};

class sentinel_router final : public redis_router, public std::enable_shared_from_this<sentinel_router> {
public:
    sentinel_router(net::any_io_executor ex, const redis_target& target, redis_options opts)
        : executor_(ex), poll_(ex), master_name_(target.master_name),
          locator_(std::make_shared<sentinel_locator>(ex, target, opts)) {
        opts.endpoint.host.clear();
        opts.locator = locator_;
        opts.require_master = true;
        // A failover is followed by asking again: keep the retries frequent.
        opts.backoff_max = std::min(opts.backoff_max, std::chrono::milliseconds(250));
        conn_ = redis_connection::create(std::move(ex), std::move(opts));
    }
    ~sentinel_router() override { close(); }

    void start() override {
        if (started_) return;
        started_ = true;
        locator_->start();
        conn_->start();
        spawn_loop(executor_, run_poll(shared_from_this()), "sentinel poll");
    }
    void close() override {
        closed_ = true;
        poll_.cancel();
        conn_->close();
        locator_->close();
    }

    net::awaitable<result<routed_reply>> async_eval(
        std::size_t index, const std::vector<std::string>& keys, const std::vector<std::string>& args) override {
        auto self = shared_from_this();
        auto conn = conn_;
        auto session = conn->session();
        auto r = co_await conn->async_eval(index, keys, args);
        if (!r) co_return detail::failure{r.error()};
        if (r->is_error() && r->str.starts_with("READONLY")) {
            // The master we know was demoted to a replica: ask the sentinels again.
            conn->reconnect("demoted to a replica (READONLY)");
        }
        co_return routed_reply{std::move(*r), std::move(conn), session};
    }
    net::awaitable<result<void>> async_ping() override { return async_ping_one(conn_); }
    bool connected() const override { return conn_->connected(); }
    std::uint64_t reconnects() const override { return conn_->reconnects(); }

private:
    static net::awaitable<void> run_poll(std::shared_ptr<sentinel_router> self) {
        constexpr auto interval = std::chrono::seconds(1);
        while (!self->closed_) {
            self->poll_.expires_after(interval);
            co_await self->poll_.async_wait(use_tuple);
            if (self->closed_ || !self->conn_->connected()) continue;
            auto located = co_await self->locator_->async_locate();
            if (self->closed_ || !located) continue;
            const auto& now = self->conn_->options().endpoint;
            if (located->host != now.host || located->port != now.port) {
                spdlog::warn("redis: the sentinels name {} as master of '{}', not {}; switching",
                             host_port(*located), self->master_name_, host_port(now));
                self->conn_->reconnect("the sentinels switched the master");
            }
        }
    }

    net::any_io_executor executor_;
    net::steady_timer poll_;
    std::string master_name_;
    std::shared_ptr<sentinel_locator> locator_;
    std::shared_ptr<redis_connection> conn_;
    bool started_ = false;
    bool closed_ = false;
};

// ---------------------------------------------------------------------------------------------
// Redis Cluster: a slot map from CLUSTER SLOTS, one connection per master (each loads the
// scripts when it connects), MOVED / ASK / TRYAGAIN handled per command, the map refreshed on
// MOVED, on a lost node, on CLUSTERDOWN, and every few seconds.

class cluster_router final : public redis_router, public std::enable_shared_from_this<cluster_router> {
public:
    cluster_router(net::any_io_executor ex, const redis_target& target, redis_options opts)
        : executor_(std::move(ex)), seeds_(target.seeds), base_(std::move(opts)), wake_(executor_),
          slots_(cluster_slots, no_node) {}
    ~cluster_router() override { close(); }

    void start() override {
        if (started_) return;
        started_ = true;
        for (const auto& seed : seeds_) node_at(seed.host, seed.port);
        spawn_loop(executor_, run_topology(shared_from_this()), "cluster topology");
    }
    void close() override {
        closed_ = true;
        wake_.cancel();
        for (auto& n : nodes_) n.conn->close();
    }

    net::awaitable<result<routed_reply>> async_eval(
        std::size_t index, const std::vector<std::string>& keys, const std::vector<std::string>& args) override {
        auto self = shared_from_this();
        const auto slot = hash_slot(keys.at(0));
        std::shared_ptr<redis_connection> ask_target;
        constexpr int max_redirects = 5;
        for (int attempt = 0;; ++attempt) {
            auto conn = ask_target;
            if (!conn) {
                auto n = slots_[slot];
                if (n == no_node) {
                    want_refresh();
                    co_return detail::failure{errc(store_errc::unavailable)};
                }
                conn = nodes_[n].conn;
            }
            // A node just learnt from a redirection is still connecting: give it one command's time.
            if (!conn->connected() && !co_await conn->async_wait_ready(base_.command_timeout)) {
                want_refresh();
                co_return detail::failure{errc(store_errc::unavailable)};
            }
            const auto session = conn->session();
            const bool asking = static_cast<bool>(ask_target);
            ask_target.reset();
            auto r = co_await conn->async_eval(index, keys, args, asking);
            if (!r) {
                // Never sent again: a timed-out script may have run.
                if (r.error() == store_errc::unavailable) want_refresh();
                co_return detail::failure{r.error()};
            }
            if (r->is_error() && attempt < max_redirects) {
                const auto& e = r->str;
                if (e.starts_with("MOVED ") || e.starts_with("ASK ")) {
                    auto target = redirect_target(e, conn->options().endpoint.host);
                    if (!target) co_return routed_reply{std::move(*r), conn, session};
                    auto n = node_at(target->host, target->port);
                    if (e.starts_with("MOVED ")) {
                        slots_[slot] = n;   // this slot now; the rest of the map with the refresh
                        publish_owners();
                        want_refresh();
                    } else {
                        ask_target = nodes_[n].conn;
                    }
                    continue;
                }
                if (e.starts_with("TRYAGAIN")) {
                    // The slot is migrating and this resource's keys are split between two
                    // nodes for a moment (the lease key usually does not exist).
                    net::steady_timer t(executor_);
                    t.expires_after(std::chrono::milliseconds(5 * (attempt + 1)));
                    co_await t.async_wait(use_tuple);
                    continue;
                }
                if (e.starts_with("CLUSTERDOWN")) want_refresh();
            }
            co_return routed_reply{std::move(*r), conn, session};
        }
    }

    net::awaitable<result<void>> async_ping() override {
        auto self = shared_from_this();
        auto owners = owner_nodes();
        if (owners.empty()) co_return detail::failure{errc(store_errc::unavailable)};
        for (auto& conn : owners) {
            auto r = co_await async_ping_one(conn);
            if (!r) co_return r;
        }
        co_return result<void>{};
    }

    bool connected() const override {
        auto owners = published_owners();
        return !owners->empty() && std::ranges::all_of(*owners, [](auto& c) { return c->connected(); });
    }
    std::uint64_t reconnects() const override {
        auto sum = retired_reconnects_.load(std::memory_order_relaxed);
        for (const auto& c : *published_owners()) sum += c->reconnects();
        return sum;
    }

private:
    static constexpr std::uint16_t no_node = std::numeric_limits<std::uint16_t>::max();
    struct node {
        std::string host;
        std::uint16_t port = 0;
        std::shared_ptr<redis_connection> conn;
    };

    // "MOVED 3999 127.0.0.1:6381" / "ASK 3999 :6381" (an empty host: the node we asked).
    static std::optional<redis_endpoint> redirect_target(std::string_view e, const std::string& asked_host) {
        auto space = e.rfind(' ');
        auto colon = e.rfind(':');
        if (space == std::string_view::npos || colon == std::string_view::npos || colon < space) return std::nullopt;
        redis_endpoint ep;
        ep.host = std::string(e.substr(space + 1, colon - space - 1));
        if (ep.host.empty()) ep.host = asked_host;
        auto p = e.substr(colon + 1);
        auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), ep.port);
        if (ec != std::errc{} || end != p.data() + p.size() || ep.port == 0) return std::nullopt;
        return ep;
    }

    // The node index for an address, connecting to a new node at once.
    std::uint16_t node_at(const std::string& host, std::uint16_t port) {
        for (std::size_t i = 0; i < nodes_.size(); ++i)
            if (nodes_[i].host == host && nodes_[i].port == port) return static_cast<std::uint16_t>(i);
        auto opts = base_;
        opts.endpoint.unix_socket = false;
        opts.endpoint.host = host;
        opts.endpoint.port = port;
        opts.endpoint.db = 0;
        node n{host, port, redis_connection::create(executor_, std::move(opts))};
        if (closed_) n.conn->close();
        else n.conn->start();
        nodes_.push_back(std::move(n));
        return static_cast<std::uint16_t>(nodes_.size() - 1);
    }

    // The connections of the nodes that serve slots; empty unless every slot is served.
    std::vector<std::shared_ptr<redis_connection>> owner_nodes() const {
        std::vector<bool> seen(nodes_.size());
        std::vector<std::shared_ptr<redis_connection>> out;
        for (auto n : slots_) {
            if (n == no_node) return {};
            if (!seen[n]) {
                seen[n] = true;
                out.push_back(nodes_[n].conn);
            }
        }
        return out;
    }

    using owner_list = std::vector<std::shared_ptr<redis_connection>>;
    // The gauges read the owners from other threads: give them a copy.
    void publish_owners() {
        auto owners = std::make_shared<const owner_list>(owner_nodes());
        std::lock_guard lock(gauge_mutex_);
        owners_ = std::move(owners);
    }
    std::shared_ptr<const owner_list> published_owners() const {
        std::lock_guard lock(gauge_mutex_);
        return owners_;
    }

    void want_refresh() {
        if (refresh_wanted_) return;
        refresh_wanted_ = true;
        wake_.cancel();
    }

    static net::awaitable<void> run_topology(std::shared_ptr<cluster_router> self) {
        constexpr auto periodic = std::chrono::seconds(2);
        constexpr auto retry = std::chrono::milliseconds(100);
        constexpr auto min_gap = std::chrono::milliseconds(50);  // bursts of MOVED: one refresh
        auto& r = *self;
        bool warned = false;
        auto next = clock::now();
        auto failing_since = next;  // quiet while the first connections are being made
        while (!r.closed_) {
            if (r.refresh_wanted_) next = std::min(next, r.last_refresh_ + min_gap);
            r.wake_.expires_at(next);
            co_await r.wake_.async_wait(use_tuple);
            if (r.closed_) break;
            if (clock::now() < next) continue;  // woken early by want_refresh(): recompute
            r.refresh_wanted_ = false;
            r.last_refresh_ = clock::now();
            auto why = co_await r.async_refresh();
            if (r.closed_) break;
            const auto now = clock::now();
            if (why.empty()) {
                if (warned) spdlog::info("redis: cluster slot map complete again");
                warned = false;
                failing_since = clock::time_point::max();
                next = now + periodic;
            } else {
                failing_since = std::min(failing_since, now);
                if (!warned && now - failing_since >= r.base_.connect_timeout) {
                    spdlog::warn("redis: cluster slot map: {}; retrying", why);
                    warned = true;
                }
                next = now + retry;
            }
        }
    }

    // Fetches CLUSTER SLOTS from a connected node and rebuilds the map. Returns what is wrong,
    // or an empty string when every slot has a master.
    net::awaitable<std::string> async_refresh() {
        std::vector<std::shared_ptr<redis_connection>> candidates;
        for (auto& n : nodes_)
            if (n.conn->connected()) candidates.push_back(n.conn);
        if (candidates.empty()) {
            // Every known node is gone: start again from the seeds.
            for (const auto& seed : seeds_) node_at(seed.host, seed.port);
            co_return "no node reachable";
        }
        std::string why = "no answer to CLUSTER SLOTS";
        for (auto& conn : candidates) {
            auto ask = detail::argv_of("CLUSTER", "SLOTS");
            auto r = co_await conn->async_exec_in_session(conn->session(), std::move(ask),
                                                          base_.connect_timeout);
            if (closed_) co_return "closed";
            if (!r) {
                why = "CLUSTER SLOTS: " + r.error().message();
                continue;
            }
            if (r->kind != redis_reply::type::array) {
                why = "CLUSTER SLOTS: " + (r->is_error() ? r->str : std::string("unexpected reply"));
                continue;
            }
            co_return apply_slots(*r, conn->options().endpoint.host);
        }
        co_return why;
    }

    // [[start, end, [host, port, id, …], replicas…], …]
    std::string apply_slots(const redis_reply& v, const std::string& asked_host) {
        struct range {
            long long start, end;
            std::string host;
            std::uint16_t port;
        };
        std::vector<range> ranges;
        for (const auto& e : v.elements) {
            if (e.kind != redis_reply::type::array || e.elements.size() < 3 ||
                e.elements[0].kind != redis_reply::type::integer ||
                e.elements[1].kind != redis_reply::type::integer ||
                e.elements[2].kind != redis_reply::type::array || e.elements[2].elements.size() < 2 ||
                e.elements[2].elements[1].kind != redis_reply::type::integer)
                return "malformed CLUSTER SLOTS reply";
            range rg{e.elements[0].integer, e.elements[1].integer, e.elements[2].elements[0].str,
                     static_cast<std::uint16_t>(e.elements[2].elements[1].integer)};
            if (rg.start < 0 || rg.end >= cluster_slots || rg.start > rg.end || rg.port == 0)
                return "malformed CLUSTER SLOTS reply";
            if (rg.host.empty() || rg.host == "?") rg.host = asked_host;  // the node does not know its address
            ranges.push_back(std::move(rg));
        }
        // Keep the connections of masters that stay; close those of nodes that left the map.
        std::vector<node> old = std::move(nodes_);
        nodes_.clear();
        std::vector<std::uint16_t> slots(cluster_slots, no_node);
        for (const auto& rg : ranges) {
            std::uint16_t n = no_node;
            for (std::size_t i = 0; i < nodes_.size(); ++i)
                if (nodes_[i].host == rg.host && nodes_[i].port == rg.port) n = static_cast<std::uint16_t>(i);
            if (n == no_node) {
                auto it = std::ranges::find_if(old, [&](const node& o) { return o.conn && o.host == rg.host && o.port == rg.port; });
                if (it != old.end()) {
                    nodes_.push_back(std::move(*it));
                    it->conn.reset();
                    n = static_cast<std::uint16_t>(nodes_.size() - 1);
                } else {
                    n = node_at(rg.host, rg.port);
                }
            }
            std::fill(slots.begin() + rg.start, slots.begin() + rg.end + 1, n);
        }
        for (auto& o : old) {
            if (!o.conn) continue;
            retired_reconnects_ += o.conn->reconnects();
            o.conn->close();
        }
        slots_ = std::move(slots);
        publish_owners();
        auto missing = std::ranges::count(slots_, no_node);
        if (missing) return std::to_string(missing) + " slots have no master";
        return {};
    }

    net::any_io_executor executor_;
    std::vector<redis_endpoint> seeds_;
    redis_options base_;
    net::steady_timer wake_;
    std::vector<node> nodes_;
    std::vector<std::uint16_t> slots_;   // node index per slot
    clock::time_point last_refresh_{};
    std::atomic<std::uint64_t> retired_reconnects_{0};   // of connections closed since
    mutable std::mutex gauge_mutex_;
    std::shared_ptr<const owner_list> owners_ = std::make_shared<const owner_list>();
    bool refresh_wanted_ = false;
    bool started_ = false;
    bool closed_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string redis_target::describe() const {
    if (mode == redis_mode::single) return endpoint.describe();
    std::string out = mode == redis_mode::sentinel ? "redis-sentinel://" : "redis-cluster://";
    for (std::size_t i = 0; i < seeds.size(); ++i) out += (i ? "," : "") + host_port(seeds[i]);
    if (mode == redis_mode::sentinel) {
        out += "/" + master_name;
        if (endpoint.db) out += "/" + std::to_string(endpoint.db);
    }
    return out;
}

boost::system::result<redis_target, std::string> parse_store_url(std::string_view url) {
    redis_target t;
    std::string_view rest;
    std::uint16_t default_port = 6379;
    if (url.starts_with("redis-sentinel://")) {
        t.mode = redis_mode::sentinel;
        rest = url.substr(17);
        default_port = 26379;
    } else if (url.starts_with("redis-cluster://")) {
        t.mode = redis_mode::cluster;
        rest = url.substr(16);
    } else {
        auto ep = parse_redis_url(url);
        if (!ep) return ep.error();
        t.endpoint = std::move(*ep);
        return t;
    }
    auto slash = rest.find('/');
    auto authority = rest.substr(0, slash);
    auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    std::string userinfo;
    if (auto at = authority.rfind('@'); at != std::string_view::npos) {
        userinfo = std::string(authority.substr(0, at + 1));
        authority = authority.substr(at + 1);
    }
    std::string db;
    if (t.mode == redis_mode::sentinel) {
        auto end = path.find('/');
        t.master_name = std::string(path.substr(0, end));
        if (t.master_name.empty())
            return std::string("a redis-sentinel:// URL names the master: redis-sentinel://host:port,host:port/mymaster");
        if (end != std::string_view::npos) db = std::string(path.substr(end + 1));
    } else if (!path.empty()) {
        return std::string("a redis-cluster:// URL has no path (Redis Cluster has database 0 only)");
    }
    // The user, password and database, read as parse_redis_url reads them.
    auto auth = parse_redis_url("redis://" + userinfo + "h/" + db);
    if (!auth) return auth.error();
    t.endpoint = std::move(*auth);
    t.endpoint.host.clear();
    while (!authority.empty() || t.seeds.empty()) {
        auto comma = authority.find(',');
        auto h = authority.substr(0, comma);
        if (h.empty()) return std::string("empty host in the list; expected host:port,host:port");
        auto ep = parse_redis_url("redis://" + std::string(h));
        if (!ep) return ep.error() + " in '" + std::string(h) + "'";
        if (!has_port(h)) ep->port = default_port;
        t.seeds.push_back(std::move(*ep));
        authority = comma == std::string_view::npos ? std::string_view{} : authority.substr(comma + 1);
        if (comma != std::string_view::npos && authority.empty())
            return std::string("empty host in the list; expected host:port,host:port");
    }
    return t;
}

std::shared_ptr<redis_router> make_redis_router(net::any_io_executor ex, const redis_target& target,
                                                redis_options base) {
    switch (target.mode) {
    case redis_mode::sentinel:
        base.endpoint = target.endpoint;
        return std::make_shared<sentinel_router>(std::move(ex), target, std::move(base));
    case redis_mode::cluster:
        base.endpoint = target.endpoint;
        return std::make_shared<cluster_router>(std::move(ex), target, std::move(base));
    case redis_mode::single:
        break;
    }
    base.endpoint = target.endpoint;
    return std::make_shared<single_router>(std::move(ex), std::move(base));
}

}  // namespace ifm::cache

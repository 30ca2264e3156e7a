#include "tests/support/redis_topology.hpp"

#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/proxy_process.hpp"

#include <atomic>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace ifm::test {

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string checked(redis_server& server, const std::vector<std::string>& args) {
    auto r = server.command(args);
    if (r.starts_with("ERR:"))
        throw std::runtime_error(args.at(0) + " " + (args.size() > 1 ? args[1] : "") + " on port " +
                                 std::to_string(server.port()) + ": " + r);
    return r;
}

}  // namespace

int online_replicas(redis_server& server) {
    auto info = server.command({"INFO", "replication"});
    if (info.find("role:master") == std::string::npos) return -1;
    int n = 0;
    for (auto at = info.find("state=online"); at != std::string::npos; at = info.find("state=online", at + 1)) ++n;
    return n;
}

bool replicas_acking(redis_server& master, int n, std::chrono::milliseconds timeout) {
    // A write, then wait until `n` replicas acknowledged its offset (INFO's slaveN:…,offset=).
    // (WAIT on this connection would not do: Redis 7.0 answers it at once after a plain SET.)
    if (!eventually([&] { return online_replicas(master) >= n; }, timeout)) return false;
    master.command({"SET", "ifm-test:probe", "1"});
    auto field = [](const std::string& text, const std::string& name, std::size_t from = 0) -> long long {
        auto at = text.find(name, from);
        if (at == std::string::npos) return -1;
        return std::atoll(text.c_str() + at + name.size());
    };
    const long long written = field(master.command({"INFO", "replication"}), "master_repl_offset:");
    if (written <= 0) return false;
    return eventually([&] {
        auto info = master.command({"INFO", "replication"});
        int acked = 0;
        for (auto at = info.find("state=online"); at != std::string::npos; at = info.find("state=online", at + 1))
            if (field(info, "offset=", at) >= written) ++acked;
        return acked >= n;
    }, timeout);
}

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        out.push_back(line);
    }
    if (out.empty()) out.emplace_back();
    return out;
}

bool fails_closed(const boost::system::error_code& ec) {
    using cache::store_errc;
    return ec == store_errc::unavailable || ec == store_errc::timeout || ec == store_errc::recovering;
}

std::string redis_cli(std::uint16_t port, const std::vector<std::string>& args) {
    static std::atomic<int> counter{0};
    temp_dir dir;
    auto out_file = dir.path() + "/out" + std::to_string(counter++);
    std::vector<std::string> argv{"redis-cli", "-h", "127.0.0.1", "-p", std::to_string(port)};
    argv.insert(argv.end(), args.begin(), args.end());
    child_process cli(std::move(argv), out_file);
    if (cli.wait(30s) < 0) return {};
    std::ifstream in(out_file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    return text;
}

// ---------------------------------------------------------------------------------------------

redis_sentinel_group::redis_sentinel_group(int replicas, int sentinels, std::chrono::milliseconds down_after,
                                           std::string name)
    : name_(std::move(name)) {
    // Redis 7 waits 5 s for more replicas before a diskless full sync: not here.
    const std::vector<std::string> no_delay{"--repl-diskless-sync-delay", "0"};
    nodes_.push_back(std::make_unique<redis_server>(0, no_delay));
    const auto master = std::to_string(nodes_[0]->port());
    for (int i = 0; i < replicas; ++i) {
        auto args = no_delay;
        args.insert(args.end(), {"--replicaof", "127.0.0.1", master});
        nodes_.push_back(std::make_unique<redis_server>(0, std::move(args)));
    }
    if (!replicas_acking(*nodes_[0], replicas, 10s)) throw std::runtime_error("the replicas did not come online");
    for (int i = 0; i < sentinels; ++i) {
        auto port = free_port();
        auto conf = dir_.path() + "/sentinel" + std::to_string(i) + ".conf";
        std::ofstream(conf) << "port " << port << "\n"
                            << "bind 127.0.0.1\n"
                            << "daemonize no\n"
                            << "dir " << dir_.path() << "\n"
                            << "sentinel monitor " << name_ << " 127.0.0.1 " << master << " " << (sentinels / 2 + 1) << "\n"
                            << "sentinel down-after-milliseconds " << name_ << " " << down_after.count() << "\n"
                            << "sentinel failover-timeout " << name_ << " 5000\n"
                            << "sentinel parallel-syncs " << name_ << " 1\n";
        sentinel_ports_.push_back(port);
        sentinels_.push_back(std::make_unique<child_process>(
            std::vector<std::string>{"redis-server", conf, "--sentinel"},
            dir_.path() + "/sentinel" + std::to_string(i) + ".log"));
        if (!wait_for_port(port, 5s)) throw std::runtime_error("sentinel did not start; see " + dir_.path());
    }
    // Sentinels find the replicas through the master's INFO and each other through hello
    // messages (every 2 s): until then they could not agree on a failover.
    for (auto port : sentinel_ports_) {
        bool known = eventually([&] {
            auto l = split_lines(redis_cli(port, {"SENTINEL", "master", name_}));
            std::map<std::string, std::string> fields;
            for (std::size_t i = 0; i + 1 < l.size(); i += 2) fields[l[i]] = l[i + 1];
            return fields["num-other-sentinels"] == std::to_string(sentinels - 1) &&
                   fields["num-slaves"] == std::to_string(replicas) && fields["flags"] == "master";
        }, 20s);
        if (!known) throw std::runtime_error("sentinels did not discover each other; see " + dir_.path());
    }
}

redis_sentinel_group::~redis_sentinel_group() {
    sentinels_.clear();   // before the servers: no failover while tearing down
}

std::string redis_sentinel_group::url() const {
    std::string out = "redis-sentinel://";
    for (std::size_t i = 0; i < sentinel_ports_.size(); ++i)
        out += (i ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(sentinel_ports_[i]);
    return out + "/" + name_;
}

std::uint16_t redis_sentinel_group::master_port(std::size_t i) {
    auto l = split_lines(redis_cli(sentinel_ports_.at(i), {"SENTINEL", "get-master-addr-by-name", name_}));
    if (l.size() != 2) return 0;
    try {
        return static_cast<std::uint16_t>(std::stoi(l[1]));
    } catch (const std::exception&) {
        return 0;
    }
}

int redis_sentinel_group::master_node() {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
        if (nodes_[i]->command({"ROLE"}).starts_with("master\n")) return static_cast<int>(i);
    return -1;
}

bool redis_sentinel_group::wait_for_switch(std::uint16_t old_port, std::chrono::milliseconds timeout) {
    return eventually([&] {
        for (std::size_t i = 0; i < sentinel_ports_.size(); ++i) {
            auto p = master_port(i);
            if (p == 0 || p == old_port) return false;
        }
        return true;
    }, timeout);
}

// ---------------------------------------------------------------------------------------------

redis_cluster::redis_cluster(int masters, int replicas, std::chrono::milliseconds node_timeout,
                             const std::vector<std::string>& node_args) {
    const int total = masters * (1 + replicas);
    std::vector<std::string> create{"--cluster", "create"};
    for (int i = 0; i < total; ++i) {
        // Redis 7 lets the cluster bus have a port of its own (else port + 10000, maybe taken).
        auto bus = free_port();
        std::vector<std::string> args{"--repl-diskless-sync-delay", "0", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                      "--cluster-node-timeout", std::to_string(node_timeout.count()),
                                      "--cluster-port", std::to_string(bus)};
        args.insert(args.end(), node_args.begin(), node_args.end());
        nodes_.push_back(std::make_unique<redis_server>(0, std::move(args)));
        create.push_back("127.0.0.1:" + std::to_string(nodes_.back()->port()));
    }
    create.insert(create.end(), {"--cluster-replicas", std::to_string(replicas), "--cluster-yes"});
    auto out = redis_cli(nodes_[0]->port(), create);
    if (out.find("[OK] All 16384 slots covered") == std::string::npos)
        throw std::runtime_error("redis-cli --cluster create failed:\n" + out);
    bool agreed = eventually([&] {
        auto check = redis_cli(nodes_[0]->port(), {"--cluster", "check", "127.0.0.1:" + std::to_string(nodes_[0]->port())});
        return check.find("[OK] All nodes agree about slots configuration.") != std::string::npos;
    }, 20s);
    if (!agreed || !wait_ok(20s)) throw std::runtime_error("the cluster did not become ok");
    // A replica counts in WAIT once its master has it online.
    bool online = eventually([&] {
        for (auto& n : nodes_) {
            auto r = online_replicas(*n);
            if (r >= 0 && r != replicas) return false;
        }
        return true;
    }, 20s);
    if (!online) throw std::runtime_error("the cluster's replicas did not come online");
}

std::string redis_cluster::url() const {
    return "redis-cluster://127.0.0.1:" + std::to_string(nodes_.at(0)->port()) + ",127.0.0.1:" +
           std::to_string(nodes_.at(1)->port());
}

std::size_t redis_cluster::live_node() {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
        if (nodes_[i]->command({"PING"}) == "PONG") return i;
    throw std::runtime_error("no live cluster node");
}

std::string redis_cluster::node_id(std::size_t i) {
    return checked(*nodes_.at(i), {"CLUSTER", "MYID"});
}

int redis_cluster::keyslot(const std::string& key) {
    return std::stoi(checked(*nodes_[live_node()], {"CLUSTER", "KEYSLOT", key}));
}

int redis_cluster::owner_of(int slot) {
    // <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot or range>…
    for (const auto& line : split_lines(checked(*nodes_[live_node()], {"CLUSTER", "NODES"}))) {
        std::istringstream in(line);
        std::string id, addr, flags, skip;
        in >> id >> addr >> flags >> skip >> skip >> skip >> skip >> skip;
        if (flags.find("master") == std::string::npos || flags.find("fail") != std::string::npos) continue;
        for (std::string range; in >> range;) {
            if (range.starts_with("[")) continue;  // [slot->-id] / [slot-<-id]: migration marks
            auto dash = range.find('-');
            int lo = std::stoi(range.substr(0, dash));
            int hi = dash == std::string::npos ? lo : std::stoi(range.substr(dash + 1));
            if (slot < lo || slot > hi) continue;
            auto port = std::stoi(addr.substr(addr.rfind(':') + 1, addr.find('@') - addr.rfind(':') - 1));
            for (std::size_t i = 0; i < nodes_.size(); ++i)
                if (nodes_[i]->port() == port) return static_cast<int>(i);
        }
    }
    return -1;
}

void redis_cluster::move_slot(int slot, std::size_t to, const std::function<void()>& between) {
    auto from_index = owner_of(slot);
    if (from_index < 0 || static_cast<std::size_t>(from_index) == to)
        throw std::runtime_error("move_slot: bad source or target");
    auto& from = *nodes_[static_cast<std::size_t>(from_index)];
    auto& target = *nodes_.at(to);
    const auto s = std::to_string(slot);
    const auto from_id = node_id(static_cast<std::size_t>(from_index)), to_id = node_id(to);
    checked(target, {"CLUSTER", "SETSLOT", s, "IMPORTING", from_id});
    checked(from, {"CLUSTER", "SETSLOT", s, "MIGRATING", to_id});
    for (;;) {
        auto keys = split_lines(checked(from, {"CLUSTER", "GETKEYSINSLOT", s, "100"}));
        if (keys.empty() || (keys.size() == 1 && keys[0].empty())) break;
        std::vector<std::string> migrate{"MIGRATE", "127.0.0.1", std::to_string(target.port()), "", "0", "5000", "KEYS"};
        migrate.insert(migrate.end(), keys.begin(), keys.end());
        checked(from, migrate);
    }
    if (between) between();
    checked(target, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
    checked(from, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
        if (i == to || i == static_cast<std::size_t>(from_index)) continue;
        if (nodes_[i]->command({"ROLE"}).starts_with("master\n"))
            nodes_[i]->command({"CLUSTER", "SETSLOT", s, "NODE", to_id});
    }
}

bool redis_cluster::wait_ok(std::chrono::milliseconds timeout) {
    return eventually([&] {
        std::size_t live = 0;
        for (auto& n : nodes_) {
            auto info = n->command({"CLUSTER", "INFO"});
            if (info.starts_with("ERR:connect")) continue;
            if (info.find("cluster_state:ok") == std::string::npos) return false;
            ++live;
        }
        return live > 0;
    }, timeout);
}

// ---------------------------------------------------------------------------------------------

config::store_config redis_store_config(const std::string& url) {
    config::store_config cfg;
    cfg.kind = config::store_kind::redis;
    cfg.url = url;
    cfg.key_prefix = "t";
    cfg.timeout = 200ms;
    cfg.connect_timeout = 1s;
    cfg.wait_timeout = 500ms;   // a replica on a loaded CI machine may take its time to ACK
    cfg.young_server_wait = false;   // the servers are brand new
    return cfg;
}

store_client::store_client(const config::store_config& cfg)
    : factory(cache::make_store_factory(cfg)), store(factory->make(ioc.get_executor())) {}

store_client::~store_client() {
    store->close();
    store.reset();
}

bool store_client::wait_ready(std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    for (;;) {
        if (run(store->async_ping())) return true;
        if (clock_type::now() >= deadline) return false;
        idle(20ms);
    }
}

void store_client::idle(std::chrono::milliseconds d) {
    if (ioc.stopped()) ioc.restart();
    ioc.run_for(d);
}

void store_client::put_state(const std::string& key, const cache::resource_state& state) {
    auto a = run(store->async_acquire(key, cache::condition{}, 10s));
    if (!a || a->token.empty()) throw std::runtime_error("put_state: no lease on " + key);
    auto c = run(store->async_commit(key, a->token, cache::commit_outcome::set, state));
    if (!c || !*c) throw std::runtime_error("put_state: commit on " + key + " failed");
}

workload_result run_workload_with_fault(const std::string& store_url, const workload_options& opts,
                                       const std::function<void(const std::atomic<bool>& stop)>& fault,
                                       const std::string& store_extra) {
    nginx_webdav nginx;
    {
        http_client direct(nginx.port());
        if (direct.request("PUT", opts.target, {}, format_counter_doc({})).status / 100 != 2)
            throw std::runtime_error("cannot create the counter document");
    }
    auto yaml = [&](std::uint16_t port) {
        // Short leases: a write whose commit was lost in a failover blocks its resource until
        // the lease expires.
        auto y = workload_proxy_yaml({.port = port, .origin_port = nginx.port(), .redis_url = store_url,
                                      .write_lease = "3s", .request_timeout = "1s", .store_timeout = "200ms"});
        if (!store_extra.empty()) {
            auto end = y.find(" }\nupstreams:");
            if (end == std::string::npos) throw std::logic_error("unexpected workload YAML");
            y.insert(end, ", " + store_extra);
        }
        return y;
    };
    auto p1 = free_port(), p2 = free_port();
    proxy_process a(yaml(p1), p1);
    proxy_process b(yaml(p2), p2);
    std::atomic<bool> stop{false};
    std::thread fault_thread([&] { fault(stop); });
    workload_result r;
    try {
        r = run_workload({p1, p2}, opts);
    } catch (...) {
        stop = true;
        fault_thread.join();
        throw;
    }
    stop = true;
    fault_thread.join();
    r.final_doc = read_counter_doc(nginx.port(), opts.target);
    return r;
}

}  // namespace ifm::test

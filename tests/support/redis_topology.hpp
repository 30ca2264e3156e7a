// Real Redis topologies on loopback for tests: a master with replicas watched by sentinels
// (`redis-server --sentinel`), and a Redis Cluster made by `redis-cli --cluster create`.
#pragma once

#include "cache/store.hpp"
#include "config/config.hpp"
#include "tests/support/process.hpp"
#include "tests/support/workload.hpp"

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ifm::test {

// `redis-cli -h 127.0.0.1 -p PORT ARGS…`: its output (raw: one line per element), or "" when it
// did not finish within 30 s. For servers a redis_server object does not own (sentinels) and
// for `--cluster` commands.
std::string redis_cli(std::uint16_t port, const std::vector<std::string>& args);

// Replicas a master counts in WAIT (online: after their first ACK); -1 if `server` is a replica.
int online_replicas(redis_server& server);
// True once `n` replicas confirm a write through WAIT. A replica is "online" in INFO as soon as
// its full sync ends, but Redis 7 streams writes to it only after its first REPLCONF ACK (sent
// once a second): until then WAIT counts it out.
bool replicas_acking(redis_server& master, int n, std::chrono::milliseconds timeout);

// Master (node 0) + replicas + sentinels monitoring it as `name`.
class redis_sentinel_group {
public:
    // Waits until every sentinel knows the replicas and the other sentinels (so that a failover
    // can be agreed on) and every replica is in sync.
    explicit redis_sentinel_group(int replicas = 1, int sentinels = 3,
                                  std::chrono::milliseconds down_after = std::chrono::milliseconds(1000),
                                  std::string name = "ifm");
    ~redis_sentinel_group();
    redis_sentinel_group(const redis_sentinel_group&) = delete;
    redis_sentinel_group& operator=(const redis_sentinel_group&) = delete;

    // redis-sentinel://127.0.0.1:P1,127.0.0.1:P2,…/NAME
    std::string url() const;
    const std::string& name() const { return name_; }
    redis_server& node(std::size_t i) { return *nodes_.at(i); }
    std::size_t nodes() const { return nodes_.size(); }
    std::uint16_t sentinel_port(std::size_t i) const { return sentinel_ports_.at(i); }
    // The master port sentinel `i` names now (0: it names none or does not answer).
    std::uint16_t master_port(std::size_t i = 0);
    // Index of the node that says ROLE master (-1: none).
    int master_node();
    // Polls until every sentinel names a master other than `old_port`. False on timeout.
    bool wait_for_switch(std::uint16_t old_port, std::chrono::milliseconds timeout);

private:
    std::string name_;
    temp_dir dir_;
    std::vector<std::unique_ptr<redis_server>> nodes_;
    std::vector<std::uint16_t> sentinel_ports_;
    std::vector<std::unique_ptr<child_process>> sentinels_;
};

// A Redis Cluster of `masters` masters with `replicas` replicas each.
class redis_cluster {
public:
    // `node_args`: added to every node's command line (test::redis_module_args(), say).
    explicit redis_cluster(int masters = 3, int replicas = 0,
                           std::chrono::milliseconds node_timeout = std::chrono::milliseconds(1000),
                           const std::vector<std::string>& node_args = {});
    redis_cluster(const redis_cluster&) = delete;
    redis_cluster& operator=(const redis_cluster&) = delete;

    // redis-cluster://127.0.0.1:P1,127.0.0.1:P2 (two seeds: the router must learn the rest)
    std::string url() const;
    redis_server& node(std::size_t i) { return *nodes_.at(i); }
    std::size_t nodes() const { return nodes_.size(); }
    std::string node_id(std::size_t i);
    // CLUSTER KEYSLOT, asked of a live node.
    int keyslot(const std::string& key);
    // The node index serving `slot` as a master, per a live node's CLUSTER SLOTS (-1: none).
    int owner_of(int slot);
    // Moves `slot` and its keys to node `to`, as `redis-cli --cluster reshard` does: IMPORTING
    // on the target, MIGRATING on the source, MIGRATE key by key, then SETSLOT NODE everywhere.
    // `between` runs after the keys moved and before the slot is handed over (ASK window).
    void move_slot(int slot, std::size_t to, const std::function<void()>& between = {});
    // Polls until every live node says cluster_state:ok.
    bool wait_ok(std::chrono::milliseconds timeout);

private:
    std::size_t live_node();
    std::vector<std::unique_ptr<redis_server>> nodes_;
};

// A validator store as one worker has it, on an io_context that the test thread drives.
struct store_client {
    explicit store_client(const config::store_config& cfg);
    ~store_client();

    template <class T>
    T run(boost::asio::awaitable<T> op) {
        return run_sync(ioc, std::move(op));
    }
    // Pings until the store answers (a Redis store fails at once while connecting).
    bool wait_ready(std::chrono::milliseconds timeout);
    // Lets the connections' own loops (reconnect, topology) run for `d`.
    void idle(std::chrono::milliseconds d);
    // A full write (acquire, commit set) that leaves `key` at `state`; throws if it fails.
    void put_state(const std::string& key, const cache::resource_state& state);

    boost::asio::io_context ioc;
    std::unique_ptr<cache::store_factory> factory;
    std::unique_ptr<cache::validator_store> store;
};

// A store error that answers 503 (what a store must say while it has no master to ask).
bool fails_closed(const boost::system::error_code& ec);

// The lines of `text` ('\r' dropped); one empty line for "".
std::vector<std::string> split_lines(const std::string& text);

// store.kind redis at `url`, key prefix "t", timeouts for loopback tests.
config::store_config redis_store_config(const std::string& url);

// The lost-update workload (tests/support/workload.hpp) through two proxy processes on
// `store_url` in front of nginx WebDAV, while `fault` runs on a thread of its own (it should
// return once `stop` is set, which happens when the workload is over). `store_extra` is added
// to the proxies' store map (e.g. "wait_replicas: 1"). The result's final_doc is read from nginx.
workload_result run_workload_with_fault(const std::string& store_url, const workload_options& opts,
                                       const std::function<void(const std::atomic<bool>& stop)>& fault,
                                       const std::string& store_extra = {});

}  // namespace ifm::test

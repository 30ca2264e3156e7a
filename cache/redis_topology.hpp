// Where the store's commands go: one Redis, the master that Redis Sentinel names, or the master
// of each Redis Cluster slot. Every topology uses Redis's own distribution; nothing home-made.
//
// A router belongs to one worker (one io_context) like the connections it owns: every member
// is used from that executor only, except the `connected()` / `reconnects()` gauges, which may
// be read from any thread.
#pragma once

#include "cache/redis_connection.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ifm::cache {

enum class redis_mode : std::uint8_t { single, sentinel, cluster };

// store.url, parsed:
//   redis://… and unix://…  (parse_redis_url)                                   one server
//   redis-sentinel://[[user]:password@]host[:port],host[:port]…/master-name[/db] (port 26379)
//   redis-cluster://[[user]:password@]host[:port],host[:port]…                   (port 6379)
// The user and password are the data nodes' (the master, or every cluster node); sentinels get
// their own (store.sentinel_username, store.sentinel_password), or no AUTH.
struct redis_target {
    redis_mode mode = redis_mode::single;
    redis_endpoint endpoint;            // single: the server; else the auth and db of data nodes
    std::vector<redis_endpoint> seeds;  // the sentinels, or the cluster nodes to start from
    std::string master_name;            // sentinel
    std::string sentinel_user;          // sentinel: AUTH [user] password when the password is set
    std::string sentinel_password;
    std::string describe() const;       // for logs; never contains the password
};
boost::system::result<redis_target, std::string> parse_store_url(std::string_view url);

// A reply and the connection session it came from: a WAIT for the writes a script made must
// go over that same connection.
struct routed_reply {
    redis_reply reply;
    std::shared_ptr<redis_connection> node;
    std::uint64_t session = 0;
};

class redis_router {
public:
    virtual ~redis_router() = default;
    // Starts connecting (and, for Sentinel and Cluster, watching the topology).
    virtual void start() = 0;
    // Closes every connection; pending commands fail with `unavailable`.
    virtual void close() = 0;
    // EVALSHA of `scripts[index]` on the master that holds keys[0] (every key of one call shares
    // its hash slot), following Cluster redirections. `keys` and `args` are the caller's, which
    // co_awaits the call at once (no copy per command).
    virtual net::awaitable<result<routed_reply>> async_eval(
        std::size_t index, const std::vector<std::string>& keys, const std::vector<std::string>& args) = 0;
    // Every master the store may need answers PING.
    virtual net::awaitable<result<void>> async_ping() = 0;
    // Every master the store may need is connected.
    virtual bool connected() const = 0;
    // Connections made again after a loss, summed over the masters.
    virtual std::uint64_t reconnects() const = 0;
};

// `base` gives timeouts, scripts and auth; its endpoint is replaced per server.
std::shared_ptr<redis_router> make_redis_router(net::any_io_executor ex, const redis_target& target,
                                                redis_options base);

}  // namespace ifm::cache

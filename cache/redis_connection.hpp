// One connection to Redis for one worker: hiredis 0.14's async API driven by Asio.
//
// `run_connection` (started by `start()`) connects, authenticates, selects the database, loads
// the Lua scripts and reconnects with backoff after any loss. Commands are coroutines raced
// against `command_timeout` (hiredis 0.14 has none); while not connected they fail at once with
// `store_errc::unavailable`, so a request never waits for a reconnect.
//
// Single-threaded: every member is used from the connection's executor only (one io_context
// per worker), except the `connected()` / `reconnects()` gauges, which may be read anywhere.
#pragma once

#include "cache/store.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct redisAsyncContext;

namespace ifm::cache {

// A reply copied out of hiredis (which frees its own after the callback returns).
struct redis_reply {
    enum class type : std::uint8_t { nil, status, error, integer, string, array };
    type kind = type::nil;
    std::string str;            // status, error and string replies
    long long integer = 0;      // integer replies
    std::vector<redis_reply> elements;  // array replies

    bool is_error() const { return kind == type::error; }
    bool operator==(const redis_reply&) const = default;
};

// Where to connect, parsed from store.url:
//   redis://[[user]:password@]host[:port][/db]   (host may be [v6-literal]; port 6379, db 0)
//   unix:///path/to.sock[?db=N]
struct redis_endpoint {
    bool unix_socket = false;
    std::string host;           // tcp: name or address literal (no brackets)
    std::uint16_t port = 6379;
    std::string path;           // unix
    std::string user;           // ACL user (Redis 6+); empty: AUTH with the password only
    std::string password;
    int db = 0;
    std::string describe() const;   // for logs; never contains the password
};
// Fails with a message saying what is wrong (for the config loader and the factory).
boost::system::result<redis_endpoint, std::string> parse_redis_url(std::string_view url);

// A Lua script, sent by EVALSHA with its SHA1 computed locally.
struct lua_script {
    std::string name;
    std::string source;
    std::string sha1;           // lower-case hex
    lua_script(std::string_view name, std::string_view source);
};
std::string sha1_hex(std::string_view data);

struct redis_options {
    redis_endpoint endpoint;
    std::chrono::milliseconds command_timeout{50};
    std::chrono::milliseconds connect_timeout{1000};   // connect + handshake; also the stall limit
    std::chrono::milliseconds backoff_min{50};
    std::chrono::milliseconds backoff_max{2000};
    std::vector<lua_script> scripts;                    // loaded on every (re)connect
    std::string client_name = "ifmatch-proxy";
};

class redis_connection : public std::enable_shared_from_this<redis_connection> {
public:
    static std::shared_ptr<redis_connection> create(net::any_io_executor ex, redis_options opts);
    ~redis_connection();
    redis_connection(const redis_connection&) = delete;
    redis_connection& operator=(const redis_connection&) = delete;

    // Spawns `run_connection` on the executor (once).
    void start();
    // Stops reconnecting; drops the connection, so pending commands fail with `unavailable`.
    // Safe to call while the io_context is stopped.
    void close();

    // One command. Error replies are returned as replies (kind error); the error_code says
    // `unavailable` (not connected, or lost while waiting) or `timeout`.
    net::awaitable<result<redis_reply>> async_exec(std::vector<std::string> argv);
    // EVALSHA of `scripts[index]`; on NOSCRIPT (Redis restarted or flushed its scripts) the
    // script is loaded again and the call retried once.
    net::awaitable<result<redis_reply>> async_eval(
        std::size_t index, std::vector<std::string> keys, std::vector<std::string> args);

    // Connected and ready (handshake and script loading done).
    bool connected() const { return ready_.load(std::memory_order_relaxed); }
    // Successful connections after the first one.
    std::uint64_t reconnects() const { return reconnects_.load(std::memory_order_relaxed); }
    const redis_options& options() const { return opts_; }

private:
    struct pending_command;
    class adapter;
    enum class connect_phase : std::uint8_t { idle, connecting, connected, failed };

    redis_connection(net::any_io_executor ex, redis_options opts);

    static net::awaitable<void> run_connection(std::shared_ptr<redis_connection> self);
    net::awaitable<boost::system::error_code> async_connect_once(std::size_t attempt);
    net::awaitable<boost::system::error_code> async_handshake();
    net::awaitable<result<redis_reply>> async_send(std::vector<std::string> argv,
                                                   std::chrono::milliseconds timeout);
    void drop_context();
    void context_gone(redisAsyncContext* ac);

    static void on_connect(const redisAsyncContext* ac, int status);
    static void on_disconnect(const redisAsyncContext* ac, int status);
    static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);

    net::any_io_executor executor_;
    redis_options opts_;
    net::steady_timer wake_;                 // run loop's sleep; cancelled to wake it
    redisAsyncContext* ctx_ = nullptr;       // null when no connection exists
    std::shared_ptr<adapter> adapter_;
    connect_phase phase_ = connect_phase::idle;
    bool started_ = false;
    bool closed_ = false;
    std::string last_error_;                 // why the last attempt failed or the connection was lost
    std::size_t in_flight_ = 0;              // commands hiredis has not answered yet
    std::chrono::steady_clock::time_point last_progress_{};  // last reply, or first send after idle
    std::atomic<bool> ready_{false};
    std::atomic<std::uint64_t> reconnects_{0};
};

}  // namespace ifm::cache

// Test harness: child processes (the proxy binary, redis-server, nginx), ports and temporary
// directories, and a way to run one awaitable to completion from a plain test body.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ifm::test {

// Binds 127.0.0.1:0, reads the port the kernel chose, closes. (Racy by nature, good enough.)
std::uint16_t free_port();
// Polls until something accepts TCP connections on 127.0.0.1:port.
bool wait_for_port(std::uint16_t port, std::chrono::milliseconds timeout);

// mkdtemp under /tmp; removed recursively when destroyed.
class temp_dir {
public:
    temp_dir();
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// fork + execvp in its own process group; stdout and stderr to `log_file` (appended) or /dev/null.
class child_process {
public:
    explicit child_process(std::vector<std::string> argv, std::string log_file = {});
    ~child_process();  // SIGKILL + reap if still running
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    pid_t pid() const { return pid_; }
    bool running();
    // Sends `sig` to the child's process group.
    void signal(int sig);
    // Exit status (128 + signal number when killed by a signal), or -1 on timeout.
    int wait(std::chrono::milliseconds timeout);
    void kill();  // SIGKILL and reap

private:
    bool reap(bool block);
    pid_t pid_ = -1;
    std::optional<int> status_;
};

// redis-server arguments that load this build's ifmatch_redis.so (cache/redis_module).
std::vector<std::string> redis_module_args();

// A real redis-server on 127.0.0.1 (and a unix socket), no persistence.
class redis_server {
public:
    // 0: free_port(). `extra_args` are appended to the command line (e.g. {"--requirepass", "x"}).
    // Waits until the server answers PING (throws std::runtime_error after 5 s).
    explicit redis_server(std::uint16_t port = 0, std::vector<std::string> extra_args = {});
    ~redis_server();
    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    std::uint16_t port() const { return port_; }
    std::string url() const;              // "redis://127.0.0.1:PORT/0"
    const std::string& unix_path() const { return socket_path_; }
    child_process& process() { return *process_; }

    void stop();   // SIGKILL: data lost
    void start();  // again on the same port, empty
    // Synchronous hiredis on a fresh connection. Reply as text: "" for nil, integers in decimal,
    // arrays joined with '\n', errors prefixed "ERR:" (also when the connection fails).
    std::string command(const std::vector<std::string>& args);
    // Several commands on one connection (WAIT counts the writes of its own connection); the
    // last reply.
    std::string commands(const std::vector<std::vector<std::string>>& list);
    // How many times `command` (lower case, as INFO commandstats names it: "evalsha",
    // "ifm.acquire") ran since the server started; 0 if never.
    long long calls(const std::string& command);

private:
    std::uint16_t port_;
    std::vector<std::string> extra_args_;
    temp_dir dir_;
    std::string socket_path_;
    std::optional<child_process> process_;
};

// Runs an awaitable to completion on `ioc` (other work on it keeps running meanwhile) and
// returns its value; rethrows its exception.
template <class T>
T run_sync(boost::asio::io_context& ioc, boost::asio::awaitable<T> op) {
    bool done = false;
    std::exception_ptr error;
    std::conditional_t<std::is_void_v<T>, bool, std::optional<T>> value{};
    if constexpr (std::is_void_v<T>) {
        boost::asio::co_spawn(ioc, std::move(op), [&](std::exception_ptr e) {
            error = e;
            done = true;
        });
    } else {
        boost::asio::co_spawn(ioc, std::move(op), [&](std::exception_ptr e, T v) {
            error = e;
            if (!e) value.emplace(std::move(v));
            done = true;
        });
    }
    if (ioc.stopped()) ioc.restart();
    while (!done) {
        if (ioc.run_one() == 0) {
            if (done) break;
            throw std::logic_error("run_sync: the io_context ran out of work or was stopped");
        }
    }
    if (error) std::rethrow_exception(error);
    if constexpr (!std::is_void_v<T>) return std::move(*value);
}

}  // namespace ifm::test

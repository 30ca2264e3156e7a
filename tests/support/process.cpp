#include "tests/support/process.hpp"

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <system_error>
#include <thread>

namespace ifm::test {

namespace {

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

namespace {

// The first port of the kernel's ephemeral range: connect() takes its local ports from there.
std::uint16_t ephemeral_low() {
    std::FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    unsigned low = 32768, high = 60999;
    if (f) {
        if (std::fscanf(f, "%u %u", &low, &high) != 2) low = 32768;
        std::fclose(f);
    }
    return static_cast<std::uint16_t>(low);
}

bool can_bind(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw_errno("socket");
    auto addr = loopback(port);
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

}  // namespace

// A port the kernel's bind(0) hands out lies in the ephemeral range, and between our probe and
// the server's own bind any client connect() may take it as its local port: a redis-server of
// the cluster test once failed to start that way in CI. So ports come from below that range,
// where connect() never goes, are probed with bind, and are never handed out twice by this
// process (a server started later may not be listening yet when the next port is chosen).
std::uint16_t free_port() {
    static std::mutex mutex;
    static std::set<std::uint16_t> given;
    static std::mt19937 random{std::random_device{}() ^ static_cast<unsigned>(::getpid())};
    constexpr std::uint16_t first = 12000;
    const std::uint16_t low = ephemeral_low();
    std::lock_guard lock{mutex};
    if (low > first + 1000) {
        std::uniform_int_distribution<unsigned> pick{first, low - 1u};
        for (int attempt = 0; attempt < 200; ++attempt) {
            auto port = static_cast<std::uint16_t>(pick(random));
            if (given.contains(port) || !can_bind(port)) continue;
            given.insert(port);
            return port;
        }
    }
    // A machine whose ephemeral range starts low: let the kernel choose.
    for (;;) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) throw_errno("socket");
        auto addr = loopback(0);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            ::close(fd);
            throw_errno("bind");
        }
        socklen_t len = sizeof addr;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
        ::close(fd);
        auto port = ntohs(addr.sin_port);
        if (given.insert(port).second) return port;
    }
}

bool wait_for_port(std::uint16_t port, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) throw_errno("socket");
        auto addr = loopback(port);
        bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(fd);
        if (ok) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

// ---------------------------------------------------------------------------------------------

temp_dir::temp_dir() {
    char tmpl[] = "/tmp/ifm-test-XXXXXX";
    if (!::mkdtemp(tmpl)) throw_errno("mkdtemp");
    path_ = tmpl;
}

temp_dir::~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

// ---------------------------------------------------------------------------------------------

child_process::child_process(std::vector<std::string> argv, std::string log_file) {
    if (argv.empty()) throw std::invalid_argument("child_process: empty argv");
    // Everything the child needs is prepared before fork: only async-signal-safe calls after.
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    int out = log_file.empty() ? ::open("/dev/null", O_WRONLY | O_CLOEXEC)
                               : ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out < 0) throw_errno("open " + (log_file.empty() ? std::string("/dev/null") : log_file));
    int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        ::close(out);
        throw_errno("open /dev/null");
    }
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(out);
        ::close(in);
        throw_errno("fork");
    }
    if (pid == 0) {
        ::setpgid(0, 0);
        // Tests ignore SIGPIPE; a child must start with default dispositions.
        ::signal(SIGPIPE, SIG_DFL);
        ::dup2(in, 0);
        ::dup2(out, 1);
        ::dup2(out, 2);
        // Asio does not open sockets close-on-exec: without this the child would inherit the test
        // process's listeners (an in-process origin's port would outlive the origin).
        for (int fd = 3, max = static_cast<int>(::sysconf(_SC_OPEN_MAX)); fd < max && fd < 65536; ++fd) ::close(fd);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here: no race with an early signal()
    ::close(out);
    ::close(in);
    pid_ = pid;
}

child_process::~child_process() {
    kill();
}

bool child_process::reap(bool block) {
    if (status_) return true;
    if (pid_ <= 0) return true;
    int st = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return false;
    if (r < 0) {
        status_ = -1;  // not our child any more (reaped elsewhere)
        return true;
    }
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
    return true;
}

bool child_process::running() {
    return !reap(false);
}

void child_process::signal(int sig) {
    if (!running()) return;
    if (::kill(-pid_, sig) != 0) ::kill(pid_, sig);
}

int child_process::wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!reap(false)) {
        if (std::chrono::steady_clock::now() >= deadline) return -1;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return *status_;
}

void child_process::kill() {
    if (!running()) return;
    signal(SIGKILL);
    reap(true);
}

// ---------------------------------------------------------------------------------------------

std::vector<std::string> redis_module_args() {
    return {"--loadmodule", IFM_REDIS_MODULE};
}

redis_server::redis_server(std::uint16_t port, std::vector<std::string> extra_args)
    : port_(port ? port : free_port()), extra_args_(std::move(extra_args)) {
    // After stop(), a client's next write to the dead server would raise SIGPIPE and end the
    // test binary (the proxy's main ignores it for the same reason).
    ::signal(SIGPIPE, SIG_IGN);
    socket_path_ = dir_.path() + "/redis.sock";
    start();
}

redis_server::~redis_server() {
    stop();
}

std::string redis_server::url() const {
    return "redis://127.0.0.1:" + std::to_string(port_) + "/0";
}

void redis_server::stop() {
    if (process_) process_->kill();
    process_.reset();
    ::unlink(socket_path_.c_str());
}

void redis_server::start() {
    stop();
    std::vector<std::string> argv{"redis-server", "--port", std::to_string(port_),
                                  "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--dir", dir_.path(), "--unixsocket", socket_path_,
                                  "--unixsocketperm", "700", "--daemonize", "no",
                                  "--loglevel", "warning"};
    argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
    process_.emplace(std::move(argv), dir_.path() + "/redis.log");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
        // Any reply (also NOAUTH with --requirepass) means the server is up.
        auto reply = command({"PING"});
        if (reply == "PONG" || reply.starts_with("ERR:NOAUTH")) return;
        if (!process_->running())
            throw std::runtime_error("redis-server exited at start; see " + dir_.path() + "/redis.log");
        if (std::chrono::steady_clock::now() >= deadline)
            throw std::runtime_error("redis-server did not answer PING within 5 s");
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

namespace {

std::string reply_text(const redisReply* r) {
    switch (r->type) {
    case REDIS_REPLY_NIL: return {};
    case REDIS_REPLY_INTEGER: return std::to_string(r->integer);
    case REDIS_REPLY_ERROR: return "ERR:" + std::string(r->str, r->len);
    case REDIS_REPLY_ARRAY: {
        std::string out;
        for (std::size_t i = 0; i < r->elements; ++i) {
            if (i) out.push_back('\n');
            out += reply_text(r->element[i]);
        }
        return out;
    }
    default: return std::string(r->str, r->len);
    }
}

}  // namespace

long long redis_server::calls(const std::string& command) {
    const auto info = this->command({"INFO", "commandstats"});
    const std::string field = "cmdstat_" + command + ":calls=";
    const auto at = info.find(field);
    return at == std::string::npos ? 0 : std::stoll(info.substr(at + field.size()));
}

std::string redis_server::command(const std::vector<std::string>& args) {
    return commands({args});
}

std::string redis_server::commands(const std::vector<std::vector<std::string>>& list) {
    timeval tv{2, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (!c || c->err) {
        std::string err = c ? c->errstr : "cannot allocate a context";
        if (c) redisFree(c);
        return "ERR:connect: " + err;
    }
    redisSetTimeout(c, tv);
    std::string out;
    for (const auto& args : list) {
        std::vector<const char*> ptrs;
        std::vector<std::size_t> lens;
        for (const auto& a : args) {
            ptrs.push_back(a.data());
            lens.push_back(a.size());
        }
        auto* reply = static_cast<redisReply*>(
            redisCommandArgv(c, static_cast<int>(args.size()), ptrs.data(), lens.data()));
        out = reply ? reply_text(reply) : "ERR:io: " + std::string(c->errstr);
        if (!reply) break;
        freeReplyObject(reply);
    }
    redisFree(c);
    return out;
}

}  // namespace ifm::test

// ifmatch-proxy: optimistic concurrency control for legacy HTTP backends.
#include "config/config.hpp"
#include "proxy/access_log.hpp"
#include "proxy/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

#ifdef IFM_MIMALLOC
#include <mimalloc.h>
#endif
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace {

// Which allocator serves malloc and operator new: "mimalloc 2.0.9" only when a malloc'd block
// really lives in mimalloc's heap (linking the library is not enough if something loads libc's
// malloc first).
std::string allocator_name() {
#ifdef IFM_MIMALLOC
    void* p = std::malloc(16);
    bool ours = mi_is_in_heap_region(p);
    std::free(p);
    int v = mi_version();
    std::string name = "mimalloc " + std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." +
                       std::to_string(v % 10);
    return ours ? name : "glibc malloc (" + name + " linked but not in use)";
#else
    return "glibc malloc";
#endif
}

constexpr const char* default_config = "/etc/ifmatch-proxy/config.yaml";

void usage(std::FILE* out) {
    std::fprintf(out,
                 "usage: ifmatch-proxy [--config PATH] [--check-config | --healthcheck] [--allow-core-dumps]\n"
                 "                     [--print-config-schema] [--version]\n"
                 "  --config PATH    configuration file (default %s)\n"
                 "                   ($IFM_CONFIG, when set, replaces the default)\n"
                 "  --check-config   validate the configuration, print every error, exit 0 or 1\n"
                 "  --healthcheck    GET /healthz on the admin_listen of the configuration, exit 0 if\n"
                 "                   it answers 200 within 3 s, else 1 (container health checks)\n"
                 "  --version        print the version and exit\n"
                 "  --allow-core-dumps     keep core dumps possible (off by default: they would hold secrets)\n"
                 "  --print-config-schema  print the configuration's JSON Schema and exit\n"
                 "signals: SIGTERM drains (after limits.drain_delay) and exits, SIGINT drains at once,\n"
                 "         SIGHUP reloads the configuration\n",
                 default_config);
}

// Prints every error as FILE:LINE: PATH: MESSAGE; returns whether the file is valid.
std::optional<ifm::config::config> load(const std::string& path, bool to_log) {
    auto r = ifm::config::load_file(path);
    if (r) return std::move(*r);
    for (const auto& e : r.error()) {
        if (to_log) spdlog::error("{}", e.format(path));
        else std::fprintf(stderr, "%s\n", e.format(path).c_str());
    }
    return std::nullopt;
}

// --healthcheck: a probe for images that have no HTTP client. Unspecified admin addresses
// (0.0.0.0, ::) are probed on loopback.
int healthcheck(const ifm::config::config& cfg) {
    namespace net = boost::asio;
    namespace beast = boost::beast;
    namespace http = beast::http;
    if (!cfg.admin_listen) {
        std::fprintf(stderr, "ifmatch-proxy: --healthcheck needs admin_listen in the configuration\n");
        return 1;
    }
    boost::system::error_code ec;
    auto addr = net::ip::make_address(cfg.admin_listen->host == "localhost" ? "127.0.0.1" : cfg.admin_listen->host, ec);
    if (ec) {
        std::fprintf(stderr, "ifmatch-proxy: admin_listen: %s\n", ec.message().c_str());
        return 1;
    }
    if (addr.is_unspecified()) addr = addr.is_v4() ? net::ip::address(net::ip::address_v4::loopback())
                                                   : net::ip::address(net::ip::address_v6::loopback());
    net::io_context ioc;
    beast::tcp_stream stream(ioc);
    http::request<http::empty_body> req{http::verb::get, "/healthz", 11};
    req.set(http::field::host, addr.to_string());
    req.keep_alive(false);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    boost::system::error_code result = net::error::timed_out;
    stream.expires_after(std::chrono::seconds(3));
    stream.async_connect(net::ip::tcp::endpoint(addr, cfg.admin_listen->port), [&](boost::system::error_code e) {
        if (e) return void(result = e);
        http::async_write(stream, req, [&](boost::system::error_code e, std::size_t) {
            if (e) return void(result = e);
            http::async_read(stream, buffer, res, [&](boost::system::error_code e, std::size_t) { result = e; });
        });
    });
    ioc.run();
    if (result) {
        std::fprintf(stderr, "ifmatch-proxy: healthcheck: %s\n", result.message().c_str());
        return 1;
    }
    std::printf("%u %s", res.result_int(), res.body().c_str());
    return res.result() == http::status::ok ? 0 : 1;
}

// A core file (or a debugger attached by any process of the same user) would hand out the
// Redis password and whatever request bodies are in memory: off unless asked for.
void disable_core_dumps() {
    rlimit none{0, 0};
    if (::setrlimit(RLIMIT_CORE, &none) != 0) spdlog::warn("cannot disable core dumps: {}", std::strerror(errno));
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) spdlog::warn("cannot mark the process non-dumpable: {}", std::strerror(errno));
}

// A password written in the file is only as secret as the file: say so when others can read it.
void check_config_permissions(const std::string& path, const ifm::config::config& cfg) {
    if (cfg.store.password.empty()) return;
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find(cfg.store.password) == std::string::npos) return;   // from the environment
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || (st.st_mode & 077) == 0) return;
    spdlog::warn("{} contains the Redis password and is accessible to group or others (mode {:04o}): chmod 600 "
                 "it, or pass the password in IFM_REDIS_PASSWORD or as ${{VAR}}",
                 path, st.st_mode & 07777);
}

void watch_signals(boost::asio::signal_set& signals, ifm::proxy::server& srv, const std::string& path) {
    signals.async_wait([&signals, &srv, path](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
            spdlog::info("SIGHUP: reloading {}", path);
            if (auto cfg = load(path, true)) {
                if (auto why = srv.reload(std::move(*cfg)); !why.empty())
                    spdlog::error("reload refused, keeping the running configuration: {}", why);
            } else {
                srv.stats().count_reload(false);
                spdlog::error("reload refused, keeping the running configuration");
            }
        } else {
            // SIGTERM (Kubernetes, docker stop) keeps accepting for limits.drain_delay; SIGINT
            // (Ctrl-C) has nobody to wait for.
            srv.drain(sig == SIGINT);
        }
        watch_signals(signals, srv, path);
    });
}

}  // namespace

int main(int argc, char** argv) {
#ifdef IFM_MIMALLOC
    // Freed memory goes back to the OS after 1 s instead of mimalloc's 25 ms: a hashed 8 MiB body
    // otherwise faults its pages in anew on every request (bench/run's size scenario: 25 hashed
    // 8 MiB GETs/s against glibc's 41; 65 with this). MIMALLOC_DECOMMIT_DELAY still overrides.
    if (!std::getenv("MIMALLOC_DECOMMIT_DELAY") && !std::getenv("MIMALLOC_RESET_DELAY"))
        mi_option_set(mi_option_decommit_delay, 1000);
#endif
    // --config wins over IFM_CONFIG, which wins over the built-in default.
    std::string path = default_config;
    if (const char* env = std::getenv("IFM_CONFIG"); env && *env) path = env;
    bool check = false;
    bool probe = false;
    bool allow_core_dumps = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--config" && i + 1 < argc) {
            path = argv[++i];
        } else if (a.starts_with("--config=")) {
            path = a.substr(9);
        } else if (a == "--check-config") {
            check = true;
        } else if (a == "--healthcheck") {
            probe = true;
        } else if (a == "--allow-core-dumps") {
            allow_core_dumps = true;
        } else if (a == "--print-config-schema") {
            std::fputs(ifm::config::json_schema().c_str(), stdout);
            return 0;
        } else if (a == "--version") {
            std::printf("ifmatch-proxy %s (allocator: %s)\n", IFM_VERSION, allocator_name().c_str());
            return 0;
        } else if (a == "--help" || a == "-h") {
            usage(stdout);
            return 0;
        } else {
            std::fprintf(stderr, "ifmatch-proxy: unknown argument '%s'\n", a.c_str());
            usage(stderr);
            return 2;
        }
    }
    auto cfg = load(path, false);
    if (!cfg) return 1;
    if (probe) return healthcheck(*cfg);
    if (check) {
        check_config_permissions(path, *cfg);
        std::printf("%s: ok (%zu route(s), %zu upstream(s))\n", path.c_str(), cfg->routes.size(), cfg->upstreams.size());
        return 0;
    }
    std::signal(SIGPIPE, SIG_IGN);
    ifm::proxy::setup_logging(cfg->log);
    spdlog::info("ifmatch-proxy {} (allocator: {})", IFM_VERSION, allocator_name());
    if (!allow_core_dumps) disable_core_dumps();
    check_config_permissions(path, *cfg);
    try {
        ifm::proxy::server srv(std::move(*cfg));
        boost::asio::io_context main_ioc;
        boost::asio::signal_set signals(main_ioc, SIGTERM, SIGINT, SIGHUP);
        srv.start();
        watch_signals(signals, srv, path);
        std::thread waiter([&] {
            srv.wait();
            main_ioc.stop();
        });
        main_ioc.run();
        waiter.join();
        spdlog::info("stopped");
    } catch (const std::exception& e) {
        spdlog::critical("{}", e.what());
        return 1;
    }
    return 0;
}

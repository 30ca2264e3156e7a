// The binary's operational switches (issue 13): IFM_CONFIG, the password-in-a-readable-file
// warning, core dumps off unless --allow-core-dumps.
#include "tests/support/fake_origin.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

using namespace ifm::test;

namespace {

std::pair<int, std::string> shell(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    REQUIRE(p);
    char buf[4096];
    while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string write(const temp_dir& dir, const std::string& name, const std::string& text, mode_t mode) {
    auto path = dir.path() + "/" + name;
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
}

const std::string base = "upstreams:\n  legacy: { address: 127.0.0.1:3000 }\nroutes:\n  - upstream: legacy\n";

// "Max core file size" soft limit of a process, as /proc shows it.
std::string core_limit(const std::string& pid) {
    std::ifstream in("/proc/" + pid + "/limits");
    for (std::string line; std::getline(in, line);)
        if (line.starts_with("Max core file size")) {
            std::istringstream l(line.substr(18));
            std::string soft;
            l >> soft;
            return soft;
        }
    return "?";
}

}  // namespace

TEST_CASE("IFM_CONFIG names the configuration file when --config is absent") {
    temp_dir dir;
    auto a = write(dir, "a.yaml", base, 0600);
    auto b = write(dir, "b.yaml", base, 0600);
    auto [status, out] = shell("IFM_CONFIG=" + a + " " IFM_PROXY_BINARY " --check-config");
    INFO(out);
    CHECK(status == 0);
    CHECK(out.find(a + ": ok") != std::string::npos);
    auto [status2, out2] = shell("IFM_CONFIG=" + a + " " IFM_PROXY_BINARY " --config " + b + " --check-config");
    CHECK(status2 == 0);
    CHECK(out2.find(b + ": ok") != std::string::npos);   // --config wins
}

TEST_CASE("a password in a configuration file others can read is warned about") {
    temp_dir dir;
    auto open_file = write(dir, "open.yaml", base + "store: { password: s3cret-pw }\n", 0644);
    auto [s1, warned] = shell(IFM_PROXY_BINARY " --config " + open_file + " --check-config");
    INFO(warned);
    CHECK(s1 == 0);
    CHECK(warned.find("contains the Redis password and is accessible to group or others (mode 0644)") != std::string::npos);
    CHECK(warned.find("s3cret-pw") == std::string::npos);   // the warning never prints it

    auto closed = write(dir, "closed.yaml", base + "store: { password: s3cret-pw }\n", 0600);
    auto [s2, quiet] = shell(IFM_PROXY_BINARY " --config " + closed + " --check-config");
    CHECK(s2 == 0);
    CHECK(quiet.find("Redis password") == std::string::npos);

    // From the environment: the file holds no secret, whatever its mode.
    auto env = write(dir, "env.yaml", base + "store: { password: \"${IFM_T_PW}\" }\n", 0644);
    auto [s3, fine] = shell("IFM_T_PW=s3cret-pw " IFM_PROXY_BINARY " --config " + env + " --check-config");
    INFO(fine);
    CHECK(s3 == 0);
    CHECK(fine.find("Redis password") == std::string::npos);
}

TEST_CASE("core dumps are off unless --allow-core-dumps") {
    fake_origin origin;
    auto yaml = [&](std::uint16_t port) {
        return "listen: 127.0.0.1:" + std::to_string(port) + "\nupstreams:\n  o: { address: 127.0.0.1:" +
               std::to_string(origin.port()) + " }\nroutes:\n  - { upstream: o, track: false }\nlog: { level: warn }\n";
    };
    // Children inherit our limit: raise the soft one (as far as the hard one allows) so that
    // "off" is the proxy's doing.
    rlimit saved{};
    ::getrlimit(RLIMIT_CORE, &saved);
    rlimit raised = saved;
    raised.rlim_cur = saved.rlim_max;
    ::setrlimit(RLIMIT_CORE, &raised);
    struct restore_limit {
        rlimit r;
        ~restore_limit() { ::setrlimit(RLIMIT_CORE, &r); }
    } restore{saved};
    auto p1 = free_port();
    proxy_process off(yaml(p1), p1);
    CHECK(core_limit(std::to_string(off.pid())) == "0");
    auto mine = core_limit("self");
    if (mine == "0") {
        MESSAGE("this test process already has a core limit of 0: --allow-core-dumps not distinguishable");
        return;
    }
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer turns core dumps off at start-up (disable_coredump=1 on 64-bit) unless told
    // otherwise; the proxy's own choice is what this test is about.
    std::string saved_asan = std::getenv("ASAN_OPTIONS") ? std::getenv("ASAN_OPTIONS") : "";
    ::setenv("ASAN_OPTIONS", (saved_asan + (saved_asan.empty() ? "" : ":") + "disable_coredump=0").c_str(), 1);
    struct restore_env {
        std::string v;
        ~restore_env() { ::setenv("ASAN_OPTIONS", v.c_str(), 1); }
    } restore_asan{saved_asan};
#endif
    auto p2 = free_port();
    proxy_process on(yaml(p2), p2, {"--allow-core-dumps"});
    CHECK(core_limit(std::to_string(on.pid())) == mine);
}

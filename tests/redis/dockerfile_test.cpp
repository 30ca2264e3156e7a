// The container image, read from the Dockerfile: the runtime stages (`runtime`, the default
// target, and `prebuilt`, both FROM `runtime-base`) install a Debian package for every shared
// library the binary needs (ldd + dpkg -S on this Debian 12 machine, the build stage's
// distribution), and the paths and flags the Dockerfile uses are the binary's own.
// scripts/container-test builds and runs the image with podman.
#include "tests/support/proxy_process.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

using namespace ifm::test;

namespace {

namespace fs = std::filesystem;

// stdout of a shell command (stderr discarded) and its exit status.
std::pair<std::string, int> shell(const std::string& command) {
    std::string out;
    FILE* p = ::popen((command + " 2>/dev/null").c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    int status = ::pclose(p);
    return {out, status};
}

struct instruction {
    std::string keyword;   // upper-case: FROM, RUN, COPY...
    std::string args;      // continuation lines joined
};

struct stage {
    std::string from;      // image
    std::string name;      // AS name
    std::vector<instruction> body;
};

std::vector<stage> parse_dockerfile(const std::string& text) {
    std::vector<stage> stages;
    std::istringstream in(text);
    std::string logical;
    for (std::string line; std::getline(in, line);) {
        auto first = line.find_first_not_of(" \t");
        if (first == std::string::npos || line[first] == '#') continue;
        logical += line.substr(first);
        if (!logical.empty() && logical.back() == '\\') {
            logical.pop_back();
            logical += ' ';
            continue;
        }
        auto sp = logical.find(' ');
        instruction ins{logical.substr(0, sp), sp == std::string::npos ? "" : logical.substr(sp + 1)};
        for (auto& ch : ins.keyword) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        logical.clear();
        if (ins.keyword == "FROM") {
            std::istringstream a(ins.args);
            stage s;
            std::string as;
            a >> s.from >> as >> s.name;
            stages.push_back(std::move(s));
        } else {
            REQUIRE_MESSAGE(!stages.empty(), "instruction before FROM: " << ins.keyword);
            stages.back().body.push_back(std::move(ins));
        }
    }
    return stages;
}

std::vector<std::string> words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

// Packages named by `apt-get install` commands in a stage's RUN instructions.
std::set<std::string> installed_packages(const stage& s) {
    std::set<std::string> pkgs;
    for (const auto& ins : s.body) {
        if (ins.keyword != "RUN") continue;
        auto w = words(ins.args);
        for (std::size_t i = 0; i + 1 < w.size(); ++i) {
            if (w[i] != "install" || i == 0 || w[i - 1] != "apt-get") continue;
            for (std::size_t j = i + 1; j < w.size() && w[j] != "&&" && w[j] != ";"; ++j)
                if (!w[j].starts_with("-")) pkgs.insert(w[j]);
        }
    }
    return pkgs;
}

// ["a", "b"] -> {a, b}
std::vector<std::string> exec_form(const std::string& args) {
    std::vector<std::string> out;
    auto open = args.find('[');
    REQUIRE_MESSAGE(open != std::string::npos, "not in exec form: " << args);
    for (auto q = args.find('"', open); q != std::string::npos; q = args.find('"', q + 1)) {
        auto end = args.find('"', q + 1);
        REQUIRE(end != std::string::npos);
        out.push_back(args.substr(q + 1, end - q - 1));
        q = end;
    }
    return out;
}

// The stage named `name`, with the instructions of the stages it is built FROM before its own (a
// stage built FROM another inherits its files and its USER, EXPOSE, HEALTHCHECK, ENTRYPOINT...);
// `from` becomes the image the chain starts from.
stage resolved(const std::vector<stage>& stages, const std::string& name) {
    auto named = [&](const std::string& n) {
        return std::find_if(stages.begin(), stages.end(), [&](const stage& s) { return s.name == n; });
    };
    auto it = named(name);
    REQUIRE_MESSAGE(it != stages.end(), "no stage named " << name);
    stage out = *it;
    for (int depth = 0; depth < 10; ++depth) {
        auto base = named(out.from);
        if (base == stages.end() || base >= it) break;
        out.body.insert(out.body.begin(), base->body.begin(), base->body.end());
        out.from = base->from;
        it = base;
    }
    return out;
}

const instruction* find(const stage& s, const std::string& keyword) {
    const instruction* last = nullptr;
    for (const auto& ins : s.body)
        if (ins.keyword == keyword) last = &ins;
    return last;
}

// The Debian package that ships `path` (trying the /lib <-> /usr/lib merged-usr aliases).
std::string package_of(const std::string& path) {
    std::vector<std::string> candidates{path};
    std::error_code ec;
    auto real = fs::canonical(path, ec);
    if (!ec) candidates.push_back(real.string());
    for (auto c : std::vector<std::string>(candidates)) {
        if (c.starts_with("/usr/lib/")) candidates.push_back(c.substr(4));
        else if (c.starts_with("/lib")) candidates.push_back("/usr" + c);
    }
    for (const auto& c : candidates) {
        auto [out, status] = shell("dpkg -S '" + c + "'");
        if (status == 0 && out.find(':') != std::string::npos) return out.substr(0, out.find(':'));
    }
    return {};
}

}  // namespace

TEST_CASE("Dockerfile: the runtime stages install every shared library the binary needs") {
    auto stages = parse_dockerfile(read_text_file(std::string(IFM_SOURCE_DIR) + "/Dockerfile"));
    REQUIRE(stages.size() >= 2);
    const auto& build = stages.front();
    // The last stage is what `docker build .` makes.
    CHECK(stages.back().name == "runtime");
    auto runtime = resolved(stages, stages.back().name);
    auto prebuilt = resolved(stages, "prebuilt");
    CHECK(build.from == "debian:12");
    CHECK(runtime.from == "debian:12-slim");
    CHECK(prebuilt.from == "debian:12-slim");
    CHECK(installed_packages(prebuilt) == installed_packages(runtime));
    auto runtime_pkgs = installed_packages(runtime);
    CAPTURE(runtime_pkgs.size());
    for (const auto& p : runtime_pkgs) {
        INFO(p);
        CHECK_FALSE(p.ends_with("-dev"));   // slim: libraries only, no headers or toolchain
        CHECK(p != "build-essential");
        CHECK(p != "cmake");
    }

    auto [ldd, status] = shell("ldd '" IFM_PROXY_BINARY "'");
    REQUIRE(status == 0);
    std::istringstream lines(ldd);
    int libraries = 0;
    for (std::string line; std::getline(lines, line);) {
        // "\tlibfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" or "\t/lib64/ld-linux-x86-64.so.2 (0x...)"
        auto w = words(line);
        if (w.empty() || w[0].starts_with("linux-vdso") || w[0].starts_with("linux-gate")) continue;
        std::string path = w.size() >= 3 && w[1] == "=>" ? w[2] : w[0];
        REQUIRE_MESSAGE(path.starts_with("/"), "unresolved library: " << line);
#if defined(__SANITIZE_ADDRESS__)
        // The sanitizer runtimes of an IFM_SANITIZE build are not part of the product.
        if (path.find("libasan") != std::string::npos || path.find("libubsan") != std::string::npos) continue;
#endif
        auto pkg = package_of(path);
        INFO(line);
        REQUIRE_MESSAGE(!pkg.empty(), "no Debian package ships " << path);
        ++libraries;
        // libc6 is in every Debian image (the essential set needs it).
        if (pkg == "libc6") continue;
        CHECK_MESSAGE(runtime_pkgs.count(pkg) == 1, "the runtime stage does not install " << pkg << " (for " << path << ")");
    }
    CHECK(libraries >= 5);   // libc, libstdc++, spdlog, yaml-cpp, OpenSSL...
}

TEST_CASE("Dockerfile: non-root, ports, health check, signals, and the binary's own paths and flags") {
    auto dockerfile = read_text_file(std::string(IFM_SOURCE_DIR) + "/Dockerfile");
    auto stages = parse_dockerfile(dockerfile);
    REQUIRE(stages.size() >= 2);
    const auto& build = stages.front();
    auto runtime = resolved(stages, stages.back().name);

    // `runtime` (the binary of the build stage) and `prebuilt` (a binary from the build context,
    // scripts/container-test) are runtime-base plus one COPY each: the metadata checked below is
    // the same in both images.
    for (const auto* name : {"runtime", "prebuilt"}) {
        INFO(name);
        auto it = std::find_if(stages.begin(), stages.end(), [&](const stage& s) { return s.name == name; });
        REQUIRE(it != stages.end());
        CHECK(it->from == "runtime-base");
        REQUIRE(it->body.size() == 1);
        CHECK(it->body[0].keyword == "COPY");
    }
    auto prebuilt = resolved(stages, "prebuilt");

    // --help names the flags and the default configuration path.
    auto help = proxy_process::run_once("", {"--help"});
    REQUIRE(help.status == 0);
    auto def = help.log.find("(default ");
    REQUIRE(def != std::string::npos);
    auto default_config = help.log.substr(def + 9, help.log.find(')', def) - def - 9);
    CHECK(default_config == "/etc/ifmatch-proxy/config.yaml");

    auto user = find(runtime, "USER");
    REQUIRE(user);
    auto uid = user->args.substr(0, user->args.find(':'));
    CHECK(uid != "root");
    CHECK(uid != "0");

    auto entry = find(runtime, "ENTRYPOINT");
    auto cmd = find(runtime, "CMD");
    auto health = find(runtime, "HEALTHCHECK");
    REQUIRE(entry);
    REQUIRE(cmd);
    REQUIRE(health);
    auto entry_argv = exec_form(entry->args);
    REQUIRE(entry_argv.size() == 1);
    auto binary = entry_argv[0];
    // The binary is the build stage's, copied to where ENTRYPOINT runs it.
    bool copied = false;
    for (const auto& ins : runtime.body) {
        auto w = words(ins.args);
        if (ins.keyword == "COPY" && w.size() == 3 && w[0] == "--from=" + build.name && w[2] == binary) copied = true;
    }
    CHECK_MESSAGE(copied, "no COPY --from=" << build.name << " ... " << binary);
    auto prebuilt_copy = words(prebuilt.body.back().args);
    CHECK(prebuilt_copy == std::vector<std::string>{"ifmatch-proxy", binary});

    auto check_flags = [&](const std::vector<std::string>& argv) {
        for (std::size_t i = 0; i < argv.size(); ++i) {
            if (!argv[i].starts_with("--")) continue;
            INFO(argv[i]);
            CHECK(help.log.find("  " + argv[i]) != std::string::npos);
            if (argv[i] == "--config") {
                REQUIRE(i + 1 < argv.size());
                CHECK(argv[i + 1] == default_config);
            }
        }
    };
    auto cmd_argv = exec_form(cmd->args);
    check_flags(cmd_argv);
    auto health_argv = exec_form(health->args.substr(health->args.find("CMD")));
    REQUIRE(health_argv.size() >= 2);
    CHECK(health_argv[0] == binary);
    CHECK(std::find(health_argv.begin(), health_argv.end(), "--healthcheck") != health_argv.end());
    check_flags(health_argv);

    auto expose = find(runtime, "EXPOSE");
    REQUIRE(expose);
    auto ports = words(expose->args);
    CHECK(std::find(ports.begin(), ports.end(), "8080") != ports.end());
    CHECK(std::find(ports.begin(), ports.end(), "9901") != ports.end());
    auto stop = find(runtime, "STOPSIGNAL");
    REQUIRE(stop);
    CHECK(stop->args == "SIGTERM");

    // The build stage copies every source folder the library globs (tests are off in the image),
    // and .dockerignore lets them through.
    auto cmake = read_text_file(std::string(IFM_SOURCE_DIR) + "/CMakeLists.txt");
    auto ignore = read_text_file(std::string(IFM_SOURCE_DIR) + "/.dockerignore");
    std::set<std::string> copied_dirs;
    for (const auto& ins : build.body)
        if (ins.keyword == "COPY") copied_dirs.insert(words(ins.args).front());
    CHECK(copied_dirs.count("CMakeLists.txt") == 1);
    CHECK(ignore.find("!CMakeLists.txt") != std::string::npos);
    for (auto pos = cmake.find("${CMAKE_SOURCE_DIR}/"); pos != std::string::npos;
         pos = cmake.find("${CMAKE_SOURCE_DIR}/", pos + 1)) {
        auto rest = cmake.substr(pos + 20);
        auto dir = rest.substr(0, rest.find_first_of("/ )\n"));
        if (dir.empty() || dir == "tests" || rest[dir.size()] != '/') continue;
        INFO(dir);
        CHECK(copied_dirs.count(dir + "/") == 1);
        CHECK(ignore.find("!" + dir + "/") != std::string::npos);
    }
}

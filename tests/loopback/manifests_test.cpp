// examples/kubernetes/deployment-*.yaml (issue 13): the Deployments agree with the binary (its
// flags, the admin port and paths of the configuration they carry) and with the shutdown
// sequence the proxy implements (drain_delay, drain_timeout, preStop, grace period).
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <map>

using namespace ifm::test;

namespace {

namespace fs = std::filesystem;
const fs::path kubernetes = fs::path(IFM_SOURCE_DIR) / "examples" / "kubernetes";

std::string binary_help() {
    std::string out;
    FILE* p = ::popen(IFM_PROXY_BINARY " --help 2>&1", "r");
    REQUIRE(p);
    char buf[4096];
    while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    ::pclose(p);
    return out;
}

std::uint16_t port_of(const YAML::Node& cfg, const std::string& key) {
    auto text = cfg[key].as<std::string>();
    return static_cast<std::uint16_t>(std::stoi(text.substr(text.rfind(':') + 1)));
}

// Seconds of a duration literal as the configuration writes them here ("5s", "500ms").
double seconds_of(const YAML::Node& n, double fallback) {
    if (!n) return fallback;
    auto text = n.as<std::string>();
    if (text.ends_with("ms")) return std::stod(text.substr(0, text.size() - 2)) / 1000;
    if (text.ends_with("s")) return std::stod(text.substr(0, text.size() - 1));
    FAIL("unexpected duration " << text);
    return 0;
}

struct deployment_manifest {
    std::string config_text;
    YAML::Node config, deployment, pdb, service, proxy, app;
    bool native = false;   // the proxy is an init container with restartPolicy: Always
};

deployment_manifest read_deployment(const fs::path& file) {
    deployment_manifest m;
    for (const auto& doc : YAML::LoadAllFromFile(file.string())) {
        auto kind = doc["kind"].as<std::string>();
        if (kind == "ConfigMap") m.config_text = doc["data"]["config.yaml"].as<std::string>();
        else if (kind == "Deployment") m.deployment = doc;
        else if (kind == "PodDisruptionBudget") m.pdb = doc;
        else if (kind == "Service") m.service = doc;
    }
    REQUIRE(!m.config_text.empty());
    REQUIRE(m.deployment);
    m.config = YAML::Load(m.config_text);
    auto spec = m.deployment["spec"]["template"]["spec"];
    for (const auto& c : spec["initContainers"])
        if (c["name"].as<std::string>() == "ifmatch-proxy") {
            m.proxy = YAML::Clone(c);
            m.native = true;
        }
    for (const auto& c : spec["containers"]) {
        auto name = c["name"].as<std::string>();
        if (name == "ifmatch-proxy") m.proxy = YAML::Clone(c);
        else if (name == "app") m.app = YAML::Clone(c);
    }
    REQUIRE(m.proxy);
    REQUIRE(m.app);
    return m;
}

}  // namespace

TEST_CASE("examples/kubernetes: both Deployment forms agree with the binary, the config and the drain") {
    auto help = binary_help();
    REQUIRE(help.find("--config PATH") != std::string::npos);
    REQUIRE(help.find("--check-config") != std::string::npos);
    for (auto [file, native] : {std::pair{"deployment-native-sidecar.yaml", true}, std::pair{"deployment-classic.yaml", false}}) {
        CAPTURE(file);
        auto m = read_deployment(kubernetes / file);
        CHECK(m.native == native);
        if (native) CHECK(m.proxy["restartPolicy"].as<std::string>() == "Always");

        // The configuration is valid for this binary.
        auto checked = proxy_process::run_once(m.config_text, {"--check-config"});
        INFO(checked.log);
        CHECK(checked.status == 0);

        // Flags and paths: --config points at the mounted ConfigMap's file.
        auto args = m.proxy["args"].as<std::vector<std::string>>();
        REQUIRE(args.size() == 2);
        CHECK(args[0] == "--config");
        std::string mount;
        for (const auto& vm : m.proxy["volumeMounts"])
            if (vm["name"].as<std::string>() == "config") mount = vm["mountPath"].as<std::string>();
        CHECK(args[1] == mount + "/config.yaml");
        std::string configmap;
        for (const auto& v : m.deployment["spec"]["template"]["spec"]["volumes"])
            if (v["name"].as<std::string>() == "config") configmap = v["configMap"]["name"].as<std::string>();
        CHECK(!configmap.empty());

        // Ports and probes on the admin listener, which the kubelet can reach (the Pod IP).
        std::map<std::string, int> ports;
        for (const auto& p : m.proxy["ports"]) ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
        CHECK(ports["http"] == port_of(m.config, "listen"));
        CHECK(ports["admin"] == port_of(m.config, "admin_listen"));
        CHECK(m.config["admin_listen"].as<std::string>().starts_with("0.0.0.0:"));
        CHECK(m.proxy["readinessProbe"]["httpGet"]["path"].as<std::string>() == "/readyz");
        CHECK(m.proxy["readinessProbe"]["httpGet"]["port"].as<std::string>() == "admin");
        CHECK(m.proxy["livenessProbe"]["httpGet"]["path"].as<std::string>() == "/healthz");
        CHECK(m.proxy["livenessProbe"]["httpGet"]["port"].as<std::string>() == "admin");
        CHECK(m.service["spec"]["ports"][0]["targetPort"].as<std::string>() == "http");

        // Hardening.
        auto pod_sc = m.deployment["spec"]["template"]["spec"]["securityContext"];
        CHECK(pod_sc["runAsNonRoot"].as<bool>());
        CHECK(pod_sc["seccompProfile"]["type"].as<std::string>() == "RuntimeDefault");
        CHECK(m.proxy["securityContext"]["runAsNonRoot"].as<bool>());
        CHECK(m.proxy["securityContext"]["seccompProfile"]["type"].as<std::string>() == "RuntimeDefault");
        CHECK_FALSE(m.proxy["securityContext"]["allowPrivilegeEscalation"].as<bool>());
        CHECK(m.proxy["securityContext"]["readOnlyRootFilesystem"].as<bool>());

        // The PodDisruptionBudget covers these Pods.
        REQUIRE(m.pdb);
        CHECK(m.pdb["spec"]["selector"]["matchLabels"]["app"].as<std::string>() ==
              m.deployment["spec"]["template"]["metadata"]["labels"]["app"].as<std::string>());

        // The shutdown sequence fits: the app's preStop covers what the proxy needs of it, and
        // the grace period covers the whole sequence.
        auto delay = seconds_of(m.config["limits"]["drain_delay"], 5);
        auto timeout = seconds_of(m.config["limits"]["drain_timeout"], 30);
        auto pre_stop = m.app["lifecycle"]["preStop"]["exec"]["command"].as<std::vector<std::string>>();
        REQUIRE(pre_stop.size() == 2);
        CHECK(pre_stop[0] == "/bin/sleep");
        auto sleep = std::stod(pre_stop[1]);
        auto grace = m.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as<double>();
        if (native) {
            // The app stops first (after its preStop), the proxy after it.
            CHECK(sleep >= delay);
            CHECK(grace > sleep + delay + timeout);
        } else {
            // Both get SIGTERM together: the app must outlive the proxy's whole drain.
            CHECK(sleep >= delay + timeout);
            CHECK(grace > sleep);
            CHECK(grace > delay + timeout);
        }
    }
}

#include "tests/support/certificates.hpp"

#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace ifm::test {

namespace {
void run(const std::string& command) {
    if (std::system((command + " >/dev/null 2>&1").c_str()) != 0) throw std::runtime_error("failed: " + command);
}
}  // namespace

certificates::certificates() {
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    run("openssl req -x509 " + key + " -days 1 -subj /CN=test-ca -keyout " + path("ca.key") + " -out " +
        path("ca.pem"));
    std::ofstream(path("san.ext")) << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    for (std::string who : {"server", "client"}) {
        run("openssl req " + key + " -subj /CN=" + (who == "server" ? "localhost" : "proxy") + " -keyout " +
            path(who + ".key") + " -out " + path(who + ".csr"));
        run("openssl x509 -req -days 1 -in " + path(who + ".csr") + " -CA " + path("ca.pem") + " -CAkey " +
            path("ca.key") + " -CAcreateserial -out " + path(who + ".pem") +
            (who == "server" ? " -extfile " + path("san.ext") : std::string()));
    }
    run("openssl req -x509 " + key + " -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
        " -keyout " + path("rogue.key") + " -out " + path("rogue.pem"));
}

nginx_options certificates::origin(bool rogue, bool client_ca) const {
    nginx_options o;
    o.tls_certificate = path(rogue ? "rogue.pem" : "server.pem");
    o.tls_key = path(rogue ? "rogue.key" : "server.key");
    if (client_ca) o.client_ca = path("ca.pem");
    return o;
}

}  // namespace ifm::test

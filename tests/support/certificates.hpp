// Test certificates made by the openssl command line tool, per test case: a CA, a server
// certificate it signed (localhost and 127.0.0.1), a client certificate it signed, and a
// self-signed server certificate for the same names that no CA vouches for ("rogue").
// EC keys: quick to make.
#pragma once

#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"

#include <string>

namespace ifm::test {

struct certificates {
    temp_dir dir;
    std::string path(const std::string& name) const { return dir.path() + "/" + name; }

    certificates();

    // nginx serving TLS with the server (or the rogue) certificate; with client_ca, it requires
    // a client certificate signed by the CA.
    nginx_options origin(bool rogue = false, bool client_ca = false) const;
};

}  // namespace ifm::test

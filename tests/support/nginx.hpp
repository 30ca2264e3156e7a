#pragma once
// Debian's nginx as a WebDAV origin on a free loopback port: the real legacy backend whose
// "<hex mtime>-<hex size>" ETag does not change on same-size writes within one second.
#include <cstdint>
#include <memory>
#include <string>

#include "tests/support/process.hpp"

namespace ifm::test {

struct nginx_options {
  bool gzip = false;        // gzip responses to clients that accept it (any type, any size)
  bool copy_move = false;   // dav_methods also COPY and MOVE
  // TLS on the listening port when both are set (PEM files); with client_ca, a client
  // certificate signed by it is required (ssl_verify_client on).
  std::string tls_certificate, tls_key, client_ca;
};

class nginx_webdav {
 public:
  // Started; throws with nginx's error log if it does not accept within 10 s.
  explicit nginx_webdav(nginx_options options = {});
  ~nginx_webdav();
  nginx_webdav(const nginx_webdav&) = delete;
  nginx_webdav& operator=(const nginx_webdav&) = delete;

  std::uint16_t port() const { return port_; }
  std::string root() const;  // document root; files written here are served
  void stop();               // SIGTERM, then SIGKILL after 5 s; idempotent
  void start();              // again on the same port and root
  bool running();
  std::string error_log() const;

 private:
  temp_dir dir_;
  std::uint16_t port_;
  std::unique_ptr<child_process> child_;
};

}  // namespace ifm::test

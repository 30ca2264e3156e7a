#pragma once
// Debian's Apache httpd with mod_dav + mod_dav_fs as a WebDAV origin with locks (RFC 4918) on a
// free loopback port: the origin that evaluates `If` headers, lock tokens and entity-tags alike.
#include <cstdint>
#include <memory>
#include <string>

#include "tests/support/process.hpp"

namespace ifm::test {

class apache_webdav {
 public:
  apache_webdav();  // started; throws with Apache's error log if it does not accept within 10 s
  ~apache_webdav();
  apache_webdav(const apache_webdav&) = delete;
  apache_webdav& operator=(const apache_webdav&) = delete;

  std::uint16_t port() const { return port_; }
  std::string root() const;  // document root (Dav On); files written here are served
  void stop();               // SIGTERM, then SIGKILL after 5 s; idempotent
  void start();              // again on the same port, root and lock database
  bool running();
  std::string error_log() const;
  std::string access_log() const;  // "METHOD /path STATUS" per request, written when each ends

 private:
  temp_dir dir_;
  std::uint16_t port_;
  std::unique_ptr<child_process> child_;
};

// The body of a LOCK request for an exclusive write lock (RFC 4918 §9.10.7).
std::string exclusive_lock_body(const std::string& owner = "ifm-test");

}  // namespace ifm::test

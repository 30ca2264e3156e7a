#include "tests/support/nginx.hpp"

#include <csignal>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "tests/support/proxy_process.hpp"  // read_text_file, tail_lines

namespace ifm::test {

namespace {

// Everything nginx writes lives in the temp dir: runs as root without touching /var or /etc.
std::string config_text(const std::string& dir, std::uint16_t port, const nginx_options& o) {
  return "user root;\n"
         "worker_processes 1;\n"
         "master_process off;\n"  // one process: SIGKILL leaves no orphaned worker on the port
         "pid " + dir + "/nginx.pid;\n"
         "error_log " + dir + "/error.log warn;\n"
         "events { worker_connections 1024; }\n"
         "http {\n"
         "  access_log off;\n"
         "  client_body_temp_path " + dir + "/client_body;\n"
         "  proxy_temp_path " + dir + "/proxy;\n"
         "  fastcgi_temp_path " + dir + "/fastcgi;\n"
         "  uwsgi_temp_path " + dir + "/uwsgi;\n"
         "  scgi_temp_path " + dir + "/scgi;\n"
         "  default_type application/octet-stream;\n" +
         (o.gzip ? std::string("  gzip on;\n  gzip_types *;\n  gzip_min_length 1;\n  gzip_vary on;\n  gzip_proxied any;\n") : std::string()) +
         "  server {\n"
         "    listen 127.0.0.1:" + std::to_string(port) + (o.tls_certificate.empty() ? "" : " ssl") + ";\n" +
         (o.tls_certificate.empty() ? std::string()
                                    : "    ssl_certificate " + o.tls_certificate + ";\n"
                                      "    ssl_certificate_key " + o.tls_key + ";\n") +
         (o.client_ca.empty() ? std::string()
                              : "    ssl_verify_client on;\n    ssl_client_certificate " + o.client_ca + ";\n") +
         "    root " + dir + "/root;\n"
         "    dav_methods PUT DELETE MKCOL" + std::string(o.copy_move ? " COPY MOVE" : "") + ";\n"
         "    create_full_put_path on;\n"
         "    client_max_body_size 16m;\n"
         "    etag on;\n"
         "    keepalive_requests 100000;\n"
         "  }\n"
         "}\n";
}

}  // namespace

nginx_webdav::nginx_webdav(nginx_options options) : port_(free_port()) {
  std::filesystem::create_directories(root());
  std::ofstream(dir_.path() + "/nginx.conf") << config_text(dir_.path(), port_, options);
  start();
}

nginx_webdav::~nginx_webdav() { stop(); }

std::string nginx_webdav::root() const { return dir_.path() + "/root"; }

std::string nginx_webdav::error_log() const { return read_text_file(dir_.path() + "/error.log"); }

bool nginx_webdav::running() { return child_ && child_->running(); }

void nginx_webdav::start() {
  if (running()) return;
  const auto& dir = dir_.path();
  child_ = std::make_unique<child_process>(
      std::vector<std::string>{"/usr/sbin/nginx", "-p", dir, "-e", dir + "/error.log", "-c", dir + "/nginx.conf",
                               "-g", "daemon off;"},
      dir + "/stdout.log");
  if (!wait_for_port(port_, std::chrono::seconds(10))) {
    child_->kill();
    throw std::runtime_error("nginx not accepting on port " + std::to_string(port_) + "; error log:\n" +
                             tail_lines(error_log()) + tail_lines(read_text_file(dir + "/stdout.log")));
  }
}

void nginx_webdav::stop() {
  if (!child_) return;
  if (child_->running()) {
    child_->signal(SIGTERM);
    child_->wait(std::chrono::seconds(5));
    if (child_->running()) child_->kill();
  }
  child_.reset();
}

}  // namespace ifm::test

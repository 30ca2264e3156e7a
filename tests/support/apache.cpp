#include "tests/support/apache.hpp"

#include <csignal>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include "tests/support/proxy_process.hpp"  // read_text_file, tail_lines

namespace ifm::test {

namespace {

constexpr const char* modules = "/usr/lib/apache2/modules";

// Everything Apache writes lives in the temp dir: nothing under /etc/apache2 or /var is read or
// touched (Debian's apache2ctl and envvars are bypassed: the binary gets -f and -d).
std::string config_text(const std::string& dir, std::uint16_t port, const std::string& user,
                        const std::string& group) {
  std::string c =
      "ServerRoot " + dir + "\n"
      "ServerName 127.0.0.1\n"
      "Listen 127.0.0.1:" + std::to_string(port) + "\n"
      "PidFile " + dir + "/run/httpd.pid\n"
      "DefaultRuntimeDir " + dir + "/run\n"
      "ErrorLog " + dir + "/error.log\n"
      "LogLevel warn\n"
      // One line per request: what reached the origin (tests count forwarded writes).
      "LogFormat \"%m %U %>s\" ifm\n"
      "CustomLog " + dir + "/access.log ifm\n";
  for (const char* m : {"mpm_event", "authz_core", "dav", "dav_fs", "dav_lock", "dir", "mime", "unixd"}) {
    const std::string file = std::string(modules) + "/mod_" + m + ".so";
    // unixd (User/Group) and log_config are built into Debian's httpd; a module is loaded only
    // where it is one.
    if (std::filesystem::exists(file)) c += "LoadModule " + std::string(m) + "_module " + file + "\n";
  }
  // Started as root (CI), httpd's children switch to User/Group, which must own what they write;
  // started as anyone else, the directives are ignored.
  if (!user.empty()) c += "User " + user + "\nGroup " + group + "\n";
  c += "TypesConfig /dev/null\n"  // no /etc/mime.types needed
       "StartServers 1\n"
       "ServerLimit 1\n"
       "ThreadsPerChild 32\n"
       "MaxRequestWorkers 32\n"
       "MinSpareThreads 1\n"  // the defaults exceed MaxRequestWorkers (a warning per start)
       "MaxSpareThreads 32\n"
       "KeepAlive On\n"
       "MaxKeepAliveRequests 0\n"
       "DocumentRoot " + dir + "/root\n"
       "DAVLockDB " + dir + "/locks/DAVLock\n"
       "<Directory " + dir + "/root>\n"
       "  Dav On\n"
       "  Require all granted\n"
       "</Directory>\n";
  return c;
}

// The unprivileged account httpd's children run as when started by root.
std::pair<std::string, std::string> child_account() {
  if (::geteuid() != 0) return {};
  for (const char* name : {"www-data", "nobody"}) {
    if (const passwd* pw = ::getpwnam(name)) {
      const group* gr = ::getgrgid(pw->pw_gid);
      return {name, gr ? gr->gr_name : std::to_string(pw->pw_gid)};
    }
  }
  throw std::runtime_error("apache: running as root and neither www-data nor nobody exists");
}

void give_to(const std::string& path, const std::string& user) {
  const passwd* pw = ::getpwnam(user.c_str());
  if (!pw || ::chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0)
    throw std::runtime_error("apache: cannot chown " + path + " to " + user);
}

}  // namespace

std::string exclusive_lock_body(const std::string& owner) {
  return "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
         "<D:lockinfo xmlns:D=\"DAV:\">\n"
         "  <D:lockscope><D:exclusive/></D:lockscope>\n"
         "  <D:locktype><D:write/></D:locktype>\n"
         "  <D:owner>" + owner + "</D:owner>\n"
         "</D:lockinfo>\n";
}

apache_webdav::apache_webdav() : port_(free_port()) {
  const auto& dir = dir_.path();
  std::filesystem::create_directories(root());
  std::filesystem::create_directories(dir + "/locks");
  std::filesystem::create_directories(dir + "/run");
  auto [user, group] = child_account();
  if (!user.empty()) {
    // mkdtemp makes the dir 0700: the children must get through it to the root and the lock DB.
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_exec |
                                          std::filesystem::perms::others_exec);
    give_to(root(), user);
    give_to(dir + "/locks", user);
  }
  std::ofstream(dir + "/httpd.conf") << config_text(dir, port_, user, group);
  start();
}

apache_webdav::~apache_webdav() { stop(); }

std::string apache_webdav::root() const { return dir_.path() + "/root"; }

std::string apache_webdav::error_log() const { return read_text_file(dir_.path() + "/error.log"); }

std::string apache_webdav::access_log() const { return read_text_file(dir_.path() + "/access.log"); }

bool apache_webdav::running() { return child_ && child_->running(); }

void apache_webdav::start() {
  if (running()) return;
  const auto& dir = dir_.path();
  // A pid file left by a SIGKILLed run would make httpd complain; it is ours alone.
  std::filesystem::remove(dir + "/run/httpd.pid");
  // -DFOREGROUND: httpd stays the child we started (no daemon fork); its children share our
  // process group, so child_process::kill() reaps them too.
  child_ = std::make_unique<child_process>(
      std::vector<std::string>{"/usr/sbin/apache2", "-d", dir, "-f", dir + "/httpd.conf", "-DFOREGROUND"},
      dir + "/stdout.log");
  if (!wait_for_port(port_, std::chrono::seconds(10))) {
    child_->kill();
    throw std::runtime_error("apache not accepting on port " + std::to_string(port_) + "; error log:\n" +
                             tail_lines(error_log()) + tail_lines(read_text_file(dir + "/stdout.log")));
  }
}

void apache_webdav::stop() {
  if (!child_) return;
  if (child_->running()) {
    child_->signal(SIGTERM);
    child_->wait(std::chrono::seconds(5));
    if (child_->running()) child_->kill();
  }
  child_.reset();
}

}  // namespace ifm::test

#include "tests/support/proxy_process.hpp"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace ifm::test {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string tail_lines(const std::string& text, std::size_t n) {
  auto pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  while (n > 0 && pos > 0) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
    --n;
  }
  return n == 0 ? text.substr(pos + 1) : text;
}

namespace {

std::string write_config(const temp_dir& dir, const std::string& yaml) {
  auto path = dir.path() + "/config.yaml";
  std::ofstream(path, std::ios::binary) << yaml;
  return path;
}

std::vector<std::string> proxy_argv(const std::string& config, std::vector<std::string> extra) {
  std::vector<std::string> argv{IFM_PROXY_BINARY, "--config", config};
  argv.insert(argv.end(), std::make_move_iterator(extra.begin()), std::make_move_iterator(extra.end()));
  return argv;
}

}  // namespace

proxy_process::proxy_process(std::string yaml, std::uint16_t port, std::vector<std::string> extra_args,
                             std::vector<std::string> prefix)
    : port_(port), config_path_(write_config(dir_, yaml)), log_path_(dir_.path() + "/proxy.log") {
  auto argv = proxy_argv(config_path_, std::move(extra_args));
  argv.insert(argv.begin(), std::make_move_iterator(prefix.begin()), std::make_move_iterator(prefix.end()));
  child_ = std::make_unique<child_process>(std::move(argv), log_path_);
  // Poll in slices so a proxy that exits at once (bad config) fails fast with its log.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!wait_for_port(port_, std::chrono::milliseconds(100))) {
    if (!child_->running() || std::chrono::steady_clock::now() >= deadline) {
      const bool exited = !child_->running();
      child_->kill();
      throw std::runtime_error(std::string("ifmatch-proxy ") + (exited ? "exited" : "not accepting after 10 s") +
                               " on port " + std::to_string(port_) + "; log tail:\n" + tail_lines(log()));
    }
  }
}

proxy_process::~proxy_process() {
  if (!child_ || !child_->running()) return;
  // SIGINT first, so a sanitizer build gets to report leaks and errors at exit. (SIGINT drains
  // at once; SIGTERM would keep accepting for limits.drain_delay first.)
  child_->signal(SIGINT);
  int status = child_->wait(std::chrono::seconds(5));
  if (child_->running()) {
    child_->kill();
    std::fprintf(stderr, "ifmatch-proxy (port %u) ignored SIGINT for 5 s; log tail:\n%s\n", port_,
                 tail_lines(log()).c_str());
  } else if (status != 0) {
    std::fprintf(stderr, "ifmatch-proxy (port %u) exited with status %d; log tail:\n%s\n", port_, status,
                 tail_lines(log()).c_str());
  }
}

pid_t proxy_process::pid() const { return child_->pid(); }
bool proxy_process::running() { return child_->running(); }
void proxy_process::kill() { child_->kill(); }
void proxy_process::terminate() { child_->signal(SIGTERM); }
int proxy_process::wait(std::chrono::milliseconds timeout) { return child_->wait(timeout); }
std::string proxy_process::log() const { return read_text_file(log_path_); }

proxy_process::outcome proxy_process::run_once(std::string yaml, std::vector<std::string> args,
                                               std::chrono::milliseconds timeout) {
  temp_dir dir;
  auto config = write_config(dir, yaml);
  auto log_path = dir.path() + "/proxy.log";
  child_process child(proxy_argv(config, std::move(args)), log_path);
  int status = child.wait(timeout);
  if (child.running()) {
    child.kill();
    throw std::runtime_error("ifmatch-proxy did not exit; log tail:\n" + tail_lines(read_text_file(log_path)));
  }
  return {status, read_text_file(log_path)};
}

}  // namespace ifm::test

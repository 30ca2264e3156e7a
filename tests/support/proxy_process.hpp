#pragma once
// The real ifmatch-proxy binary as a child process, configured from YAML text.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace ifm::test {

class proxy_process {
 public:
  // `yaml` must listen on 127.0.0.1:<port>; returns once the port accepts, else throws with the
  // tail of the proxy's log (within 10 s, or as soon as the process exits).
  // `prefix` goes before the binary on the command line (a wrapper that ends by exec'ing its
  // arguments, e.g. `unshare -m sh -c '… && exec "$@"' sh`: the signals still reach the proxy).
  proxy_process(std::string yaml, std::uint16_t port, std::vector<std::string> extra_args = {},
                std::vector<std::string> prefix = {});
  ~proxy_process();  // SIGINT (sanitizer builds report at exit), SIGKILL after 5 s
  proxy_process(const proxy_process&) = delete;
  proxy_process& operator=(const proxy_process&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t pid() const;
  bool running();
  void kill();       // SIGKILL: the crash-safety tests
  void terminate();  // SIGTERM: graceful drain (after the config's limits.drain_delay)
  int wait(std::chrono::milliseconds timeout);  // exit status as child_process::wait reports it
  std::string log() const;                      // stdout + stderr so far
  const std::string& config_path() const { return config_path_; }

  // Runs the binary to completion with `--config <file>` plus `args` (e.g. --check-config).
  struct outcome {
    int status;
    std::string log;
  };
  static outcome run_once(std::string yaml, std::vector<std::string> args,
                          std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  temp_dir dir_;
  std::uint16_t port_;
  std::string config_path_, log_path_;
  std::unique_ptr<child_process> child_;
};

// The last `n` lines of `text` (for error messages).
std::string tail_lines(const std::string& text, std::size_t n = 30);
// Whole file, "" if unreadable.
std::string read_text_file(const std::string& path);

}  // namespace ifm::test

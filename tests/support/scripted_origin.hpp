#pragma once
// An origin that answers each request it receives with the next scripted response (then a
// plain 200), on blocking sockets, one thread per connection; records connections, requests and
// every byte received. An empty scripted response closes the connection without answering (the
// request may have been applied: the origin crashed or dropped the connection after acting on
// it). A scripted response may hold several (1xx interim responses before the final one).
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace ifm::test {

class scripted_origin {
public:
    scripted_origin();
    ~scripted_origin();
    scripted_origin(const scripted_origin&) = delete;
    scripted_origin& operator=(const scripted_origin&) = delete;

    std::uint16_t port() const { return port_; }
    // The next response's bytes, sent as they are; each `pause` marker in them is a 50 ms wait
    // instead (the bytes before it arrive in a segment of their own).
    void script(std::string response);
    static constexpr std::string_view pause = "\x01PAUSE\x01";
    std::size_t connections() const { return connections_; }
    std::size_t requests() const { return requests_; }
    std::string received() const;   // all bytes received, all connections, in arrival order

private:
    void run_accept();
    void run_session(int fd);

    int listener_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> connections_{0};
    std::atomic<std::size_t> requests_{0};
    mutable std::mutex mu_;
    std::deque<std::string> script_;
    std::string received_;
    std::thread acceptor_;
    std::vector<std::thread> sessions_;
};

}  // namespace ifm::test

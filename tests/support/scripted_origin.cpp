#include "tests/support/scripted_origin.hpp"

#include "tests/support/raw_origin.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <thread>

namespace ifm::test {

scripted_origin::scripted_origin() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener_, 64) != 0)
        throw std::runtime_error("scripted_origin: cannot listen");
    socklen_t len = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { run_accept(); });
}

scripted_origin::~scripted_origin() {
    stop_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    acceptor_.join();
    for (auto& t : sessions_) t.join();
}

void scripted_origin::script(std::string response) {
    std::lock_guard lock(mu_);
    script_.push_back(std::move(response));
}

std::string scripted_origin::received() const {
    std::lock_guard lock(mu_);
    return received_;
}

void scripted_origin::run_accept() {
    for (;;) {
        int fd = ::accept(listener_, nullptr, nullptr);
        if (fd < 0) return;
        ++connections_;
        sessions_.emplace_back([this, fd] { run_session(fd); });
    }
}

void scripted_origin::run_session(int fd) {
    timeval tv{0, 100'000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string in;
    char buf[16384];
    while (!stop_) {
        auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n == 0) break;
        if (n < 0) continue;   // timeout: look at stop_ again
        in.append(buf, static_cast<std::size_t>(n));
        {
            std::lock_guard lock(mu_);
            received_.append(buf, static_cast<std::size_t>(n));
        }
        for (;;) {
            auto len = raw_request_length(in);
            if (len == 0 || len == std::string_view::npos) break;
            in.erase(0, len);
            ++requests_;
            std::string out = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine";
            {
                std::lock_guard lock(mu_);
                if (!script_.empty()) {
                    out = std::move(script_.front());
                    script_.pop_front();
                }
            }
            if (out.empty()) {
                ::close(fd);
                return;
            }
            for (std::string_view rest = out;;) {
                auto cut = rest.find(pause);
                auto part = rest.substr(0, cut);
                ::send(fd, part.data(), part.size(), MSG_NOSIGNAL);
                if (cut == std::string_view::npos) break;
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
                rest.remove_prefix(cut + pause.size());
            }
        }
    }
    ::close(fd);
}

}  // namespace ifm::test

#include "proxy/response_spool.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace ifm::proxy {

memory_budget& spooled_budget() {
    static memory_budget b{std::size_t{1} << 30};
    return b;
}

response_spool::response_spool(std::size_t memory, std::size_t file_limit, std::string dir, memory_budget& budget)
    : memory_limit_(memory), file_limit_(file_limit), dir_(std::move(dir)), budget_(budget) {
    if (dir_.empty()) {
        const char* t = std::getenv("TMPDIR");
        dir_ = t && *t ? t : "/tmp";
    }
}

response_spool::~response_spool() {
    if (fd_ >= 0) ::close(fd_);
    if (reserved_ > 0) budget_.release(reserved_);
}

bool response_spool::make_room(std::size_t n) {
    // Room granted before and not used is given back first.
    if (room_in_file_ && room_ > 0) {
        budget_.release(room_);
        reserved_ -= room_;
    }
    room_ = 0;
    room_in_file_ = false;
    if (file_end_ == file_off_ && memory_.size() - memory_off_ + n <= memory_limit_) {
        room_ = n;
        return true;
    }
    if (failed_ || file_limit_ == 0 || (fd_ < 0 && !file_error_.empty())) return false;
    if (file_end_ + n > file_limit_ || !budget_.try_reserve(n)) {
        hit_limit_ = true;
        return false;
    }
    if (fd_ < 0 && !open_file()) {
        budget_.release(n);
        return false;
    }
    reserved_ += n;
    room_ = n;
    room_in_file_ = true;
    return true;
}

bool response_spool::append(const char* p, std::size_t n) {
    if (!room_in_file_) {
        if (memory_off_ > 0) {   // what the writer took is dropped before the buffer grows
            memory_.erase(0, memory_off_);
            memory_off_ = 0;
        }
        memory_.append(p, n);
        room_ = 0;
        return true;
    }
    // Unused room goes back to the budget.
    if (n < room_) {
        budget_.release(room_ - n);
        reserved_ -= room_ - n;
    }
    room_ = 0;
    room_in_file_ = false;
    used_file_ = true;
    for (std::size_t done = 0; done < n;) {
        auto w = ::pwrite(fd_, p + done, n - done, static_cast<off_t>(file_end_ + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            failed_ = true;
            return false;
        }
        done += static_cast<std::size_t>(w);
    }
    file_end_ += n;
    return true;
}

void response_spool::preload(const char* p, std::size_t n) {
    memory_.append(p, n);
}

std::size_t response_spool::take(char* out, std::size_t cap) {
    if (memory_off_ < memory_.size()) {
        auto n = std::min(cap, memory_.size() - memory_off_);
        std::memcpy(out, memory_.data() + memory_off_, n);
        memory_off_ += n;
        if (memory_off_ == memory_.size()) {
            memory_.clear();
            memory_off_ = 0;
        }
        return n;
    }
    if (file_off_ == file_end_ || failed_) return 0;
    auto want = std::min(cap, file_end_ - file_off_);
    ssize_t r;
    do r = ::pread(fd_, out, want, static_cast<off_t>(file_off_));
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        failed_ = true;
        return 0;
    }
    file_off_ += static_cast<std::size_t>(r);
    if (file_off_ == file_end_) release_file_bytes();   // the client caught up
    return static_cast<std::size_t>(r);
}

// The file is empty again: its blocks and its bytes of the budget are given back.
void response_spool::release_file_bytes() {
    if (::ftruncate(fd_, 0) != 0) {
        failed_ = true;
        return;
    }
    auto granted = room_in_file_ ? room_ : 0;
    budget_.release(reserved_ - granted);
    reserved_ = granted;
    file_off_ = file_end_ = 0;
}

// An unlinked file only this process can reach: nothing to clean up after a crash.
bool response_spool::open_file() {
#ifdef O_TMPFILE
    fd_ = ::open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ >= 0) return true;
    int e = errno;
    if (e != EOPNOTSUPP && e != EISDIR && e != EINVAL) {
        file_error_ = "cannot make a file in " + dir_ + ": " + std::strerror(e);
        return false;
    }
#endif
    std::string path = dir_ + "/ifmatch-spool-XXXXXX";
    fd_ = ::mkostemp(path.data(), O_CLOEXEC);
    if (fd_ < 0) {
        file_error_ = "cannot make a file in " + dir_ + ": " + std::strerror(errno);
        return false;
    }
    ::unlink(path.c_str());
    return true;
}

}  // namespace ifm::proxy

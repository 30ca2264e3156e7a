// A streamed response body on its way from the origin to a client that reads slower than the
// origin writes (nginx's proxy_temp_path model). The origin's reader appends, the client's writer
// takes, side by side (client_session::relay_response): the first bytes wait in memory, the rest
// in an unlinked temporary file, so that the origin connection goes back to the pool as soon as
// its response is read, whatever the client does, and a process full of slow readers does not
// grow (issue 15).
//
// Bounded twice: per response (limits.max_spooled_response) and per process
// (limits.max_spooled_bytes, one atomic shared by the workers). A response that finds no room
// waits for its client, holding its origin connection: the behaviour without a spool.
//
// First in, first out: every byte in memory is older than every byte in the file, so bytes go to
// memory only while the file holds none. The file is emptied (truncated, its bytes given back to
// the budget) each time the client catches up.
//
// One per response, used by one worker's two coroutines: not thread-safe, no I/O but the file's
// (blocking, like nginx's: local disk or the page cache).
#pragma once

#include "proxy/memory_budget.hpp"

#include <cstddef>
#include <string>

namespace ifm::proxy {

// The process's budget of spooled bytes (limits.max_spooled_bytes, set by each worker).
memory_budget& spooled_budget();

class response_spool {
public:
    // `memory`: bytes held in memory before the file is used; `file_limit`: this response's cap
    // on the file (0: no file); `dir`: where the file is made (empty: $TMPDIR, else /tmp).
    response_spool(std::size_t memory, std::size_t file_limit, std::string dir,
                   memory_budget& budget = spooled_budget());
    response_spool(const response_spool&) = delete;
    response_spool& operator=(const response_spool&) = delete;
    ~response_spool();

    // The reader: is there room for `n` more bytes now? Reserves it (in memory, or in the file
    // within both limits); the next append() uses it. False: wait for the writer to take some.
    bool make_room(std::size_t n);
    // Appends `n` bytes, at most what make_room() reserved. False when the file write failed
    // (the response cannot be completed: cut it as if the origin had failed).
    bool append(const char* p, std::size_t n);
    // Bytes already at hand before the two sides start (they go to memory whatever its limit).
    void preload(const char* p, std::size_t n);

    // The writer: moves up to `cap` of the oldest bytes to `out` and returns how many (0 when
    // nothing waits). failed() after a file read error.
    std::size_t take(char* out, std::size_t cap);
    std::size_t size() const { return (memory_.size() - memory_off_) + (file_end_ - file_off_); }
    bool failed() const { return failed_; }

    // Whether this response's bytes ever went to the file (ifmatch_spooled_responses_total).
    bool used_file() const { return used_file_; }
    // Why the file could not be made (the first time), for the log; empty if it could.
    const std::string& file_error() const { return file_error_; }
    // Whether make_room() said no for want of room in the process's budget or this response's cap.
    bool hit_limit() const { return hit_limit_; }

private:
    bool open_file();
    void release_file_bytes();

    std::size_t memory_limit_;
    std::size_t file_limit_;
    std::string dir_;
    memory_budget& budget_;
    std::string memory_;
    std::size_t memory_off_ = 0;
    int fd_ = -1;
    std::size_t file_off_ = 0;     // next byte the writer reads
    std::size_t file_end_ = 0;     // next byte the reader writes
    std::size_t reserved_ = 0;     // of the budget: file_end_ plus the room granted ahead
    std::size_t room_ = 0;         // granted by make_room(), for the next append()
    bool room_in_file_ = false;
    bool failed_ = false;
    bool used_file_ = false;
    bool hit_limit_ = false;
    std::string file_error_;
};

}  // namespace ifm::proxy

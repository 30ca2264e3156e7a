// RESP2 replies, parsed from bytes as they arrive (the proxy's own Redis transport,
// cache/redis_connection.cpp). The parser is incremental only at reply granularity: a reply that
// is not whole yet is parsed again from its start once more bytes are in. Replies are small (a
// judged write's is a few hundred bytes); a large bulk string costs one look at its length per
// read until all of it is there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ifm::cache {

// One reply.
struct redis_reply {
    enum class type : std::uint8_t { nil, status, error, integer, string, array };
    type kind = type::nil;
    std::string str;            // status, error and string replies
    long long integer = 0;      // integer replies
    std::vector<redis_reply> elements;  // array replies

    bool is_error() const { return kind == type::error; }
    bool operator==(const redis_reply&) const = default;
};

enum class resp_status : std::uint8_t {
    done,        // `out` holds the reply; `used` bytes were read
    incomplete,  // the reply goes on past the input: call again with more
    bad,         // not RESP2 (or beyond the limits below): the connection cannot be trusted
};

struct resp_result {
    resp_status status;
    std::size_t used = 0;
};

// Limits: arrays nested deeper than this, and bulk strings longer than Redis's own default
// proto-max-bulk-len (512 MiB), are `bad`.
inline constexpr int resp_max_depth = 32;
inline constexpr long long resp_max_bulk = 512LL << 20;

// Parses the first reply of `in` into `out` (whatever `out` held is replaced).
resp_result parse_reply(std::string_view in, redis_reply& out);

// RESP of one command: an array of bulk strings, `head` then every string of `parts`, appended
// to `out` (sized once, written with to_chars and memcpy).
void append_command(std::string& out, std::initializer_list<const std::vector<std::string>*> parts,
                    std::initializer_list<std::string_view> head);

}  // namespace ifm::cache

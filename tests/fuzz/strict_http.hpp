// An independent, strict HTTP/1.1 request parser (RFC 9112, no obs-fold, no leniency), written
// without Beast: the oracle the request fuzzer compares the proxy's parse and its forwarded
// bytes against. Two parsers that both accept a message must agree on where it ends.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ifm::fuzz {

struct strict_request {
    enum class kind { complete, incomplete, invalid };
    kind status = kind::invalid;
    std::size_t consumed = 0;   // complete: bytes of the first request
    std::string method, target;
    int version = 0;            // 10 or 11
    std::vector<std::pair<std::string, std::string>> fields;   // names lower-cased, values trimmed
    std::string body;           // de-chunked
    std::size_t count(std::string_view lower_name) const;
};

strict_request strict_parse(std::string_view in);

}  // namespace ifm::fuzz

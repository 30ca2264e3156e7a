// The validator `hash` mode gives a representation: SHA-256 of the 200 response body, truncated
// to 128 bits and base64url-encoded, as a strong entity-tag (SPEC §4).
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace ifm::proxy {

class body_hasher {
public:
    body_hasher();
    ~body_hasher();
    body_hasher(const body_hasher&) = delete;
    body_hasher& operator=(const body_hasher&) = delete;

    void update(const void* data, std::size_t size);
    // The entity-tag with its quotes, e.g. "\"q2Vx...\"" (24 characters in all).
    std::string finish();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

std::string hash_etag(std::string_view body);

// Lower-case hex SHA-256 of `data` (resource keys, idempotency fingerprints).
std::string sha256_hex(std::string_view data);

}  // namespace ifm::proxy

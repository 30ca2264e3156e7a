#include "proxy/hasher.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace ifm::proxy {

struct body_hasher::impl {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~impl() { EVP_MD_CTX_free(ctx); }
};

body_hasher::body_hasher() : impl_(std::make_unique<impl>()) {
    if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("EVP_DigestInit_ex(sha256) failed");
}

body_hasher::~body_hasher() = default;

void body_hasher::update(const void* data, std::size_t size) {
    if (size) EVP_DigestUpdate(impl_->ctx, data, size);
}

std::string body_hasher::finish() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(impl_->ctx, digest, &len);
    EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);  // ready for reuse
    static constexpr char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // 128 bits: collision-resistant enough for a validator, and keeps headers and keys short.
    std::string out = "\"";
    unsigned bits = 0, acc = 0;
    for (int i = 0; i < 16; ++i) {
        acc = (acc << 8) | digest[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out += alphabet[(acc >> bits) & 0x3f];
        }
    }
    if (bits) out += alphabet[(acc << (6 - bits)) & 0x3f];
    out += '"';
    return out;
}

std::string hash_etag(std::string_view body) {
    body_hasher h;
    h.update(body.data(), body.size());
    return h.finish();
}

}  // namespace ifm::proxy

#include "proxy/hasher.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace ifm::proxy {

namespace {
// Fetched once: with OpenSSL 3, EVP_sha256() in every EVP_DigestInit_ex looks the algorithm up
// in the provider store again, which costs about as much as hashing 1 KiB.
const EVP_MD* sha256() {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    static const EVP_MD* md = [] {
        const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
        return fetched ? fetched : EVP_sha256();
    }();
    return md;
#else
    return EVP_sha256();
#endif
}
}  // namespace

struct body_hasher::impl {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~impl() { EVP_MD_CTX_free(ctx); }
};

body_hasher::body_hasher() : impl_(std::make_unique<impl>()) {
    if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx, sha256(), nullptr) != 1)
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
    EVP_DigestInit_ex(impl_->ctx, sha256(), nullptr);  // ready for reuse
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
    thread_local body_hasher h;   // one context per thread, reset by finish()
    h.update(body.data(), body.size());
    return h.finish();
}

std::string sha256_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("EVP_Digest(SHA-256) failed");
    static constexpr char lower_hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * len);
    for (unsigned i = 0; i < len; ++i) {
        out += lower_hex[md[i] >> 4];
        out += lower_hex[md[i] & 0xF];
    }
    return out;
}

}  // namespace ifm::proxy

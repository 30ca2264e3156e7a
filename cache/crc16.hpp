// Redis Cluster key hashing: CRC16 (XMODEM: polynomial 0x1021, initial 0, no reflection) of the
// key, or of its hash tag, modulo 16384 (the Redis Cluster specification, "Keys distribution model").
#pragma once

#include <cstdint>
#include <string_view>

namespace ifm::cache {

inline constexpr std::uint16_t cluster_slots = 16384;

std::uint16_t crc16(std::string_view data);

// The part of `key` that is hashed: the text between the first '{' and the first '}' after it,
// when that text is not empty; else the whole key.
std::string_view hash_tag(std::string_view key);

// CLUSTER KEYSLOT: crc16(hash_tag(key)) % 16384.
std::uint16_t hash_slot(std::string_view key);

}  // namespace ifm::cache

// The one cheap 64-bit hash of bytes (FNV-1a style, eight bytes at a time): MappedFile's sampled fingerprint and
// the ranks' comparison of their data descriptions. Not cryptographic, only a quick way to tell two copies apart.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shardfit {

// The FNV-1a offset basis: the hash of nothing, where a chain of mix_bytes starts.
constexpr uint64_t kByteHashStart = 0xCBF29CE484222325ULL;

// `hash` continued over `bytes` bytes at data.
uint64_t mix_bytes(uint64_t hash, const std::byte* data, int64_t bytes);

// The hash of a text, from kByteHashStart.
uint64_t hash_text(std::string_view text);

}  // namespace shardfit

// See byte_hash.h.
#include "dist/io/byte_hash.h"

#include <cstring>

namespace shardfit {

uint64_t mix_bytes(uint64_t hash, const std::byte* data, int64_t bytes) {
  constexpr uint64_t kPrime = 0x100000001B3ULL;
  int64_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t word;
    std::memcpy(&word, data + i, 8);
    hash = (hash ^ word) * kPrime;
    hash ^= hash >> 29;
  }
  for (; i < bytes; ++i) hash = (hash ^ static_cast<uint64_t>(data[i])) * kPrime;
  return hash;
}

uint64_t hash_text(std::string_view text) {
  return mix_bytes(kByteHashStart, reinterpret_cast<const std::byte*>(text.data()), static_cast<int64_t>(text.size()));
}

}  // namespace shardfit

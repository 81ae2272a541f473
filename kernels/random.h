// Deterministic random numbers: the same seed gives the same weights, shuffles and dropout masks on every
// machine and every rank count. Counter-based (a hash of the indices), so no state has to travel between ranks.
#pragma once

#include <cmath>
#include <cstdint>

namespace shardfit {

// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
constexpr uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// A stream key from several indices: hash_key(seed, layer, step, row).
constexpr uint64_t hash_key(uint64_t a) { return mix64(a); }
template <typename... Rest>
constexpr uint64_t hash_key(uint64_t a, uint64_t b, Rest... rest) {
  return hash_key(mix64(a) ^ (b + 0x632BE59BD9B4E019ULL), static_cast<uint64_t>(rest)...);
}

// Uniform in [0, 1) from the top 24 bits: exactly representable as float.
constexpr float to_unit_float(uint64_t bits) { return static_cast<float>(bits >> 40) * 0x1.0p-24F; }
// Uniform in [0, 1) with 53 bits.
constexpr double to_unit_double(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

// A sequential generator for initialisers and permutations: counter + mix, cheap to copy and to checkpoint.
class Rng {
 public:
  explicit Rng(uint64_t seed) : key_(mix64(seed)) {}
  Rng(uint64_t key, uint64_t counter) : key_(key), counter_(counter) {}

  uint64_t next() { return mix64(key_ ^ mix64(counter_++)); }
  double uniform() { return to_unit_double(next()); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal by Box-Muller (no cached second value: the stream depends only on the counter).
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // Uniform integer in [0, bound) by multiply-shift (bias < 2^-64 * bound, negligible).
  uint64_t below(uint64_t bound) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * bound) >> 64);
  }

  uint64_t key() const { return key_; }
  uint64_t counter() const { return counter_; }

 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

}  // namespace shardfit

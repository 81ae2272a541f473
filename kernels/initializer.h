// Weight initialisers, seeded and reproducible: the same Rng state gives the same values on every machine.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "kernels/random.h"

namespace shardfit {

enum class InitializerKind { kGlorotUniform, kHeNormal, kZeros, kOnes };

// "glorot_uniform" | "he_normal" | "zeros" | "ones"; throws Error naming the value otherwise.
InitializerKind parse_initializer(std::string_view name);

// Fills `values` (a tensor with the given fans; Dense kernel: fan_in = in, fan_out = out):
//  glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out))
//  he_normal: normal(0, s) truncated to 2 s, s = sqrt(2 / fan_in) / 0.87962566103423978 (Keras's
//             truncated-normal correction), by rejection
//  zeros, ones (BatchNormalization's gamma and moving variance)
void initialize(InitializerKind kind, std::span<float> values, int64_t fan_in, int64_t fan_out, Rng& rng);

}  // namespace shardfit

// Keras 3's glorot_uniform, he_normal, zeros and ones, drawn sequentially from one Rng so the bits are the same
// everywhere. Not here: which layer gets which initialiser, or the seeding scheme (the model factory decides both).
#include "kernels/initializer.h"

#include <cmath>

#include "kernels/error.h"

namespace shardfit {

namespace {

struct Named {
  const char* name;
  InitializerKind kind;
};
constexpr Named kInitializers[] = {
    {"glorot_uniform", InitializerKind::kGlorotUniform},
    {"he_normal", InitializerKind::kHeNormal},
    {"zeros", InitializerKind::kZeros},
    {"ones", InitializerKind::kOnes},
};

// Keras's VarianceScaling divides the stddev by the stddev of a unit normal truncated to [-2, 2], so that the
// truncated values still have the intended variance.
constexpr double kTruncatedNormalStddev = 0.87962566103423978;
// Keras's truncated normal drops and redraws values more than two standard deviations from the mean.
constexpr double kTruncateAt = 2.0;

}  // namespace

InitializerKind parse_initializer(std::string_view name) {
  for (const auto& i : kInitializers) {
    if (name == i.name) return i.kind;
  }
  SF_FAIL(cat("unknown initializer '", name, "'; expected one of: glorot_uniform, he_normal, zeros, ones"));
}

void initialize(InitializerKind kind, std::span<float> values, int64_t fan_in, int64_t fan_out, Rng& rng) {
  switch (kind) {
    case InitializerKind::kZeros:
      for (float& v : values) v = 0.0F;
      return;
    case InitializerKind::kOnes:
      for (float& v : values) v = 1.0F;
      return;
    case InitializerKind::kGlorotUniform: {
      SF_CHECK(fan_in > 0 && fan_out > 0,
               cat("glorot_uniform: fan_in = ", fan_in, ", fan_out = ", fan_out, ": expected both > 0"));
      const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
      for (float& v : values) v = static_cast<float>(rng.uniform(-limit, limit));
      return;
    }
    case InitializerKind::kHeNormal: {
      SF_CHECK(fan_in > 0, cat("he_normal: fan_in = ", fan_in, ": expected fan_in > 0"));
      const double stddev = std::sqrt(2.0 / static_cast<double>(fan_in)) / kTruncatedNormalStddev;
      for (float& v : values) {
        double z = rng.normal();
        while (!(std::abs(z) <= kTruncateAt)) z = rng.normal();  // accepts ~95.4% of draws
        v = static_cast<float>(stddev * z);
      }
      return;
    }
  }
  SF_FAIL(cat("initialize: unknown InitializerKind ", static_cast<int>(kind)));
}

}  // namespace shardfit

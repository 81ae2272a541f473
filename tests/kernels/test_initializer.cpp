// Tests for kernels/initializer: names, reproducibility from the seed, and the statistics of glorot_uniform and
// he_normal on large tensors (bounds stated in standard errors, so they fail on a wrong formula, not on luck).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/error.h"
#include "kernels/initializer.h"
#include "kernels/random.h"

namespace shardfit {
namespace {

// A large tensor: a 1024 x 1024 Dense kernel.
constexpr int64_t kCount = int64_t{1} << 20;
// Statistics must fall within this many standard errors (a false alarm is ~1e-6 likely per check).
constexpr double kSigmas = 5.0;

struct Moments {
  double mean = 0.0;
  double variance = 0.0;  // about zero, the intended mean, not the sample mean
  double min = INFINITY;
  double max = -INFINITY;
};

Moments moments(const std::vector<float>& values) {
  Moments m;
  double sum = 0.0;
  double squares = 0.0;
  for (float x : values) {
    sum += x;
    squares += double{x} * x;
    m.min = std::min(m.min, double{x});
    m.max = std::max(m.max, double{x});
  }
  m.mean = sum / static_cast<double>(values.size());
  m.variance = squares / static_cast<double>(values.size());
  return m;
}

std::vector<float> draw(InitializerKind kind, int64_t count, int64_t fan_in, int64_t fan_out, uint64_t seed) {
  std::vector<float> values(static_cast<size_t>(count), 42.0F);
  Rng rng(seed);
  initialize(kind, values, fan_in, fan_out, rng);
  return values;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) return false;
  }
  return true;
}

std::string error_of(std::string_view name) {
  try {
    parse_initializer(name);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ParseInitializer, KnownNames) {
  EXPECT_EQ(parse_initializer("glorot_uniform"), InitializerKind::kGlorotUniform);
  EXPECT_EQ(parse_initializer("he_normal"), InitializerKind::kHeNormal);
  EXPECT_EQ(parse_initializer("zeros"), InitializerKind::kZeros);
  EXPECT_EQ(parse_initializer("ones"), InitializerKind::kOnes);
}

TEST(ParseInitializer, UnknownNameListsTheValidOnes) {
  EXPECT_EQ(error_of("glorot_normal"),
            "unknown initializer 'glorot_normal'; expected one of: glorot_uniform, he_normal, zeros, ones");
  EXPECT_EQ(error_of(""), "unknown initializer ''; expected one of: glorot_uniform, he_normal, zeros, ones");
  EXPECT_EQ(error_of("Zeros"), "unknown initializer 'Zeros'; expected one of: glorot_uniform, he_normal, zeros, ones");
}

TEST(Initialize, SameSeedSameBitsOtherSeedOtherValues) {
  for (InitializerKind kind : {InitializerKind::kGlorotUniform, InitializerKind::kHeNormal}) {
    SCOPED_TRACE(static_cast<int>(kind));
    const std::vector<float> a = draw(kind, 4097, 64, 64, 1337);
    const std::vector<float> b = draw(kind, 4097, 64, 64, 1337);
    const std::vector<float> c = draw(kind, 4097, 64, 64, 1338);
    EXPECT_TRUE(same_bits(a, b));
    int64_t equal = 0;
    for (size_t i = 0; i < a.size(); ++i) equal += a[i] == c[i] ? 1 : 0;
    EXPECT_LT(equal, 4) << "a different seed should give (almost) all different values";
  }
}

TEST(Initialize, ConsecutiveTensorsFromOneRngDiffer) {
  // The model factory draws layer after layer from one Rng: the second layer must not repeat the first.
  Rng rng(7);
  std::vector<float> first(1000);
  std::vector<float> second(1000);
  initialize(InitializerKind::kHeNormal, first, 100, 10, rng);
  initialize(InitializerKind::kHeNormal, second, 100, 10, rng);
  EXPECT_FALSE(same_bits(first, second));

  // And continuing from a saved (key, counter) gives the same stream.
  Rng resumed(Rng(7).key(), 0);
  std::vector<float> again(1000);
  initialize(InitializerKind::kHeNormal, again, 100, 10, resumed);
  EXPECT_TRUE(same_bits(first, again));
}

TEST(Initialize, GlorotUniformStatistics) {
  const int64_t fan_in = 784;
  const int64_t fan_out = 512;
  const double limit = std::sqrt(6.0 / (fan_in + fan_out));
  const std::vector<float> v = draw(InitializerKind::kGlorotUniform, kCount, fan_in, fan_out, 2024);
  const Moments m = moments(v);
  const auto n = static_cast<double>(kCount);

  // Within the bound, and reaching close to both ends (the gap to an end is ~2l/n).
  EXPECT_GE(m.min, -limit);
  EXPECT_LE(m.max, limit);
  EXPECT_LT(m.min, -limit * (1 - 1e-4));
  EXPECT_GT(m.max, limit * (1 - 1e-4));

  // U(-l, l): variance l^2/3; the sample mean has standard error l/sqrt(3n), the mean square sqrt(4/45) l^2/sqrt(n).
  EXPECT_NEAR(m.mean, 0.0, kSigmas * limit / std::sqrt(3 * n));
  EXPECT_NEAR(m.variance, limit * limit / 3, kSigmas * std::sqrt(4.0 / 45.0) * limit * limit / std::sqrt(n));

  // Flat: each of 16 equal bins holds n/16 values, binomial standard error sqrt(n p (1-p)).
  constexpr int kBins = 16;
  std::vector<int64_t> bins(kBins, 0);
  for (float x : v) {
    const int b = std::min(kBins - 1, static_cast<int>((x + limit) / (2 * limit) * kBins));
    ++bins[b];
  }
  const double p = 1.0 / kBins;
  for (int b = 0; b < kBins; ++b) {
    EXPECT_NEAR(static_cast<double>(bins[b]), n * p, kSigmas * std::sqrt(n * p * (1 - p))) << "bin " << b;
  }
}

TEST(Initialize, HeNormalStatistics) {
  const int64_t fan_in = 512;
  // The corrected stddev s makes the truncated values have stddev sqrt(2/fan_in), as Keras intends.
  const double target_stddev = std::sqrt(2.0 / fan_in);
  const double s = target_stddev / 0.87962566103423978;
  const std::vector<float> v = draw(InitializerKind::kHeNormal, kCount, fan_in, 256, 99);
  const Moments m = moments(v);
  const auto n = static_cast<double>(kCount);

  EXPECT_NEAR(m.mean, 0.0, kSigmas * target_stddev / std::sqrt(n));
  // Mean square of a normal truncated at 2 sigma: kurtosis 2.366, so the relative standard error of the variance is
  // sqrt(1.366 / n) ~ 0.0011; without the 0.8796 correction it would be 23% low.
  EXPECT_NEAR(m.variance / (target_stddev * target_stddev), 1.0, kSigmas * std::sqrt(1.366 / n));

  // Truncated at 2 s, and the truncation is at 2 s, not tighter.
  EXPECT_LE(std::max(-m.min, m.max), static_cast<float>(2 * s));
  EXPECT_GT(m.max, 1.99 * s);
  EXPECT_LT(m.min, -1.99 * s);

  // Shape, not just variance: P(|z| > 1 given |z| <= 2) = (0.954500 - 0.682689) / 0.954500 = 0.284767.
  int64_t beyond_one = 0;
  for (float x : v) beyond_one += std::abs(x) > s ? 1 : 0;
  const double p = 0.284767;
  EXPECT_NEAR(static_cast<double>(beyond_one), n * p, kSigmas * std::sqrt(n * p * (1 - p)));

  for (float x : v) ASSERT_TRUE(std::isfinite(x));
}

TEST(Initialize, ZerosOverwritesAndDrawsNothing) {
  std::vector<float> v(1001, 3.5F);
  Rng rng(5);
  initialize(InitializerKind::kZeros, v, 10, 10, rng);
  for (float x : v) ASSERT_EQ(x, 0.0F);
  EXPECT_EQ(std::signbit(v[0]), false);
  EXPECT_EQ(rng.counter(), 0U);  // the next layer's draws do not depend on whether biases were zeroed
}

TEST(Initialize, EmptyTensor) {
  Rng rng(5);
  std::vector<float> empty;
  initialize(InitializerKind::kGlorotUniform, empty, 3, 4, rng);
  initialize(InitializerKind::kHeNormal, empty, 3, 4, rng);
  EXPECT_EQ(rng.counter(), 0U);
}

TEST(Initialize, NonPositiveFansAreErrors) {
  Rng rng(5);
  std::vector<float> v(4);
  EXPECT_THROW(initialize(InitializerKind::kGlorotUniform, v, 0, 4, rng), Error);
  EXPECT_THROW(initialize(InitializerKind::kGlorotUniform, v, 4, -1, rng), Error);
  EXPECT_THROW(initialize(InitializerKind::kHeNormal, v, 0, 4, rng), Error);
}

}  // namespace
}  // namespace shardfit

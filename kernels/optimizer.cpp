// Keras 3's SGD, Adam and RMSprop over one flat parameter buffer: elementwise, OpenMP-parallel, vectorisable.
// Not here: global_clipnorm is applied by the caller (clip_by_global_norm) and learning-rate schedules live elsewhere.
#include "kernels/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

#include "kernels/error.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

namespace {

// Below this many parameters, starting a parallel region costs more than the loop it would split.
constexpr int64_t kParallelThreshold = int64_t{1} << 14;

// clip_by_global_norm sums squares in this many fixed chunks, added in order at the end, so the norm (and thus the
// scale) is bit-identical for any OpenMP thread count: ranks that clip the same reduced gradient with different
// thread counts must not drift apart.
constexpr int64_t kNormChunks = 64;

// Range checks name the field as the user wrote it: "optimizer.adam.beta_1 = 1.5: expected 0 < beta_1 < 1".
// Each condition is false for NaN, so NaN is rejected too.
void check_positive(float value, std::string_view prefix, std::string_view field) {
  SF_CHECK(std::isfinite(value) && value > 0.0F, cat(prefix, ".", field, " = ", value, ": expected ", field, " > 0"));
}
void check_open_unit(float value, std::string_view prefix, std::string_view field) {
  SF_CHECK(value > 0.0F && value < 1.0F, cat(prefix, ".", field, " = ", value, ": expected 0 < ", field, " < 1"));
}
void check_half_open_unit(float value, std::string_view prefix, std::string_view field) {
  SF_CHECK(value >= 0.0F && value < 1.0F, cat(prefix, ".", field, " = ", value, ": expected 0 <= ", field, " < 1"));
}

void validate(const SgdOptions& o, std::string_view prefix) {
  check_positive(o.learning_rate, prefix, "learning_rate");
  check_half_open_unit(o.momentum, prefix, "momentum");
}
void validate(const AdamOptions& o, std::string_view prefix) {
  check_positive(o.learning_rate, prefix, "learning_rate");
  check_open_unit(o.beta_1, prefix, "beta_1");
  check_open_unit(o.beta_2, prefix, "beta_2");
  check_positive(o.epsilon, prefix, "epsilon");
}
void validate(const RmsPropOptions& o, std::string_view prefix) {
  check_positive(o.learning_rate, prefix, "learning_rate");
  check_half_open_unit(o.rho, prefix, "rho");
  check_half_open_unit(o.momentum, prefix, "momentum");
  check_positive(o.epsilon, prefix, "epsilon");
}

void check_count(int64_t param_count) {
  SF_CHECK(param_count >= 0, cat("optimizer parameter count ", param_count, ": expected >= 0"));
}

void check_sizes(std::span<float> params, std::span<const float> grads, int64_t count) {
  SF_CHECK(static_cast<int64_t>(params.size()) == count && static_cast<int64_t>(grads.size()) == count,
           cat("optimizer update: ", params.size(), " parameters and ", grads.size(), " gradients, expected ", count,
               " of each (the count given at construction)"));
}

// Each update is one countable loop of float arithmetic per option combination, with the branch outside the loop,
// so that GCC vectorises it (std::sqrt on float needs -fno-math-errno to vectorise).

class SgdOptimizer final : public Optimizer {
 public:
  SgdOptimizer(const SgdOptions& o, int64_t count)
      : Optimizer(o.learning_rate), momentum_(o.momentum), nesterov_(o.nesterov), count_(count) {
    // Keras creates the momentum variable only when momentum != 0.
    if (momentum_ != 0.0F) velocity_.resize(count);
  }

  std::string kind() const override { return "sgd"; }

  void update(std::span<float> params, std::span<const float> grads) override {
    check_sizes(params, grads, count_);
    float* w = params.data();
    const float* g = grads.data();
    const float lr = learning_rate_;
    const float mu = momentum_;
    const int64_t n = count_;
    if (mu == 0.0F) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
      for (int64_t i = 0; i < n; ++i) w[i] -= g[i] * lr;
    } else if (nesterov_) {
      float* v = velocity_.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
      for (int64_t i = 0; i < n; ++i) {
        const float step = g[i] * lr;
        const float vi = v[i] * mu - step;
        v[i] = vi;
        w[i] += vi * mu - step;  // Nesterov: look ahead along the new velocity
      }
    } else {
      float* v = velocity_.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
      for (int64_t i = 0; i < n; ++i) {
        const float vi = v[i] * mu - g[i] * lr;
        v[i] = vi;
        w[i] += vi;
      }
    }
    ++iterations_;
  }

  std::vector<OptimizerSlot> slots() override {
    if (momentum_ == 0.0F) return {};
    return {{"momentum", &velocity_}};
  }

 private:
  float momentum_;
  bool nesterov_;
  int64_t count_;
  FloatBuffer velocity_;
};

class AdamOptimizer final : public Optimizer {
 public:
  AdamOptimizer(const AdamOptions& o, int64_t count)
      : Optimizer(o.learning_rate), beta_1_(o.beta_1), beta_2_(o.beta_2), epsilon_(o.epsilon), count_(count) {
    m_.resize(count);
    v_.resize(count);
  }

  std::string kind() const override { return "adam"; }

  void update(std::span<float> params, std::span<const float> grads) override {
    check_sizes(params, grads, count_);
    // The bias corrections go into one scalar, computed in double: in float, rounding beta_2^t would cost
    // 1 - beta_2^t about 10 of its 24 bits while t is small.
    const double t = static_cast<double>(iterations_ + 1);
    const double b1 = beta_1_;
    const double b2 = beta_2_;
    const auto alpha = static_cast<float>(static_cast<double>(learning_rate_) * std::sqrt(1.0 - std::pow(b2, t)) /
                                          (1.0 - std::pow(b1, t)));
    const auto one_minus_b1 = static_cast<float>(1.0 - b1);  // exact: beta is a float in (0, 1)
    const auto one_minus_b2 = static_cast<float>(1.0 - b2);
    const float eps = epsilon_;
    float* w = params.data();
    const float* g = grads.data();
    float* m = m_.data();
    float* v = v_.data();
    const int64_t n = count_;
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      const float mi = m[i] + (gi - m[i]) * one_minus_b1;
      const float vi = v[i] + (gi * gi - v[i]) * one_minus_b2;
      m[i] = mi;
      v[i] = vi;
      w[i] -= (mi * alpha) / (std::sqrt(vi) + eps);
    }
    ++iterations_;
  }

  std::vector<OptimizerSlot> slots() override { return {{"m", &m_}, {"v", &v_}}; }

 private:
  float beta_1_;
  float beta_2_;
  float epsilon_;
  int64_t count_;
  FloatBuffer m_;
  FloatBuffer v_;
};

// Checked against keras/src/optimizers/rmsprop.py (Keras 3), centered=False:
//   velocity = rho * velocity + (1 - rho) * g^2
//   increment = lr * g / sqrt(velocity + epsilon)     <- epsilon is INSIDE the square root (PyTorch adds it outside)
//   momentum > 0: mom = momentum * mom + increment; w -= mom      else: w -= increment
// Keras's docstring example (lr 0.1, w = 10, g = w) gives 9.683772 after one step; test_optimizer checks it.
// Keras calls the first slot "velocity"; our checkpoints call it "rms".
class RmsPropOptimizer final : public Optimizer {
 public:
  RmsPropOptimizer(const RmsPropOptions& o, int64_t count)
      : Optimizer(o.learning_rate), rho_(o.rho), momentum_(o.momentum), epsilon_(o.epsilon), count_(count) {
    rms_.resize(count);
    if (momentum_ > 0.0F) velocity_.resize(count);
  }

  std::string kind() const override { return "rmsprop"; }

  void update(std::span<float> params, std::span<const float> grads) override {
    check_sizes(params, grads, count_);
    const float lr = learning_rate_;
    const float rho = rho_;
    const auto one_minus_rho = static_cast<float>(1.0 - static_cast<double>(rho_));
    const float eps = epsilon_;
    const float mu = momentum_;
    float* w = params.data();
    const float* g = grads.data();
    float* r = rms_.data();
    const int64_t n = count_;
    if (mu > 0.0F) {
      float* v = velocity_.data();
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
      for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i];
        const float ri = rho * r[i] + one_minus_rho * (gi * gi);
        r[i] = ri;
        const float vi = mu * v[i] + (lr * gi) / std::sqrt(ri + eps);
        v[i] = vi;
        w[i] -= vi;
      }
    } else {
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
      for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i];
        const float ri = rho * r[i] + one_minus_rho * (gi * gi);
        r[i] = ri;
        w[i] -= (lr * gi) / std::sqrt(ri + eps);
      }
    }
    ++iterations_;
  }

  std::vector<OptimizerSlot> slots() override {
    if (momentum_ > 0.0F) return {{"rms", &rms_}, {"momentum", &velocity_}};
    return {{"rms", &rms_}};
  }

 private:
  float rho_;
  float momentum_;
  float epsilon_;
  int64_t count_;
  FloatBuffer rms_;
  FloatBuffer velocity_;
};

std::unique_ptr<Optimizer> build_sgd(const SgdOptions& options, int64_t param_count, std::string_view prefix) {
  check_count(param_count);
  validate(options, prefix);
  return std::make_unique<SgdOptimizer>(options, param_count);
}
std::unique_ptr<Optimizer> build_adam(const AdamOptions& options, int64_t param_count, std::string_view prefix) {
  check_count(param_count);
  validate(options, prefix);
  return std::make_unique<AdamOptimizer>(options, param_count);
}
std::unique_ptr<Optimizer> build_rmsprop(const RmsPropOptions& options, int64_t param_count, std::string_view prefix) {
  check_count(param_count);
  validate(options, prefix);
  return std::make_unique<RmsPropOptimizer>(options, param_count);
}

}  // namespace

std::unique_ptr<Optimizer> make_sgd(const SgdOptions& options, int64_t param_count) {
  return build_sgd(options, param_count, "sgd");
}
std::unique_ptr<Optimizer> make_adam(const AdamOptions& options, int64_t param_count) {
  return build_adam(options, param_count, "adam");
}
std::unique_ptr<Optimizer> make_rmsprop(const RmsPropOptions& options, int64_t param_count) {
  return build_rmsprop(options, param_count, "rmsprop");
}

int64_t optimizer_slot_count(const proto::Optimizer& config) {
  switch (config.kind_case()) {
    case proto::Optimizer::kSgd:
      return config.sgd().momentum() != 0.0F ? 1 : 0;
    case proto::Optimizer::kRmsprop:
      return config.rmsprop().momentum() > 0.0F ? 2 : 1;
    case proto::Optimizer::kAdam:
    case proto::Optimizer::KIND_NOT_SET:
      break;
  }
  return 2;  // Adam: m and v
}

std::unique_ptr<Optimizer> make_optimizer(const proto::Optimizer& config, int64_t param_count) {
  // Validated here although applied by the caller, so a bad job fails when it is read, not at the first step.
  if (config.has_global_clipnorm()) check_positive(config.global_clipnorm(), "optimizer", "global_clipnorm");
  switch (config.kind_case()) {
    case proto::Optimizer::kSgd: {
      const proto::Sgd& c = config.sgd();
      SgdOptions o;
      if (c.has_learning_rate()) o.learning_rate = c.learning_rate();
      if (c.has_momentum()) o.momentum = c.momentum();
      if (c.has_nesterov()) o.nesterov = c.nesterov();
      return build_sgd(o, param_count, "optimizer.sgd");
    }
    case proto::Optimizer::kAdam: {
      const proto::Adam& c = config.adam();
      AdamOptions o;
      if (c.has_learning_rate()) o.learning_rate = c.learning_rate();
      if (c.has_beta_1()) o.beta_1 = c.beta_1();
      if (c.has_beta_2()) o.beta_2 = c.beta_2();
      if (c.has_epsilon()) o.epsilon = c.epsilon();
      return build_adam(o, param_count, "optimizer.adam");
    }
    case proto::Optimizer::kRmsprop: {
      const proto::RmsProp& c = config.rmsprop();
      RmsPropOptions o;
      if (c.has_learning_rate()) o.learning_rate = c.learning_rate();
      if (c.has_rho()) o.rho = c.rho();
      if (c.has_momentum()) o.momentum = c.momentum();
      if (c.has_epsilon()) o.epsilon = c.epsilon();
      return build_rmsprop(o, param_count, "optimizer.rmsprop");
    }
    case proto::Optimizer::KIND_NOT_SET:
      break;
  }
  return build_adam(AdamOptions{}, param_count, "optimizer.adam");  // Keras's compile(optimizer=...) default
}

// Keras 3 (keras/src/optimizers/base_optimizer.py): scale = clipnorm * min(1/norm, 1/clipnorm), i.e.
// clipnorm / max(norm, clipnorm); a non-finite norm makes the scale NaN, so every gradient becomes NaN — done the
// same here, so a blown-up step poisons the weights visibly (TerminateOnNaN) instead of half-silently.
double clip_by_global_norm(std::span<float> grads, double clipnorm) {
  SF_CHECK(std::isfinite(clipnorm) && clipnorm > 0.0,
           cat("global_clipnorm = ", clipnorm, ": expected global_clipnorm > 0"));
  const auto n = static_cast<int64_t>(grads.size());
  float* g = grads.data();

  // A float squared is exact in double (48 significant bits), so only the additions round.
  double partial[kNormChunks] = {};
  const int64_t chunk = (n + kNormChunks - 1) / kNormChunks;
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t c = 0; c < kNormChunks; ++c) {
    const int64_t begin = std::min(n, c * chunk);
    const int64_t end = std::min(n, begin + chunk);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = begin; i < end; ++i) sum += static_cast<double>(g[i]) * static_cast<double>(g[i]);
    partial[c] = sum;
  }
  double squares = 0.0;
  for (double p : partial) squares += p;
  const double norm = std::sqrt(squares);

  if (norm <= clipnorm) return norm;  // also the zero gradient
  const float scale =
      std::isfinite(norm) ? static_cast<float>(clipnorm / norm) : std::numeric_limits<float>::quiet_NaN();
#pragma omp parallel for simd schedule(static) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) g[i] *= scale;
  return norm;
}

}  // namespace shardfit

// BatchNormalization over the last axis (channels last), Keras's arguments and defaults: in training y = gamma *
// (x - mean) / sqrt(var + epsilon) + beta with the batch's mean and biased variance, and the moving statistics
// updated as moving = moving * momentum + batch * (1 - momentum); in inference the moving statistics normalize.
// Synchronized (the default) takes the statistics of the GLOBAL batch, summed across ranks through
// CrossReplicaSum, so P ranks compute what one rank computes; synchronized: false keeps each rank's own (Keras's
// per-replica behaviour). Not here: the sums' transport (dist/cross_replica_comm.h).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/engine.h"
#include "kernels/initializer.h"
#include "kernels/layer.h"

namespace shardfit {

class BatchNormalization final : public Layer {
 public:
  struct Options {
    float momentum = 0.99F;  // in [0, 1)
    float epsilon = 1e-3F;   // > 0
    bool center = true;      // beta
    bool scale = true;       // gamma
    InitializerKind beta_initializer = InitializerKind::kZeros;
    InitializerKind gamma_initializer = InitializerKind::kOnes;
    InitializerKind moving_mean_initializer = InitializerKind::kZeros;
    InitializerKind moving_variance_initializer = InitializerKind::kOnes;
    bool synchronized = true;
  };
  // A sample is input_dim / channels positions of `channels` values each: (N, H, W, C) flattened, or (N, units)
  // with channels == units. Throws Error naming the layer for a bad option or sizes.
  BatchNormalization(std::string name, int64_t input_dim, int64_t channels, const Options& options);

  std::string kind() const override { return "batch_normalization"; }

  // Trainable: gamma (C) when scale, then beta (C) when center. State: moving_mean (C), moving_variance (C).
  int64_t param_count() const override;
  int64_t state_count() const override { return 2 * channels_; }
  std::vector<WeightShape> weight_shapes() const override;
  void bind(float* params, float* grads) override;
  void bind_state(float* state) override;
  void initialize(Rng& rng) override;

  void set_cross_replica(CrossReplicaSum* sum) override { cross_replica_ = sum; }
  bool uses_cross_replica() const override { return options_.synchronized; }
  bool has_replica_local_state() const override { return !options_.synchronized; }

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forward_without_rows(const BatchContext& ctx) override;
  void backward_without_rows() override;
  void forget_plans() override { plans_.clear(); }

 private:
  // One batch size: oneDNN's batch normalization over (n * positions, C) rows with use_global_stats, once with the
  // batch's statistics (training) and once with the moving ones (inference).
  struct Plan {
    const float* x = nullptr;
    const float* dy = nullptr;
    float* dx = nullptr;
    PrimitiveCall training;        // normalizes with batch_mean_ / batch_variance_
    PrimitiveCall inference;       // normalizes with the moving statistics
    std::vector<double> partials;  // per chunk of rows, 2 C sums (batch_norm.cpp, paired_channel_sums)
  };

  int64_t positions() const { return input_dim() / channels_; }
  Plan& plan_for(int64_t n);
  // Training statistics from this rank's sums over `rows` rows (zeros when rows == 0), summed across ranks when
  // synchronized; then the moving update.
  void batch_statistics(const float* x, int64_t rows, std::vector<double>& partials);
  // d gamma and d beta from this rank's rows, the global sums of them when synchronized, then dx.
  void backward_rows(Plan* plan, int64_t rows);

  int64_t channels_;
  Options options_;
  float* gamma_ = nullptr;  // (C) or nullptr without scale
  float* beta_ = nullptr;   // (C) or nullptr without center
  float* gamma_grad_ = nullptr;
  float* beta_grad_ = nullptr;
  float* moving_mean_ = nullptr;      // (C), in the model's state span
  float* moving_variance_ = nullptr;  // (C)
  CrossReplicaSum* cross_replica_ = nullptr;

  // The last training forward's statistics, which its backward uses. sums_ holds the values summed across ranks:
  // forward [sum (C), sum of squares (C), rows], backward [sum of dy (C), sum of dy * xhat (C)].
  std::vector<float> batch_mean_;      // (C), what oneDNN normalizes with
  std::vector<float> batch_variance_;  // (C), biased
  std::vector<double> inverse_std_;    // (C): 1 / sqrt(var + epsilon)
  std::vector<double> sums_;           // (2 C + 1)
  std::vector<float> dy_scale_;        // (C): the per-channel factors of backward's dx (batch_norm.cpp)
  std::vector<float> centered_scale_;  // (C)
  std::vector<float> offset_;          // (C)
  double global_rows_ = 0.0;           // M: rows of the (global, when synchronized) batch times positions
  bool last_training_ = false;
  std::unordered_map<int64_t, Plan> plans_;
};

}  // namespace shardfit

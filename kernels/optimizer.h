// Optimizers over one flat parameter buffer, exactly as KERAS_CONTRACT.md writes them, parallel with OpenMP.
// The gradient passed in is already the global MEAN (the reducer divided by the global sample count).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/buffer.h"

namespace shardfit {

namespace proto {
class Optimizer;
}

// Named per-parameter state ("momentum", "m", "v", "rms"), for checkpoints.
struct OptimizerSlot {
  std::string name;
  FloatBuffer* values;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string kind() const = 0;  // "sgd" | "adam" | "rmsprop"
  // One step: updates params in place from grads (same length as at construction), then iterations() += 1.
  virtual void update(std::span<float> params, std::span<const float> grads) = 0;
  virtual std::vector<OptimizerSlot> slots() = 0;

  float learning_rate() const { return learning_rate_; }
  void set_learning_rate(float lr) { learning_rate_ = lr; }
  int64_t iterations() const { return iterations_; }
  void set_iterations(int64_t it) { iterations_ = it; }

 protected:
  explicit Optimizer(float lr) : learning_rate_(lr) {}
  float learning_rate_;
  int64_t iterations_ = 0;
};

struct SgdOptions {
  float learning_rate = 0.01F;
  float momentum = 0.0F;
  bool nesterov = false;
};
struct AdamOptions {
  float learning_rate = 0.001F;
  float beta_1 = 0.9F;
  float beta_2 = 0.999F;
  float epsilon = 1e-7F;
};
struct RmsPropOptions {
  float learning_rate = 0.001F;
  float rho = 0.9F;
  float momentum = 0.0F;
  float epsilon = 1e-7F;
};

std::unique_ptr<Optimizer> make_sgd(const SgdOptions& options, int64_t param_count);
std::unique_ptr<Optimizer> make_adam(const AdamOptions& options, int64_t param_count);
std::unique_ptr<Optimizer> make_rmsprop(const RmsPropOptions& options, int64_t param_count);
// How many per-parameter arrays make_optimizer(config, n) will allocate (Adam: m and v), for the memory check.
int64_t optimizer_slot_count(const proto::Optimizer& config);
// From the job's message (unset fields take Keras defaults; no kind set means Adam). Validates ranges.
std::unique_ptr<Optimizer> make_optimizer(const proto::Optimizer& config, int64_t param_count);

// Scales grads so their global L2 norm is at most clipnorm (Keras global_clipnorm). Returns the norm before.
double clip_by_global_norm(std::span<float> grads, double clipnorm);

}  // namespace shardfit

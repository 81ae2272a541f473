// The layer interface: forward and backward over model-owned buffers, with oneDNN primitives built once per
// batch size (prepare) and only executed in the step. Layers hold views into the model's flat parameter and
// gradient buffers; they never own parameters.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/random.h"

namespace shardfit {

// What a step knows that a layer may need: training mode, and the counters that make dropout masks
// depend on the GLOBAL sample (so P ranks draw the same masks as one rank).
struct BatchContext {
  bool training = false;
  uint64_t seed = 0;
  uint64_t step = 0;      // global optimizer step
  int64_t first_row = 0;  // offset of this rank's first sample within the global batch
};

// The buffers of one batch size: row-major, n rows. Views into model-owned memory.
struct LayerBuffers {
  const float* x = nullptr;   // (n, in) input
  float* y = nullptr;         // (n, out) output
  const float* dy = nullptr;  // (n, out) d loss / d y; nullptr when only inference is prepared
  float* dx = nullptr;        // (n, in) d loss / d x; nullptr when not needed (first layer)
  float* scratch = nullptr;   // (n, out) workspace owned by the model, private to this layer
  // bf16 edges (mixed_bfloat16, kernels/precision.h note 3): where the model keeps the activation between two
  // layers as bf16, the consumer gets x_bf16 instead of x and the producer y_bf16 instead of y (the f32 one is
  // then nullptr). Only for layers that said they can (Layer::reads_bf16_input / writes_bf16_output).
  const uint16_t* x_bf16 = nullptr;  // (n, in)
  uint16_t* y_bf16 = nullptr;        // (n, out)
};

// One tensor of the Keras weight list, e.g. Dense kernel (in, out) then bias (out).
struct WeightShape {
  std::string name;
  std::vector<int64_t> shape;
};

class Layer {
 public:
  Layer(std::string name, int64_t input_dim, int64_t output_dim)
      : name_(std::move(name)), input_dim_(input_dim), output_dim_(output_dim) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  virtual std::string kind() const = 0;
  const std::string& name() const { return name_; }
  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const { return output_dim_; }

  virtual int64_t param_count() const { return 0; }
  virtual std::vector<WeightShape> weight_shapes() const { return {}; }
  // Views of param_count() floats each in the model's flat buffers.
  virtual void bind(float* /*params*/, float* /*grads*/) {}
  // Under mixed_bfloat16 (kernels/precision.h): the bf16 copy of the same param_count() values, which the model
  // refreshes once per step. Layers that compute in f32 ignore it.
  virtual void bind_compute_weights(const uint16_t* /*weights*/) {}
  // Whether this layer, as built, can read its input as bf16 / write its output as bf16 (LayerBuffers::x_bf16 /
  // y_bf16). The model keeps an activation bf16 where its producer can write and its consumer can read it
  // (Model::activation_is_bf16); every other edge, and the model's input and output, stay f32.
  virtual bool reads_bf16_input() const { return false; }
  virtual bool writes_bf16_output() const { return false; }
  virtual void initialize(Rng& /*rng*/) {}

  // Builds everything batch size n needs over these buffers. Called once per n (n >= 1) until forget_plans().
  virtual void prepare(int64_t n, const LayerBuffers& buffers) = 0;
  virtual void forward(int64_t n, const BatchContext& ctx) = 0;
  // Writes dx (when prepared with one) and this layer's parameter gradients: overwrites, never accumulates.
  virtual void backward(int64_t n) = 0;
  // Drops all prepared batch sizes (the model moved its buffers).
  virtual void forget_plans() = 0;

  // Backward's "gradients ready" point inside this layer (the model sets it; empty: none). A layer whose parameter
  // gradients are final before it computes dx (which the gradient buffer does not hold) calls it in between, so
  // whoever waits for them (an overlapped gradient reducer, dist/gradient_reducer.h) starts while dx is computed.
  void set_gradients_ready(std::function<void()> hook) { gradients_ready_ = std::move(hook); }

 protected:
  void gradients_ready() const {
    if (gradients_ready_) gradients_ready_();
  }

 private:
  std::function<void()> gradients_ready_;
  std::string name_;
  int64_t input_dim_;
  int64_t output_dim_;
};

}  // namespace shardfit

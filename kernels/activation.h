// Activation as a layer of its own: oneDNN eltwise (linear, relu, sigmoid, tanh, gelu) or softmax over the
// last axis, forward and backward. Dense fuses relu / sigmoid / tanh itself; this layer serves the rest, and the
// final activation when the loss takes over its backward (softmax / sigmoid + cross-entropy).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>

#include "kernels/activation_kind.h"
#include "kernels/engine.h"
#include "kernels/layer.h"

namespace shardfit {

class Activation final : public Layer {
 public:
  Activation(std::string name, int64_t dim, ActivationKind kind);

  std::string kind() const override { return "activation"; }
  std::string type_name() const override { return "Activation"; }
  ActivationKind activation() const { return activation_; }

  void prepare(int64_t n, const LayerBuffers& buffers) override;
  void forward(int64_t n, const BatchContext& ctx) override;
  void backward(int64_t n) override;
  void forget_plans() override { plans_.clear(); }

 private:
  struct Plan {
    PrimitiveCall forward;
    PrimitiveCall backward;
  };
  ActivationKind activation_;
  std::unordered_map<int64_t, Plan> plans_;
};

// The activations a matmul or a convolution fuses as a post-op (relu, sigmoid, tanh): the post-op's algorithm, and
// the backward algorithm that reads the activation's output. `layer` ("Dense", "Conv2D") names the caller in the
// error any other kind gives.
dnnl::algorithm fused_forward_algorithm(ActivationKind kind, const char* layer);
dnnl::algorithm fused_backward_algorithm(ActivationKind kind, const char* layer);

}  // namespace shardfit

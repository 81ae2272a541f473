// Activation forward and backward with oneDNN primitives:
//   eltwise: y (n, d) = f(x); dx = dy * f'(.) — from the output y where oneDNN offers it (relu, sigmoid, tanh),
//            from the input x for gelu (exact erf form, Keras's default approximate=False)
//   softmax over axis 1: y = exp(x - max) / sum; dx = y * (dy - sum(dy * y))
#include "kernels/activation.h"

#include "kernels/engine.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

using dnnl::algorithm;
using dnnl::memory;

struct EltwiseAlgorithms {
  algorithm forward;
  algorithm backward;
  bool backward_reads_output;
};

EltwiseAlgorithms eltwise_algorithms(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::kLinear:
      return {algorithm::eltwise_linear, algorithm::eltwise_linear, false};
    case ActivationKind::kRelu:
      return {algorithm::eltwise_relu_use_dst_for_bwd, algorithm::eltwise_relu_use_dst_for_bwd, true};
    case ActivationKind::kSigmoid:
      return {algorithm::eltwise_logistic_use_dst_for_bwd, algorithm::eltwise_logistic_use_dst_for_bwd, true};
    case ActivationKind::kTanh:
      return {algorithm::eltwise_tanh_use_dst_for_bwd, algorithm::eltwise_tanh_use_dst_for_bwd, true};
    case ActivationKind::kGelu:
      return {algorithm::eltwise_gelu_erf, algorithm::eltwise_gelu_erf, false};
    case ActivationKind::kSoftmax:
      break;
  }
  SF_FAIL("softmax is not an eltwise activation");
}

}  // namespace

Activation::Activation(std::string name, int64_t dim, ActivationKind kind)
    : Layer(std::move(name), dim, dim), activation_(kind) {
  SF_CHECK(dim > 0, cat("Activation '", this->name(), "': expected a positive width, got ", dim));
}

void Activation::prepare(int64_t n, const LayerBuffers& buffers) {
  auto& engine = cpu_engine();
  const int64_t d = input_dim();
  const memory::desc md({n, d}, memory::data_type::f32, memory::dims{d, 1});
  const auto prop = buffers.dy != nullptr ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  Plan plan;
  if (activation_ == ActivationKind::kSoftmax) {
    const dnnl::softmax_forward::primitive_desc forward_pd(dnnl::softmax_forward::desc(prop, md, 1), engine);
    plan.forward = PrimitiveCall(dnnl::softmax_forward(forward_pd),
                                 {{DNNL_ARG_SRC, wrap(md, buffers.x)}, {DNNL_ARG_DST, wrap(md, buffers.y)}});
    if (buffers.dy != nullptr && buffers.dx != nullptr) {
      const dnnl::softmax_backward::primitive_desc backward_pd(dnnl::softmax_backward::desc(md, md, 1), engine,
                                                               forward_pd);
      plan.backward = PrimitiveCall(dnnl::softmax_backward(backward_pd), {{DNNL_ARG_DST, wrap(md, buffers.y)},
                                                                          {DNNL_ARG_DIFF_DST, wrap(md, buffers.dy)},
                                                                          {DNNL_ARG_DIFF_SRC, wrap(md, buffers.dx)}});
    }
  } else {
    const EltwiseAlgorithms alg = eltwise_algorithms(activation_);
    const float alpha = activation_ == ActivationKind::kLinear ? 1.0F : 0.0F;  // linear: y = alpha x + beta
    const dnnl::eltwise_forward::primitive_desc forward_pd(
        dnnl::eltwise_forward::desc(prop, alg.forward, md, alpha, 0.0F), engine);
    plan.forward = PrimitiveCall(dnnl::eltwise_forward(forward_pd),
                                 {{DNNL_ARG_SRC, wrap(md, buffers.x)}, {DNNL_ARG_DST, wrap(md, buffers.y)}});
    if (buffers.dy != nullptr && buffers.dx != nullptr) {
      const dnnl::eltwise_backward::primitive_desc backward_pd(
          dnnl::eltwise_backward::desc(alg.backward, md, md, alpha, 0.0F), engine, forward_pd);
      plan.backward = PrimitiveCall(dnnl::eltwise_backward(backward_pd),
                                    {{DNNL_ARG_DIFF_DST, wrap(md, buffers.dy)},
                                     {DNNL_ARG_DIFF_SRC, wrap(md, buffers.dx)},
                                     {alg.backward_reads_output ? DNNL_ARG_DST : DNNL_ARG_SRC,
                                      wrap(md, alg.backward_reads_output ? buffers.y : buffers.x)}});
    }
  }
  plans_[n] = std::move(plan);
}

void Activation::forward(int64_t n, const BatchContext& /*ctx*/) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat("Activation '", name(), "': batch size ", n, " was not prepared"));
  it->second.forward.execute();
}

void Activation::backward(int64_t n) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat("Activation '", name(), "': backward for batch size ", n, " was not prepared"));
  // No parameters, so without a dx (the model's first layer gets none, yet is called) there is nothing to write.
  if (it->second.backward) it->second.backward.execute();
}

dnnl::algorithm fused_forward_algorithm(ActivationKind kind, const char* layer) {
  switch (kind) {
    case ActivationKind::kRelu:
      return algorithm::eltwise_relu;
    case ActivationKind::kSigmoid:
      return algorithm::eltwise_logistic;
    case ActivationKind::kTanh:
      return algorithm::eltwise_tanh;
    default:
      SF_FAIL(cat(layer, " cannot fuse activation '", activation_name(kind), "'"));
  }
}

dnnl::algorithm fused_backward_algorithm(ActivationKind kind, const char* layer) {
  switch (kind) {
    case ActivationKind::kRelu:
      return algorithm::eltwise_relu_use_dst_for_bwd;
    case ActivationKind::kSigmoid:
      return algorithm::eltwise_logistic_use_dst_for_bwd;
    case ActivationKind::kTanh:
      return algorithm::eltwise_tanh_use_dst_for_bwd;
    default:
      SF_FAIL(cat(layer, " cannot fuse activation '", activation_name(kind), "'"));
  }
}

}  // namespace shardfit

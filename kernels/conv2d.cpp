// Conv2D on oneDNN convolutions, channels last:
//   forward          y  (n, oh, ow, f) = act(conv(x (n, h, w, c), K (kh, kw, c, f)) + b)
//   backward-weights dK (kh, kw, c, f), db (f) from x and dz
//   backward-data    dx (n, h, w, c) from dz and K
// with dz = dy * act'(.) from oneDNN's eltwise backward on the fused output (use_dst algorithms), as Dense does,
// except for a relu with a bias in f32: one pass of ours forms dz and the bias gradient (kernels/channel_sums.h) and
// backward weights computes the kernel's gradient alone. oneDNN's bias reduction inside backward weights re-reads
// dz; at the convnet's first convolution that took the layer from 0.28-0.49 to 0.57-0.71 of oneDNN's primitives
// alone (Zen 4, 1 and 2 threads; bench/README.md, conv_bench).
// src and dst are nhwc views of the model's row-major buffers; the kernel is Keras's (kh, kw, in, out), oneDNN's
// hwio. oneDNN's direct kernels want blocked weights: each primitive is built with the weights' layout left to it
// ("any") and a reorder runs when its choice differs from hwio (2.6 on AVX-512: brgconv / jit, against gemm:jit when
// held to hwio).
// Under mixed_bfloat16 the three convolutions read bf16 src, weights and diff_dst and write f32 dst, diff_src and
// diff_weights / diff_bias, which oneDNN 2.6 runs as brgconv:avx512_core_bf16 (forward) and jit_bf16:avx512_core_bf16
// (both backwards) on AVX512_BF16 (the library also has AMX kernels for all three; not run here, no AMX). x reaches
// them through to_bf16's array loop, as in Dense; dz through one loop that forms it from y and dy and rounds it
// (bf16_gradient below); the kernel through the model's bf16 copy (hwio), reordered into each primitive's layout
// from that copy. That reorder runs at each forward and each backward, as the f32 one does: in training once per
// step for each, after the model's once-per-step refresh (the layer is not told of a refresh, so it cannot skip the
// reorder of an evaluation batch). The bias gradient is oneDNN's, summed from the bf16 dz (one rounding of each
// term), as Keras's bf16 policy computes it (not before a max pooling: below); the fused activation's forward stays on
// the f32 accumulator. Before a MaxPooling2D the model builds this layer linear and with bias_gradient_by_consumer: the
// pooling runs the relu and sums the bias gradient at the pooled size (kernels/pooling.h), and backward weights
// computes the kernel's gradient alone (under mixed_bfloat16 that bias gradient is then summed from the f32 dz, before
// its rounding to bf16). At the Fashion-MNIST convnet's first convolution (one input channel, memory-bound) that took
// the pair's step from 0.57-0.73 to 0.85-0.95 of oneDNN's convolution and pooling primitives alone (bench/README.md,
// conv_bench).
#include "kernels/conv2d.h"

#include "kernels/activation.h"
#include "kernels/channel_sums.h"
#include "kernels/error.h"
#include "kernels/window.h"

namespace shardfit {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;

// `plain` when the primitive takes it as it is; else a memory of the primitive's layout (owned by oneDNN) and the
// reorder that fills it from, or empties it into, `plain`.
memory operand(const memory::desc& wanted, const memory& plain, PrimitiveCall* reorder, bool into_plain) {
  if (wanted == plain.get_desc()) return plain;
  memory own(wanted, cpu_engine());
  const memory& from = into_plain ? own : plain;
  const memory& to = into_plain ? plain : own;
  *reorder = PrimitiveCall(dnnl::reorder(from, to), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
  return own;
}

// dz (bf16) = bf16(dy * act'(.)), act' from the activation's output y, in one pass: under bf16 this takes the place
// of oneDNN's eltwise backward into an f32 dz followed by its conversion (two passes and an f32 array written and
// read again), which at the first layer of the convnet cost as much as the bf16 saved (batch 512, 2 threads).
// The formulas are those of oneDNN's use_dst_for_bwd algorithms; relu is exact (dy or 0).
// One loop per activation, so that each vectorises.
SF_AVX512_CLONES void bf16_gradient(ActivationKind kind, const float* y, const float* dy, uint16_t* dz, int64_t count) {
  const bool parallel = count >= kParallelCount;
  switch (kind) {
    case ActivationKind::kRelu:
#pragma omp parallel for simd schedule(static) if (parallel)
      for (int64_t i = 0; i < count; ++i) dz[i] = to_bf16(y[i] > 0.0F ? dy[i] : 0.0F);
      return;
    case ActivationKind::kSigmoid:
#pragma omp parallel for simd schedule(static) if (parallel)
      for (int64_t i = 0; i < count; ++i) dz[i] = to_bf16(dy[i] * y[i] * (1.0F - y[i]));
      return;
    case ActivationKind::kTanh:
#pragma omp parallel for simd schedule(static) if (parallel)
      for (int64_t i = 0; i < count; ++i) dz[i] = to_bf16(dy[i] * (1.0F - y[i] * y[i]));
      return;
    default:
      to_bf16(dy, dz, count);
      return;
  }
}

}  // namespace

Shape Conv2D::output_shape_for(const std::string& name, const Shape& input_shape, const Options& options) {
  SF_CHECK(
      input_shape.size() == 3,
      cat("Conv2D '", name, "' takes (None, height, width, channels) samples, got ", batch_shape_text(input_shape)),
      "give the model input_shape [height, width, channels], or add layers { reshape { target_shape: [...] } }");
  SF_CHECK(options.filters > 0, cat("Conv2D '", name, "': filters = ", options.filters, ": expected > 0"));
  for (int axis = 0; axis < 2; ++axis) {
    SF_CHECK(options.kernel_size[axis] > 0 && options.strides[axis] > 0 && options.dilation_rate[axis] > 0,
             cat("Conv2D '", name, "': kernel_size, strides and dilation_rate must be positive, got (",
                 options.kernel_size[0], ", ", options.kernel_size[1], "), (", options.strides[0], ", ",
                 options.strides[1], "), (", options.dilation_rate[0], ", ", options.dilation_rate[1], ")"));
  }
  const bool strided = options.strides[0] != 1 || options.strides[1] != 1;
  const bool dilated = options.dilation_rate[0] != 1 || options.dilation_rate[1] != 1;
  SF_CHECK(!(strided && dilated),
           cat("Conv2D '", name, "': strides > 1 with dilation_rate > 1: expected one of them to be 1 (as Keras)"));
  Shape out(3);
  for (int axis = 0; axis < 2; ++axis) {
    out[axis] = window_axis(input_shape[axis], options.kernel_size[axis], options.strides[axis],
                            options.dilation_rate[axis], options.same_padding)
                    .out;
  }
  out[2] = options.filters;
  SF_CHECK(out[0] > 0 && out[1] > 0,
           cat("Conv2D '", name, "': a (", options.kernel_size[0], ", ", options.kernel_size[1],
               ") kernel (dilation_rate (", options.dilation_rate[0], ", ", options.dilation_rate[1],
               ")) does not fit in the input ", batch_shape_text(input_shape), " with padding \"valid\""),
           "use padding: \"same\", or a smaller kernel_size");
  return out;
}

Conv2D::Conv2D(const std::string& name, const Shape& input_shape, const Options& options)
    : Layer(name, input_shape, output_shape_for(name, input_shape, options)), options_(options) {
  const auto a = options.activation;
  SF_CHECK(a == ActivationKind::kLinear || a == ActivationKind::kRelu || a == ActivationKind::kSigmoid ||
               a == ActivationKind::kTanh,
           cat("Conv2D '", this->name(), "' cannot fuse activation '", activation_name(a),
               "'; build it as a separate Activation layer"));
  SF_CHECK(!options.bias_gradient_by_consumer || (options.use_bias && a == ActivationKind::kLinear),
           cat("Conv2D '", this->name(), "': the next layer can write the bias gradient only of a linear Conv2D ",
               "with a bias (its relu moved into that layer)"));
}

float* Conv2D::bias_gradient_for_consumer(int64_t* count) const {
  if (!options_.bias_gradient_by_consumer) return nullptr;
  *count = options_.filters;
  return bias_grad_;
}

int64_t Conv2D::param_count() const {
  const int64_t kernel = options_.kernel_size[0] * options_.kernel_size[1] * input_shape()[2] * options_.filters;
  return kernel + (options_.use_bias ? options_.filters : 0);
}

std::vector<WeightShape> Conv2D::weight_shapes() const {
  std::vector<WeightShape> shapes{
      {name() + "/kernel", {options_.kernel_size[0], options_.kernel_size[1], input_shape()[2], options_.filters}}};
  if (options_.use_bias) shapes.push_back({name() + "/bias", {options_.filters}});
  return shapes;
}

void Conv2D::bind(float* params, float* grads) {
  const int64_t kernel_count = param_count() - (options_.use_bias ? options_.filters : 0);
  kernel_ = params;
  kernel_grad_ = grads;
  bias_ = options_.use_bias ? params + kernel_count : nullptr;
  bias_grad_ = options_.use_bias ? grads + kernel_count : nullptr;
  kernel_bf16_ = nullptr;
  plans_.clear();
}

void Conv2D::bind_compute_weights(const uint16_t* weights) {
  kernel_bf16_ = weights;  // the kernel leads the layer's block in the bf16 copy too
  plans_.clear();
}

void Conv2D::initialize(Rng& rng) {
  // Keras's fans for a convolution kernel: the receptive field times the input or output channels.
  const int64_t field = options_.kernel_size[0] * options_.kernel_size[1];
  const int64_t kernel_count = field * input_shape()[2] * options_.filters;
  shardfit::initialize(options_.kernel_initializer, {kernel_, static_cast<size_t>(kernel_count)},
                       field * input_shape()[2], field * options_.filters, rng);
  if (options_.use_bias) {
    shardfit::initialize(options_.bias_initializer, {bias_, static_cast<size_t>(options_.filters)}, options_.filters,
                         options_.filters, rng);
  }
}

void Conv2D::prepare(int64_t n, const LayerBuffers& buffers) {
  SF_CHECK(kernel_ != nullptr, cat("Conv2D '", name(), "' used before bind()"));
  const bool bf16 = options_.bf16;
  SF_CHECK(!bf16 || kernel_bf16_ != nullptr, cat("Conv2D '", name(), "': bf16 used before bind_compute_weights()"));
  auto& engine = cpu_engine();
  const Shape& in = input_shape();
  const Shape& out = output_shape();
  const int64_t filters = options_.filters;
  const auto [kh, kw] = options_.kernel_size;
  const auto [sh, sw] = options_.strides;
  const auto [dh, dw] = options_.dilation_rate;
  const WindowAxis rows = window_axis(in[0], kh, sh, dh, options_.same_padding);
  const WindowAxis cols = window_axis(in[1], kw, sw, dw, options_.same_padding);
  const memory::dims strides{sh, sw};
  const memory::dims dilates{dh - 1, dw - 1};  // oneDNN counts the cells skipped: 0 is a dense kernel
  const memory::dims pad_begin{rows.pad_begin, cols.pad_begin};
  const memory::dims pad_end{rows.pad_end, cols.pad_end};

  // oneDNN's logical dims are (N, C, H, W) and (O, I, H, W) whatever the layout. The operands (src, weights,
  // diff_dst) are bf16 under mixed_bfloat16; dst, diff_src, diff_weights and the bias stay f32.
  const auto operand_type = bf16 ? kBf16 : kF32;
  const memory::dims x_dims{n, in[2], in[0], in[1]};
  const memory::dims y_dims{n, filters, out[0], out[1]};
  const memory::dims k_dims{filters, in[2], kh, kw};
  const memory::desc x_md(x_dims, kF32, Tag::nhwc);
  const memory::desc y_md(y_dims, kF32, Tag::nhwc);
  const memory::desc k_md(k_dims, kF32, Tag::hwio);
  const memory::desc k_any(k_dims, kF32, Tag::any);
  const memory::desc x_op_md(x_dims, operand_type, Tag::nhwc);
  const memory::desc dz_op_md(y_dims, operand_type, Tag::nhwc);
  const memory::desc k_op_any(k_dims, operand_type, Tag::any);
  const memory::desc b_md({filters}, kF32, Tag::x);
  const memory::desc flat_y = row_major(n, output_dim());
  const bool fused = options_.activation != ActivationKind::kLinear;
  const bool training = buffers.dy != nullptr;

  dnnl::primitive_attr attr;
  if (fused) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0F, fused_forward_algorithm(options_.activation, "Conv2D"), 0.0F, 0.0F);
    attr.set_post_ops(ops);
  }
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto forward_desc =
      options_.use_bias ? dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, x_op_md, k_op_any,
                                                          b_md, y_md, strides, dilates, pad_begin, pad_end)
                        : dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, x_op_md, k_op_any,
                                                          y_md, strides, dilates, pad_begin, pad_end);
  const dnnl::convolution_forward::primitive_desc forward_pd(forward_desc, attr, engine);

  Plan plan;
  plan.x = buffers.x;
  // The convolutions' operands: f32 views of the model's buffers, or bf16 copies (x's in this plan, the kernel's
  // from the model).
  memory kernel = wrap(k_md, kernel_);
  memory x = wrap(x_md, buffers.x);
  if (bf16) {
    plan.x_bf16.resize(n * input_dim());
    kernel = wrap(memory::desc(k_dims, kBf16, Tag::hwio), kernel_bf16_);
    x = wrap(x_op_md, plan.x_bf16.data());
  }
  const memory y = wrap(y_md, buffers.y);
  std::vector<std::pair<int, memory>> forward_args = {
      {DNNL_ARG_SRC, x},
      {DNNL_ARG_WEIGHTS, operand(forward_pd.weights_desc(), kernel, &plan.kernel_to_forward, false)},
      {DNNL_ARG_DST, y}};
  if (options_.use_bias) forward_args.emplace_back(DNNL_ARG_BIAS, wrap(b_md, bias_));
  plan.forward = PrimitiveCall(dnnl::convolution_forward(forward_pd), std::move(forward_args));

  if (training) {
    const float* dz = buffers.dy;
    plan.y = buffers.y;
    plan.dy = buffers.dy;
    // Under bf16 no f32 dz is formed: one loop writes the bf16 dz from y and dy (bf16_gradient, above). A relu
    // with a bias forms dz and the bias gradient in one pass of ours (kernels/channel_sums.h), and backward
    // weights computes the kernel's gradient alone.
    const bool bias_here = options_.use_bias && !options_.bias_gradient_by_consumer;
    const bool relu_pass = !bf16 && bias_here && options_.activation == ActivationKind::kRelu;
    if (relu_pass) {
      SF_CHECK(buffers.scratch != nullptr, cat("Conv2D '", name(), "': fused activation needs a scratch buffer"));
      plan.relu_dz = buffers.scratch;
      plan.block_sums.resize(channel_sum_blocks(n * out[0] * out[1]) * filters);
      dz = buffers.scratch;
    } else if (fused && !bf16) {
      SF_CHECK(buffers.scratch != nullptr, cat("Conv2D '", name(), "': fused activation needs a scratch buffer"));
      const auto algorithm = fused_backward_algorithm(options_.activation, "Conv2D");
      const dnnl::eltwise_forward::primitive_desc hint(
          dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, algorithm, flat_y, 0.0F, 0.0F), engine);
      const dnnl::eltwise_backward::primitive_desc backward_pd(
          dnnl::eltwise_backward::desc(algorithm, flat_y, flat_y, 0.0F, 0.0F), engine, hint);
      plan.activation_backward =
          PrimitiveCall(dnnl::eltwise_backward(backward_pd), {{DNNL_ARG_DST, wrap(flat_y, buffers.y)},
                                                              {DNNL_ARG_DIFF_DST, wrap(flat_y, buffers.dy)},
                                                              {DNNL_ARG_DIFF_SRC, wrap(flat_y, buffers.scratch)}});
      dz = buffers.scratch;
    }
    memory dz_mem = wrap(y_md, dz);
    if (bf16) {
      plan.dz_bf16.resize(n * output_dim());
      dz_mem = wrap(dz_op_md, plan.dz_bf16.data());
    }

    const bool bias_in_primitive = bias_here && !relu_pass;
    const auto weights_desc =
        bias_in_primitive
            ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_op_md, k_any, b_md,
                                                       dz_op_md, strides, dilates, pad_begin, pad_end)
            : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_op_md, k_any, dz_op_md,
                                                       strides, dilates, pad_begin, pad_end);
    const dnnl::convolution_backward_weights::primitive_desc weights_pd(weights_desc, engine, forward_pd);
    std::vector<std::pair<int, memory>> weights_args = {
        {DNNL_ARG_SRC, x},
        {DNNL_ARG_DIFF_DST, dz_mem},
        {DNNL_ARG_DIFF_WEIGHTS,
         operand(weights_pd.diff_weights_desc(), wrap(k_md, kernel_grad_), &plan.kernel_grad_to_hwio, true)}};
    if (bias_in_primitive) weights_args.emplace_back(DNNL_ARG_DIFF_BIAS, wrap(b_md, bias_grad_));
    plan.backward_weights = PrimitiveCall(dnnl::convolution_backward_weights(weights_pd), std::move(weights_args));

    if (buffers.dx != nullptr) {
      const dnnl::convolution_backward_data::primitive_desc data_pd(
          dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, x_md, k_op_any, dz_op_md, strides,
                                                dilates, pad_begin, pad_end),
          engine, forward_pd);
      plan.backward_data = PrimitiveCall(
          dnnl::convolution_backward_data(data_pd),
          {{DNNL_ARG_DIFF_DST, dz_mem},
           {DNNL_ARG_WEIGHTS, operand(data_pd.weights_desc(), kernel, &plan.kernel_to_backward_data, false)},
           {DNNL_ARG_DIFF_SRC, wrap(x_md, buffers.dx)}});
    }
    plan.backward_prepared = true;
  }
  plans_[n] = std::move(plan);
}

const Conv2D::Plan& Conv2D::plan_for(int64_t n) const {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat("Conv2D '", name(), "': batch size ", n, " was not prepared"));
  return it->second;
}

void Conv2D::forward(int64_t n, const BatchContext& /*ctx*/) {
  const Plan& plan = plan_for(n);
  if (plan.x_bf16.count() > 0) to_bf16(plan.x, plan.x_bf16.data(), plan.x_bf16.count());
  if (plan.kernel_to_forward) plan.kernel_to_forward.execute();
  plan.forward.execute();
}

void Conv2D::backward(int64_t n) {
  const Plan& plan = plan_for(n);
  SF_CHECK(plan.backward_prepared, cat("Conv2D '", name(), "': backward for batch size ", n, " was not prepared"));
  if (plan.activation_backward) plan.activation_backward.execute();
  if (plan.relu_dz != nullptr) {
    const int64_t pixels = n * output_dim() / options_.filters;
    relu_backward_with_channel_sums(plan.relu_dz, plan.block_sums.data(), plan.y, plan.dy, pixels, options_.filters);
    finish_channel_sums(bias_grad_, plan.block_sums.data(), pixels, options_.filters);
  }
  if (plan.dz_bf16.count() > 0) {
    bf16_gradient(options_.activation, plan.y, plan.dy, plan.dz_bf16.data(), plan.dz_bf16.count());
  }
  plan.backward_weights.execute();
  if (plan.kernel_grad_to_hwio) plan.kernel_grad_to_hwio.execute();
  // dx last, after the gradients-ready point (kernels/layer.h): an overlapped reducer sends this layer's gradients
  // while dx is computed.
  if (plan.backward_data) {
    gradients_ready();
    if (plan.kernel_to_backward_data) plan.kernel_to_backward_data.execute();
    plan.backward_data.execute();
  }
}

std::vector<std::string> Conv2D::implementations(int64_t n) const {
  const Plan& plan = plan_for(n);
  std::vector<std::string> names{"forward " + plan.forward.impl_info()};
  if (plan.backward_weights) names.push_back("backward weights " + plan.backward_weights.impl_info());
  if (plan.backward_data) names.push_back("backward data " + plan.backward_data.impl_info());
  return names;
}

}  // namespace shardfit

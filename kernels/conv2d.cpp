// Conv2D on oneDNN convolutions, channels last:
//   forward          y  (n, oh, ow, f) = act(conv(x (n, h, w, c), K (kh, kw, c, f)) + b)
//   backward-weights dK (kh, kw, c, f), db (f) from x and dz
//   backward-data    dx (n, h, w, c) from dz and K
// with dz = dy * act'(.) from oneDNN's eltwise backward on the fused output (use_dst algorithms), as Dense does.
// src and dst are nhwc views of the model's row-major buffers; the kernel is Keras's (kh, kw, in, out), oneDNN's
// hwio. oneDNN's direct kernels want blocked weights: each primitive is built with the weights' layout left to it
// ("any") and a reorder runs when its choice differs from hwio (2.6 on AVX-512: brgconv / jit, against gemm:jit when
// held to hwio).
#include "kernels/conv2d.h"

#include "kernels/error.h"
#include "kernels/window.h"

namespace shardfit {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;

dnnl::algorithm fused_algorithm(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::kRelu:
      return dnnl::algorithm::eltwise_relu;
    case ActivationKind::kSigmoid:
      return dnnl::algorithm::eltwise_logistic;
    case ActivationKind::kTanh:
      return dnnl::algorithm::eltwise_tanh;
    default:
      SF_FAIL(cat("Conv2D cannot fuse activation '", activation_name(kind), "'"));
  }
}

dnnl::algorithm backward_from_output_algorithm(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::kRelu:
      return dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
    case ActivationKind::kSigmoid:
      return dnnl::algorithm::eltwise_logistic_use_dst_for_bwd;
    case ActivationKind::kTanh:
      return dnnl::algorithm::eltwise_tanh_use_dst_for_bwd;
    default:
      SF_FAIL(cat("Conv2D cannot fuse activation '", activation_name(kind), "'"));
  }
}

memory wrap(const memory::desc& desc, const float* data) {
  return {desc, cpu_engine(), const_cast<float*>(data)};  // oneDNN takes void*; inputs are only read
}

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

  // oneDNN's logical dims are (N, C, H, W) and (O, I, H, W) whatever the layout.
  const memory::desc x_md({n, in[2], in[0], in[1]}, kF32, Tag::nhwc);
  const memory::desc y_md({n, filters, out[0], out[1]}, kF32, Tag::nhwc);
  const memory::desc k_md({filters, in[2], kh, kw}, kF32, Tag::hwio);
  const memory::desc k_any({filters, in[2], kh, kw}, kF32, Tag::any);
  const memory::desc b_md({filters}, kF32, Tag::x);
  const memory::desc flat_y = row_major(n, output_dim());
  const bool fused = options_.activation != ActivationKind::kLinear;
  const bool training = buffers.dy != nullptr;

  dnnl::primitive_attr attr;
  if (fused) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0F, fused_algorithm(options_.activation), 0.0F, 0.0F);
    attr.set_post_ops(ops);
  }
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const auto forward_desc =
      options_.use_bias ? dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, x_md, k_any, b_md,
                                                          y_md, strides, dilates, pad_begin, pad_end)
                        : dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct, x_md, k_any, y_md,
                                                          strides, dilates, pad_begin, pad_end);
  const dnnl::convolution_forward::primitive_desc forward_pd(forward_desc, attr, engine);

  Plan plan;
  const memory kernel = wrap(k_md, kernel_);
  const memory x = wrap(x_md, buffers.x);
  const memory y = wrap(y_md, buffers.y);
  std::vector<std::pair<int, memory>> forward_args = {
      {DNNL_ARG_SRC, x},
      {DNNL_ARG_WEIGHTS, operand(forward_pd.weights_desc(), kernel, &plan.kernel_to_forward, false)},
      {DNNL_ARG_DST, y}};
  if (options_.use_bias) forward_args.emplace_back(DNNL_ARG_BIAS, wrap(b_md, bias_));
  plan.forward = PrimitiveCall(dnnl::convolution_forward(forward_pd), std::move(forward_args));

  if (training) {
    const float* dz = buffers.dy;
    if (fused) {
      SF_CHECK(buffers.scratch != nullptr, cat("Conv2D '", name(), "': fused activation needs a scratch buffer"));
      const auto algorithm = backward_from_output_algorithm(options_.activation);
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
    const memory dz_mem = wrap(y_md, dz);

    const auto weights_desc =
        options_.use_bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_md, k_any,
                                                                     b_md, y_md, strides, dilates, pad_begin, pad_end)
                          : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, x_md, k_any,
                                                                     y_md, strides, dilates, pad_begin, pad_end);
    const dnnl::convolution_backward_weights::primitive_desc weights_pd(weights_desc, engine, forward_pd);
    std::vector<std::pair<int, memory>> weights_args = {
        {DNNL_ARG_SRC, x},
        {DNNL_ARG_DIFF_DST, dz_mem},
        {DNNL_ARG_DIFF_WEIGHTS,
         operand(weights_pd.diff_weights_desc(), wrap(k_md, kernel_grad_), &plan.kernel_grad_to_hwio, true)}};
    if (options_.use_bias) weights_args.emplace_back(DNNL_ARG_DIFF_BIAS, wrap(b_md, bias_grad_));
    plan.backward_weights = PrimitiveCall(dnnl::convolution_backward_weights(weights_pd), std::move(weights_args));

    if (buffers.dx != nullptr) {
      const dnnl::convolution_backward_data::primitive_desc data_pd(
          dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, x_md, k_any, y_md, strides,
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
  if (plan.kernel_to_forward) plan.kernel_to_forward.execute();
  plan.forward.execute();
}

void Conv2D::backward(int64_t n) {
  const Plan& plan = plan_for(n);
  SF_CHECK(plan.backward_prepared, cat("Conv2D '", name(), "': backward for batch size ", n, " was not prepared"));
  if (plan.activation_backward) plan.activation_backward.execute();
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

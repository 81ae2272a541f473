// Pooling on oneDNN, channels last: src (n, h, w, c) and dst (n, oh, ow, c) are nhwc views of the model's row-major
// buffers. Max pooling in training writes a workspace that its backward reads (which cell won each window); the
// plan owns it. Average pooling excludes padding (TensorFlow divides by the cells inside the image). With
// Options::relu (pooling.h has why it is exact) the forward runs oneDNN's relu in place on the pooled output, and the
// backward forms g = dy * (y > 0) and the producer's bias gradient in one pass of ours (oneDNN has no eltwise
// backward that also sums), then pools g back.
#include "kernels/pooling.h"

#include "kernels/channel_sums.h"
#include "kernels/error.h"
#include "kernels/window.h"

namespace shardfit {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;

const char* keras_name(Pooling2D::Kind kind) {
  switch (kind) {
    case Pooling2D::Kind::kMax:
      return "MaxPooling2D";
    case Pooling2D::Kind::kAverage:
      return "AveragePooling2D";
    case Pooling2D::Kind::kGlobalAverage:
      return "GlobalAveragePooling2D";
  }
  return "";
}

// The window per axis: the options', or the whole image for global pooling.
std::array<WindowAxis, 2> windows(const Shape& in, const Pooling2D::Options& options) {
  if (options.kind == Pooling2D::Kind::kGlobalAverage) return {WindowAxis{1, 0, 0}, WindowAxis{1, 0, 0}};
  return {window_axis(in[0], options.pool_size[0], options.strides[0], 1, options.same_padding),
          window_axis(in[1], options.pool_size[1], options.strides[1], 1, options.same_padding)};
}

}  // namespace

Shape Pooling2D::output_shape_for(const std::string& name, const Shape& input_shape, const Options& options) {
  const char* type = keras_name(options.kind);
  SF_CHECK(
      input_shape.size() == 3,
      cat(type, " '", name, "' takes (None, height, width, channels) samples, got ", batch_shape_text(input_shape)),
      "give the model input_shape [height, width, channels], or add layers { reshape { target_shape: [...] } }");
  if (options.kind == Kind::kGlobalAverage) return {input_shape[2]};
  for (int axis = 0; axis < 2; ++axis) {
    SF_CHECK(options.pool_size[axis] > 0 && options.strides[axis] > 0,
             cat(type, " '", name, "': pool_size and strides must be positive, got (", options.pool_size[0], ", ",
                 options.pool_size[1], ") and (", options.strides[0], ", ", options.strides[1], ")"));
  }
  const auto axes = windows(input_shape, options);
  SF_CHECK(axes[0].out > 0 && axes[1].out > 0,
           cat(type, " '", name, "': pool_size (", options.pool_size[0], ", ", options.pool_size[1],
               ") does not fit in the input ", batch_shape_text(input_shape), " with padding \"valid\""),
           "use padding: \"same\", or a smaller pool_size");
  return {axes[0].out, axes[1].out, input_shape[2]};
}

Pooling2D::Pooling2D(const std::string& name, const Shape& input_shape, const Options& options)
    : Layer(name, input_shape, output_shape_for(name, input_shape, options)), options_(options) {
  SF_CHECK(!options_.relu || options_.kind == Kind::kMax,
           cat(type_name(), " '", this->name(), "': only max pooling can take the relu of the layer before it"));
  if (options_.kind == Kind::kGlobalAverage) {
    options_.pool_size = {input_shape[0], input_shape[1]};
    options_.strides = {1, 1};
    options_.same_padding = false;
  }
}

std::string Pooling2D::kind() const {
  switch (options_.kind) {
    case Kind::kMax:
      return "max_pooling2d";
    case Kind::kAverage:
      return "average_pooling2d";
    case Kind::kGlobalAverage:
      return "global_average_pooling2d";
  }
  return "";
}

std::string Pooling2D::type_name() const { return keras_name(options_.kind); }

void Pooling2D::write_producer_bias_gradient(float* bias_grad, int64_t count) {
  SF_CHECK(
      options_.relu && count == input_shape()[2],
      cat(type_name(), " '", name(), "' cannot write the bias gradient of the layer before it (", count, " values; it ",
          options_.relu ? "has " : "does not take that layer's relu, ", input_shape()[2], " channels)"));
  producer_bias_grad_ = bias_grad;
  plans_.clear();
}

void Pooling2D::prepare(int64_t n, const LayerBuffers& buffers) {
  auto& engine = cpu_engine();
  const Shape& in = input_shape();
  const int64_t channels = in[2];
  const auto axes = windows(in, options_);
  const memory::desc x_md({n, channels, in[0], in[1]}, kF32, Tag::nhwc);
  const memory::desc y_md({n, channels, axes[0].out, axes[1].out}, kF32, Tag::nhwc);
  const memory::dims strides{options_.strides[0], options_.strides[1]};
  const memory::dims kernel{options_.pool_size[0], options_.pool_size[1]};
  const memory::dims pad_begin{axes[0].pad_begin, axes[1].pad_begin};
  const memory::dims pad_end{axes[0].pad_end, axes[1].pad_end};
  const auto algorithm =
      options_.kind == Kind::kMax ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_exclude_padding;
  const bool training = buffers.dy != nullptr;
  const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const dnnl::pooling_forward::primitive_desc forward_pd(
      dnnl::pooling_forward::desc(prop, algorithm, x_md, y_md, strides, kernel, pad_begin, pad_end), engine);

  Plan plan;
  std::vector<std::pair<int, memory>> forward_args = {{DNNL_ARG_SRC, wrap(x_md, buffers.x)},
                                                      {DNNL_ARG_DST, wrap(y_md, buffers.y)}};
  // Max pooling in training: where each window's maximum was, written by forward and read by backward.
  memory workspace;
  if (training && forward_pd.workspace_desc().get_size() > 0) {
    workspace = memory(forward_pd.workspace_desc(), engine);
    forward_args.emplace_back(DNNL_ARG_WORKSPACE, workspace);
  }
  plan.forward = PrimitiveCall(dnnl::pooling_forward(forward_pd), std::move(forward_args));
  if (options_.relu) {
    const memory::desc flat_y = row_major(n, output_dim());
    const dnnl::eltwise_forward::primitive_desc relu_pd(
        dnnl::eltwise_forward::desc(prop, dnnl::algorithm::eltwise_relu, flat_y, 0.0F, 0.0F), engine);
    const memory y = wrap(flat_y, buffers.y);
    plan.relu_forward = PrimitiveCall(dnnl::eltwise_forward(relu_pd), {{DNNL_ARG_SRC, y}, {DNNL_ARG_DST, y}});
  }
  if (training && buffers.dx != nullptr) {
    const dnnl::pooling_backward::primitive_desc backward_pd(
        dnnl::pooling_backward::desc(algorithm, x_md, y_md, strides, kernel, pad_begin, pad_end), engine, forward_pd);
    const float* diff_dst = buffers.dy;
    if (options_.relu) {
      SF_CHECK(buffers.scratch != nullptr, cat(type_name(), " '", name(), "': relu needs a scratch buffer"));
      plan.y = buffers.y;
      plan.dy = buffers.dy;
      plan.g = buffers.scratch;
      if (producer_bias_grad_ != nullptr)
        plan.block_sums.resize(channel_sum_blocks(n * axes[0].out * axes[1].out) * channels);
      diff_dst = plan.g;
    }
    std::vector<std::pair<int, memory>> backward_args = {{DNNL_ARG_DIFF_DST, wrap(y_md, diff_dst)},
                                                         {DNNL_ARG_DIFF_SRC, wrap(x_md, buffers.dx)}};
    if (workspace) backward_args.emplace_back(DNNL_ARG_WORKSPACE, workspace);
    plan.backward = PrimitiveCall(dnnl::pooling_backward(backward_pd), std::move(backward_args));
  }
  plan.backward_prepared = training;
  plans_[n] = std::move(plan);
}

const Pooling2D::Plan& Pooling2D::plan_for(int64_t n) const {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat(type_name(), " '", name(), "': batch size ", n, " was not prepared"));
  return it->second;
}

void Pooling2D::forward(int64_t n, const BatchContext& /*ctx*/) {
  const Plan& plan = plan_for(n);
  plan.forward.execute();
  if (plan.relu_forward) plan.relu_forward.execute();
}

void Pooling2D::backward(int64_t n) {
  const Plan& plan = plan_for(n);
  SF_CHECK(plan.backward_prepared,
           cat(type_name(), " '", name(), "': backward for batch size ", n, " was not prepared"));
  // No parameters: without a dx (the model's first layer) there is nothing to write.
  if (!plan.backward) return;
  if (plan.g != nullptr) {
    const int64_t channels = input_shape()[2];
    const int64_t pixels = n * output_dim() / channels;
    float* sums = plan.block_sums.count() > 0 ? plan.block_sums.data() : nullptr;
    relu_backward_with_channel_sums(plan.g, sums, plan.y, plan.dy, pixels, channels);
    if (sums != nullptr) finish_channel_sums(producer_bias_grad_, sums, pixels, channels);
  }
  plan.backward.execute();
}

std::string Pooling2D::implementation(int64_t n) const { return plan_for(n).forward.impl_info(); }

}  // namespace shardfit

// conv_bench: shardfit's Conv2D forward+backward at the Fashion-MNIST convnet's two convolutions against oneDNN's
// own convolution primitives at the same shapes, measured side by side in one run. It times and reports; it checks
// no numbers (tests/kernels/test_conv2d.cpp does).
//
// Why the reference and the method are what they are:
//  1. The layer side is a shardfit::Conv2D (bias, fused relu) called through the Layer interface (bind, prepare,
//     forward, backward) over the benchmark's own buffers, as the model calls it: its step includes whatever the
//     layer adds (the weight reorders between Keras's hwio and oneDNN's blocked layouts, the relu backward, the bias
//     gradient). The first convolution of the convnet computes no dx (nothing before it needs one), the second does.
//  2. The reference is oneDNN's convolution primitives alone at the same (N, H, W, C) -> (N, OH, OW, F): nhwc src
//     and dst (the model's buffers are nhwc), weights and weight gradients in the layout oneDNN picked ("any") and
//     kept there (no reorders), no bias, no post-ops, no relu backward: forward, backward weights and, where the
//     layer computes dx, backward data. That is the ceiling the layer could reach with oneDNN.
//  3. ratio = reference time / layer time over the same FLOPs (2 N OH OW F KH KW C per convolution). The two
//     alternate call by call, each call timed on its own, in repeats of >= min-seconds per side, medians compared,
//     with dense_bench's harness (bench/harness.h).
//  4. The extras table times, alone, what the layer does beyond the reference -- the reorders, the relu backward,
//     the bias and relu in the primitives -- as separate oneDNN calls built like the layer's own (kernels/conv2d.cpp),
//     so that a ratio below 1 can be split into its causes.
//  5. Each shape also runs as the convnet runs it, "+ MaxPooling2D": both convolutions of the convnet are followed
//     by a 2x2 max pooling, which takes the convolution's relu and sums its bias gradient (kernels/pooling.h). The
//     layer side is then the Conv2D and the MaxPooling2D the model factory builds (linear Conv2D whose backward
//     weights computes no bias; relu forward, relu backward and the bias sums at the pooled size), the reference
//     oneDNN's convolution and pooling primitives alone (no bias, no relu): forward, pooling forward, pooling
//     backward, backward weights (and backward data). FLOPs are the convolution's on both sides. A third
//     candidate in the same interleaved group, "before", is the pair as it was built before the move: Conv2D with
//     its fused relu and bias gradient, then a plain MaxPooling2D, so the two ratios share their reference.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "kernels/buffer.h"
#include "kernels/conv2d.h"
#include "kernels/engine.h"
#include "kernels/pooling.h"
#include "kernels/random.h"

namespace shardfit {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

// ---------------------------------------------------------------------------------------------------------------
// Command line

struct Options : bench::TimingOptions {
  bool extras = true;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "conv_bench: " << problem << "\n"
            << "usage: conv_bench [--csv PATH] [--batches 32,128,512] [--repeats N] [--min-seconds S]\n"
            << "                  [--min-iterations N] [--no-extras]\n"
            << "Threads come from OMP_NUM_THREADS.\n";
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    if (bench::take_timing_option(arg, value, options)) {
      continue;
    }
    if (arg == "--no-extras") {
      options.extras = false;
    } else {
      usage("unknown argument " + arg);
    }
  }
  if (const std::string problem = bench::timing_options_problem(options); !problem.empty()) usage(problem);
  return options;
}

using bench::Candidate;
using bench::csv_field;
using bench::fill_uniform;
using bench::Group;
using bench::load_average;
using bench::measure_interleaved;

// ---------------------------------------------------------------------------------------------------------------
// Shapes and buffers

// One convolution of the convnet: (h, w, c) -> (h - 2, w - 2, f), 3x3, stride 1, valid, bias, relu.
struct ConvShape {
  const char* name;
  int64_t h, w, c, f;
  bool dx;                  // the layer computes d loss / d x (not the first layer)
  const char* pooled_name;  // the same with the convnet's 2x2 max pooling after it (point 5 at the top)
};
constexpr int64_t kKernel = 3;
constexpr ConvShape kShapes[] = {
    {"conv1 (28,28,1)->32", 28, 28, 1, 32, false, "conv1 + MaxPooling2D (the convnet's)"},
    {"conv2 (13,13,32)->64", 13, 13, 32, 64, true, "conv2 + MaxPooling2D (the convnet's)"}};

// The 2x2 max pooling after each convolution of the convnet (point 5 at the top): its output (n, ph, pw, f).
int64_t pooled_count(const ConvShape& s, int64_t n) { return n * ((s.h - 2) / 2) * ((s.w - 2) / 2) * s.f; }

// What one shape at one batch size needs on both sides: the layer's buffers, the reference's own. With the
// pooling, dy is what the pooling's backward writes (the convolution's output gradient) and pooled_dy stands in
// for the next layer's gradient.
struct Buffers {
  FloatBuffer x, y, dy, dx, scratch, pooled, pooled_dy, pooled_scratch;
  Buffers(const ConvShape& s, int64_t n)
      : x(n * s.h * s.w * s.c),
        y(n * (s.h - 2) * (s.w - 2) * s.f),
        dy(n * (s.h - 2) * (s.w - 2) * s.f),
        dx(n * s.h * s.w * s.c),
        scratch(n * (s.h - 2) * (s.w - 2) * s.f),
        pooled(pooled_count(s, n)),
        pooled_dy(pooled_count(s, n)),
        pooled_scratch(pooled_count(s, n)) {
    fill_uniform(x, 1, 1.0);
    fill_uniform(dy, 2, 1.0);  // stands in for the next layer's gradient
    fill_uniform(pooled_dy, 5, 1.0);
  }
};

double conv_flops(const ConvShape& s, int64_t n) {
  return 2.0 * static_cast<double>(n * (s.h - 2) * (s.w - 2) * s.f * kKernel * kKernel * s.c);
}

// The layer side: Conv2D with bias and fused relu, through the Layer interface as the model calls it; with the
// pooling, the linear Conv2D and the MaxPooling2D that takes its relu and bias gradient, as the model factory
// builds the pair, or the pair as it was before that (point 5 at the top).
enum class Pairing {
  kAlone,             // Conv2D(relu)
  kPoolTakesRelu,     // linear Conv2D, MaxPooling2D with its relu and bias gradient: the model's
  kPoolAfterConvRelu  // Conv2D(relu), plain MaxPooling2D: before the move
};

class LayerSide {
 public:
  LayerSide(const ConvShape& s, int64_t n, Buffers& b, Pairing pairing) : n_(n) {
    const bool moved = pairing == Pairing::kPoolTakesRelu;
    const bool pooled = pairing != Pairing::kAlone;
    Conv2D::Options options;
    options.filters = s.f;
    options.kernel_size = {kKernel, kKernel};
    options.activation = moved ? ActivationKind::kLinear : ActivationKind::kRelu;
    options.bias_gradient_by_consumer = moved;
    layer_ = std::make_unique<Conv2D>("conv", Shape{s.h, s.w, s.c}, options);
    params_.resize(layer_->param_count());
    grads_.resize(layer_->param_count());
    layer_->bind(params_.data(), grads_.data());
    Rng rng(7);
    layer_->initialize(rng);
    if (pooled) {
      Pooling2D::Options pool_options;
      pool_options.relu = moved;
      pool_ = std::make_unique<Pooling2D>("pool", layer_->output_shape(), pool_options);
      int64_t count = 0;
      if (float* bias_grad = layer_->bias_gradient_for_consumer(&count)) {
        pool_->write_producer_bias_gradient(bias_grad, count);
      }
      LayerBuffers pool_buffers;
      pool_buffers.x = b.y.data();
      pool_buffers.y = b.pooled.data();
      pool_buffers.dy = b.pooled_dy.data();
      pool_buffers.dx = b.dy.data();
      pool_buffers.scratch = b.pooled_scratch.data();
      pool_->prepare(n, pool_buffers);
    }
    LayerBuffers buffers;
    buffers.x = b.x.data();
    buffers.y = b.y.data();
    buffers.dy = b.dy.data();
    buffers.dx = s.dx ? b.dx.data() : nullptr;
    buffers.scratch = b.scratch.data();
    layer_->prepare(n, buffers);
  }
  void forward() {
    layer_->forward(n_, BatchContext{.training = true});
    if (pool_) pool_->forward(n_, BatchContext{.training = true});
  }
  void backward() {
    if (pool_) pool_->backward(n_);
    layer_->backward(n_);
  }
  std::vector<std::string> implementations() const {
    std::vector<std::string> names = layer_->implementations(n_);
    if (pool_) names.push_back("pooling " + pool_->implementation(n_));
    return names;
  }

 private:
  int64_t n_;
  std::unique_ptr<Conv2D> layer_;
  std::unique_ptr<Pooling2D> pool_;
  FloatBuffer params_;
  FloatBuffer grads_;
};

// oneDNN's descriptors of one shape at one batch size, as kernels/conv2d.cpp builds them.
struct Descs {
  memory::desc x, y, k_hwio, k_any, bias;
  memory::dims strides{1, 1}, dilates{0, 0}, pad{0, 0};
  Descs(const ConvShape& s, int64_t n)
      : x({n, s.c, s.h, s.w}, kF32, Tag::nhwc),
        y({n, s.f, s.h - 2, s.w - 2}, kF32, Tag::nhwc),
        k_hwio({s.f, s.c, kKernel, kKernel}, kF32, Tag::hwio),
        k_any({s.f, s.c, kKernel, kKernel}, kF32, Tag::any),
        bias({s.f}, kF32, Tag::x) {}

  dnnl::convolution_forward::primitive_desc forward(bool with_bias, bool relu) const {
    dnnl::primitive_attr attr;
    if (relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.0F, dnnl::algorithm::eltwise_relu, 0.0F, 0.0F);
      attr.set_post_ops(ops);
    }
    const auto prop = dnnl::prop_kind::forward_training;
    const auto algorithm = dnnl::algorithm::convolution_direct;
    const auto desc =
        with_bias ? dnnl::convolution_forward::desc(prop, algorithm, x, k_any, bias, y, strides, dilates, pad, pad)
                  : dnnl::convolution_forward::desc(prop, algorithm, x, k_any, y, strides, dilates, pad, pad);
    return {desc, attr, cpu_engine()};
  }
  dnnl::convolution_backward_weights::primitive_desc backward_weights(
      bool with_bias, const dnnl::convolution_forward::primitive_desc& hint) const {
    const auto algorithm = dnnl::algorithm::convolution_direct;
    const auto desc =
        with_bias ? dnnl::convolution_backward_weights::desc(algorithm, x, k_any, bias, y, strides, dilates, pad, pad)
                  : dnnl::convolution_backward_weights::desc(algorithm, x, k_any, y, strides, dilates, pad, pad);
    return {desc, cpu_engine(), hint};
  }
  dnnl::convolution_backward_data::primitive_desc backward_data(
      const dnnl::convolution_forward::primitive_desc& hint) const {
    return {dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, x, k_any, y, strides, dilates,
                                                  pad, pad),
            cpu_engine(), hint};
  }
};

// The reference side: the primitives alone, weights in oneDNN's layouts, no reorders (point 2 at the top).
class ReferenceSide {
 public:
  ReferenceSide(const ConvShape& s, int64_t n, Buffers& b, bool pooled) : descs_(s, n) {
    const auto forward_pd = descs_.forward(false, false);
    const auto weights_pd = descs_.backward_weights(false, forward_pd);
    const memory x = wrap(descs_.x, b.x.data());
    const memory y = wrap(descs_.y, b.y.data());
    const memory dy = wrap(descs_.y, b.dy.data());
    // Weights filled once through a reorder from random hwio values, then used in oneDNN's layout as they are.
    FloatBuffer hwio(s.f * s.c * kKernel * kKernel);
    fill_uniform(hwio, 3, 0.1);
    memory weights(forward_pd.weights_desc(), cpu_engine());
    memory from = wrap(descs_.k_hwio, hwio.data());
    dnnl::reorder(from, weights).execute(cpu_stream(), from, weights);
    cpu_stream().wait();
    forward_ = PrimitiveCall(dnnl::convolution_forward(forward_pd),
                             {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, y}});
    backward_weights_ = PrimitiveCall(dnnl::convolution_backward_weights(weights_pd),
                                      {{DNNL_ARG_SRC, x},
                                       {DNNL_ARG_DIFF_DST, dy},
                                       {DNNL_ARG_DIFF_WEIGHTS, memory(weights_pd.diff_weights_desc(), cpu_engine())}});
    if (s.dx) {
      const auto data_pd = descs_.backward_data(forward_pd);
      memory data_weights = weights;
      if (data_pd.weights_desc() != weights.get_desc()) {
        data_weights = memory(data_pd.weights_desc(), cpu_engine());
        dnnl::reorder(weights, data_weights).execute(cpu_stream(), weights, data_weights);
        cpu_stream().wait();
      }
      backward_data_ =
          PrimitiveCall(dnnl::convolution_backward_data(data_pd), {{DNNL_ARG_DIFF_DST, dy},
                                                                   {DNNL_ARG_WEIGHTS, data_weights},
                                                                   {DNNL_ARG_DIFF_SRC, wrap(descs_.x, b.dx.data())}});
    }
    if (pooled) {  // oneDNN's 2x2 max pooling, forward (with its workspace) and backward, as kernels/pooling.cpp
      const memory::desc pooled_md({n, s.f, (s.h - 2) / 2, (s.w - 2) / 2}, kF32, Tag::nhwc);
      const memory::dims two{2, 2};
      const memory::dims none{0, 0};
      const auto max = dnnl::algorithm::pooling_max;
      const dnnl::pooling_forward::primitive_desc pool_pd(
          dnnl::pooling_forward::desc(dnnl::prop_kind::forward_training, max, descs_.y, pooled_md, two, two, none,
                                      none),
          cpu_engine());
      const dnnl::pooling_backward::primitive_desc pool_back_pd(
          dnnl::pooling_backward::desc(max, descs_.y, pooled_md, two, two, none, none), cpu_engine(), pool_pd);
      const memory workspace(pool_pd.workspace_desc(), cpu_engine());
      pool_forward_ = PrimitiveCall(
          dnnl::pooling_forward(pool_pd),
          {{DNNL_ARG_SRC, y}, {DNNL_ARG_DST, wrap(pooled_md, b.pooled.data())}, {DNNL_ARG_WORKSPACE, workspace}});
      pool_backward_ =
          PrimitiveCall(dnnl::pooling_backward(pool_back_pd), {{DNNL_ARG_DIFF_DST, wrap(pooled_md, b.pooled_dy.data())},
                                                               {DNNL_ARG_DIFF_SRC, dy},
                                                               {DNNL_ARG_WORKSPACE, workspace}});
    }
  }
  void forward() const {
    forward_.execute();
    if (pool_forward_) pool_forward_.execute();
  }
  void backward() const {
    if (pool_backward_) pool_backward_.execute();
    backward_weights_.execute();
    if (backward_data_) backward_data_.execute();
  }
  std::vector<std::string> implementations() const {
    std::vector<std::string> names{"forward " + forward_.impl_info(),
                                   "backward weights " + backward_weights_.impl_info()};
    if (backward_data_) names.push_back("backward data " + backward_data_.impl_info());
    if (pool_forward_) names.push_back("pooling " + pool_forward_.impl_info());
    return names;
  }

 private:
  Descs descs_;
  PrimitiveCall forward_;
  PrimitiveCall backward_weights_;
  PrimitiveCall backward_data_;
  PrimitiveCall pool_forward_;
  PrimitiveCall pool_backward_;
};

// What the layer does beyond the reference, each piece as its own oneDNN call built as kernels/conv2d.cpp builds
// the layer's (point 4 at the top). Pieces that the layer does not run at this shape (a reorder between identical
// layouts) are left out.
struct Extra {
  std::string name;
  std::string impl;
  Candidate candidate;
};

std::vector<Extra> extras_for(const ConvShape& s, int64_t n, Buffers& b, std::vector<std::shared_ptr<void>>& keep) {
  const Descs d(s, n);
  std::vector<Extra> extras;
  auto add = [&](std::string name, PrimitiveCall call) {
    auto shared = std::make_shared<PrimitiveCall>(std::move(call));
    keep.push_back(shared);
    extras.push_back({std::move(name), shared->impl_info(), Candidate([shared] { shared->execute(); })});
  };
  auto buffer = [&](int64_t count) {
    auto owned = std::make_shared<FloatBuffer>(count);
    fill_uniform(*owned, 4, 0.1);
    keep.push_back(owned);
    return owned->data();
  };
  const int64_t weight_count = s.f * s.c * kKernel * kKernel;
  const memory hwio = wrap(d.k_hwio, buffer(weight_count));
  const memory x = wrap(d.x, b.x.data());
  const memory y = wrap(d.y, b.y.data());
  const memory dy = wrap(d.y, b.dy.data());
  const memory bias = wrap(d.bias, buffer(s.f));

  const auto plain_pd = d.forward(false, false);
  const auto layer_pd = d.forward(true, true);
  const memory weights(layer_pd.weights_desc(), cpu_engine());
  add("fwd: conv + bias + relu (ref has none)",
      PrimitiveCall(dnnl::convolution_forward(layer_pd),
                    {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, y}}));
  add("fwd: conv alone (the reference's)",
      PrimitiveCall(
          dnnl::convolution_forward(plain_pd),
          {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, memory(plain_pd.weights_desc(), cpu_engine())}, {DNNL_ARG_DST, y}}));
  if (layer_pd.weights_desc() != d.k_hwio) {
    add("fwd: kernel reorder hwio -> forward's layout",
        PrimitiveCall(dnnl::reorder(hwio, weights), {{DNNL_ARG_FROM, hwio}, {DNNL_ARG_TO, weights}}));
  }

  const memory::desc flat = row_major(n, (s.h - 2) * (s.w - 2) * s.f);
  const auto relu = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
  const dnnl::eltwise_forward::primitive_desc hint(
      dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, relu, flat, 0.0F, 0.0F), cpu_engine());
  const dnnl::eltwise_backward::primitive_desc relu_pd(dnnl::eltwise_backward::desc(relu, flat, flat, 0.0F, 0.0F),
                                                       cpu_engine(), hint);
  add("bwd: relu backward (eltwise)",
      PrimitiveCall(dnnl::eltwise_backward(relu_pd), {{DNNL_ARG_DST, wrap(flat, b.y.data())},
                                                      {DNNL_ARG_DIFF_DST, wrap(flat, b.dy.data())},
                                                      {DNNL_ARG_DIFF_SRC, wrap(flat, b.scratch.data())}}));

  const auto weights_bias_pd = d.backward_weights(true, layer_pd);
  const auto weights_plain_pd = d.backward_weights(false, plain_pd);
  const memory diff_weights(weights_bias_pd.diff_weights_desc(), cpu_engine());
  add("bwd: weights + bias gradient", PrimitiveCall(dnnl::convolution_backward_weights(weights_bias_pd),
                                                    {{DNNL_ARG_SRC, x},
                                                     {DNNL_ARG_DIFF_DST, dy},
                                                     {DNNL_ARG_DIFF_WEIGHTS, diff_weights},
                                                     {DNNL_ARG_DIFF_BIAS, wrap(d.bias, buffer(s.f))}}));
  add("bwd: weights gradient alone (the reference's)",
      PrimitiveCall(dnnl::convolution_backward_weights(weights_plain_pd),
                    {{DNNL_ARG_SRC, x},
                     {DNNL_ARG_DIFF_DST, dy},
                     {DNNL_ARG_DIFF_WEIGHTS, memory(weights_plain_pd.diff_weights_desc(), cpu_engine())}}));
  if (weights_bias_pd.diff_weights_desc() != d.k_hwio) {
    const memory to = wrap(d.k_hwio, buffer(weight_count));
    add("bwd: kernel gradient reorder -> hwio",
        PrimitiveCall(dnnl::reorder(diff_weights, to), {{DNNL_ARG_FROM, diff_weights}, {DNNL_ARG_TO, to}}));
  }
  if (s.dx) {
    const auto data_pd = d.backward_data(layer_pd);
    if (data_pd.weights_desc() != d.k_hwio) {
      const memory to(data_pd.weights_desc(), cpu_engine());
      add("bwd: kernel reorder hwio -> backward data's layout",
          PrimitiveCall(dnnl::reorder(hwio, to), {{DNNL_ARG_FROM, hwio}, {DNNL_ARG_TO, to}}));
    }
  }
  return extras;
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting

struct Row {
  int threads;
  int64_t batch;
  std::string shape;
  std::string scope;  // fwd+bwd, fwd, bwd, extra
  std::string name;
  double flops;              // 0 for extras
  double layer_seconds;      // median per call (the extra's own time for extras)
  double reference_seconds;  // 0 for extras
  double layer_fastest;
  double reference_fastest;
  std::string layer_impl;
  std::string reference_impl;
  double before_seconds = 0;  // fwd+bwd with the pooling: the pair before the move (point 5 at the top)
};

std::string joined(const std::vector<std::string>& parts) {
  std::string text;
  for (const auto& part : parts) text += (text.empty() ? "" : "; ") + part;
  return text;
}

void write_csv(const std::string& path, const std::vector<Row>& rows) {
  std::ofstream file(path);
  if (!file) throw std::runtime_error("cannot write " + path);
  file << "threads,batch,shape,scope,name,flops,layer_s,reference_s,layer_gflops,reference_gflops,ratio,"
          "layer_fastest_s,reference_fastest_s,ratio_fastest,before_s,ratio_before,layer_impl,reference_impl\n";
  char line[512];
  for (const Row& r : rows) {
    const bool paired = r.reference_seconds > 0;
    std::snprintf(line, sizeof line, "%d,%lld,%s,%s,%s,%.0f,%.9g,%.9g,%.2f,%.2f,%.4f,%.9g,%.9g,%.4f,", r.threads,
                  static_cast<long long>(r.batch), csv_field(r.shape).c_str(), r.scope.c_str(),
                  csv_field(r.name).c_str(), r.flops, r.layer_seconds, r.reference_seconds,
                  r.flops > 0 ? r.flops / r.layer_seconds * 1e-9 : 0,
                  r.flops > 0 && paired ? r.flops / r.reference_seconds * 1e-9 : 0,
                  paired ? r.reference_seconds / r.layer_seconds : 0, r.layer_fastest, r.reference_fastest,
                  paired ? r.reference_fastest / r.layer_fastest : 0);
    file << line;
    if (r.before_seconds > 0) {
      std::snprintf(line, sizeof line, "%.9g,%.4f,", r.before_seconds, r.reference_seconds / r.before_seconds);
      file << line;
    } else {
      file << ",,";
    }
    file << csv_field(r.layer_impl) << "," << csv_field(r.reference_impl) << "\n";
  }
}

int run(const Options& options) {
  const int threads = omp_get_max_threads();
  const char* env_threads = std::getenv("OMP_NUM_THREADS");
  const dnnl_version_t* version = dnnl_version();
  std::printf(
      "conv_bench: Conv2D (bias, fused relu) forward+backward vs oneDNN's convolution primitives alone; then"
      " each with the convnet's max pooling after it\n");
  std::printf("oneDNN %d.%d.%d, effective ISA %s; OMP_NUM_THREADS=%s (omp_get_max_threads %d); load average %s\n",
              version->major, version->minor, version->patch, cpu_isa_name().c_str(),
              env_threads != nullptr ? env_threads : "(unset)", threads, load_average().c_str());

  std::vector<Row> rows;
  for (const ConvShape& conv : kShapes) {
    for (const bool pooled : {false, true}) {
      const ConvShape shape{pooled ? conv.pooled_name : conv.name, conv.h, conv.w, conv.c, conv.f, conv.dx, ""};
      for (const int64_t n : options.batches) {
        Buffers buffers(shape, n);
        LayerSide layer(shape, n, buffers, pooled ? Pairing::kPoolTakesRelu : Pairing::kAlone);
        ReferenceSide reference(shape, n, buffers, pooled);
        const double flops_fwd = conv_flops(shape, n);
        const double flops_bwd = flops_fwd * (shape.dx ? 2 : 1);

        Candidate layer_step([&] {
          layer.forward();
          layer.backward();
        });
        Candidate reference_step([&] {
          reference.forward();
          reference.backward();
        });
        Candidate layer_forward([&] { layer.forward(); });
        Candidate reference_forward([&] { reference.forward(); });
        Candidate layer_backward([&] { layer.backward(); });  // reuses the last forward's output, as a step's would
        Candidate reference_backward([&] { reference.backward(); });
        // With the pooling: the pair as built before the move, in the same group (point 5 at the top).
        std::unique_ptr<LayerSide> before;
        Candidate before_step;
        Group step_group{&layer_step, &reference_step};
        if (pooled) {
          before = std::make_unique<LayerSide>(shape, n, buffers, Pairing::kPoolAfterConvRelu);
          before_step = Candidate([&] {
            before->forward();
            before->backward();
          });
          step_group.push_back(&before_step);
        }
        measure_interleaved({step_group}, options.repeats, options.min_seconds, options.min_iterations);
        measure_interleaved({{&layer_forward, &reference_forward}}, options.repeats, options.min_seconds,
                            options.min_iterations);
        layer.forward();
        measure_interleaved({{&layer_backward, &reference_backward}}, options.repeats, options.min_seconds,
                            options.min_iterations);
        const std::string layer_impl = joined(layer.implementations());
        const std::string reference_impl = joined(reference.implementations());
        auto row = [&](const char* scope, double flops, const Candidate& a, const Candidate& b) {
          rows.push_back({threads, n, shape.name, scope, scope, flops, a.median(), b.median(), a.fastest(), b.fastest(),
                          layer_impl, reference_impl});
        };
        row("fwd+bwd", flops_fwd + flops_bwd, layer_step, reference_step);
        const double before_seconds = pooled ? before_step.median() : 0.0;
        rows.back().before_seconds = before_seconds;
        row("fwd", flops_fwd, layer_forward, reference_forward);
        row("bwd", flops_bwd, layer_backward, reference_backward);

        const Row& step = rows[rows.size() - 3];
        std::printf(
            "\n%s, batch %lld: Conv2D %.3f ms/step (%.1f GFLOP/s), oneDNN alone %.3f ms (%.1f GFLOP/s): ratio %.2f"
            " (fastest %.2f; fwd %.2f, bwd %.2f); load %s\n",
            shape.name, static_cast<long long>(n), step.layer_seconds * 1e3, step.flops / step.layer_seconds * 1e-9,
            step.reference_seconds * 1e3, step.flops / step.reference_seconds * 1e-9,
            step.reference_seconds / step.layer_seconds, step.reference_fastest / step.layer_fastest,
            rows[rows.size() - 2].reference_seconds / rows[rows.size() - 2].layer_seconds,
            rows.back().reference_seconds / rows.back().layer_seconds, load_average().c_str());
        if (pooled) {
          std::printf("  before the move (Conv2D relu + plain MaxPooling2D): %.3f ms/step, ratio %.2f\n",
                      before_seconds * 1e3, step.reference_seconds / before_seconds);
        }
        std::printf("  Conv2D: %s\n  oneDNN: %s\n", layer_impl.c_str(), reference_impl.c_str());

        if (options.extras && !pooled) {
          std::vector<std::shared_ptr<void>> keep;
          std::vector<Extra> extras = extras_for(shape, n, buffers, keep);
          for (Extra& extra : extras) {
            measure_interleaved({{&extra.candidate}}, options.repeats, options.min_seconds / 2, options.min_iterations);
            std::printf("    %-52s %9.1f us  (%s)\n", extra.name.c_str(), extra.candidate.median() * 1e6,
                        extra.impl.c_str());
            rows.push_back({threads, n, shape.name, "extra", extra.name, 0, extra.candidate.median(), 0,
                            extra.candidate.fastest(), 0, extra.impl, ""});
          }
        }
      }
    }
  }

  std::printf(
      "\nSummary, %d thread(s), load average %s at the end. ratio = oneDNN-alone time / Conv2D time, medians"
      " of %d interleaved repeats\n",
      threads, load_average().c_str(), options.repeats);
  std::printf(
      "| shape | batch | Conv2D ms/step | Conv2D GFLOP/s | oneDNN GFLOP/s | ratio | fastest | fwd | bwd |"
      " before the move |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (r.scope != "fwd+bwd") continue;
    const std::string before =
        r.before_seconds > 0 ? std::to_string(r.reference_seconds / r.before_seconds).substr(0, 4) : "-";
    std::printf("| %s | %lld | %.3f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %s |\n", r.shape.c_str(),
                static_cast<long long>(r.batch), r.layer_seconds * 1e3, r.flops / r.layer_seconds * 1e-9,
                r.flops / r.reference_seconds * 1e-9, r.reference_seconds / r.layer_seconds,
                r.reference_fastest / r.layer_fastest, rows[i + 1].reference_seconds / rows[i + 1].layer_seconds,
                rows[i + 2].reference_seconds / rows[i + 2].layer_seconds, before.c_str());
  }
  if (!options.csv_path.empty()) write_csv(options.csv_path, rows);
  return 0;
}

}  // namespace
}  // namespace shardfit

int main(int argc, char** argv) {
  try {
    return shardfit::run(shardfit::parse_options(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "conv_bench: " << e.what() << "\n";
    return 1;
  }
}

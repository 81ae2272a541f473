// Dense forward and backward as oneDNN matmuls over plain row-major buffers (Keras layout, no reorders):
//   forward          y  (n, out) = act(x (n, in) . W (in, out) + b)
//   backward-weights dW (in, out) = x^T (in, n) . dz (n, out) (x read through transposed strides)
//   bias             db (out)    = column sums of dz       (OpenMP)
//   backward-data    dx (n, in)  = dz (n, out) . W^T        (W read through transposed strides)
// with dz = dy * act'(.) from oneDNN's eltwise backward on the fused output (use_dst algorithms). Each of these is
// a Stage that Dense::run executes; pieces() hands the same stages to bench/dense_bench, which has no copy of them.
// Under mixed_bfloat16 the three matmuls read bf16 copies instead: x and dz converted by to_bf16's array loop
// (stages too; oneDNN 2.6's reorder took ~2.5x as long on 2 threads, kernels/precision.h), the kernel from the model's
// once-per-step copy; they write f32 and the bias, the fused activation and its backward, and the bias sums stay
// f32. Where the model holds an activation as bf16 (a bf16 edge, kernels/precision.h note 3) the consumer reads it
// with no copy and the producer's forward writes it as bf16; relu and linear layers then make dz's bf16 copy and
// the bias sums in one pass over dy (relu_backward_to_bf16), reading y's sign from either dtype.
#include "kernels/dense.h"

#include <omp.h>

#include <algorithm>
#include <bit>

#include "kernels/activation.h"
#include "kernels/error.h"
#include "kernels/precision.h"

namespace shardfit {

namespace {

using dnnl::memory;

}  // namespace

// Threads take blocks of columns and walk the rows, so every load is a contiguous run of the row.
void column_sums(const float* m, int64_t n, int64_t out, float* sums) {
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static) if (n * out > kParallelCount)
  for (int64_t begin = 0; begin < out; begin += kBlock) {
    const int64_t width = std::min(kBlock, out - begin);
    double acc[kBlock] = {};
    for (int64_t i = 0; i < n; ++i) {
      const float* row = m + i * out + begin;
      for (int64_t j = 0; j < width; ++j) acc[j] += row[j];
    }
    for (int64_t j = 0; j < width; ++j) sums[begin + j] = static_cast<float>(acc[j]);
  }
}

namespace {

// relu_backward_to_bf16 over columns [begin, begin + width) of every row; acc (width) collects the sums. Compiled
// for AVX-512 and the baseline (kernels/precision.h): the loops below vectorise across the columns.
SF_AVX512_CLONES void relu_backward_block(const float* __restrict dy, const float* __restrict y,
                                          const uint16_t* __restrict y_bf16, int64_t n, int64_t out, int64_t begin,
                                          int64_t width, uint16_t* __restrict dz_bf16, double* __restrict acc) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = i * out + begin;
    const float* g = dy + row;
    uint16_t* dz = dz_bf16 + row;
    // relu' as a bit mask on dy (+0 where y <= 0, as the select y > 0 ? dy : 0): GCC 12 vectorises no float
    // select that feeds the double sums.
    if (y != nullptr) {
      for (int64_t j = 0; j < width; ++j) {
        const uint32_t keep = y[row + j] > 0.0F ? 0xFFFFFFFFU : 0U;
        const float d = std::bit_cast<float>(std::bit_cast<uint32_t>(g[j]) & keep);
        acc[j] += d;
        dz[j] = to_bf16(d);
      }
    } else if (y_bf16 != nullptr) {
      for (int64_t j = 0; j < width; ++j) {
        const uint32_t keep = from_bf16(y_bf16[row + j]) > 0.0F ? 0xFFFFFFFFU : 0U;
        const float d = std::bit_cast<float>(std::bit_cast<uint32_t>(g[j]) & keep);
        acc[j] += d;
        dz[j] = to_bf16(d);
      }
    } else {
      for (int64_t j = 0; j < width; ++j) {
        acc[j] += g[j];
        dz[j] = to_bf16(g[j]);
      }
    }
  }
}

}  // namespace

// column_sums' double accumulation, row after row, so the bias gradient is the same sum to the bit, over blocks of
// columns: 64 as column_sums when threads share the pass, the fastest width measured at 2 threads (Zen 4, 512 x
// 512: 45 us against 62 at 128 and 78 at 256 columns); up to 512 on one thread, where long runs of each row stream
// better (67 us against 86 at 64 columns).
void relu_backward_to_bf16(const float* dy, const float* y, const uint16_t* y_bf16, int64_t n, int64_t out,
                           uint16_t* dz_bf16, float* sums) {
  constexpr int64_t kMaxBlock = 512;
  const bool threaded = n * out > kParallelCount && omp_get_max_threads() > 1;
  const int64_t block = threaded ? 64 : kMaxBlock;
#pragma omp parallel for schedule(static) if (threaded)
  for (int64_t begin = 0; begin < out; begin += block) {
    const int64_t width = std::min(block, out - begin);
    double acc[kMaxBlock] = {};
    relu_backward_block(dy, y, y_bf16, n, out, begin, width, dz_bf16, acc);
    if (sums != nullptr) {
      for (int64_t j = 0; j < width; ++j) sums[begin + j] = static_cast<float>(acc[j]);
    }
  }
}

Dense::Dense(std::string name, int64_t input_dim, int64_t units, const Options& options)
    : Layer(std::move(name), input_dim, units), options_(options) {
  SF_CHECK(input_dim > 0 && units > 0,
           cat("Dense '", this->name(), "': expected positive sizes, got input ", input_dim, ", units ", units));
  const auto a = options.activation;
  SF_CHECK(a == ActivationKind::kLinear || a == ActivationKind::kRelu || a == ActivationKind::kSigmoid ||
               a == ActivationKind::kTanh,
           cat("Dense '", this->name(), "' cannot fuse activation '", activation_name(a),
               "'; build it as a separate Activation layer"));
}

bool Dense::writes_bf16_output() const {
  return options_.bf16 &&
         (options_.activation == ActivationKind::kLinear || options_.activation == ActivationKind::kRelu);
}

int64_t Dense::param_count() const { return input_dim() * units() + (options_.use_bias ? units() : 0); }

std::vector<WeightShape> Dense::weight_shapes() const {
  std::vector<WeightShape> shapes{{name() + "/kernel", {input_dim(), units()}}};
  if (options_.use_bias) shapes.push_back({name() + "/bias", {units()}});
  return shapes;
}

void Dense::bind(float* params, float* grads) {
  kernel_ = params;
  kernel_grad_ = grads;
  bias_ = options_.use_bias ? params + input_dim() * units() : nullptr;
  bias_grad_ = options_.use_bias ? grads + input_dim() * units() : nullptr;
  kernel_bf16_ = nullptr;
  plans_.clear();
}

void Dense::bind_compute_weights(const uint16_t* weights) {
  kernel_bf16_ = weights;  // the kernel leads the layer's block in the bf16 copy too
  plans_.clear();
}

void Dense::initialize(Rng& rng) {
  shardfit::initialize(options_.kernel_initializer, {kernel_, static_cast<size_t>(input_dim() * units())}, input_dim(),
                       units(), rng);
  if (options_.use_bias) {
    shardfit::initialize(options_.bias_initializer, {bias_, static_cast<size_t>(units())}, units(), units(), rng);
  }
}

void Dense::prepare(int64_t n, const LayerBuffers& buffers) {
  SF_CHECK(kernel_ != nullptr, cat("Dense '", name(), "' used before bind()"));
  const int64_t in = input_dim();
  const int64_t out = units();
  const bool fused = options_.activation != ActivationKind::kLinear;
  auto& engine = cpu_engine();

  Plan plan;
  plan.x = buffers.x;
  plan.y = buffers.y;
  plan.dy = buffers.dy;
  plan.dx = buffers.dx;
  plan.y_bf16 = buffers.y_bf16;

  const memory::desc x_md = row_major(n, in);
  const memory::desc w_md = row_major(in, out);
  const memory::desc y_md = row_major(n, out);
  const memory::desc b_md = row_major(1, out);
  const bool bf16 = options_.bf16;
  SF_CHECK(!bf16 || kernel_bf16_ != nullptr, cat("Dense '", name(), "': bf16 used before bind_compute_weights()"));
  SF_CHECK((buffers.x_bf16 == nullptr || reads_bf16_input()) && (buffers.y_bf16 == nullptr || writes_bf16_output()),
           cat("Dense '", name(), "': given a bf16 input or output it cannot use"));
  // relu / linear under bf16: one pass makes dz's bf16 copy and the bias sums (relu_backward_to_bf16).
  const bool gradient_pass =
      bf16 && (options_.activation == ActivationKind::kLinear || options_.activation == ActivationKind::kRelu);

  dnnl::primitive_attr attr;
  if (fused) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0F, fused_forward_algorithm(options_.activation, "Dense"), 0.0F, 0.0F);
    attr.set_post_ops(ops);
  }
  // The matmul operands: f32 views of the model's buffers, or bf16 ones: x as the model holds it (a bf16 edge) or
  // this plan's copy of it, the kernel's copy from the model. Bias and post-op stay f32 either way; dst is f32
  // unless the model holds y as bf16, which oneDNN rounds to after the post-op.
  memory x_operand = wrap(x_md, buffers.x);
  memory w_operand = wrap(w_md, kernel_);
  const uint16_t* x_bf16 = buffers.x_bf16;
  if (bf16) {
    if (x_bf16 == nullptr) {
      plan.x_bf16.resize(n * in);
      plan.forward_stages[plan.forward_stage_count++] = Stage::kConvertInput;
      x_bf16 = plan.x_bf16.data();
    }
    x_operand = wrap(row_major(n, in, kBf16), x_bf16);
    w_operand = wrap(row_major(in, out, kBf16), kernel_bf16_);
  }
  const memory y_operand =
      buffers.y_bf16 != nullptr ? wrap(row_major(n, out, kBf16), buffers.y_bf16) : wrap(y_md, buffers.y);
  const memory::desc x_op_md = x_operand.get_desc();
  const memory::desc w_op_md = w_operand.get_desc();
  const memory::desc y_op_md = y_operand.get_desc();
  const auto forward_desc = options_.use_bias ? dnnl::matmul::desc(x_op_md, w_op_md, b_md, y_op_md)
                                              : dnnl::matmul::desc(x_op_md, w_op_md, y_op_md);
  const dnnl::matmul::primitive_desc forward_pd(forward_desc, attr, engine);
  std::vector<std::pair<int, memory>> forward_args = {
      {DNNL_ARG_SRC, x_operand}, {DNNL_ARG_WEIGHTS, w_operand}, {DNNL_ARG_DST, y_operand}};
  if (options_.use_bias) forward_args.emplace_back(DNNL_ARG_BIAS, wrap(b_md, bias_));
  plan.forward = PrimitiveCall(dnnl::matmul(forward_pd), std::move(forward_args));
  plan.forward_stages[plan.forward_stage_count++] = Stage::kForward;

  if (buffers.dy != nullptr) {
    const float* dz = buffers.dy;
    if (fused && !gradient_pass) {
      SF_CHECK(buffers.scratch != nullptr, cat("Dense '", name(), "': fused activation needs a scratch buffer"));
      const dnnl::eltwise_forward::primitive_desc hint(
          dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training,
                                      fused_backward_algorithm(options_.activation, "Dense"), y_md, 0.0F, 0.0F),
          engine);
      const dnnl::eltwise_backward::primitive_desc backward_pd(
          dnnl::eltwise_backward::desc(fused_backward_algorithm(options_.activation, "Dense"), y_md, y_md, 0.0F, 0.0F),
          engine, hint);
      plan.activation_backward =
          PrimitiveCall(dnnl::eltwise_backward(backward_pd), {{DNNL_ARG_DST, wrap(y_md, buffers.y)},
                                                              {DNNL_ARG_DIFF_DST, wrap(y_md, buffers.dy)},
                                                              {DNNL_ARG_DIFF_SRC, wrap(y_md, buffers.scratch)}});
      dz = buffers.scratch;
      plan.backward_stages[plan.backward_stage_count++] = Stage::kActivationBackward;
    }
    plan.dz = dz;
    // dz as the backward matmuls read it, and W^T and x^T as strided views of the kernel and x they read.
    memory dz_operand = wrap(y_md, dz);
    memory wt_operand = wrap(transposed(out, in), kernel_);
    memory xt_operand = wrap(transposed(in, n), buffers.x);
    if (bf16) {
      plan.dz_bf16.resize(n * out);
      plan.backward_stages[plan.backward_stage_count++] =
          gradient_pass ? Stage::kGradientPass : Stage::kConvertGradient;
      dz_operand = wrap(row_major(n, out, kBf16), plan.dz_bf16.data());
      wt_operand = wrap(transposed(out, in, kBf16), kernel_bf16_);
      xt_operand = wrap(transposed(in, n, kBf16), x_bf16);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(xt_operand.get_desc(), dz_operand.get_desc(), w_md),
                                          engine);
    plan.backward_weights = PrimitiveCall(
        dnnl::matmul(pd),
        {{DNNL_ARG_SRC, xt_operand}, {DNNL_ARG_WEIGHTS, dz_operand}, {DNNL_ARG_DST, wrap(w_md, kernel_grad_)}});
    plan.backward_stages[plan.backward_stage_count++] = Stage::kBackwardWeights;
    if (options_.use_bias && !gradient_pass) plan.backward_stages[plan.backward_stage_count++] = Stage::kBiasSums;
    // dx last: the parameter gradients are final before it, and backward() says so (the gradients-ready point,
    // kernels/layer.h) so an overlapped reducer sends them while dx is computed. The order changes no value.
    if (buffers.dx != nullptr) {
      const dnnl::matmul::primitive_desc data_pd(dnnl::matmul::desc(dz_operand.get_desc(), wt_operand.get_desc(), x_md),
                                                 engine);
      plan.backward_data = PrimitiveCall(
          dnnl::matmul(data_pd),
          {{DNNL_ARG_SRC, dz_operand}, {DNNL_ARG_WEIGHTS, wt_operand}, {DNNL_ARG_DST, wrap(x_md, buffers.dx)}});
      plan.backward_stages[plan.backward_stage_count++] = Stage::kBackwardData;
    }
  }
  plans_[n] = std::move(plan);
}

Dense::Plan& Dense::plan_for(int64_t n) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat("Dense '", name(), "': batch size ", n, " was not prepared"));
  return it->second;
}

// The one place where a piece of the step executes: forward(), backward() and pieces() all come here.
void Dense::run(const Plan& plan, Stage stage, int64_t n) {
  switch (stage) {
    case Stage::kConvertInput:
      to_bf16(plan.x, plan.x_bf16.data(), n * input_dim());
      return;
    case Stage::kForward:
      plan.forward.execute();
      return;
    case Stage::kActivationBackward:
      plan.activation_backward.execute();
      return;
    case Stage::kConvertGradient:
      to_bf16(plan.dz, plan.dz_bf16.data(), n * units());
      return;
    case Stage::kGradientPass:
      relu_backward_to_bf16(plan.dz, options_.activation == ActivationKind::kRelu ? plan.y : nullptr,
                            options_.activation == ActivationKind::kRelu ? plan.y_bf16 : nullptr, n, units(),
                            plan.dz_bf16.data(), bias_grad_);
      return;
    case Stage::kBackwardData:
      plan.backward_data.execute();
      return;
    case Stage::kBackwardWeights:
      plan.backward_weights.execute();
      return;
    case Stage::kBiasSums:
      column_sums(plan.dz, n, units(), bias_grad_);
      return;
  }
}

void Dense::forward(int64_t n, const BatchContext& /*ctx*/) {
  const Plan& plan = plan_for(n);
  for (int i = 0; i < plan.forward_stage_count; ++i) run(plan, plan.forward_stages[i], n);
}

void Dense::backward(int64_t n) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end() && it->second.backward_stage_count > 0,
           cat("Dense '", name(), "': backward for batch size ", n, " was not prepared"));
  const Plan& plan = it->second;
  for (int i = 0; i < plan.backward_stage_count; ++i) {
    if (plan.backward_stages[i] == Stage::kBackwardData) gradients_ready();
    run(plan, plan.backward_stages[i], n);
  }
}

DensePiece Dense::piece(const Plan& plan, Stage stage, int64_t n) {
  DensePiece result;
  result.backward = stage != Stage::kForward && stage != Stage::kConvertInput;
  result.run = [this, &plan, stage, n] { run(plan, stage, n); };  // plans_ keeps its elements' addresses
  auto set_matmul = [&result](int64_t m, int64_t k, int64_t cols) {
    result.m = m;
    result.k = k;
    result.n = cols;
  };
  switch (stage) {
    case Stage::kConvertInput:
      result.name = "x-to-bf16";
      result.impl = "to_bf16 array conversion";
      break;
    case Stage::kConvertGradient:
      result.name = "dz-to-bf16";
      result.impl = "to_bf16 array conversion";
      break;
    case Stage::kGradientPass:
      result.name = cat(options_.activation == ActivationKind::kRelu ? "relu-bwd+" : "", "dz-to-bf16",
                        options_.use_bias ? "+bias-sums" : "");
      result.impl = "OpenMP pass over column blocks";
      break;
    case Stage::kForward:
      result.name = "fwd";
      set_matmul(n, input_dim(), units());  // (n, in) x (in, out)
      result.impl = plan.forward.impl_info();
      break;
    case Stage::kActivationBackward:
      result.name = activation_name(options_.activation) + "-bwd";
      result.impl = plan.activation_backward.impl_info();
      break;
    case Stage::kBackwardData:
      result.name = "bwd-data";
      set_matmul(n, units(), input_dim());  // dz (n, out) x W^T (out, in)
      result.impl = plan.backward_data.impl_info();
      break;
    case Stage::kBackwardWeights:
      result.name = "bwd-weights";
      set_matmul(input_dim(), n, units());  // x^T (in, n) x dz (n, out)
      result.impl = plan.backward_weights.impl_info();
      break;
    case Stage::kBiasSums:
      result.name = "bias-sums";
      result.impl = "OpenMP column sums";
      break;
  }
  return result;
}

std::vector<DensePiece> Dense::pieces(int64_t n) {
  const Plan& plan = plan_for(n);
  std::vector<DensePiece> all;
  for (int i = 0; i < plan.forward_stage_count; ++i) all.push_back(piece(plan, plan.forward_stages[i], n));
  for (int i = 0; i < plan.backward_stage_count; ++i) all.push_back(piece(plan, plan.backward_stages[i], n));
  return all;
}

}  // namespace shardfit

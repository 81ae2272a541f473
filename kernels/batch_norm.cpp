// BatchNormalization on (R, C) rows, R = n x positions, channels last:
//   statistics  per channel sum and sum of squares of x in double (OpenMP over fixed chunks of rows, added in chunk
//               order, so the sums do not depend on the thread count), summed across ranks with the row count when
//               synchronized; mean = S / M, var = SS / M - mean^2 (biased, as Keras uses for both normalizing and
//               the moving update), M the (global) row count
//   forward     oneDNN batch_normalization_forward with use_global_stats: the batch's statistics in training, the
//               moving ones in inference
//   backward    d beta = sum dy, d gamma = sum dy * xhat over THIS rank's rows (the gradient reducer sums them over
//               ranks as every other gradient); their global sums, then
//               dx = gamma * inv_std * (dy - (sum dy + xhat * sum dy * xhat) / M)
// The backward is our own loop rather than oneDNN's: oneDNN's backward only knows its own batch, and with
// synchronized statistics the two sums are the global batch's.
#include "kernels/batch_norm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cross_replica.h"
#include "kernels/error.h"
#include "kernels/precision.h"

namespace shardfit {

namespace {

using dnnl::memory;

// The per-channel sums are cut into a grid of chunks of rows x blocks of channels: a thread sums whole cells, and
// the chunks are added in order, so the sums do not depend on the thread count, and a batch of few rows and many
// channels (after a Dense) still has cells for every thread.
constexpr int64_t kChunkRows = 256;
constexpr int64_t kBlockChannels = 64;

int64_t chunk_count(int64_t rows) { return (rows + kChunkRows - 1) / kChunkRows; }

// out (2 C) = [sum over rows of a, sum over rows of b], where row_terms(i, first, last, a, b) adds row i's terms for
// channels [first, last) to a (C) and b (C). partials holds chunk_count(rows) x 2 C doubles.
template <typename RowTerms>
void paired_channel_sums(int64_t rows, int64_t channels, std::vector<double>& partials, double* out,
                         RowTerms row_terms) {
  const int64_t chunks = chunk_count(rows);
  const int64_t blocks = (channels + kBlockChannels - 1) / kBlockChannels;
  const int64_t width = 2 * channels;
#pragma omp parallel for collapse(2) schedule(static) if (rows * channels > kParallelCount)
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t first = block * kBlockChannels;
      const int64_t last = std::min(channels, first + kBlockChannels);
      double* a = partials.data() + k * width;
      double* b = a + channels;
      std::fill(a + first, a + last, 0.0);
      std::fill(b + first, b + last, 0.0);
      const int64_t end = std::min(rows, (k + 1) * kChunkRows);
      for (int64_t i = k * kChunkRows; i < end; ++i) row_terms(i, first, last, a, b);
    }
  }
  std::fill(out, out + width, 0.0);
  for (int64_t k = 0; k < chunks; ++k) {
    const double* partial = partials.data() + k * width;
    for (int64_t j = 0; j < width; ++j) out[j] += partial[j];
  }
}

}  // namespace

BatchNormalization::BatchNormalization(std::string name, int64_t input_dim, int64_t channels, const Options& options)
    : Layer(std::move(name), input_dim, input_dim),
      channels_(channels),
      options_(options),
      batch_mean_(static_cast<size_t>(std::max<int64_t>(channels, 0))),
      batch_variance_(batch_mean_.size()),
      inverse_std_(batch_mean_.size()),
      sums_(2 * batch_mean_.size() + 1),
      dy_scale_(batch_mean_.size()),
      centered_scale_(batch_mean_.size()),
      offset_(batch_mean_.size()) {
  SF_CHECK(channels > 0 && input_dim > 0 && input_dim % channels == 0,
           cat("BatchNormalization '", this->name(), "': an input of ", input_dim, " values per sample is not whole ",
               "positions of ", channels, " channels: expected input width a positive multiple of channels"));
  SF_CHECK(
      options.momentum >= 0.0F && options.momentum < 1.0F,
      cat("BatchNormalization '", this->name(), "': momentum = ", options.momentum, ": expected 0 <= momentum < 1"));
  SF_CHECK(options.epsilon > 0.0F && std::isfinite(options.epsilon),
           cat("BatchNormalization '", this->name(), "': epsilon = ", options.epsilon, ": expected a number > 0"));
}

int64_t BatchNormalization::param_count() const {
  return (options_.scale ? channels_ : 0) + (options_.center ? channels_ : 0);
}

std::vector<WeightShape> BatchNormalization::weight_shapes() const {
  std::vector<WeightShape> shapes;
  if (options_.scale) shapes.push_back({name() + "/gamma", {channels_}});
  if (options_.center) shapes.push_back({name() + "/beta", {channels_}});
  shapes.push_back({name() + "/moving_mean", {channels_}, false});
  shapes.push_back({name() + "/moving_variance", {channels_}, false});
  return shapes;
}

void BatchNormalization::bind(float* params, float* grads) {
  gamma_ = options_.scale ? params : nullptr;
  gamma_grad_ = options_.scale ? grads : nullptr;
  const int64_t beta_at = options_.scale ? channels_ : 0;
  beta_ = options_.center ? params + beta_at : nullptr;
  beta_grad_ = options_.center ? grads + beta_at : nullptr;
  plans_.clear();
}

void BatchNormalization::bind_state(float* state) {
  moving_mean_ = state;
  moving_variance_ = state + channels_;
  plans_.clear();
}

void BatchNormalization::initialize(Rng& rng) {
  const auto c = static_cast<size_t>(channels_);
  if (options_.scale) shardfit::initialize(options_.gamma_initializer, {gamma_, c}, channels_, channels_, rng);
  if (options_.center) shardfit::initialize(options_.beta_initializer, {beta_, c}, channels_, channels_, rng);
  shardfit::initialize(options_.moving_mean_initializer, {moving_mean_, c}, channels_, channels_, rng);
  shardfit::initialize(options_.moving_variance_initializer, {moving_variance_, c}, channels_, channels_, rng);
}

void BatchNormalization::prepare(int64_t n, const LayerBuffers& buffers) {
  SF_CHECK(moving_mean_ != nullptr && (param_count() == 0 || gamma_ != nullptr || beta_ != nullptr),
           cat("BatchNormalization '", name(), "' used before bind() and bind_state()"));
  const int64_t rows = n * positions();
  // The rows as the positions of one channels-last image (N 1, C, H rows, W 1, nhwc): the same bytes as row-major
  // (rows, C), and oneDNN's jit kernel for it; as a 2-D (rows, C) matrix oneDNN 2.6 takes its plain per-channel
  // loop instead (ncsp_bnorm), measured 5 to 20 times slower here.
  const memory::desc data_md({1, channels_, rows, 1}, kF32, memory::format_tag::nhwc);
  const memory::desc channel_md({channels_}, kF32, memory::format_tag::x);
  auto flags = dnnl::normalization_flags::use_global_stats;
  if (options_.scale) flags |= dnnl::normalization_flags::use_scale;
  if (options_.center) flags |= dnnl::normalization_flags::use_shift;
  const dnnl::batch_normalization_forward::primitive_desc pd(
      dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_inference, data_md, options_.epsilon, flags),
      cpu_engine());
  const dnnl::batch_normalization_forward primitive(pd);
  auto args = [&](const float* mean, const float* variance) {
    std::vector<std::pair<int, memory>> list = {{DNNL_ARG_SRC, wrap(data_md, buffers.x)},
                                                {DNNL_ARG_DST, wrap(data_md, buffers.y)},
                                                {DNNL_ARG_MEAN, wrap(channel_md, mean)},
                                                {DNNL_ARG_VARIANCE, wrap(channel_md, variance)}};
    if (options_.scale) list.emplace_back(DNNL_ARG_SCALE, wrap(channel_md, gamma_));
    if (options_.center) list.emplace_back(DNNL_ARG_SHIFT, wrap(channel_md, beta_));
    return list;
  };
  Plan plan;
  plan.x = buffers.x;
  plan.dy = buffers.dy;
  plan.dx = buffers.dx;
  plan.training = PrimitiveCall(primitive, args(batch_mean_.data(), batch_variance_.data()));
  plan.inference = PrimitiveCall(primitive, args(moving_mean_, moving_variance_));
  plan.partials.resize(static_cast<size_t>(chunk_count(rows) * 2 * channels_));
  plans_[n] = std::move(plan);
}

BatchNormalization::Plan& BatchNormalization::plan_for(int64_t n) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat("BatchNormalization '", name(), "': batch size ", n, " was not prepared"));
  return it->second;
}

void BatchNormalization::batch_statistics(const float* x, int64_t rows, std::vector<double>& partials) {
  const int64_t c = channels_;
  if (rows > 0) {
    paired_channel_sums(
        rows, c, partials, sums_.data(),
        [x, c](int64_t i, int64_t first, int64_t last, double* __restrict sum, double* __restrict squares) {
          const float* __restrict row = x + i * c;
#pragma omp simd
          for (int64_t j = first; j < last; ++j) {
            const double v = row[j];
            sum[j] += v;
            squares[j] += v * v;
          }
        });
  } else {
    std::fill(sums_.begin(), sums_.end(), 0.0);
  }
  sums_[2 * c] = static_cast<double>(rows);
  if (options_.synchronized && cross_replica_ != nullptr) cross_replica_->sum(sums_);
  global_rows_ = sums_[2 * c];
  if (global_rows_ == 0.0) return;  // no sample anywhere: nothing to normalize, the moving statistics stay
  const double momentum = options_.momentum;
  for (int64_t j = 0; j < c; ++j) {
    const double mean = sums_[j] / global_rows_;
    const double variance = std::max(sums_[c + j] / global_rows_ - mean * mean, 0.0);
    inverse_std_[j] = 1.0 / std::sqrt(variance + static_cast<double>(options_.epsilon));
    batch_mean_[j] = static_cast<float>(mean);
    batch_variance_[j] = static_cast<float>(variance);
    moving_mean_[j] = static_cast<float>(moving_mean_[j] * momentum + mean * (1.0 - momentum));
    moving_variance_[j] = static_cast<float>(moving_variance_[j] * momentum + variance * (1.0 - momentum));
  }
}

void BatchNormalization::forward(int64_t n, const BatchContext& ctx) {
  Plan& plan = plan_for(n);
  last_training_ = ctx.training;
  if (!ctx.training) {
    plan.inference.execute();
    return;
  }
  batch_statistics(plan.x, n * positions(), plan.partials);
  plan.training.execute();
}

void BatchNormalization::forward_without_rows(const BatchContext& ctx) {
  last_training_ = ctx.training;
  std::vector<double> no_partials;
  if (ctx.training) batch_statistics(nullptr, 0, no_partials);
}

void BatchNormalization::backward(int64_t n) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end() && it->second.dy != nullptr,
           cat("BatchNormalization '", name(), "': backward for batch size ", n, " was not prepared"));
  SF_CHECK(last_training_, cat("BatchNormalization '", name(), "': backward after an inference forward"));
  backward_rows(&it->second, n * positions());
}

void BatchNormalization::backward_without_rows() { backward_rows(nullptr, 0); }

void BatchNormalization::backward_rows(Plan* plan, int64_t rows) {
  const int64_t c = channels_;
  double* sums = sums_.data();  // [sum dy (C), sum dy * xhat (C)]
  if (rows > 0) {
    const float* x = plan->x;
    const float* dy = plan->dy;
    const float* mean = batch_mean_.data();
    // sum dy * xhat = inverse_std * sum dy * (x - mean): the factor after the sum.
    paired_channel_sums(
        rows, c, plan->partials, sums,
        [=](int64_t i, int64_t first, int64_t last, double* __restrict sum_dy, double* __restrict sum_dy_centered) {
          const float* __restrict x_row = x + i * c;
          const float* __restrict dy_row = dy + i * c;
#pragma omp simd
          for (int64_t j = first; j < last; ++j) {
            sum_dy[j] += dy_row[j];
            sum_dy_centered[j] += static_cast<double>(dy_row[j]) * (x_row[j] - mean[j]);
          }
        });
    for (int64_t j = 0; j < c; ++j) sums[c + j] *= inverse_std_[j];
    // This rank's sums are its parameter gradients; the reducer adds the other ranks'.
    for (int64_t j = 0; j < c; ++j) {
      if (gamma_grad_ != nullptr) gamma_grad_[j] = static_cast<float>(sums[c + j]);
      if (beta_grad_ != nullptr) beta_grad_[j] = static_cast<float>(sums[j]);
    }
  } else {
    std::fill(sums, sums + 2 * c, 0.0);
  }
  if (options_.synchronized && cross_replica_ != nullptr) cross_replica_->sum({sums, static_cast<size_t>(2 * c)});
  gradients_ready();
  if (rows == 0 || plan->dx == nullptr) return;

  // dx = gamma inv_std (dy - (S_dy + xhat S_dyxhat) / M) = dy_scale dy + centered_scale (x - mean) + offset, with
  // the per-channel factors computed in double, then one float loop over the rows.
  const double inverse_rows = 1.0 / global_rows_;
  for (int64_t j = 0; j < c; ++j) {
    const double gamma_inverse_std = (gamma_ != nullptr ? gamma_[j] : 1.0) * inverse_std_[j];
    dy_scale_[j] = static_cast<float>(gamma_inverse_std);
    centered_scale_[j] = static_cast<float>(-gamma_inverse_std * inverse_std_[j] * sums[c + j] * inverse_rows);
    offset_[j] = static_cast<float>(-gamma_inverse_std * sums[j] * inverse_rows);
  }
  const float* __restrict x = plan->x;
  const float* __restrict dy = plan->dy;
  float* __restrict dx = plan->dx;
  const float* __restrict mean = batch_mean_.data();
  const float* __restrict dy_scale = dy_scale_.data();
  const float* __restrict centered_scale = centered_scale_.data();
  const float* __restrict offset = offset_.data();
#pragma omp parallel for schedule(static) if (rows * c > 16384)
  for (int64_t i = 0; i < rows; ++i) {
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const int64_t at = i * c + j;
      dx[at] = dy_scale[j] * dy[at] + centered_scale[j] * (x[at] - mean[j]) + offset[j];
    }
  }
}

}  // namespace shardfit

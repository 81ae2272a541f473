// Inverted dropout with a counter-based mask; the applied scales are kept in the model-provided scratch buffer
// for backward: dx = dy * scale.
#include "kernels/dropout.h"

#include <algorithm>

#include "kernels/error.h"
#include "kernels/random.h"

namespace shardfit {

Dropout::Dropout(std::string name, int64_t dim, float rate, uint64_t layer_index)
    : Layer(std::move(name), dim, dim), rate_(rate), layer_index_(layer_index) {
  SF_CHECK(rate >= 0.0F && rate < 1.0F, cat("Dropout '", this->name(), "': rate = ", rate, ": expected 0 <= rate < 1"));
}

float Dropout::mask(uint64_t seed, uint64_t step, int64_t global_row, int64_t unit) const {
  const uint64_t bits =
      hash_key(seed, 0x44524F50ULL /*'DROP'*/ + layer_index_, step,
               static_cast<uint64_t>(global_row) * static_cast<uint64_t>(input_dim()) + static_cast<uint64_t>(unit));
  return to_unit_float(bits) >= rate_ ? 1.0F / (1.0F - rate_) : 0.0F;
}

void Dropout::prepare(int64_t n, const LayerBuffers& buffers) {
  SF_CHECK(buffers.dy == nullptr || buffers.scratch != nullptr,
           cat("Dropout '", name(), "': training needs a scratch buffer for the mask"));
  plans_[n] = buffers;
}

void Dropout::forward(int64_t n, const BatchContext& ctx) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end(), cat("Dropout '", name(), "': batch size ", n, " was not prepared"));
  const LayerBuffers& b = it->second;
  const int64_t d = input_dim();
  last_training_ = ctx.training && rate_ > 0.0F;
  if (!last_training_) {
    if (b.y != b.x) std::copy(b.x, b.x + n * d, b.y);
    return;
  }
  SF_CHECK(b.scratch != nullptr, cat("Dropout '", name(), "': training forward needs a prepared backward"));
#pragma omp parallel for schedule(static) if (n * d > 16384)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      const float scale = mask(ctx.seed, ctx.step, ctx.first_row + i, j);
      b.scratch[i * d + j] = scale;
      b.y[i * d + j] = b.x[i * d + j] * scale;
    }
  }
}

void Dropout::backward(int64_t n) {
  auto it = plans_.find(n);
  SF_CHECK(it != plans_.end() && it->second.dy != nullptr,
           cat("Dropout '", name(), "': backward for batch size ", n, " was not prepared"));
  const LayerBuffers& b = it->second;
  if (b.dx == nullptr) return;
  const int64_t count = n * input_dim();
  if (!last_training_) {
    std::copy(b.dy, b.dy + count, b.dx);
    return;
  }
#pragma omp parallel for simd schedule(static) if (count > 16384)
  for (int64_t i = 0; i < count; ++i) b.dx[i] = b.dy[i] * b.scratch[i];
}

}  // namespace shardfit

// See channel_sums.h.
#include "kernels/channel_sums.h"

#include <algorithm>

#include "kernels/precision.h"

namespace shardfit {

SF_AVX512_CLONES void relu_backward_with_channel_sums(float* g, float* block_sums, const float* y, const float* dy,
                                                      int64_t pixels, int64_t channels) {
  const int64_t blocks = channel_sum_blocks(pixels);
#pragma omp parallel for schedule(static) if (pixels * channels >= kParallelCount)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kChannelSumPixels * channels;
    const int64_t end = std::min(pixels, (b + 1) * kChannelSumPixels) * channels;
    if (block_sums == nullptr) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) g[i] = dy[i] * (y[i] > 0.0F ? 1.0F : 0.0F);
      continue;
    }
    float* sums = block_sums + b * channels;
    std::fill(sums, sums + channels, 0.0F);
    for (int64_t row = begin; row < end; row += channels) {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        const float value = dy[row + c] * (y[row + c] > 0.0F ? 1.0F : 0.0F);
        g[row + c] = value;
        sums[c] += value;
      }
    }
  }
}

void finish_channel_sums(float* sums, const float* block_sums, int64_t pixels, int64_t channels) {
  const int64_t blocks = channel_sum_blocks(pixels);
  for (int64_t c = 0; c < channels; ++c) {
    double total = 0.0;
    for (int64_t b = 0; b < blocks; ++b) total += block_sums[b * channels + c];
    sums[c] = static_cast<float>(total);
  }
}

}  // namespace shardfit

// The relu backward pass that also sums the bias gradient: g = dy * (y > 0) over channels-last (pixels, channels)
// rows, and the per-channel sums of g, in one pass of ours. oneDNN 2.6 has no eltwise backward that also reduces,
// and its convolution backward-weights primitive, asked for the bias gradient too, reads dz again: at the
// Fashion-MNIST convnet's first convolution (one input channel) that reduction took 2.7x the weight gradient itself
// (bench/README.md, conv_bench). Used by MaxPooling2D for the Conv2D whose relu it took (kernels/pooling.h) and by
// Conv2D for its own fused relu (kernels/conv2d.cpp).
#pragma once

#include <cstdint>

namespace shardfit {

// Pixels per block of the sums. Fixed, so the sums do not depend on the thread count: each block adds its pixels
// in float, in order, and finish_channel_sums adds the blocks in order in double.
constexpr int64_t kChannelSumPixels = 256;

// How many blocks (pixels) rows make: block_sums holds this many times channels floats.
inline int64_t channel_sum_blocks(int64_t pixels) { return (pixels + kChannelSumPixels - 1) / kChannelSumPixels; }

// g = dy * (y > 0), and when block_sums is not nullptr each block's per-channel sums of g. A product, not a select,
// as oneDNN's relu backward computes it: a NaN or infinite dy stays NaN where the mask is 0, so a broken loss
// gradient still reaches the weights' gradients and shows. Uses the OpenMP threads for large arrays.
//   g (pixels, channels), block_sums (channel_sum_blocks(pixels), channels) or nullptr; y, dy (pixels, channels)
void relu_backward_with_channel_sums(float* g, float* block_sums, const float* y, const float* dy, int64_t pixels,
                                     int64_t channels);

// sums[c] = the blocks' sums of channel c, added in block order in double.
//   sums (channels); block_sums (channel_sum_blocks(pixels), channels)
void finish_channel_sums(float* sums, const float* block_sums, int64_t pixels, int64_t channels);

}  // namespace shardfit

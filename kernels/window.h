// One spatial axis of a sliding window (Conv2D, pooling): its output size and padding, by Keras's arithmetic.
#pragma once

#include <algorithm>
#include <cstdint>

namespace shardfit {

struct WindowAxis {
  int64_t out = 0;        // output size; < 1 when the window does not fit ("valid" over a too small input)
  int64_t pad_begin = 0;  // zeros before the first input cell (top or left)
  int64_t pad_end = 0;    // zeros after the last (bottom or right): "same" puts the odd one here, as TensorFlow
};

// Keras / TensorFlow: "valid" out = floor((in - span) / stride) + 1 with span = (kernel - 1) * dilation + 1, no
// padding; "same" out = ceil(in / stride), padded by max((out - 1) * stride + span - in, 0) in all, the smaller
// half before.
inline WindowAxis window_axis(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, bool same) {
  const int64_t span = (kernel - 1) * dilation + 1;
  WindowAxis axis;
  if (!same) {
    axis.out = in >= span ? (in - span) / stride + 1 : 0;
    return axis;
  }
  axis.out = (in + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((axis.out - 1) * stride + span - in, 0);
  axis.pad_begin = total / 2;
  axis.pad_end = total - axis.pad_begin;
  return axis;
}

}  // namespace shardfit

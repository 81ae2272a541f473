#include "dist/train/step_control.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "dist/stop_signal.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

enum Slot { kLossSum, kNotFinite, kStopSignal };

constexpr float kFloatMax = std::numeric_limits<float>::max();

}  // namespace

StepControl::StepControl(std::span<float> slots) : slots_(slots) {
  SF_CHECK(static_cast<int64_t>(slots_.size()) == kSlots,
           cat("step control needs ", kSlots, " slots in the gradient reduction, got ", slots_.size()));
}

void StepControl::offer(double local_loss_sum) {
  // A finite sum beyond float's range must not turn infinite on the way (TerminateOnNaN would stop a run whose
  // loss is finite): it saturates, and the flag below keeps "not finite" the double's verdict.
  const bool finite = std::isfinite(local_loss_sum);
  slots_[kLossSum] = finite ? static_cast<float>(std::clamp<double>(local_loss_sum, -kFloatMax, kFloatMax))
                            : static_cast<float>(local_loss_sum);
  // Every rank writes 0 or 1, so each sum is a count of ranks: exact in float for any rank count.
  slots_[kNotFinite] = finite ? 0.0F : 1.0F;
  slots_[kStopSignal] = stop_signal_received() != 0 ? 1.0F : 0.0F;
}

StepControlValues StepControl::agree(int64_t global_count) const {
  double sum = slots_[kLossSum];
  // Every rank's sum finite, but saturated ones added up past float's range: finite, as the double sum was.
  if (slots_[kNotFinite] == 0.0F && !std::isfinite(sum)) sum = std::copysign(static_cast<double>(kFloatMax), sum);
  StepControlValues agreed;
  agreed.global_batch_loss = sum / static_cast<double>(global_count);
  agreed.stop_requested = slots_[kStopSignal] != 0.0F;
  return agreed;
}

}  // namespace shardfit

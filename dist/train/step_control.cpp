#include "dist/train/step_control.h"

#include "dist/stop_signal.h"
#include "kernels/error.h"

namespace shardfit {

StepControl::StepControl(std::span<float> slots) : slots_(slots) {
  SF_CHECK(static_cast<int64_t>(slots_.size()) == kSlots,
           cat("step control needs ", kSlots, " slots in the gradient reduction, got ", slots_.size()));
}

void StepControl::offer(double local_loss_sum) {
  slots_[0] = static_cast<float>(local_loss_sum);
  // Every rank writes 0 or 1, so the sum is the number of ranks that saw one: exact in float for any rank count.
  slots_[1] = stop_signal_received() != 0 ? 1.0F : 0.0F;
}

StepControlValues StepControl::agree(int64_t global_count) const {
  StepControlValues agreed;
  agreed.global_batch_loss = static_cast<double>(slots_[0]) / static_cast<double>(global_count);
  agreed.stop_requested = slots_[1] != 0.0F;
  return agreed;
}

}  // namespace shardfit

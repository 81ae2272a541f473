#include "dist/train/step_control.h"

#include <chrono>
#include <span>

#include "dist/stop_signal.h"
#include "dist/watchdog.h"

namespace shardfit {

StepControlValues StepControl::agree(double local_loss_sum, int64_t global_count) {
  progress_beacon().enter(Phase::kStepControl);  // the watchdog names this exchange when a peer never joins it
  const auto start = std::chrono::steady_clock::now();
  const int seen = stop_signal_received();
  double values[2] = {local_loss_sum, static_cast<double>(seen)};
  comm_.allreduce_sum(std::span<double>(values, 2));
  const auto end = std::chrono::steady_clock::now();
  seconds_ += std::chrono::duration<double>(end - start).count();
  if (trace_ != nullptr) trace_->step_span(TraceKind::kStepControl, start, end);
  StepControlValues agreed;
  agreed.global_batch_loss = values[0] / static_cast<double>(global_count);
  agreed.stop_requested = values[1] != 0.0;
  return agreed;
}

}  // namespace shardfit

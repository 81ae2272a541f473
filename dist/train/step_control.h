// The values every rank must agree on after each training step: the global batch loss (for callbacks that watch
// batches, such as TerminateOnNaN) and a stop signal (SIGTERM / SIGUSR1 / SIGINT) that may have reached only some
// ranks. Agreeing at the same step lets every rank stop at the same step, after the same checkpoint. Not a
// collective of its own: the values ride with the step's gradient reduction (GradientReducer, design note 8).
#pragma once

#include <cstdint>
#include <span>

namespace shardfit {

struct StepControlValues {
  // Mean loss of the global batch: sum over ranks / global sample count. Each rank's loss sum travels as a float
  // and the ranks' sums are added in float (they ride with the float gradients), so this is the double sum of the
  // step to float precision (~6e-8 relative per rank), also at one rank. Whether it is finite is still the
  // double's: a finite sum beyond float's range travels as +-FLT_MAX (3.4e38), so it reads as finite and at least
  // that large, and an infinite or NaN sum on any rank reads as infinite or NaN, as it did in double. Its one
  // reader, TerminateOnNaN, needs no more. The epoch's loss in the history and on the console is not this: it comes
  // from EpochSums, reduced in double at the epoch's end.
  double global_batch_loss = 0.0;
  bool stop_requested = false;  // some rank received a stop signal
};

class StepControl {
 public:
  // {this rank's loss sum, 1 if that sum is not finite, 1 if it has seen a stop signal}
  static constexpr int64_t kSlots = 3;

  // slots: kSlots floats the step's reduction sums over ranks, GradientReducer::control() (they must outlive this).
  explicit StepControl(std::span<float> slots);

  // Before the reduction starts (the step, after forward: the loss is known before backward fills any bucket):
  // this rank's loss sum and whether it has seen a stop signal.
  void offer(double local_loss_sum);

  // After the reduction, once per step: what the slots brought back, the same on every rank. No MPI call.
  StepControlValues agree(int64_t global_count) const;

 private:
  std::span<float> slots_;
};

}  // namespace shardfit

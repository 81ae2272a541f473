// The per-phase clocks of the training step (dist/train/step.h), apart from the step so that what reads them (the
// fit's result, benchmarks, a timeline) need not include the step and its dependencies.
#pragma once

#include <cstdint>

namespace shardfit {

// Seconds spent in each phase, summed over `steps` steps on this rank's clock.
struct StepPhases {
  double gather = 0;            // rows of the permutation copied, samples gathered (and class weights applied)
  double forward = 0;           // forward pass, loss and metric sums, the loss's gradient
  double backward = 0;          // the layers' backward: the local gradients
  double allreduce_issued = 0;  // inside GradientReducer::start: the bucket allreduces (without overlap, all of them)
  double allreduce_waited = 0;  // inside GradientReducer::finish: outstanding buckets (with overlap, the exposed
                                // part of the exchange), then / global count
  double optimizer = 0;         // clipping and the optimizer's update
  int64_t steps = 0;

  double total() const { return gather + forward + backward + allreduce_issued + allreduce_waited + optimizer; }
};

}  // namespace shardfit

// The values every rank must agree on after each training step, in one small allreduce: the global batch loss
// (for callbacks that watch batches, such as TerminateOnNaN) and a stop signal (SIGTERM / SIGUSR1 / SIGINT) that
// may have reached only some ranks. Agreeing at the same step lets every rank stop at the same step, after the
// same checkpoint.
#pragma once

#include <cstdint>

#include "dist/comm.h"
#include "dist/io/trace.h"

namespace shardfit {

struct StepControlValues {
  double global_batch_loss = 0.0;  // mean loss of the global batch: sum over ranks / global sample count
  bool stop_requested = false;     // some rank received a stop signal
};

class StepControl {
 public:
  explicit StepControl(Comm& comm) : comm_(comm) {}

  // Collective, once per step: {this rank's loss sum, the stop signal it has seen} summed over ranks.
  StepControlValues agree(double local_loss_sum, int64_t global_count);

  // Seconds spent in agree() since construction.
  double seconds() const { return seconds_; }

  // Each agree() becomes a span of the recorder's current step (null, the default: none).
  void record_to(TraceRecorder* trace) { trace_ = trace; }

 private:
  Comm& comm_;
  double seconds_ = 0.0;
  TraceRecorder* trace_ = nullptr;
};

}  // namespace shardfit
